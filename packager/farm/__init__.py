"""Handing evaluations to an existing scheduler: Slurm for board farms, Kubernetes Jobs for clusters.

``jobs`` plans one job per (artifact, platform, device need) from the manifests; each
scheduler (``slurm.SlurmFarm``, ``kubernetes.KubernetesFarm``) implements ``base.Farm``
and only turns those jobs into its own submissions. Nothing here schedules:
placement, requeue and retries are the scheduler's.
"""

from __future__ import annotations

from typing import Any

from packager.errors import BadInput
from packager.farm.base import SCHEDULERS, Farm, FarmOptions


def open_farm(scheduler: str, options: FarmOptions) -> Farm:
    """The ``Farm`` of ``--scheduler``."""
    from packager.farm.kubernetes import KubernetesFarm
    from packager.farm.slurm import SlurmFarm

    farms: dict[str, Any] = {"slurm": SlurmFarm, "kubernetes": KubernetesFarm}
    if scheduler not in farms:
        raise BadInput(f"scheduler {scheduler!r} is not {' or '.join(SCHEDULERS)}", field="--scheduler")
    return farms[scheduler](options)
