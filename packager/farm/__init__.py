"""Handing evaluations to an existing scheduler: Slurm for board farms, Kubernetes Jobs for clusters.

``jobs`` plans one job per (artifact, platform, device need) from the manifests; each
scheduler (``slurm.SlurmFarm``, ``kubernetes.KubernetesFarm``) implements ``base.Farm``
and only turns those jobs into its own submissions. Nothing here schedules:
placement, requeue and retries are the scheduler's.
"""
