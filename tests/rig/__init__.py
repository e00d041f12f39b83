"""Reusable real test rigs. SlurmRig: munged + slurmctld + N slurmd on one host (see slurm.py)."""
from .slurm import RigError, SlurmRig, missing_binaries

__all__ = ["RigError", "SlurmRig", "missing_binaries"]
