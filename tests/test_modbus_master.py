"""The firmware's Modbus RTU master under MicroPython against a pymodbus server on a pty pair.

pymodbus serves registers on one end of a socat pair (host_tools/pilectl/sim/bus.py);
tests/mp/modbus_worker.py runs the firmware master on the other end. Faults are
injected in the server: silence, exception codes, corrupted CRC, noise, another unit.
"""

import asyncio
import json
import subprocess
import threading
import time

import pytest
import serial
from helpers import FIRMWARE, MICROPYTHON, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pile.crc import crc16
from pilectl import micropython_env
from pilectl.sim.bus import Device, Faults, start_server
from pilectl.sim.harness import PtyPair
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadWriteMultipleRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

pytestmark = pytest.mark.usefixtures("socat")
BAUD = 115200


def start_worker(device):
    """The firmware's master under MicroPython on `device`, one request a stdin line."""
    return subprocess.Popen([str(MICROPYTHON), "tests/mp/modbus_worker.py", device, str(BAUD)],
                            cwd=ROOT, env=micropython_env(FIRMWARE), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


class Bench:
    """socat pty pair, a pymodbus server thread on one end, the firmware master on the other."""

    def __init__(self, tmp_path):
        self.ptys = PtyPair(tmp_path / "master", tmp_path / "server")
        self.master_end, self.server_end = self.ptys.a, self.ptys.b
        self.faults = Faults()
        self.converter = Device(holding={a: a * 3 for a in range(0, 262)} |
                                {a: 0 for a in range(512, 516)})
        self.meter = Device(input={52: 0x4348, 53: 0x0000})  # 200.0 W as float32
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start_server(
                self.server_end, {1: self.converter, 2: self.meter}, self.faults, BAUD))
            started.set()
            self.loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        assert started.wait(5), "pymodbus server did not start"
        self.worker = start_worker(self.master_end)

    def call(self, line):
        self.worker.stdin.write(line + "\n")
        self.worker.stdin.flush()
        return json.loads(self.worker.stdout.readline())

    def close(self):
        self.worker.kill()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.ptys.close()


@pytest.fixture
def bench(tmp_path):
    b = Bench(tmp_path)
    yield b
    b.close()


def words(*values):
    return "".join(f"{v & 0xFFFF:04x}" for v in values)


def test_every_function_code(bench):
    assert bench.call("rh 1 0 18")["data"] == words(*(a * 3 for a in range(18)))
    assert bench.call("ri 2 52 2")["data"] == "43480000"
    assert bench.call("ws 1 260 1") == {"data": ""}
    assert bench.converter.holding[260] == 1
    assert bench.call(f"wm 1 256 {words(-1, -7000, 1, 42)}") == {"data": ""}
    assert [bench.converter.holding[a] for a in range(256, 260)] == [0xFFFF, 0xE4A8, 1, 42]
    reply = bench.call(f"rw 1 0 18 256 {words(0, 3000, 1, 43)}")
    assert reply["data"] == words(*(a * 3 for a in range(18)))
    assert bench.converter.holding[257] == 3000 and bench.converter.holding[259] == 43


def test_request_frames_are_pymodbus_frames(bench):
    framer = FramerRTU(DecodePDU(False))
    expected = [
        ReadHoldingRegistersRequest(address=0, count=18, dev_id=1),
        ReadInputRegistersRequest(address=52, count=2, dev_id=2),
        WriteSingleRegisterRequest(address=260, registers=[1], dev_id=1),
        WriteMultipleRegistersRequest(address=256, registers=[1, 2, 3, 4], dev_id=1),
        ReadWriteMultipleRegistersRequest(read_address=0, read_count=18, write_address=256,
                                          write_registers=[1, 2, 3, 4], dev_id=1),
    ]
    for line in ("rh 1 0 18", "ri 2 52 2", "ws 1 260 1", f"wm 1 256 {words(1, 2, 3, 4)}",
                 f"rw 1 0 18 256 {words(1, 2, 3, 4)}"):
        assert "data" in bench.call(line)
    assert bench.faults.received == [framer.buildFrame(pdu) for pdu in expected]


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 7, 8, 10, 11])
def test_every_exception_code_is_raised_with_its_code_and_not_retried(bench, code):
    bench.faults.exception = code
    reply = bench.call("rh 1 0 2")
    assert reply["error"] == "exception" and reply["code"] == code
    assert len(bench.faults.received) == 1  # an answer is an answer: no retry
    bench.faults.exception = None
    assert "data" in bench.call("rh 1 0 2")


def test_unmapped_address_and_missing_function_23(bench):
    assert bench.call("rh 1 1000 2")["code"] == 2
    bench.faults.no_function_23 = True
    assert bench.call(f"rw 1 0 18 256 {words(1, 2, 3, 4)}")["code"] == 1


def test_silence_times_out_after_retries_and_recovers(bench):
    bench.faults.silent = True
    started = time.monotonic()
    reply = bench.call("rh 1 0 2")
    elapsed = time.monotonic() - started
    assert reply["error"] == "Timeout"
    assert len(bench.faults.received) == 2  # the request and one retry
    assert elapsed < 2.0  # two 300 ms timeouts, not a hang
    bench.faults.silent = False
    assert bench.call("rh 1 0 2")["data"] == words(0, 3)
    stats = bench.call("stats")
    assert stats["timeouts"] == 1 and stats["failures"] == 1 and stats["transactions"] == 2


def test_corrupted_crc_and_another_units_reply_are_refused(bench):
    bench.faults.corrupt_crc = True
    reply = bench.call("rh 1 0 2")
    assert reply["error"] == "BadReply" and "CRC" in reply["message"]
    bench.faults.corrupt_crc = False
    bench.faults.claim_unit = 7
    reply = bench.call("rh 1 0 2")
    assert reply["error"] == "BadReply" and "unit 7" in reply["message"]
    bench.faults.claim_unit = None
    assert bench.call("rh 1 0 2")["data"] == words(0, 3)
    assert bench.call("stats")["bad_replies"] == 2


def test_noise_before_a_reply_is_skipped(bench):
    bench.faults.noise = b"\x13\x37\x01\x03\x04\xff"  # even a fake start of our own reply
    assert bench.call("rh 1 0 2")["data"] == words(0, 3)
    assert len(bench.faults.received) == 1


def test_a_late_reply_is_flushed_before_the_next_request(bench):
    bench.faults.delay_s = 0.7  # later than both 300 ms attempts
    assert bench.call("rh 1 0 2")["error"] == "Timeout"
    bench.faults.delay_s = 0
    time.sleep(1.0)  # both late replies are now waiting in the line
    assert bench.call("rh 1 3 2")["data"] == words(9, 12)


def test_stale_bytes_are_dropped_without_allocating(bench):
    bench.faults.delay_s = 0.7
    assert bench.call("rh 1 0 2")["error"] == "Timeout"
    bench.faults.delay_s = 0
    time.sleep(1.0)  # two late replies wait in the line
    assert bench.call("drain") == {"data": ""}  # done with the heap locked
    assert bench.call("rh 1 3 2")["data"] == words(9, 12)


class RawDevice:
    """The firmware master on one end of a pty pair, the test as the device on the other,
    writing each reply in pieces with pauses between (as a USB adapter's latency timer or
    a loaded bench host delivers them)."""

    def __init__(self, tmp_path):
        self.ptys = PtyPair(tmp_path / "master", tmp_path / "device")
        self.worker = start_worker(self.ptys.a)
        self.line = serial.Serial(self.ptys.b, BAUD, timeout=2)
        self.framer = FramerRTU(DecodePDU(False))

    def read_holding(self, values, pieces, pause_s, command="rh 1 3 2", requests=1):
        """Send `command`; answer each of its `requests` with `values` in `pieces`."""
        self.worker.stdin.write(command + "\n")
        self.worker.stdin.flush()
        request = self.framer.buildFrame(ReadHoldingRegistersRequest(
            address=3, count=len(values), dev_id=1))
        reply = self.framer.buildFrame(ReadHoldingRegistersResponse(registers=values,
                                                                    dev_id=1))
        cuts = [len(reply) * i // pieces for i in range(pieces + 1)]
        for _ in range(requests):
            assert self.line.read(len(request)) == request
            for i in range(pieces):
                if i:
                    time.sleep(pause_s)
                self.line.write(reply[cuts[i]:cuts[i + 1]])
        return json.loads(self.worker.stdout.readline())

    def close(self):
        self.worker.kill()
        self.line.close()
        self.ptys.close()


@pytest.fixture
def device(tmp_path):
    d = RawDevice(tmp_path)
    yield d
    d.close()


def test_a_reply_that_pauses_mid_frame_is_waited_for(device):
    """The master waits for the rest of a reply it has begun to hear, up to its timeout,
    instead of giving up after 20 ms of quiet and reading the late rest as the next
    reply's noise (which on the emulated Pico went on transaction after transaction)."""
    assert device.read_holding([9, 12], pieces=2, pause_s=0.08) == {"data": words(9, 12)}


def test_a_reply_in_pieces_allocates_what_a_whole_one_does(device):
    """Each further piece of a reply is taken without a heap allocation (a memoryview
    slice per look was one), so a converter polled every period for months costs the heap
    the same however its replies arrive."""
    values = list(range(20))
    whole = device.read_holding(values, 1, 0, "alloc rh 1 3 20", requests=2)
    pieces = device.read_holding(values, 5, 0.005, "alloc rh 1 3 20", requests=2)
    assert whole == pieces


REQUESTS = st.one_of(
    st.tuples(st.just("rh"), st.integers(0, 250), st.integers(1, 12)),
    st.tuples(st.just("ws"), st.integers(0, 261), st.integers(0, 0xFFFF)),
    st.tuples(st.just("wm"), st.integers(0, 250), st.lists(st.integers(0, 0xFFFF), min_size=1,
                                                           max_size=12)),
    st.tuples(st.just("rw"), st.integers(0, 250), st.integers(1, 12),
              st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=6)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(REQUESTS)
def test_random_requests_are_pymodbus_frames_and_replies_decode(bench, request):
    """The bytes the firmware puts on the wire, for any request, are pymodbus's frames."""
    framer = FramerRTU(DecodePDU(False))
    kind, address = request[0], request[1]
    bench.faults.received.clear()
    holding = bench.converter.holding
    if kind == "rh":
        count = request[2]
        reply = bench.call(f"rh 1 {address} {count}")
        pdu = ReadHoldingRegistersRequest(address=address, count=count, dev_id=1)
        assert reply["data"] == words(*(holding[a] for a in range(address, address + count)))
    elif kind == "ws":
        reply = bench.call(f"ws 1 {address} {request[2]}")
        pdu = WriteSingleRegisterRequest(address=address, registers=[request[2]], dev_id=1)
        assert holding[address] == request[2]
    elif kind == "wm":
        values = request[2]
        reply = bench.call(f"wm 1 {address} {words(*values)}")
        pdu = WriteMultipleRegistersRequest(address=address, registers=values, dev_id=1)
        assert [holding[address + i] for i in range(len(values))] == values
    else:
        count, values = request[2], request[3]
        reply = bench.call(f"rw 1 {address} {count} 256 {words(*values)}")
        pdu = ReadWriteMultipleRegistersRequest(read_address=address, read_count=count,
                                                write_address=256, write_registers=values,
                                                dev_id=1)
        assert reply["data"] == words(*(holding[a] for a in range(address, address + count)))
    assert "error" not in reply
    assert bench.faults.received == [framer.buildFrame(pdu)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_crc_matches_pymodbus(data):
    assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")
