"""The host's protocol table (pilectl.wire) against the firmware's, as the host sees it
(pile.surface).

The two sides are written independently on purpose; this holds them together: every
number the host names is the firmware's, and the fields the host reads out of HELLO
and TELEMETRY carry what the firmware put there.
"""

import cbor2
from pile import surface as protocol
from pile.surface import Pile
from pilectl import wire

MESSAGE_TYPES = ("HELLO", "TELEMETRY", "SETPOINT", "ACK", "CONFIG_GET", "CONFIG_SET", "CONFIG",
                 "EVENTS_GET", "EVENTS", "COMMAND", "ERROR", "DIAGNOSTICS_GET", "DIAGNOSTICS",
                 "UPDATE_OFFER", "UPDATE_CHUNK", "UPDATE_GET", "UPDATE_COMMIT", "UPDATE_STATUS",
                 "SITE_ALLOWANCE", "SITE_REPORT")


def test_message_types_error_codes_and_commands_are_the_firmwares():
    for name in MESSAGE_TYPES:
        assert getattr(wire, name) == getattr(protocol, name), name
    errors = {getattr(protocol, k): k for k in vars(protocol) if k.startswith("ERR_")}
    assert set(wire.ERRORS) == set(errors)
    for name in errors.values():
        assert getattr(wire, name) == getattr(protocol, name), name
    commands = {k: getattr(protocol, k) for k in vars(protocol) if k.startswith("CMD_")}
    assert {"CMD_" + k.upper().replace("-", "_"): v for k, v in wire.COMMANDS.items()} == commands
    assert wire.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION
    assert wire.LINK_KEY == protocol.KEY
    assert wire.TECHNICIAN_KEY == protocol.TECHNICIAN_KEY and wire.SITE_KEY == protocol.SITE_KEY


def pile_with_readings():
    pile = Pile("contract-001")
    tel = pile.tel
    for value, name in enumerate(("power", "soc", "battery_temp", "converter_temp",
                                  "fault_code", "energy_in", "energy_out", "rated_charge",
                                  "rated_discharge"), start=101):
        setattr(tel, name, value)
    tel.grid_freq = 4998  # 0.01 Hz
    pile.site_w = 4321
    pile.ctl.decide(pile.now(), tel, True, 4321, 0)  # the converter was read: ready
    return pile


def test_hello_fields_read_what_the_firmware_sent():
    pile = pile_with_readings()
    hello = cbor2.loads(protocol.Session(pile).hello())
    named = {name: hello[key] for key, name in wire.HELLO_FIELDS.items()}
    assert named == {"pile_id": "contract-001", "firmware": pile.version, "nonce": pile.nonce,
                     "rated_charge_w": 108, "rated_discharge_w": 109,
                     "protocol": wire.PROTOCOL_VERSION}
    assert hello[wire.HELLO_NEXT_SEQ] == 0


def test_telemetry_fields_read_what_the_firmware_sent():
    pile = pile_with_readings()
    tel = cbor2.loads(protocol.Session(pile).telemetry())
    assert tel[wire.TYPE] == wire.TELEMETRY and tel[wire.SEQ] == 1
    named = {name: tel[key] for key, name in wire.TELEMETRY_FIELDS.items()}
    ctl = pile.ctl
    assert named == {"state": ctl.state, "power_w": 101, "soc_permille": 102,
                     "battery_temp_dc": 103, "converter_temp_dc": 104,
                     "max_charge_w": ctl.env.max_charge, "max_discharge_w": ctl.env.max_discharge,
                     "reasons": ctl.reasons, "applied_w": ctl.applied, "ttl_left_s": 0,
                     "site_w": 4321, "fault_code": 105, "uptime_s": ctl.uptime_s,
                     "energy_in_wh": 106, "energy_out_wh": 107, "grid_freq_mhz": 49980,
                     "freq_response_w": 0, "budget_left_wh": None, "day_out_wh": 0,
                     "week_out_wh": 0}
    assert set(tel) == {wire.TYPE, wire.SEQ, *wire.TELEMETRY_FIELDS}


def test_the_budget_fields_read_what_the_firmware_counted():
    pile = pile_with_readings()
    pile.set_config({"budget_wh_day": 5000, "budget_cycles_week_pct": 50,
                     "battery_capacity_wh": 40000})  # the week's budget: 20000 Wh
    pile.ctl.budget.run(3600 * 1000, 1200)  # an hour at 1.2 kW
    tel = cbor2.loads(protocol.Session(pile).telemetry())
    assert (tel[21], tel[22]) == (1200, 1200)
    assert tel[wire.TELEMETRY_BUDGET_LEFT] == 3800  # the day's, the smaller
    pile.ctl.budget.run(3600 * 1000 * 4, 1000)
    tel = cbor2.loads(protocol.Session(pile).telemetry())
    assert (tel[20], tel[21], tel[22]) == (0, 5200, 5200)


def test_ack_and_error_fields_read_what_the_firmware_sent():
    pile = pile_with_readings()
    session = protocol.Session(pile)
    request = {wire.TYPE: wire.SETPOINT, wire.SEQ: 7, wire.SETPOINT_POWER: 1000,
               wire.SETPOINT_TTL: 60}
    ack = cbor2.loads(session.handle(wire.encode(request)))
    assert ack[wire.TYPE] == wire.ACK and ack[wire.ACK_SEQ] == 7
    assert ack[wire.ACK_TARGET] == 0  # no EV in these readings: a closed envelope
    assert ack[wire.ACK_REASONS] == pile.ctl.env.reasons
    error = cbor2.loads(session.handle(wire.encode({**request, wire.SETPOINT_TTL: 0})))
    assert error[wire.TYPE] == wire.ERROR and error[wire.ERROR_SEQ] == 7
    assert error[wire.ERROR_CODE] == wire.ERR_REPLAY and "seq" in error[wire.ERROR_DETAIL]


def test_the_frequency_setpoint_fields_are_the_firmwares():
    pile = pile_with_readings()
    pile.tel.status = 0x11  # ready, EV connected
    session = protocol.Session(pile)
    curve = [[49800, -1000], [50200, 1000]]
    request = {wire.TYPE: wire.SETPOINT, wire.SEQ: 7, wire.SETPOINT_POWER: 0,
               wire.SETPOINT_TTL: 60, wire.SETPOINT_FREQ_MODE: wire.FREQ_CURVE,
               wire.SETPOINT_FREQ_CURVE: curve, wire.SETPOINT_FREQ_REVERT: 30}
    assert cbor2.loads(session.handle(cbor2.dumps(request)))[wire.TYPE] == wire.ACK
    assert pile.ctl._freq_mode == wire.FREQ_CURVE and pile.ctl._freq_ms == 30000
    assert pile.ctl._freq_curve == ((49800, -1000), (50200, 1000))
    request.update({wire.SEQ: 8, wire.SETPOINT_FREQ_MODE: wire.FREQ_DROOP})
    del request[wire.SETPOINT_FREQ_CURVE]
    assert cbor2.loads(session.handle(cbor2.dumps(request)))[wire.TYPE] == wire.ACK
    assert pile.ctl._freq_mode == wire.FREQ_DROOP


def test_update_states_are_the_firmwares():
    states = {getattr(protocol, "UPDATE_" + name.upper()): name
              for name in wire.UPDATE_STATES.values()}
    assert states == wire.UPDATE_STATES


def test_a_rollback_reads_in_hello_and_telemetry():
    pile = pile_with_readings()
    pile.rollback = ["0.2.0", "the trial raised ImportError: no module named 'x'", 1]
    pile.rolled_back = True
    session = protocol.Session(pile)
    hello, tel = cbor2.loads(session.hello()), cbor2.loads(session.telemetry())
    assert hello[wire.HELLO_ROLLBACK] == tel[wire.TELEMETRY_ROLLBACK] == pile.rollback
