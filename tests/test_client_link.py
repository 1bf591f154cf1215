"""The host client on a real pty, with the pile's side played by the test: what a pile
may send before its HELLO must not make the client give up."""

import asyncio

import pytest
import serial
from pilectl import cose, wire
from pilectl.client import Client
from pilectl.sim.harness import PtyPair

KEY = bytes(range(32))
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"
AHEAD = 2**60  # a pile's next seq, beyond any the host's clock gives
pytestmark = pytest.mark.usefixtures("socat")


def test_telemetry_ahead_of_the_hello_is_set_aside(tmp_path):
    ptys = PtyPair(tmp_path / "pile", tmp_path / "host")
    pile = serial.Serial(ptys.a, 115200, timeout=2)

    async def session():
        connecting = asyncio.create_task(Client.serial(
            ptys.b, keyring=lambda pile_id: (KEY, None), timeout=3))
        asked = await asyncio.to_thread(pile.read_until, b"\x00")
        assert asked  # the delimiter the client sends first
        telemetry = {wire.TYPE: wire.TELEMETRY, wire.SEQ: 7, 2: 1}
        hello = {wire.TYPE: wire.HELLO, wire.SEQ: 8, wire.HELLO_PILE_ID: "race-001",
                 wire.HELLO_FIRMWARE: "0.1.0", wire.HELLO_NONCE: NONCE, 5: 11000, 6: 11000,
                 wire.HELLO_PROTOCOL: wire.PROTOCOL_VERSION, wire.HELLO_NEXT_SEQ: AHEAD}
        for fields in (telemetry, hello):  # a telemetry frame wins the race to the host
            pile.write(wire.frame(cose.sign(KEY, wire.encode(fields), NONCE)))
        client = await connecting
        assert client.hello[wire.HELLO_PILE_ID] == "race-001" and client.key == KEY
        assert client.seq == AHEAD - 1  # it resumes above what the pile said
        await client.close()

    try:
        asyncio.run(asyncio.wait_for(session(), 10))
    finally:
        pile.close()
        ptys.close()
