"""pytest fixtures for the real Slurm rig (registered in tests/conftest.py).

`slurm_rig_session`: one 4-node cluster for the whole session (started on first use).
`slurm_rig`: the same cluster, reset before the test (no jobs, reservations or flags; every node
IDLE and booted "initial"). Tests that need another size build their own SlurmRig.
"""
from __future__ import annotations

import tempfile

import pytest

from .slurm import MAX_SOCKET_DIR, SlurmRig, missing_binaries


def short_dir(tmp_path_factory, name: str) -> str:
    """A rig directory short enough for unix sockets (pytest's default tmp paths may not be)."""
    path = tmp_path_factory.mktemp(name)
    if len(str(path)) + 20 > MAX_SOCKET_DIR:
        return tempfile.mkdtemp(prefix=name, dir="/tmp")
    return str(path)


@pytest.fixture(scope="session")
def slurm_rig_session(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm test cluster needs {', '.join(missing)} (scripts/test.sh installs them)")
    rig = SlurmRig(short_dir(tmp_path_factory, "slurm"), n_nodes=4)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


@pytest.fixture
def slurm_rig(slurm_rig_session):
    slurm_rig_session.reset()
    return slurm_rig_session
