"""Fixtures for the host-side tests; shared paths and runners live in helpers.py."""

import pytest
from helpers import MICROPYTHON, MicroPythonWorker, run_micropython


@pytest.fixture(scope="session")
def micropython():
    if not MICROPYTHON.exists():
        pytest.fail("micropython is not installed in this environment: run `make setup`")
    return run_micropython


@pytest.fixture(scope="session")
def mp_worker(micropython):
    worker = MicroPythonWorker()
    yield worker
    worker.close()
