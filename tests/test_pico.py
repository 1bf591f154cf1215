"""The emulated Pico (host_tools/pico/pico.mjs, pilectl/pico.py) as a board on a cable:
MicroPython's REPL over its USB serial with mpremote, UART0 and a GPIO from the host,
flash that survives a power cycle, and a watchdog that resets the chip."""

import shutil
import subprocess
import sys
import threading
import time

import pytest
import serial
from helpers import BIN, ROOT, SITE_FW_TESTS, board_exec, board_fw_tests
from pilectl import armprofile, deploy
from pilectl.boardbench import bench_source
from pilectl.pico import SHARED, Pico, PicoError, firmware_image, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


def remote(pico, code, timeout=30):
    """Run `code` on the board with mpremote (raw REPL over the USB serial)."""
    return board_exec(pico.usb, code, timeout)


@pytest.fixture(scope="module")
def pico(tmp_path_factory):
    with Pico(tmp_path_factory.mktemp("pico")) as board:
        yield board


def test_it_boots_micropython_and_mpremote_talks_to_it(pico):
    assert remote(pico, "import sys; print(sys.implementation._machine)") == \
        "Raspberry Pi Pico with RP2040"


def test_the_core_sleeps_when_idle_and_keeps_wall_time(pico):
    """An idle REPL waits for an interrupt (rp2040js's USB host answered every OUT
    transfer at once, which kept the core 94 % busy), so emulated time keeps up."""
    before = pico.stats()
    time.sleep(1)
    after = pico.stats()
    emulated = after["emulated_ns"] - before["emulated_ns"]
    idle = after["idle_ns"] - before["idle_ns"]
    wall_ns = (after["wall_ms"] - before["wall_ms"]) * 1e6
    assert idle > 0.9 * emulated
    assert abs(emulated - wall_ns) < 0.1 * wall_ns


def test_uart0_carries_bytes_both_ways_at_line_speed(pico):
    with serial.Serial(pico.uart0, 115200, timeout=2) as host:
        assert remote(pico, "import machine; machine.UART(0, 115200).write(b'to the host')"
                      "; print('sent')") == "sent"
        assert host.read(11) == b"to the host"
        sent = bytes(range(100))  # more than the 32-byte receive FIFO holds
        threading.Timer(1.0, host.write, (sent,)).start()
        got = remote(pico, "import machine, time\nu = machine.UART(0, 115200, rxbuf=256)\n"
                           "time.sleep(2)\nprint(u.read().hex())")
        assert bytes.fromhex(got) == sent


_BIG_FRAMES = """
import time
def big(a, b, c, d, e, f, g, h, i, j, k, m):
    return a + b + c + d + e + f + g + h + i + j + k + m
until = time.ticks_add(time.ticks_ms(), 2500)
while time.ticks_diff(until, time.ticks_ms()) > 0:
    big(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
"""


@pytest.mark.skipif(shutil.which(armprofile.NM) is None,
                    reason=f"{armprofile.NM} names the samples: apt-get install "
                           "binutils-arm-none-eabi (make arm-gcc)")
def test_the_profiler_finds_who_calls_a_c_function(pico):
    """Samples with return addresses (`profile(..., callers=K)`): a Python function whose
    frame passes 11 words has it allocated on the heap at every call, so `gc_alloc` is
    called from `fun_bc_call` (docs/pico.md, what the profiler found)."""
    elf = firmware_image("stock").with_suffix(".elf")
    if not elf.exists():
        pytest.skip(f"no {elf.name} beside the firmware image: the official build ships one")
    with subprocess.Popen([str(BIN / "mpremote"), "connect", pico.usb, "exec", _BIG_FRAMES],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as busy:
        time.sleep(1)
        samples = pico.profile(1, callers=3)
        busy.wait(60)
    chains = armprofile.callers(samples, elf, "gc_alloc")
    assert chains and "fun_bc_call" in chains[0][0], chains


def test_the_host_drives_an_input_pin(pico):
    for level in (1, 0, 1):
        pico.gpio(15, level)
        assert remote(pico, "import machine; print(machine.Pin(15, machine.Pin.IN).value())") \
            == str(level)


def test_the_flash_keeps_what_was_written_across_a_power_cycle(tmp_path):
    with Pico(tmp_path) as board:
        remote(board, "with open('/kept.txt', 'w') as f:\n    f.write('deployed')")
    with Pico(tmp_path, flash_firmware=False) as board:
        assert remote(board, "print(open('/kept.txt').read())") == "deployed"


def test_the_watchdog_resets_the_chip_and_says_so(tmp_path):
    with Pico(tmp_path) as board:
        hung = subprocess.Popen([str(BIN / "mpremote"), "connect", board.usb, "exec",
                                 "import machine, time\nw = machine.WDT(timeout=300)\n"
                                 "time.sleep(5)"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            assert board.wait_for("boot", 10)["cause"] == "watchdog"
        finally:
            hung.kill()  # the board reset under it: no reply comes
            hung.wait()
        assert remote(board, "import machine; print(machine.reset_cause() == "
                             "machine.WDT_RESET)") == "True"


def test_the_firmware_deploys_keeps_a_safety_rule_rides_a_bus_fault_and_stops():
    """`make hil-rp2`'s path, shortened: `pilectl deploy` over the USB serial, then the HIL
    suite's site export cap (a safety rule), lost meter (a bus fault) and the E-stop latch
    on GP15, with the plant on UART0 and the link on UART1; the oracle checks each."""
    done = subprocess.run([sys.executable, str(ROOT / "hil_tests" / "run_rp2.py"), "-q",
                           str(ROOT / "hil_tests" / "test_safety_rules.py"),
                           str(ROOT / "hil_tests" / "test_faults.py"),
                           "-k", "site_export_cap or lost_meter or estop_latches"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "on Raspberry Pi Pico with RP2040" in done.stdout
    assert "3 passed" in done.stdout


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A Pico with the firmware deployed (.mpy on littlefs), stopped at the REPL."""
    with Pico(tmp_path_factory.mktemp("deployed")) as board:
        board.deploy(ROOT / "boards" / "pico.json")
        board.interrupt()
        yield board


def test_a_decision_allocates_nothing_on_the_32_bit_port(deployed):
    """bench/decide_bench.py on the RP2040 with the deployed .mpy firmware: no heap
    allocated per decision, as on the unix port (tests/test_decide_allocation.py). The
    rp2 port has no sys.argv: the count is given in the source's place."""
    out = subprocess.run([str(BIN / "mpremote"), "connect", deployed.usb, "resume", "exec",
                          bench_source("decide_bench", 1000)],
                         capture_output=True, text=True, timeout=120)
    assert "heap allocated per decision: 0 bytes (0 in total)" in out.stdout, \
        out.stdout + out.stderr


_NATIVE = ("import pile.crc, pile.cobs, pile.modbus, pile.native as n\n"
           "print(pile.crc._kernel is n.crc16, pile.cobs.encode_into is n.cobs_encode, "
           "pile.modbus._find_reply is n.find_reply)")


def test_the_byte_loops_run_as_native_code_on_the_rp2040(deployed):
    """`pilectl deploy` built pile/native.py for the board's architecture (armv6m, from
    its sys.implementation._mpy): the firmware runs it, not the bytecode twins."""
    out = subprocess.run([str(BIN / "mpremote"), "connect", deployed.usb, "resume", "exec",
                          _NATIVE], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "True"], out.stdout + out.stderr


def test_the_site_groups_rules_pass_on_the_32_bit_port(tmp_path):
    """tests/fw's site-group cases (the allowances, the leader, a member, the site link's
    periods, signed and replayed messages) on the RP2040 with the deployed .mpy firmware,
    as on the unix port (tests/test_micropython.py): small ints end at 2^30 here. A board of
    its own: after the module's other tests the shared one's heap had no room left for
    them (a MemoryError importing test_siteleader)."""
    with Pico(tmp_path) as board:
        board.deploy(ROOT / "boards" / "pico.json")
        board.interrupt()
        last, expected, output = board_fw_tests(board.usb, SITE_FW_TESTS)
    assert last == expected, output


_UART_READS = """
import asyncio, time
from machine import UART, Pin
from pile.hal.mcu import RS485, UartReader
uart = UART(0, 19200, tx=Pin(0), rx=Pin(1), timeout=0, rxbuf=512)
port = RS485(uart, Pin(2, Pin.OUT), 19200, False)
view = memoryview(bytearray(256))
got = longest = 0
print('ready')
while got < 200:
    started = time.ticks_us()
    got += port.readinto(view) or 0
    longest = max(longest, time.ticks_diff(time.ticks_us(), started))
    time.sleep_ms(2)
print(got, longest)
async def read_all(stream, lateness):
    got = 0
    while got < 200:
        got += len(await stream.read(256))
    lateness.append(got)
async def tick(lateness):
    while len(lateness) < 2:
        due = time.ticks_add(time.ticks_ms(), 1)
        await asyncio.sleep_ms(1)
        lateness[0] = max(lateness[0], time.ticks_diff(time.ticks_ms(), due))
async def main():
    lateness = [0]
    print('ready')
    await asyncio.gather(read_all(UartReader(uart, asyncio.StreamReader(uart)), lateness),
                         tick(lateness))
    print(*lateness)
asyncio.new_event_loop()  # the stopped firmware's tasks stay queued: a clean loop
asyncio.run(main())
"""


def test_the_hal_reads_a_uart_without_waiting_for_more_bytes(deployed):
    """A MicroPython UART read asked for more than has come waits, busy, `timeout_char`
    for each further byte: a reply trickling in at 19200 baud held the core and every
    task for the whole frame. The HAL's Modbus port and link stream take what has come."""
    with serial.Serial(deployed.uart0, 19200) as host, subprocess.Popen(
            [str(BIN / "mpremote"), "connect", deployed.usb, "resume", "exec", _UART_READS],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as board:
        watchdog = threading.Timer(60, board.kill)  # a hung script fails, not hangs, the test
        watchdog.start()
        lines = []
        for line in board.stdout:  # 200 bytes each time the board says it is ready
            lines.append(line.strip())
            if line.strip() == "ready":
                host.write(bytes(200))
        watchdog.cancel()
        assert board.wait() == 0, "\n".join(lines)
    modbus, link = lines[1], lines[3]
    got, longest_us = map(int, modbus.split())
    assert got == 200 and longest_us < 1000, modbus  # 200 bytes take 115 ms on the wire
    lateness_ms, got = map(int, link.split())
    # a read that waits for the whole frame holds every task 104 ms; on a host whose other
    # core runs the rest of the suite, the emulator was descheduled long enough for 24 ms
    assert got == 200 and lateness_ms < 50, link


@pytest.mark.skipif(firmware_image("romfs") is None,
                    reason="no MicroPython build with a ROMFS partition: set PICO_FIRMWARE_ROMFS "
                           f"(RPI_PICO_ROMFS, boards/rp2/README.md) or put it in {SHARED}")
def test_a_romfs_deploy_takes_over_from_the_filesystem_and_is_not_rewritten(tmp_path):
    """`pilectl deploy --romfs` onto a board that ran the firmware from its filesystem:
    the `pile` package is imported from /rom (its bytecode in flash, not the heap), the
    filesystem's copy, which would shadow it, is gone, and a second deploy of the same
    firmware leaves the partition alone."""
    board_file = ROOT / "boards" / "pico.json"
    with Pico(tmp_path, firmware_image("romfs")) as board:
        board.deploy(board_file)
        first = board.deploy(board_file, layout="romfs")
        assert first["romfs_written"] and any(p.startswith("pile/") for p in first["files_removed"])
        again = board.deploy(board_file, layout="romfs")
        assert not again["romfs_written"] and again["banner"][0] == "pile-pico-001"
        deploy.interrupt(board.usb)  # a board just started can miss one raw-REPL request
        where = subprocess.run([str(BIN / "mpremote"), "connect", board.usb, "resume", "exec",
                                "import os, pile.firmware\nprint(pile.firmware.__file__, "
                                "[n for n in os.listdir('/') if n.startswith('pile')])\n"
                                + _NATIVE], capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == ["/rom/pile/firmware.mpy", "[]", "True", "True", "True"], \
        where.stdout + where.stderr


def frozen_build_is_older_than_the_sources():
    """A frozen image built before the last change to firmware/pile runs old code: the
    test would measure that, not this tree."""
    image = firmware_image("frozen")
    newest = max(p.stat().st_mtime for p in (ROOT / "firmware" / "pile").rglob("*.py"))
    return image is not None and image.stat().st_mtime < newest


@pytest.mark.skipif(firmware_image("frozen") is None,
                    reason="no build with the firmware frozen in: `make firmware-rp2` "
                           "(boards/rp2/README.md) or set PICO_FIRMWARE_FROZEN")
@pytest.mark.skipif(frozen_build_is_older_than_the_sources(),
                    reason="the frozen build is older than firmware/pile: rebuild it with "
                           "`make firmware-rp2` (boards/rp2/README.md)")
def test_a_frozen_deploy_runs_the_frozen_firmware_and_refuses_a_stock_board(tmp_path):
    """`pilectl deploy --frozen` on the production build: the frozen `pile` runs (the
    filesystem's copy from an earlier deploy retired) and a decision allocates nothing
    there too; on a stock build the deploy refuses before changing a file."""
    board_file = ROOT / "boards" / "pico.json"
    with Pico(tmp_path / "frozen", firmware_image("frozen")) as board:
        board.deploy(board_file)
        report = board.deploy(board_file, layout="frozen")
        assert any(p.startswith("pile/") for p in report["files_removed"])
        where = subprocess.run([str(BIN / "mpremote"), "connect", board.usb, "resume", "exec",
                                "import os, pile.firmware\nprint(pile.firmware.__file__, "
                                "[n for n in os.listdir('/') if n.startswith('pile')])"],
                               capture_output=True, text=True, timeout=60)
        # a frozen module's file is its source's name; the filesystem's would be .mpy
        assert where.stdout.split() == ["pile/firmware.py", "[]"], where.stdout + where.stderr
        # frozen literals above 8191 are big ints: a decision allocated 6 B on average
        out = subprocess.run([str(BIN / "mpremote"), "connect", board.usb, "resume", "exec",
                              bench_source("decide_bench", 1000)],
                             capture_output=True, text=True, timeout=120)
        assert "heap allocated per decision: 0 bytes (0 in total)" in out.stdout, \
            out.stdout + out.stderr
    with Pico(tmp_path / "stock") as board:
        board.deploy(board_file)
        with pytest.raises(PicoError, match="no firmware frozen in"):
            board.deploy(board_file, layout="frozen")
