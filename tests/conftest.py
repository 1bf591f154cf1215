"""Fixtures for the host-side tests; shared paths and runners live in helpers.py."""

import shutil

import pytest
from helpers import MICROPYTHON, MicroPythonWorker, run_micropython
from pile import _cpython

_cpython.install_asyncio()  # the firmware's coroutines run here on CPython too


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


@pytest.fixture(scope="session")
def socat():
    """Pty pairs need socat; like every tool `make setup` installs, its absence fails."""
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: run `make setup` (it installs socat with apt-get)")


# `make test` runs on two xdist workers (docs/performance.md, "The test suite"). The emulated
# boards take a core each and keep their own time, so their tests run one after another
# on one worker (`--dist loadgroup`); everything else shares the other.
# tests/test_install.py builds its wheel in the repository's build/ once, in a module
# fixture: its tests stay on one worker too, or two builds collide there.
_GROUPS = {"test_pico.py": "boards", "test_pico_update.py": "boards",
           "test_esp32.py": "boards", "test_install.py": "install"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
