"""The `pile` under test: the virtual bench by default, a real board with --port and --bus.

Tests are `async def test_...(pile)`, run by pytest-asyncio; the `pile` fixture opens a
fresh pile for each and afterwards asserts that the plant's safety oracle recorded no
violation. `make hil PORT=/dev/ttyACM0 BUS=/dev/ttyUSB0` runs the same tests on a
board: the host runs the simulated plant on the USB-RS485 adapter BUS and talks to the
board's link on PORT.
"""

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pile_under_test import BoardPile, VirtualPile  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("hil", "hardware in the loop")
    group.addoption("--port", help="the board's link (USB serial), e.g. /dev/ttyACM0")
    group.addoption("--bus", help="the USB-RS485 adapter wired to the board's Modbus port")
    group.addoption("--estop", help="how to press the board's E-stop: HOST:PORT/PIN, an "
                    "emulated Pico's control port and its E-stop input (make hil-rp2 gives it)")


def pytest_configure(config):
    config.addinivalue_line("markers", "virtual_only(reason): needs the virtual bench")
    config.addinivalue_line("markers", "estop: presses the E-stop (the virtual bench's file, "
                            "or a board's input given by --estop)")
    port, bus = config.getoption("--port"), config.getoption("--bus")
    if bool(port) != bool(bus):
        raise pytest.UsageError("give both --port (the board's link) and --bus (the RS485 "
                                "adapter), or neither for the virtual bench")


@pytest.fixture(scope="session")
def board_key():
    """One link key for a board's whole session: provisioned by the first test."""
    return secrets.token_bytes(32)


@pytest.fixture
async def pile(request, tmp_path, board_key):
    """A fresh pile with its plant and an authenticated client; the oracle is checked after."""
    port, bus = request.config.getoption("--port"), request.config.getoption("--bus")
    marker = request.node.get_closest_marker("virtual_only")
    if marker and port:
        pytest.skip(marker.args[0] if marker.args else "needs the virtual bench")
    estop = request.config.getoption("--estop")
    if request.node.get_closest_marker("estop") and port and not estop:
        pytest.skip("pressing a board's E-stop needs --estop (a relay on a real bench)")
    if port:
        opened = await BoardPile.open(port, bus, board_key, estop=estop)
    else:
        opened = await VirtualPile.open(tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
    assert opened.violations() == [], f"the safety oracle recorded: {opened.violations()}"
