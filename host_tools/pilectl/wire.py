"""Link protocol v1 on the host (DESIGN section 5), built on independent libraries.

Framing uses the `cobs` package and fastcrc's CRC-16/MODBUS and messages use cbor2
(authentication: pilectl/cose.py, on `hmac`), so every host test also cross-checks the
firmware's own codec, COBS, CRC and HMAC instead of agreeing with itself.
"""

import cbor2
from cobs import cobs
from fastcrc import crc16

MAX_FRAME = 512  # message + CRC, before COBS
PROTOCOL_VERSION = 1

# The host's one table of protocol v1 numbers; tests/test_wire_contract.py holds it
# against the firmware, which is written independently.
HELLO, TELEMETRY, SETPOINT, ACK, CONFIG_GET, CONFIG_SET = 1, 2, 3, 4, 5, 6
CONFIG, EVENTS_GET, EVENTS, COMMAND, ERROR = 7, 8, 9, 10, 11
DIAGNOSTICS_GET, DIAGNOSTICS = 12, 13  # extension: the firmware's counters
DIAGNOSTIC_PARTS = 3  # DIAGNOSTICS field: how many parts; DIAGNOSTICS_GET's BODY asks for one
TYPE, SEQ = 0, 1
BODY = 2  # the one field of CONFIG_GET/SET, CONFIG, EVENTS_GET, EVENTS, COMMAND, DIAGNOSTICS

SETPOINT_POWER, SETPOINT_TTL, SETPOINT_DEPARTURE, SETPOINT_RESERVE = 2, 3, 4, 5
# extension: frequency-watt on top of the setpoint (docs/grid-services.md)
SETPOINT_FREQ_MODE, SETPOINT_FREQ_CURVE, SETPOINT_FREQ_REVERT = 6, 7, 8
FREQ_DROOP, FREQ_CURVE = 1, 2
ACK_SEQ, ACK_TARGET, ACK_REASONS = 2, 3, 4
CONFIG_NEXT = 3  # extension: where a config listing too long for one frame goes on
ERROR_SEQ, ERROR_CODE, ERROR_DETAIL = 2, 3, 4
HELLO_PILE_ID, HELLO_FIRMWARE, HELLO_NONCE, HELLO_PROTOCOL, HELLO_NEXT_SEQ = 2, 3, 4, 7, 8
HELLO_ROLLBACK = 9  # extension: [version, reason] of the last trial boot that rolled back
TELEMETRY_ROLLBACK = 19  # the same in TELEMETRY

# extension: field updates (docs/field-update.md); every one is answered by UPDATE_STATUS
UPDATE_OFFER, UPDATE_CHUNK, UPDATE_GET, UPDATE_COMMIT, UPDATE_STATUS = 14, 15, 16, 17, 18
SITE_ALLOWANCE, SITE_REPORT = 19, 20  # a site group's leader and members (docs/site-group.md)
OFFER_HEAD, OFFER_SIGNATURE, OFFER_DOWNGRADE = 2, 3, 4
CHUNK_OFFSET, CHUNK_DATA, CHUNK_LINK = 2, 3, 4
COMMIT_PACKAGE = 2
UPDATE_FIELDS = {2: "state", 3: "held", 4: "size", 5: "package_version", 6: "running",
                 7: "previous", 8: "rollback", 9: "detail", 10: "package", 11: "slot"}
UPDATE_STATES = {0: "idle", 1: "verifying", 2: "receiving", 3: "checking", 4: "rebooting",
                 5: "refused", 6: "trial"}

ERR_MALFORMED, ERR_UNKNOWN_TYPE, ERR_BAD_FIELD, ERR_AUTH = 1, 2, 3, 4
ERR_REPLAY, ERR_OUT_OF_RANGE, ERR_BUSY = 5, 6, 7
ERRORS = {ERR_MALFORMED: "malformed", ERR_UNKNOWN_TYPE: "unknown type",
          ERR_BAD_FIELD: "bad field", ERR_AUTH: "auth", ERR_REPLAY: "replay",
          ERR_OUT_OF_RANGE: "out of range", ERR_BUSY: "busy"}
COMMANDS = {"reset-fault": 1, "reboot": 2, "stop": 3, "release": 4}
TELEMETRY_FIELDS = {2: "state", 3: "power_w", 4: "soc_permille", 5: "battery_temp_dc",
                    6: "converter_temp_dc", 7: "max_charge_w", 8: "max_discharge_w",
                    9: "reasons", 10: "applied_w", 11: "ttl_left_s", 12: "site_w",
                    13: "fault_code", 14: "uptime_s", 15: "energy_in_wh", 16: "energy_out_wh",
                    17: "grid_freq_mhz", 18: "freq_response_w",  # 17 on: extensions
                    20: "budget_left_wh", 21: "day_out_wh", 22: "week_out_wh"}
TELEMETRY_BUDGET_LEFT = 20  # Wh the owner's V2G budget still allows; null: no budget
HELLO_FIELDS = {HELLO_PILE_ID: "pile_id", HELLO_FIRMWARE: "firmware", HELLO_NONCE: "nonce",
                5: "rated_charge_w", 6: "rated_discharge_w", HELLO_PROTOCOL: "protocol"}
LINK_KEY = "link_key"  # the write-only config keys that provision the aggregator's key
TECHNICIAN_KEY = "technician_key"  # and the technician's
SITE_KEY = "site_key"  # and a site group's (docs/site-group.md)


class WireError(ValueError):
    """A frame or message the host could not accept."""


def crc_bytes(message):
    """CRC-16/MODBUS, little-endian as on the wire."""
    return crc16.modbus(bytes(message)).to_bytes(2, "little")


def frame(message):
    if len(message) + 2 > MAX_FRAME:
        raise WireError(f"message is {len(message)} bytes, at most {MAX_FRAME - 2}")
    return cobs.encode(message + crc_bytes(message)) + b"\x00"


class Deframer:
    """Splits received bytes into checked messages; counts the frames it drops."""

    def __init__(self):
        self._pending = bytearray()
        self.dropped = 0

    def feed(self, data):
        self._pending += data
        *frames, self._pending = self._pending.split(b"\x00")
        messages = []
        for raw in frames:
            if not raw:
                continue
            try:
                body = cobs.decode(bytes(raw))
            except cobs.DecodeError:
                self.dropped += 1
                continue
            if len(body) < 3 or crc_bytes(body[:-2]) != body[-2:]:
                self.dropped += 1
                continue
            messages.append(body[:-2])
        if len(self._pending) > 2 * MAX_FRAME:  # no delimiter in sight: resynchronise
            self._pending.clear()
            self.dropped += 1
        return messages


def encode(fields):
    """Deterministic CBOR; with keys 0..23 cbor2's canonical order is RFC 8949's."""
    return cbor2.dumps(fields, canonical=True)


def decode(message):
    try:
        fields = cbor2.loads(message)
    except Exception as exc:  # cbor2 raises several decoder error kinds
        raise WireError(f"not CBOR: {exc}") from exc
    if not isinstance(fields, dict) or not isinstance(fields.get(TYPE), int):
        raise WireError("a message is a CBOR map with an integer type at key 0")
    return fields
