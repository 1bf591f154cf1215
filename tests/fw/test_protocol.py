"""Protocol v1 sessions: every message type, every ERROR code, keys, replay and storage."""

import os

from fwtest import FreshState, Host, logged, pile_with_ev, raises, snapshot
from pile import events
from pile.app import ACTION_REBOOT, ACTION_RESET_FAULT, SLOT_UNSIGNED, Pile, key_id
from pile.cbor import dumps, loads
from pile.config import KEY_NUMBERS
from pile.cose import mac0_sign
from pile.protocol import (
    ACK,
    CMD_REBOOT,
    CMD_RELEASE,
    CMD_RESET_FAULT,
    CMD_STOP,
    COMMAND,
    CONFIG,
    CONFIG_GET,
    CONFIG_SET,
    ERR_AUTH,
    ERR_BAD_FIELD,
    ERR_BUSY,
    ERR_MALFORMED,
    ERR_OUT_OF_RANGE,
    ERR_REPLAY,
    ERR_UNKNOWN_TYPE,
    ERROR,
    EVENTS_GET,
    HELLO,
    KEY,
    PROTOCOL_VERSION,
    SETPOINT,
    TELEMETRY,
    Session,
)
from pile.store import Store

KEY_BYTES = b"K" * 32


def test_hello_carries_identity_nonce_and_next_seq():
    pile = Pile("test-001")
    hello = loads(Session(pile).hello())
    assert hello[0] == HELLO and hello[1] == 1
    assert hello[2] == "test-001" and hello[3] == pile.version and hello[7] == PROTOCOL_VERSION
    assert type(hello[4]) is bytes and len(hello[4]) == 8
    assert hello[8] == 0
    assert Pile("test-002").nonce != pile.nonce


def test_setpoint_is_acked_with_the_clamped_target():
    host = Host(pile_with_ev())
    ack = host.send(SETPOINT, {2: -7000, 3: 60})
    assert ack[0] == ACK and ack[2] == 1 and ack[3] == -5000  # export cap 0: covers the 5 kW load
    assert host.pile.ctl.setpoint == -7000 and host.pile.ctl.setpoint_live
    ack = host.send(SETPOINT, {2: 50000, 3: 60, 4: 3600, 5: 80})
    assert ack[3] == 6000  # 11 kW import cap less the 5 kW load


def test_setpoint_before_the_first_reading_is_busy():
    host = Host(Pile("test-001"))
    error = host.send(SETPOINT, {2: 1000, 3: 60})
    assert error[0] == ERROR and error[3] == ERR_BUSY and "reading" in error[4]
    assert not host.pile.ctl.setpoint_live


def test_setpoint_refusals_change_nothing():
    pile = pile_with_ev()
    host = Host(pile)
    before = snapshot(pile)
    for fields, code in (({2: 1000, 3: 0}, 6), ({2: 1000, 3: 3601}, 6), ({3: 60}, 3),
                         ({2: "1000", 3: 60}, 3), ({2: 1000, 3: 60.0}, 3),
                         ({2: 2000000, 3: 60}, 6), ({2: 1000, 3: 60, 5: 50}, 6),
                         ({2: True, 3: 60}, 3)):
        error = host.send(SETPOINT, fields)
        assert error[0] == ERROR and error[3] == code, (fields, error)
        assert error[2] == host.seq and type(error[4]) is str
    assert snapshot(pile) == before


def test_malformed_and_unknown_messages():
    host = Host(Pile("test-001"))
    for data in (b"\xff", b"\x01", dumps([3, 1]), dumps({0: 3}), dumps({1: 5}),
                 dumps({0: 3, 1: -1}), dumps({0: "3", 1: 1}), b""):
        error = host.raw(data)
        assert error[0] == ERROR and error[3] == ERR_MALFORMED, data
    assert host.send(99)[3] == ERR_UNKNOWN_TYPE
    assert host.send(TELEMETRY)[3] == ERR_UNKNOWN_TYPE  # TELEMETRY is not a request
    assert host.session.errors[ERR_MALFORMED] == 8 and host.session.errors[ERR_UNKNOWN_TYPE] == 2
    assert host.session.refused() == 10


def test_replay_and_seq_order():
    host = Host(pile_with_ev())
    assert host.send(SETPOINT, {2: 1000, 3: 60}, seq=10)[0] == ACK
    for seq in (10, 9, 0):
        error = host.send(SETPOINT, {2: -1000, 3: 60}, seq=seq)
        assert error[3] == ERR_REPLAY and error[2] == seq
    assert host.pile.ctl.setpoint == 1000
    assert host.send(SETPOINT, {2: 2000, 3: 60}, seq=11)[0] == ACK
    assert loads(host.session.hello())[8] == 12  # a restarted host resumes above 11


def listing(host):
    """Every config value, page by page as a full listing too long for one frame comes."""
    reply = host.send(CONFIG_GET)
    values = dict(reply[2])
    while 3 in reply:
        reply = host.send(CONFIG_GET, {3: reply[3]})
        values.update(reply[2])
    return values


def test_a_full_config_listing_comes_in_frames_the_link_carries():
    pile = Pile("test-001")
    pile.set_key(KEY_BYTES)
    host = Host(pile, key=KEY_BYTES)
    first = host.send(CONFIG_GET)
    assert set(KEY_NUMBERS[:22]) <= set(first[2])  # what hosts before the frequency keys knew
    assert first[3] == len(first[2])
    assert listing(host) == pile.cfg.values
    assert max(len(reply) for reply in host.replies) <= 510  # signed, with its CRC: <= 512
    assert host.send(CONFIG_GET, {3: len(KEY_NUMBERS)})[3] == ERR_OUT_OF_RANGE
    assert host.send(CONFIG_GET, {3: "next"})[3] == ERR_BAD_FIELD


def test_config_get_set_all_or_nothing():
    pile = Pile("test-001")
    host = Host(pile)
    assert listing(host) == pile.cfg.values
    wanted = host.send(CONFIG_GET, {2: ["min_soc", "fallback"]})[2]
    assert wanted == {"min_soc": 20, "fallback": "idle"}
    assert host.send(CONFIG_GET, {2: ["nope"]})[3] == ERR_BAD_FIELD
    assert host.send(CONFIG_GET, {2: "min_soc"})[3] == ERR_BAD_FIELD
    before = snapshot(pile)
    assert host.send(CONFIG_SET, {2: {"min_soc": 30, "max_soc": 101}})[3] == ERR_OUT_OF_RANGE
    assert host.send(CONFIG_SET, {2: {"min_soc": 30, "max_soc": "high"}})[3] == ERR_BAD_FIELD
    assert host.send(CONFIG_SET, {2: {"min_soc": 30, "bogus": 1}})[3] == ERR_BAD_FIELD
    assert host.send(CONFIG_SET, {2: {"min_soc": 90, "max_soc": 80}})[3] == ERR_OUT_OF_RANGE
    assert host.send(CONFIG_SET, {2: {}})[3] == ERR_BAD_FIELD
    assert host.send(CONFIG_SET, {2: {"fallback": "hold"}})[3] == ERR_OUT_OF_RANGE
    assert snapshot(pile) == before
    reply = host.send(CONFIG_SET, {2: {"min_soc": 30, "fallback": "charge"}})
    assert reply[0] == CONFIG and reply[2]["min_soc"] == 30 and pile.cfg.fallback == "charge"
    changes = [entry[2:] for entry in logged(pile, 0, 10)[-3:]]
    assert changes[0] == [events.EVENT_CONFIG_CHANGED, 2]
    numbers = sorted(entry[1] for entry in changes[1:] if entry[0] == events.EVENT_CONFIG_KEY)
    slot = SLOT_UNSIGNED << 8  # no technician key: the serial line's unsigned request
    assert numbers == [slot | KEY_NUMBERS.index("min_soc") + 1,
                       slot | KEY_NUMBERS.index("fallback") + 1]


def test_events_from_an_index():
    pile = Pile("test-001")
    host = Host(pile)
    for _ in range(30):
        host.send(COMMAND, {2: CMD_STOP})
    first = host.send(EVENTS_GET, {2: 0})[2]
    assert first[0] == [0, 0, events.EVENT_BOOT, events.RESET_POWER_ON] and len(first) == 24
    assert [e[0] for e in host.send(EVENTS_GET, {2: 25})[2]] == [25, 26, 27, 28, 29, 30]
    assert host.send(EVENTS_GET, {2: 1000})[2] == []
    assert host.send(EVENTS_GET, {2: "x"})[3] == ERR_BAD_FIELD


def test_commands_and_the_stop_latch():
    pile = pile_with_ev()
    host = Host(pile)
    assert host.send(COMMAND, {2: CMD_STOP})[0] == ACK and pile.ctl.stopped
    pile.ctl.estop = True
    error = host.send(COMMAND, {2: CMD_RELEASE})
    assert error[3] == ERR_BUSY and pile.ctl.stopped
    pile.ctl.estop = False
    assert host.send(COMMAND, {2: CMD_RELEASE})[0] == ACK and not pile.ctl.stopped
    host.send(COMMAND, {2: CMD_RESET_FAULT})
    host.send(COMMAND, {2: CMD_REBOOT})
    assert pile.take_actions() == ACTION_RESET_FAULT | ACTION_REBOOT
    assert host.send(COMMAND, {2: 5})[3] == ERR_OUT_OF_RANGE
    assert host.send(COMMAND)[3] == ERR_BAD_FIELD


def test_with_a_key_only_signed_fresh_messages_count():
    pile = pile_with_ev()
    pile.set_key(KEY_BYTES)
    host = Host(pile, KEY_BYTES)
    before = snapshot(pile)
    assert host.send(SETPOINT, {2: 1000, 3: 60}, sign=False)[3] == ERR_AUTH  # unsigned
    other = Host(pile, b"X" * 32)
    assert other.send(SETPOINT, {2: 1000, 3: 60})[3] == ERR_AUTH  # wrong key
    signed = mac0_sign(KEY_BYTES, dumps({0: 3, 1: 1, 2: 1000, 3: 60}), b"\x00" * 8)
    assert host.raw(signed)[3] == ERR_AUTH  # signed over another boot's nonce
    assert snapshot(pile) == before
    good = mac0_sign(KEY_BYTES, dumps({0: 3, 1: 1, 2: 1000, 3: 60}), pile.nonce)
    assert host.raw(good)[0] == ACK
    assert host.raw(good)[3] == ERR_REPLAY  # replayed
    hello = host.send(HELLO, sign=False)  # anyone may ask who this is; the answer is signed
    assert hello[0] == HELLO and hello[8] == 2
    assert host.session.refused() == 3 and other.session.refused() == 1


def test_signed_message_to_a_pile_without_key_is_refused():
    pile = Pile("test-001")
    host = Host(pile, KEY_BYTES)
    error = host.send(CONFIG_GET)
    assert error[3] == ERR_AUTH and "no link key" in error[4]


def test_key_is_write_only_and_serial_only():
    pile = Pile("test-001")
    tcp = Host(pile, may_provision=False)
    assert tcp.send(CONFIG_SET, {2: {KEY: KEY_BYTES}})[3] == ERR_AUTH
    serial = Host(pile)
    assert serial.send(CONFIG_SET, {2: {KEY: b"short"}})[3] == ERR_OUT_OF_RANGE
    assert serial.send(CONFIG_SET, {2: {KEY: KEY_BYTES + b"!"}})[3] == ERR_OUT_OF_RANGE
    assert serial.send(CONFIG_SET, {2: {KEY: KEY_BYTES, "min_soc": 30}})[3] == ERR_BAD_FIELD
    assert pile.key is None
    assert serial.send(CONFIG_SET, {2: {KEY: KEY_BYTES}})[2] == {}  # opened with the new key
    assert pile.key == KEY_BYTES and pile.kid == key_id(KEY_BYTES)
    serial.key = KEY_BYTES
    assert KEY not in serial.send(CONFIG_GET)[2]
    assert serial.send(CONFIG_GET, {2: [KEY]})[3] == ERR_BAD_FIELD
    for reply in serial.replies + tcp.replies:
        assert KEY_BYTES not in reply
    assert serial.send(CONFIG_SET, {2: {KEY: None}})[0] == CONFIG and pile.key is None


def test_config_and_key_survive_a_reboot_and_damage_is_reported():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        pile.set_config({"min_soc": 35})
        pile.set_key(KEY_BYTES)
        again = Pile("test-001", Store(state))
        assert again.cfg.min_soc == 35 and again.key == KEY_BYTES
        assert again.nonce != pile.nonce
        with open(state + "/config.json", "w") as f:
            f.write('{"min_soc": 3')  # cut short, as by a power loss outside the rename
        damaged = Pile("test-001", Store(state))
        assert damaged.cfg.min_soc == 20
        assert logged(damaged, 0, 5)[1][2] == events.EVENT_STORE_DAMAGED
        assert "config.json.bad" in os.listdir(state)
        with open(state + "/config.json", "w") as f:
            f.write('{"min_soc": 500}')  # readable, but no longer valid
        assert Pile("test-001", Store(state)).cfg.min_soc == 20


def test_a_damaged_or_wrong_length_key_file_boots_without_that_key():
    with FreshState() as state:
        store = Store(state)
        for text in ('"not hex at all"', '"0011"', "17"):
            with open(state + "/link_key.json", "w") as f:
                f.write(text)
            pile = Pile("test-001", store)  # boots
            assert pile.key is None and "link_key.json is damaged" in pile.problems[0]
            assert logged(pile, 0, 5)[1][2:] == [events.EVENT_STORE_DAMAGED, 2]
            assert "link_key.json.bad" in os.listdir(state)
            assert "link_key.json" not in os.listdir(state)


def test_telemetry_fields():
    pile = pile_with_ev()
    pile.site_w = 4200
    host = Host(pile)
    host.send(SETPOINT, {2: -3000, 3: 60})
    pile.ctl.decide(pile.now() + 1000, pile.tel, True, 4200, 0)  # one second: ramped all the way
    tel = loads(host.session.telemetry())
    assert tel[0] == TELEMETRY and sorted(tel) == list(range(19)) + [20, 21, 22]
    assert tel[17] == 50000 and tel[18] == 0  # grid frequency mHz, no frequency response
    assert tel[20] is None and tel[21] == tel[22] == 0  # no V2G budget, nothing out yet
    assert tel[4] == 600 and tel[5] == 250 and tel[12] == 4200 and tel[11] == 60
    assert tel[7] == 6800 and tel[8] == 4200 and tel[10] == -3000  # other load 4.2 kW
    pile.site_w = None
    assert loads(host.session.telemetry())[12] is None
    with raises(KeyError):
        tel[19]


def test_a_config_from_another_version_keeps_what_it_can():
    with FreshState() as state:
        store = Store(state)
        with open(state + "/config.json", "w") as f:  # a newer firmware's key, one bad value
            f.write('{"min_soc": 35, "ramp_w_per_s": 4000, "future_key": 7, "max_soc": 30}')
        pile = Pile("test-001", store)
        assert pile.cfg.min_soc == 35 and pile.cfg.ramp_w_per_s == 4000
        assert pile.cfg.max_soc == 100  # 30 is below the floor: left out, not everything
        assert "future_key" in pile.problems[0] and "max_soc" in pile.problems[1]
        codes = [e[2:] for e in logged(pile, 0, 5)]
        assert [events.EVENT_STORE_DAMAGED, 4] in codes and [events.EVENT_STORE_DAMAGED, 1] in codes
        pile.set_config({"min_soc": 40})
        again = Pile("test-001", store)
        assert again.cfg.min_soc == 40 and again.config_aside == {"future_key": 7}
