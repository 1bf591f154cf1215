"""The `pile` under test: the virtual bench by default, a real board with --port and --bus.

Tests are `async def test_...(pile)`; this conftest runs each in its own event loop
with a fresh pile, and afterwards asserts that the plant's safety oracle recorded
no violation. `make hil PORT=/dev/ttyACM0 BUS=/dev/ttyUSB0` runs the same tests on
a board: the host runs the simulated plant on the USB-RS485 adapter BUS and talks
to the board's link on PORT.
"""

import asyncio
import inspect
import secrets
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pile_under_test import BoardPile, VirtualPile  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("hil", "hardware in the loop")
    group.addoption("--port", help="the board's link (USB serial), e.g. /dev/ttyACM0")
    group.addoption("--bus", help="the USB-RS485 adapter wired to the board's Modbus port")


def pytest_configure(config):
    config.addinivalue_line("markers", "virtual_only(reason): needs the virtual bench")


async def open_pile(config, directory):
    port, bus = config.getoption("--port"), config.getoption("--bus")
    if bool(port) != bool(bus):
        raise pytest.UsageError("give both --port (the board's link) and --bus (the RS485 "
                                "adapter), or neither for the virtual bench")
    if port:
        return await BoardPile.open(port, bus, secrets.token_bytes(32))
    return await VirtualPile.open(directory)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    marker = pyfuncitem.get_closest_marker("virtual_only")
    if marker and pyfuncitem.config.getoption("--port"):
        pytest.skip(marker.args[0] if marker.args else "needs the virtual bench")

    async def run():
        with tempfile.TemporaryDirectory(prefix="hil-") as directory:
            pile = await open_pile(pyfuncitem.config, Path(directory))
            try:
                await pyfuncitem.obj(pile)
            finally:
                await pile.close()
            assert pile.violations() == [], f"the safety oracle recorded: {pile.violations()}"

    started = time.monotonic()
    asyncio.run(run())
    pyfuncitem.user_properties.append(("seconds", round(time.monotonic() - started, 1)))
    return True


@pytest.fixture
def pile():
    """Placeholder so pytest accepts the argument; the pile is made in pytest_pyfunc_call."""
    return None
