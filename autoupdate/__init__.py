"""autoupdate: Slurm-aware rolling updates of HPC compute nodes from a git repository."""

__version__ = "0.1.0"
