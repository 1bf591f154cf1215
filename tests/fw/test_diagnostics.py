"""The DIAGNOSTICS reply: the firmware's own counters, and a worst case that fits one frame
(CPython and MicroPython)."""

from fwtest import RecordingHal, recording_board
from pile.app import Pile, key_id
from pile.cbor import dumps, loads
from pile.cose import mac0_sign, mac0_verify
from pile.firmware import Firmware
from pile.framing import MAX_FRAME
from pile.modbus import DeviceException, Timeout
from pile.protocol import DIAGNOSTICS, DIAGNOSTICS_GET, ERR_OUT_OF_RANGE, ERROR, Session

_KEY = b"D" * 32
_BIG = (1 << 30) - 1  # the largest small int on a 32-bit board


def wired_pile():
    """The whole firmware as `Firmware(board, hal)` wires it, on a HAL with nothing behind it."""
    firmware = Firmware(recording_board("diagnostics-0001"), RecordingHal())
    return firmware.pile, firmware.loop, firmware.link, firmware.wifi


def ask(pile, session, seq=1, part=None):
    fields = {0: DIAGNOSTICS_GET, 1: seq}
    if part is not None:
        fields[2] = part
    request = mac0_sign(_KEY, dumps(fields), pile.nonce, key_id(_KEY))
    reply = session.handle(request)
    return reply, loads(mac0_verify(_KEY, reply, pile.nonce))


def test_counters_come_from_the_loop_the_bus_and_the_link():
    pile, loop, link, wifi = wired_pile()
    pile.set_key(_KEY)
    loop.converter.master.timeouts = 3
    loop.converter.last_error = DeviceException(23, 2)
    loop.meter.last_error = Timeout("no reply")
    link.tcp_refused = 4
    _, reply = ask(pile, Session(pile))
    assert reply[0] == DIAGNOSTICS
    counters = reply[2]
    assert counters["modbus_timeouts"] == 3 and counters["tcp_refused"] == 4
    assert counters["converter_error"] == "DeviceException 2"
    assert counters["meter_error"] == "Timeout"
    assert counters["periods"] == 0 and counters["link_connections"] == 0
    assert counters["wifi_connects"] == wifi.connects


def test_the_largest_reply_fits_one_frame():
    pile, loop, link, wifi = wired_pile()
    pile.set_key(_KEY)
    master = loop.converter.master
    for name in ("transactions", "failures", "timeouts", "bad_replies", "exceptions",
                 "bytes_out", "bytes_in"):
        setattr(master, name, _BIG)
    loop.periods = loop.cuts = loop.poll_us = loop.meter.failures = _BIG
    loop.converter.last_error = DeviceException(23, 255)
    loop.meter.last_error = DeviceException(4, 255)
    link.tcp_refused = link.tcp_closed_idle = link.send_failures = wifi.connects = _BIG
    pile.flash_errors = pile.events.lost = pile.store.writes = pile.events.journal.writes = _BIG
    loop.heap_free = loop.heap_low = _BIG
    session = Session(pile)
    session.seq = _BIG
    reply, fields = ask(pile, session)
    assert len(fields[2]) == 22 and fields[3] == 2
    assert len(reply) + 2 <= MAX_FRAME, len(reply)
    reply, fields = ask(pile, session, 2, part=1)
    assert sorted(fields[2]) == ["event_next", "events_lost", "flash_errors", "flash_writes",
                                 "heap_free", "heap_low", "reset_cause"]
    assert len(reply) + 2 <= MAX_FRAME, len(reply)


def test_heap_and_flash_counters_are_the_second_part():
    pile, loop, link, wifi = wired_pile()
    pile.set_key(_KEY)
    pile.set_config({"min_soc": 25})
    pile.flush_events()
    _, fields = ask(pile, Session(pile), part=1)
    found = fields[2]
    assert found["flash_writes"] == 3  # the key, the config, one journal commit
    assert found["event_next"] == pile.events.next_index == 4  # boot, key, config and its key
    assert found["reset_cause"] == pile.reset_cause and found["flash_errors"] == 0
    _, fields = ask(pile, Session(pile), 2, part=2)
    assert fields[0] == ERROR and fields[3] == ERR_OUT_OF_RANGE


def test_a_pile_not_wired_yet_answers_an_empty_map():
    reply = loads(Session(Pile("bare-001")).handle(dumps({0: DIAGNOSTICS_GET, 1: 1})))
    assert reply[0] == DIAGNOSTICS and reply[2] == {}
