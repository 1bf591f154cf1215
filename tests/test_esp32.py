"""The emulated ESP32 (pilectl/esp32.py: the official MicroPython image in the Wi-Fi QEMU
of ../shared/esp32) as a board on a cable and on a Wi-Fi network: the REPL over UART0
with mpremote, UART1 and UART2 both ways, a factory-programmed filesystem kept across a
power cycle and a reset, the emulated access point joined with only the test's own
services reachable, the uplink cut and restored, and a watchdog that resets the chip.
What the emulator cannot do, and what it costs the firmware, is in docs/esp32.md."""

import socket
import subprocess
import threading

import pytest
import serial
from helpers import BIN, ROOT, SITE_FW_TESTS, board_exec, board_fw_tests
from pilectl import build, deploy
from pilectl.esp32 import ACCESS_POINT, SERVICES_IP, Esp32, missing
from pilectl.sim.harness import free_port

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


def remote(board, code, timeout=60, resume=False):
    """Run `code` on the board with mpremote (raw REPL over UART0), after a soft reset
    unless `resume`."""
    return board_exec(board.uart0, code, timeout, resume)


class EchoServer(threading.Thread):
    """A TCP server on the host's 127.0.0.1 that sends back what it gets, once."""

    def __init__(self):
        super().__init__(daemon=True)
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(60)
        self.got = b""
        self.start()

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.got = conn.recv(100)
            conn.sendall(self.got)


@pytest.fixture(scope="module")
def echo():
    server = EchoServer()
    yield server
    server.sock.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory, echo):
    with Esp32(tmp_path_factory.mktemp("esp32"), reach=[echo.port], listen=[7700]) as esp32:
        yield esp32


def test_it_boots_micropython_and_mpremote_talks_to_it(board):
    assert remote(board, "import sys; print(sys.implementation._machine)") == \
        "Generic ESP32 module with ESP32"


def test_uart1_and_uart2_carry_bytes_both_ways(board):
    for number, path in ((1, board.uart1), (2, board.uart2)):
        with serial.Serial(path, 115200, timeout=5) as host:
            code = (f"import machine, time\nu = machine.UART({number}, 115200, rxbuf=256)\n"
                    "u.write(b'to the host')\ntime.sleep(3)\nprint(u.read().hex())")
            threading.Timer(2.0, host.write, (bytes(range(100)),)).start()
            got = remote(board, code)
            assert bytes.fromhex(got) == bytes(range(100))
            assert host.read(11) == b"to the host"


_JOIN = f"""
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
if not w.isconnected():
    w.connect({ACCESS_POINT!r}, '')
    for _ in range(200):
        if w.isconnected():
            break
        time.sleep_ms(100)
print('joined', w.isconnected())
"""


def _dial(host, port):
    return (f"import socket\ns = socket.socket()\ns.settimeout(10)\n"
            f"try:\n    s.connect(({host!r}, {port}))\n    s.send(b'from the pile')\n"
            f"    print('echo', s.recv(100))\nexcept OSError as e:\n    print('refused', e)\n"
            f"s.close()\n")


def test_wifi_reaches_the_tests_services_and_nothing_else(board, echo):
    """The board joins the emulated access point; a host service named in `reach` answers
    at SERVICES_IP, any other address is refused (QEMU's restrict=on)."""
    out = remote(board, _JOIN + _dial(SERVICES_IP, echo.port) + _dial("192.168.4.2", 22)
                 + _dial("1.1.1.1", 80))
    assert out.splitlines()[0] == "joined True", out
    assert "echo b'from the pile'" in out
    assert out.count("refused") == 2, out
    assert echo.got == b"from the pile"


_LISTEN = _JOIN + """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7700))
s.listen(1)
s.settimeout(30)
print('listening')
c, _ = s.accept()
c.settimeout(10)
c.send(b'hello from the pile')
try:
    print('got', c.recv(100))
except OSError as e:
    print('cut', e)
c.close()
s.close()
"""


def test_the_host_reaches_the_piles_port_and_the_uplink_can_be_cut(board):
    """`listen`: the board's port 7700 at 127.0.0.1:listening[7700] (hostfwd). With the
    uplink cut (`wifi(False)`) the station stays associated and nothing passes; restored,
    traffic flows again."""
    with subprocess.Popen([str(BIN / "mpremote"), "connect", board.uart0, "exec", _LISTEN],
                          stdout=subprocess.PIPE, text=True) as pile:
        assert pile.stdout.readline().strip() == "joined True"
        assert pile.stdout.readline().strip() == "listening"
        with socket.create_connection(("127.0.0.1", board.listening[7700]), 10) as host:
            host.settimeout(10)
            assert host.recv(100) == b"hello from the pile"
            board.wifi(False)
            host.sendall(b"lost")
            assert pile.stdout.readline().startswith("cut"), "traffic passed a cut uplink"
        pile.wait(30)
    board.wifi(True)
    assert "echo" not in remote(board, _JOIN + _dial(SERVICES_IP, free_port())), \
        "a port the test did not name was reached"


def test_the_filesystem_a_factory_programs_survives_a_power_cycle_and_a_reset(tmp_path):
    board = Esp32(tmp_path)
    board.program(ROOT / "boards" / "esp32.json", leave_out=["main.py"])  # nothing runs
    with board:
        remote(board, "with open('kept.txt', 'w') as f:\n    f.write('deployed')")
    with Esp32(tmp_path) as again:  # the same flash file: a power cycle
        assert remote(again, "print(open('kept.txt').read())") == "deployed"
        since = again.hard_reset()
        again.wait_for_banner(since=since)
        first = sorted(path.stem + ".mpy" for path in (ROOT / "firmware" / "pile").glob("*.py")
                       if path.name not in build.HOST_ONLY)[:2]
        assert remote(again, "import os; print(sorted(os.listdir('pile'))[:2])") == str(first)


def test_pilectl_deploy_finds_what_differs_and_the_firmware_starts(tmp_path):
    """`pilectl deploy` over UART0, unchanged, onto a board a factory programmed with the
    firmware but not its main.py: it copies main.py alone, and the firmware starts."""
    board = Esp32(tmp_path)
    board.program(ROOT / "boards" / "esp32.json", leave_out=["main.py"])
    with board:
        report = board.deploy(ROOT / "boards" / "esp32.json")
    assert report["files_copied"] == ["main.py"]
    assert report["banner"] == ("pile-esp32-qemu", deploy.source_version())
    assert report["machine"] == "Generic ESP32 module with ESP32"


def test_the_site_groups_rules_pass_on_the_esp32(tmp_path):
    """tests/fw's site-group cases (the allowances, the leader, a member, the site link)
    on the ESP32 (xtensawin .mpy, as a factory programs it, main.py left out so the
    firmware does not start), as on the unix port (tests/test_micropython.py)."""
    board = Esp32(tmp_path)
    board.program(ROOT / "boards" / "esp32.json", leave_out=["main.py"])
    with board:
        last, expected, output = board_fw_tests(board.uart0, SITE_FW_TESTS, resume=False)
    assert last == expected, output


def test_the_watchdog_resets_the_chip_and_says_so(tmp_path):
    with Esp32(tmp_path) as board:
        since = len(board.console())
        hung = subprocess.Popen([str(BIN / "mpremote"), "connect", board.uart0, "exec",
                                 "import machine, time\nw = machine.WDT(timeout=2000)\n"
                                 "time.sleep(20)"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            board.wait_for_banner(since=since + 1)
        finally:
            hung.kill()  # the board reset under it: no reply comes
            hung.wait()
        assert "task_wdt" in board.console()[since:]
        # no soft reset first: after one, the ESP32 port says SOFT_RESET
        assert remote(board, "import machine; print(machine.reset_cause() == "
                             "machine.WDT_RESET)", resume=True) == "True"


def test_the_deploys_watchdog_feeder_runs_on_an_esp32(tmp_path):
    """pilectl deploy's FEED_WATCHDOG (after a soft reset: ROMFS, frozen builds, the
    benches' on-board figures) asked for a virtual timer, which the ESP32 has not
    (TypeError): it takes hardware timer 0 there, and feeds the watchdog it started."""
    with Esp32(tmp_path) as board:
        since = len(board.console())
        assert remote(board, deploy.FEED_WATCHDOG + "import time\ntime.sleep(12)\n"
                      "print('fed')") == "fed"
        assert "task_wdt" not in board.console()[since:]
