"""The Modbus master shared by two tasks: the control task's transaction and the E-stop
task's cut. A request waiting for the bus must not touch the one under way."""

import asyncio

from pile.clock import ticks_diff, ticks_ms
from pile.crc import crc16
from pile.modbus import WRITE_MULTIPLE, Master


class HeldEcho:
    """A device that answers each write as Modbus does (function 6 echoes the request,
    16 its first six bytes), but only once `held` is cleared."""

    def __init__(self):
        self.held = True
        self.frames = []
        self._reply = b""

    def start_send(self, frame):
        frame = bytes(frame)
        self.frames.append(frame)
        reply = bytearray(frame[:6])
        crc = crc16(reply)
        reply.append(crc & 0xFF)
        reply.append(crc >> 8)
        self._reply = bytes(reply)
        return 0

    def sent(self):
        return True

    def readinto(self, buf):
        if self.held or not self._reply:
            return None
        n = len(self._reply)
        buf[:n] = self._reply
        self._reply = b""
        return n

    def drain_input(self):
        pass


def test_a_write_waiting_for_the_bus_leaves_the_one_under_way_alone():
    port = HeldEcho()
    master = Master(port, 115200, retries=0, timeout_ms=2000)

    async def run():
        first = asyncio.create_task(master.write_single(1, 10, 0x1234))
        await asyncio.sleep_ms(20)  # its request sent, its reply held back
        cut = asyncio.create_task(master.write_multiple(1, 256, b"\x00\x00\x00\x00"))
        await asyncio.sleep_ms(20)  # the cut waits for the bus
        port.held = False
        return await first, await cut

    assert asyncio.run(run()) == (None, None)  # both confirmed: no BadReply
    assert [f[:6] for f in port.frames] == [b"\x01\x06\x00\x0a\x12\x34",
                                           bytes([1, WRITE_MULTIPLE, 1, 0, 0, 2])]
    assert master.failures == 0 and master.transactions == 2


class TimedEcho(HeldEcho):
    """Answers at once, noting when each request went out and each reply was taken."""

    def __init__(self):
        super().__init__()
        self.held = False
        self.sends = []
        self.taken = []

    def start_send(self, frame):
        self.sends.append(ticks_ms())
        return super().start_send(frame)

    def readinto(self, buf):
        n = super().readinto(buf)
        if n:
            self.taken.append(ticks_ms())
        return n


def test_back_to_back_requests_leave_the_line_silent_for_t3_5():
    """The inter-frame gap is waited before the next request (not after every reply), so a
    cut right after a poll still finds the line silent for 3.5 characters."""
    port = TimedEcho()
    master = Master(port, 9600, retries=0, timeout_ms=500)  # t3.5 = 4.01 ms: 5 ms

    async def run():
        await master.write_single(1, 10, 1)
        await master.write_single(1, 11, 0)

    asyncio.run(run())
    assert len(port.sends) == 2 and len(port.taken) == 2
    assert ticks_diff(port.sends[1], port.taken[0]) >= master.gap_ms == 5
