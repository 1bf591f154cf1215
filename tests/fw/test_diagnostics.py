"""The DIAGNOSTICS reply: the firmware's own counters, in parts that each fit one frame
however large the counters grow (CPython and MicroPython)."""

from fwtest import RecordingHal, recording_board
from pile.app import Pile, key_id
from pile.cbor import dumps, loads
from pile.cose import mac0_sign, mac0_verify
from pile.firmware import Firmware, parts_of
from pile.framing import MAX_FRAME
from pile.modbus import DeviceException, Timeout
from pile.protocol import DIAGNOSTICS, DIAGNOSTICS_GET, ERR_OUT_OF_RANGE, ERROR, Session

_KEY = b"D" * 32
_BIG = (1 << 30) - 1  # the largest small int on a 32-bit board
_LARGEST = (1 << 64) - 1  # the largest integer CBOR carries in its shortest forms
_BROKER = {"host": "broker.example.net", "password": "secret", "topic_prefix": "v2g"}


def wired(broker=False):
    """The whole firmware as `Firmware(board, hal)` wires it, on a HAL with nothing behind
    it; with `broker`, its board file dials an MQTT broker too (never reached here)."""
    board = recording_board("diagnostics-0001")
    if broker:
        board["mqtt"] = _BROKER
    return Firmware(board, RecordingHal())


def wired_pile(broker=False):
    firmware = wired(broker)
    return firmware.pile, firmware.loop, firmware.link, firmware.wifi


def ask(pile, session, seq=1, part=None):
    fields = {0: DIAGNOSTICS_GET, 1: seq}
    if part is not None:
        fields[2] = part
    request = mac0_sign(_KEY, dumps(fields), pile.nonce, key_id(_KEY))
    reply = session.handle(request)
    return reply, loads(mac0_verify(_KEY, reply, pile.nonce))


def every_part(pile, session, seq=1):
    """[(signed reply, fields)] of every part, as `pilectl status` asks for them."""
    found = [ask(pile, session, seq)]
    for part in range(1, found[0][1][3]):
        found.append(ask(pile, session, seq + part, part))
    return found


def counters(pile, session=None):
    """Every counter of every part, checking no name comes twice."""
    found = {}
    for _, fields in every_part(pile, session or Session(pile)):
        assert fields[0] == DIAGNOSTICS
        for name in fields[2]:
            assert name not in found, name
        found.update(fields[2])
    return found


def test_counters_come_from_the_loop_the_bus_and_the_link():
    pile, loop, link, wifi = wired_pile()
    pile.set_key(_KEY)
    loop.converter.master.timeouts = 3
    loop.converter.last_error = DeviceException(23, 2)
    loop.meter.last_error = Timeout("no reply")
    link.tcp_refused = 4
    found = counters(pile)
    assert found["modbus_timeouts"] == 3 and found["tcp_refused"] == 4
    assert found["converter_error"] == "DeviceException 2"
    assert found["meter_error"] == "Timeout"
    assert found["periods"] == 0 and found["link_connections"] == 0
    assert found["wifi_connects"] == wifi.connects
    assert "mqtt_connects" not in found  # no broker in this board file


def test_every_part_of_the_largest_firmware_fits_one_frame():
    """A board with everything (meter, Wi-Fi, TCP and a broker), every counter at the
    largest a 32-bit board keeps in a small int, the session's seq too."""
    firmware = wired(broker=True)
    pile, loop, link, wifi = firmware.pile, firmware.loop, firmware.link, firmware.wifi
    pile.set_key(_KEY)
    master = loop.converter.master
    for name in ("transactions", "failures", "timeouts", "bad_replies", "exceptions",
                 "bytes_out", "bytes_in"):
        setattr(master, name, _BIG)
    loop.periods = loop.cuts = loop.poll_us = loop.meter.failures = _BIG
    loop.converter.last_error = DeviceException(23, 255)
    loop.meter.last_error = DeviceException(4, 255)
    link.tcp_refused = link.tcp_closed_idle = link.send_failures = wifi.connects = _BIG
    link.broker.connects = link.broker.failures = _BIG
    pile.flash_errors = pile.events.lost = pile.store.writes = pile.events.journal.writes = _BIG
    loop.heap_free = loop.heap_low = _BIG
    session = Session(pile)
    session.seq = _BIG
    parts = every_part(pile, session)
    assert len(parts) == pile.diagnostic_parts >= 2
    found = {}
    for reply, fields in parts:
        assert len(reply) + 2 <= MAX_FRAME, len(reply)
        assert fields[3] == len(parts)
        found.update(fields[2])
    assert sorted(found) == sorted(firmware.counters())
    for name in ("mqtt_connects", "mqtt_failures", "wifi_connects", "meter_error",
                 "heap_free", "flash_writes", "reset_cause", "requests_shed"):
        assert name in found, name


def test_a_part_keeps_its_counters_however_large_they_grow():
    """The parts are cut by the most each counter can take (any 64-bit integer, a text of
    24 characters), so counters at those sizes still fit, in the parts they started in."""
    firmware = wired(broker=True)
    pile = firmware.pile
    pile.set_key(_KEY)
    before = [sorted(fields[2]) for _, fields in every_part(pile, Session(pile))]
    real = firmware.counters()
    worst = {}
    for name, value in real.items():
        worst[name] = _LARGEST if type(value) is int else "E" * 40  # a text is cut to 24
    firmware.counters = lambda: worst
    session = Session(pile)
    session.seq = _LARGEST - 100
    parts = every_part(pile, session, seq=10)
    assert [sorted(fields[2]) for _, fields in parts] == before
    for reply, fields in parts:
        assert len(reply) + 2 <= MAX_FRAME, len(reply)
        for value in fields[2].values():
            assert value == _LARGEST or value == "E" * 24, value


def test_parts_are_cut_by_the_budget_in_name_order():
    named = {"b": 1, "a": None, "c": "x", "d": 7}
    assert parts_of(named) == [["a", "b", "c", "d"]]
    # each counter takes its name's 2 bytes and 9 (an integer) or 26 (a text or None)
    assert parts_of(named, 40) == [["a", "b"], ["c", "d"]]
    assert parts_of({"long": 1}, 3) == [["long"]]  # one counter over the budget: a part alone
    assert parts_of({}) == [[]]


def test_heap_and_flash_counters_are_in_the_reply():
    pile, loop, link, wifi = wired_pile()
    pile.set_key(_KEY)
    pile.set_config({"min_soc": 25})
    pile.flush_events()
    found = counters(pile)
    assert found["flash_writes"] == 3  # the key, the config, one journal commit
    assert found["event_next"] == pile.events.next_index == 4  # boot, key, config and its key
    assert found["reset_cause"] == pile.reset_cause and found["flash_errors"] == 0
    parts = pile.diagnostic_parts
    _, fields = ask(pile, Session(pile), 10, part=parts)
    assert fields[0] == ERROR and fields[3] == ERR_OUT_OF_RANGE


def test_a_pile_not_wired_yet_answers_an_empty_map():
    reply = loads(Session(Pile("bare-001")).handle(dumps({0: DIAGNOSTICS_GET, 1: 1})))
    assert reply[0] == DIAGNOSTICS and reply[2] == {}
