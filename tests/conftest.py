"""Shared pytest fixtures. Each rig registers its fixtures here with one import line."""
from rig.fixtures import slurm_rig, slurm_rig_session  # noqa: F401  (real Slurm test cluster)
