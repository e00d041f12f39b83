"""Adapters: the only code that talks to Slurm, BMCs, git, Ansible, Slack..."""
