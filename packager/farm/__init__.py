"""Handing evaluations to an existing distributed engine: Slurm for board farms, Kubernetes Jobs for clusters.

``jobs`` plans one job per (artifact, platform, device need) from the manifests; each
engine module (``slurm``, ``kubernetes``) only turns those jobs into its own
submissions. Nothing here schedules: placement, requeue and retries are the engine's.
"""
