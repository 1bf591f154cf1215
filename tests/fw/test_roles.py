"""Replay across connections, direction, roles and the pile maker's hard limits
(CPython and MicroPython). Each case failed on the firmware before these rules."""

from fwtest import Host, pile_with_ev, raises, snapshot
from pile.app import SLOT_TECHNICIAN, Pile, key_id
from pile.cbor import dumps
from pile.config import ConfigError
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
    ERR_OUT_OF_RANGE,
    ERR_REPLAY,
    ERR_UNKNOWN_TYPE,
    EVENTS_GET,
    SETPOINT,
    TECHNICIAN_KEY,
    Session,
)

LINK = b"L" * 32
TECH = b"T" * 32


def keyed_pile(technician=True):
    pile = pile_with_ev()
    pile.set_key(LINK)
    if technician:
        pile.set_key(TECH, SLOT_TECHNICIAN)
    return pile


def test_a_signed_message_counts_once_per_boot_on_any_connection():
    pile = keyed_pile()
    first = Host(pile, LINK, may_provision=False)
    assert first.send(COMMAND, {2: CMD_STOP})[0] == ACK
    release = first.request(COMMAND, {2: CMD_RELEASE}, key=TECH)
    assert first.raw(release)[0] == ACK
    stop_again = first.request(COMMAND, {2: CMD_STOP}, key=LINK)
    assert first.raw(stop_again)[0] == ACK and pile.ctl.stopped
    technician = Host(pile, TECH)  # the technician releases over the serial link
    assert technician.send(COMMAND, {2: CMD_RELEASE})[0] == ACK and not pile.ctl.stopped
    before = snapshot(pile)
    for session in (Session(pile), Session(pile, may_provision=True)):  # new TCP, serial
        assert Host(pile, LINK, session=session).raw(stop_again)[3] == ERR_REPLAY
        assert Host(pile, TECH, session=session).raw(release)[3] == ERR_REPLAY
    assert snapshot(pile) == before and not pile.ctl.stopped


def test_the_piles_own_messages_never_count_as_requests():
    pile = keyed_pile()
    aggregator = Host(pile, LINK, may_provision=False)
    reflected = aggregator.session.telemetry()  # signed by the pile, seq 1 of its own
    for _ in range(40):
        reflected = aggregator.session.telemetry()
    assert aggregator.raw(reflected)[3] == ERR_UNKNOWN_TYPE
    assert aggregator.raw(aggregator.session.hello())[0] == 1  # a HELLO only greets again
    assert pile.seqs == [-1, -1, -1, -1]  # no window moved (the site key has one too)
    assert aggregator.send(SETPOINT, {2: 1000, 3: 60}, seq=1)[0] == ACK  # nothing skipped


def test_the_aggregator_asks_for_power_reads_and_stops_nothing_more():
    pile = keyed_pile()
    aggregator = Host(pile, LINK, may_provision=False)
    before = dict(pile.cfg.values)
    for changes in ({"min_soc": 0}, {"reserve_soc": 20}, {"battery_cutoff_c": 80},
                    {"ramp_w_per_s": 1000000}, {"tick_ms": 1000}, {"meter_stale_s": 60}):
        error = aggregator.send(CONFIG_SET, {2: changes})
        assert error[3] == ERR_AUTH and "technician" in error[4], error
    for code in (CMD_RELEASE, CMD_RESET_FAULT, CMD_REBOOT):
        assert aggregator.send(COMMAND, {2: code})[3] == ERR_AUTH
    assert pile.cfg.values == before and pile.actions == 0
    assert aggregator.send(SETPOINT, {2: -2000, 3: 60})[0] == ACK
    assert aggregator.send(CONFIG_GET)[0] == CONFIG and aggregator.send(EVENTS_GET)[2]
    assert aggregator.send(COMMAND, {2: CMD_STOP})[0] == ACK and pile.ctl.stopped
    technician = Host(pile, TECH, may_provision=False)  # the technician's key, over TCP
    assert technician.send(CONFIG_SET, {2: {"min_soc": 25}})[0] == CONFIG
    assert technician.send(COMMAND, {2: CMD_RELEASE})[0] == ACK


def test_the_wired_link_is_the_technician_until_a_technician_key_exists():
    pile = keyed_pile(technician=False)
    wired = Host(pile, LINK)
    assert wired.send(CONFIG_SET, {2: {"min_soc": 25}})[0] == CONFIG
    assert wired.send(CONFIG_SET, {2: {TECHNICIAN_KEY: TECH}})[2] == {}
    assert wired.send(CONFIG_SET, {2: {"min_soc": 30}})[3] == ERR_AUTH  # the key decides now
    assert Host(pile, TECH).send(CONFIG_SET, {2: {"min_soc": 30}})[0] == CONFIG
    over_tcp = Host(pile, TECH, may_provision=False)
    assert over_tcp.send(CONFIG_SET, {2: {TECHNICIAN_KEY: None}})[3] == ERR_AUTH  # USB only


def test_hard_limits_from_the_board_file_bound_every_message():
    bounds = {"battery_cutoff_c": [1, 52], "min_soc": [15, 60], "ramp_w_per_s": [10, 8000]}
    pile = Pile("bounded-001", bounds=bounds)
    assert pile.cfg.battery_cutoff_c == 52  # the default 55 moved inside the limit
    assert pile.cfg.ramp_w_per_s == 5000 and pile.cfg.min_soc == 20
    technician = Host(pile)
    for changes in ({"battery_cutoff_c": 53}, {"min_soc": 10}, {"ramp_w_per_s": 9000}):
        error = technician.send(CONFIG_SET, {2: changes})
        assert error[3] == ERR_OUT_OF_RANGE, error
    assert "1..52" in technician.send(CONFIG_SET, {2: {"battery_cutoff_c": 60}})[4]
    assert technician.send(CONFIG_SET, {2: {"min_soc": 15}})[0] == CONFIG


def test_hard_limits_themselves_are_checked():
    for bounds in ({"min_soc": [0, 101]}, {"min_soc": [50, 40]}, {"bogus": [1, 2]},
                   {"fallback": ["idle", "idle"]}, {"min_soc": 20}, [1, 2]):
        with raises(ConfigError):
            Pile("bounded-001", bounds=bounds)


def test_a_technician_kid_on_the_aggregator_key_gains_nothing():
    pile = keyed_pile()
    aggregator = Host(pile, LINK, may_provision=False)
    message = dumps({0: CONFIG_SET, 1: 1, 2: {"min_soc": 0}})
    claimed = mac0_sign(LINK, message, pile.nonce, key_id(TECH))  # the kid names no role
    assert aggregator.raw(claimed)[3] == ERR_AUTH and pile.cfg.min_soc == 20
