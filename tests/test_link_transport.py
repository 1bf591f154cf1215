"""The firmware's link under MicroPython, driven by the host client over real TCP and a pty.

TCP runs on 127.0.0.1; the serial line is a socat pty pair, one end opened by the
firmware's unix HAL (raw termios), the other by pyserial in the host client.
"""

import asyncio
import json
import socket
import struct
import subprocess
import time

import pytest
from helpers import FIRMWARE, MICROPYTHON, ROOT
from pile.events import EVENT_STOP
from pilectl import micropython_env, wire
from pilectl.client import Client, LinkError, PileError
from pilectl.sim.harness import PtyPair
from pilectl.vbench import free_port, unix_board

KEY = bytes(range(32))
pytestmark = pytest.mark.usefixtures("socat")


@pytest.fixture
def pty_pair(tmp_path):
    ptys = PtyPair(tmp_path / "pile", tmp_path / "host")
    yield ptys.a, ptys.b
    ptys.close()


class LinkServer:
    """tests/mp/link_only.py: the firmware's link as `build_link` makes it from a board file."""

    def __init__(self, directory, serial=None, key=None, insecure=False):
        self.port = free_port()
        board = unix_board("link-test", "unused", serial, tcp_port=self.port,
                           state_dir=str(directory / "state"), insecure=insecure)
        board_file = directory / "board.json"
        board_file.write_text(json.dumps(board))
        self.proc = subprocess.Popen([str(MICROPYTHON), "tests/mp/link_only.py", str(board_file),
                                      key.hex() if key else "-"],
                                     cwd=ROOT, env=micropython_env(FIRMWARE),
                                     stdout=subprocess.PIPE, text=True)
        self.lines = [self.proc.stdout.readline().strip()]
        assert self.lines[0] == "ready", self.lines

    def wait_for(self, line):
        self.lines.append(self.proc.stdout.readline().strip())
        assert self.lines[-1].startswith(line), self.lines

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    started = []

    def start(**kwargs):
        directory = tmp_path / f"pile-{len(started)}"
        directory.mkdir()
        started.append(LinkServer(directory, **kwargs))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_tcp_session_with_key(server):
    srv = server(key=KEY)
    srv.wait_for("tcp up")

    async def session():
        client = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        try:
            assert client.hello[2] == "link-test" and len(client.nonce) == 8
            with pytest.raises(PileError) as busy:  # no converter here: nothing to ask within
                await client.setpoint(-4000, 30)
            assert busy.value.code == wire.ERR_BUSY
            tel = await client.telemetry()
            assert tel["ttl_left_s"] == 0 and tel["applied_w"] == 0
            with pytest.raises(PileError) as refused:  # the link key is the aggregator's
                await client.config_set({"min_soc": 25})
            assert refused.value.code == wire.ERR_AUTH and "technician" in refused.value.detail
            assert (await client.config_get(["min_soc"])) == {"min_soc": 20}
            assert client.rejected == 0
        finally:
            await client.close()

    run(session())


def test_two_tools_sharing_a_key_are_not_each_others_replays(server):
    """An aggregator and the OCPP bridge both hold the link key, and a pile takes a seq
    only above the last it accepted under that key. Their requests, interleaved, are each
    taken the first time: none refused as a replay (the client would resume and retry,
    hiding it; the pile's own counter does not)."""
    srv = server(key=KEY)
    srv.wait_for("tcp up")

    async def interleaved():
        aggregator = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        bridge = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        try:
            for _ in range(3):
                await aggregator.config_get(["min_soc"])
                await bridge.config_get(["min_soc"])
            return (await aggregator.diagnostics())["requests_refused"]
        finally:
            await aggregator.close()
            await bridge.close()

    assert run(interleaved()) == 0


def test_a_reply_to_something_sent_before_is_not_taken_for_the_next(server):
    """A malformed frame sent as it is draws an ERROR (seq 0) nobody reads; the next
    request's reply is the one that names its seq, not that ERROR."""
    srv = server(key=KEY)
    srv.wait_for("tcp up")

    async def after_garbage():
        client = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        try:
            await client.send_raw(b"\x01\x02")  # framed, CRC good, not a CBOR map
            return await client.config_get(["min_soc"])
        finally:
            await client.close()

    assert run(after_garbage()) == {"min_soc": 20}


def test_wrong_key_is_reported_as_such(server):
    srv = server(key=KEY)
    srv.wait_for("tcp up")
    with pytest.raises(LinkError, match="different keys"):
        run(Client.tcp("127.0.0.1", srv.port, key=b"\x01" * 32, timeout=1))
    with pytest.raises(LinkError, match="has no key for it"):
        run(Client.tcp("127.0.0.1", srv.port, timeout=1))


def test_two_authenticated_clients_and_the_silent_one_gives_way(server):
    srv = server(key=KEY)
    srv.wait_for("tcp up")

    async def crowd():
        first = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        second = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        await second.config_get(["min_soc"])  # the first is now the one silent longest
        third = await Client.tcp("127.0.0.1", srv.port, key=KEY)  # gets in: the first goes
        with pytest.raises(LinkError):
            await first.config_get(["min_soc"])
        assert (await second.command("stop"))["target_w"] == 0
        assert (await third.events())[-1][2] == EVENT_STOP  # seen from the other client
        for client in (first, second, third):
            await client.close()

    run(crowd())


def test_idle_and_slow_connections_never_lock_the_aggregator_out(server):
    """Unauthenticated sockets (slowloris, half-open after a Wi-Fi drop) hold nothing: the
    aggregator gets in at once, and they are closed within seconds."""
    srv = server(key=KEY)
    srv.wait_for("tcp up")

    async def siege():
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(4)]
        slow = idle[-1][1]
        slow.write(b"\x05")  # a frame that never ends, a byte at a time
        aggregator = await Client.tcp("127.0.0.1", srv.port, key=KEY, timeout=2)
        assert await aggregator.config_get(["min_soc"]) == {"min_soc": 20}
        await asyncio.sleep(6.5)  # past the 5 s to authenticate
        for reader, writer in idle:
            while await asyncio.wait_for(reader.read(4096), 2):
                pass  # the HELLO, then EOF: closed by the pile
            writer.close()
        counters = await aggregator.diagnostics()
        assert counters["tcp_closed_idle"] == 3 and counters["link_connections"] == 1
        await aggregator.close()

    run(siege())


def test_tcp_waits_for_a_key_unless_insecure(server, pty_pair):
    srv = server(serial=pty_pair[0])
    srv.wait_for("refused: the TCP link needs a link key")
    with pytest.raises(LinkError, match="cannot reach"):
        run(Client.tcp("127.0.0.1", srv.port, timeout=1))

    async def provision():
        wired = await Client.serial(pty_pair[1])
        reply = await wired.provision_key(KEY)
        assert reply[2] == {} and wired.key == KEY
        await wired.close()

    run(provision())
    srv.wait_for("tcp up")

    async def over_tcp():
        client = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        assert (await client.config_get(["min_soc"])) == {"min_soc": 20}
        with pytest.raises(PileError) as refused:
            await client.provision_key(bytes(32))
        assert refused.value.code == wire.ERR_AUTH
        assert "USB serial link only" in refused.value.detail
        await client.close()

    run(over_tcp())

    async def key_removed():  # a client that finds no key is told so, not "too many"
        wired = await Client.serial(pty_pair[1], key=KEY)
        await wired.provision_key(None)
        await wired.close()
        with pytest.raises(PileError) as refused:
            await Client.tcp("127.0.0.1", srv.port, timeout=2)
        assert refused.value.code == wire.ERR_BUSY and "needs a link key" in refused.value.detail

    run(key_removed())

    insecure = server(insecure=True)
    insecure.wait_for("tcp up")

    async def open_bench():
        client = await Client.tcp("127.0.0.1", insecure.port)
        assert (await client.config_get(["min_soc"])) == {"min_soc": 20}
        await client.close()

    run(open_bench())


def test_serial_session_resumes_after_a_host_restart(server, pty_pair):
    server(serial=pty_pair[0], key=KEY)

    async def twice():
        for _ in range(2):
            client = await Client.serial(pty_pair[1], key=KEY)
            for _ in range(3):
                await client.config_get(["min_soc"])
            assert client.rejected == 0
            last = client.seq
            await client.close()
        client = await Client.serial(pty_pair[1], key=KEY)
        assert client.hello[8] == last + 1  # every seq of both sessions was taken
        await client.close()

    run(twice())


def test_connections_reset_by_the_peer_leave_no_traceback(server):
    srv = server(key=KEY)
    srv.wait_for("tcp up")
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.recv(512)  # the HELLO
        sock.send(b"\x05\x01\x02")  # half a frame
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, as after a dropped Wi-Fi
    time.sleep(0.5)

    async def still_serving():
        client = await Client.tcp("127.0.0.1", srv.port, key=KEY)
        assert await client.config_get(["min_soc"]) == {"min_soc": 20}
        await client.close()

    run(still_serving())
    srv.stop()
    printed = srv.proc.stdout.read()
    assert "Traceback" not in printed and "exception" not in printed, printed
