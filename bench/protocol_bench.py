"""Link protocol v1 sizes and speeds on the MicroPython unix port.

    MICROPYPATH=.frozen:firmware micropython bench/protocol_bench.py [rounds]

Bytes per SETPOINT and TELEMETRY as bare CBOR, as COSE_Mac0 (what goes on the
wire with a key), framed (COBS + CRC + delimiter); the same content as compact
JSON and, for the setpoint, as a representative OCPP 2.1 SetChargingProfile
call. Then microseconds per encode+decode, per sign+verify, per whole
request handled by the firmware's link and per TELEMETRY sent (built, signed, framed,
written), and heap bytes allocated per handled request. It runs on a board as well
(`pilectl bench --target rp2` does, on the emulated Pico): the link there is built
with the board's HAL.
"""

import asyncio
import gc
import json
import sys
import time

from pile.app import Pile, key_id
from pile.cbor import dumps, loads
from pile.cose import mac0_sign, mac0_verify
from pile.firmware import build_link
from pile.framing import frame
from pile.hal import select
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_READY

KEY = b"bench-key-0123456789abcdef-01234"
NONCE = b"\x11\x22\x33\x44\x55\x66\x77\x88"
KID = key_id(KEY)

SETPOINT = {0: 3, 1: 1000, 2: -7000, 3: 900}
TELEMETRY = {0: 2, 1: 70000, 2: 3, 3: -6950, 4: 612, 5: 312, 6: 455, 7: 11000, 8: 5000,
             9: 0x2080, 10: -7000, 11: 420, 12: 1850, 13: 0, 14: 86400, 15: 123456, 16: 65432}
SETPOINT_JSON = {"type": "setpoint", "seq": 1000, "power_w": -7000, "ttl_s": 900}
TELEMETRY_JSON = {"type": "telemetry", "seq": 70000, "state": 3, "power_w": -6950,
                  "soc_permille": 612, "battery_temp_dc": 312, "converter_temp_dc": 455,
                  "max_charge_w": 11000, "max_discharge_w": 5000, "reasons": 8320,
                  "applied_w": -7000, "ttl_left_s": 420, "site_w": 1850, "fault_code": 0,
                  "uptime_s": 86400, "energy_in_wh": 123456, "energy_out_wh": 65432}
# OCPP 2.1 CALL [2, id, action, payload]: a discharge setpoint as a charging profile.
OCPP_SETPOINT = [2, "19223201", "SetChargingProfile", {
    "evseId": 1,
    "chargingProfile": {
        "id": 1000, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "duration": 900,
                              "chargingSchedulePeriod": [{
                                  "startPeriod": 0, "limit": 11000,
                                  "operationMode": "CentralSetpoint", "setpoint": -7000}]}]}}]


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def timed(rounds, fn, arg):
    start = time.ticks_us()
    for _ in range(rounds):
        fn(arg)
    return time.ticks_diff(time.ticks_us(), start) / rounds


def roundtrip(message):
    loads(dumps(message))


def sign_verify(message):
    mac0_verify(KEY, mac0_sign(KEY, dumps(message), NONCE, KID), NONCE)


def sizes(name, message, as_json, ocpp=None):
    bare = dumps(message)
    signed = mac0_sign(KEY, bare, NONCE, KID)
    row = {"message": name, "cbor": len(bare), "cose_mac0": len(signed),
           "framed": len(frame(signed)), "json": len(compact(as_json))}
    if ocpp is not None:
        row["ocpp21_json"] = len(compact(ocpp))
    return row


class Sink:
    """The host's end of the line, reading nothing back: replies are framed and dropped."""

    def write(self, data):
        pass

    async def drain(self):
        pass


def handled(rounds, heap_rounds=30):
    """A pile with a key handling signed SETPOINTs on the firmware's own link
    (`build_link`): deframed, verified, applied, answered with a signed, framed ACK.

    Time is taken with the collector on; heap over `heap_rounds` with it off.
    """
    board = {"board": "unix_sim", "pile_id": "bench", "modbus": {"device": "unused"}}
    if sys.platform == "rp2":  # the board's HAL; this board file has no link UART
        board = {"board": "pico", "pile_id": "bench", "modbus": {}}
    pile = Pile("bench")
    pile.set_key(KEY)
    tel = pile.tel  # a first converter reading: before one, a SETPOINT is refused as busy
    tel.status = STATUS_READY | STATUS_EV_CONNECTED
    tel.soc, tel.battery_temp, tel.converter_temp = 600, 250, 350
    tel.ev_max_charge = tel.ev_max_discharge = tel.rated_charge = tel.rated_discharge = 11000
    pile.ctl.decide(pile.now(), tel, True, 3000, 0)
    link = build_link(pile, select(board), board)
    link.requests_per_s = 0  # measured flat out
    conn = link.open(None, Sink(), "serial")
    frames = [frame(mac0_sign(KEY, dumps({0: 3, 1: i + 1, 2: -7000, 3: 900}), pile.nonce,
                              KID)) for i in range(rounds + heap_rounds)]

    async def run():
        start = time.ticks_us()
        for data in frames[:rounds]:
            await conn.receive(data)
            await conn.flush()
        elapsed = time.ticks_diff(time.ticks_us(), start)
        start = time.ticks_us()
        for _ in range(rounds):
            conn.send(conn.session.telemetry())
            await conn.flush()
        telemetry = time.ticks_diff(time.ticks_us(), start)
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for data in frames[rounds:]:
            await conn.receive(data)
            await conn.flush()
        allocated = gc.mem_alloc() - before
        gc.enable()
        return elapsed, allocated, telemetry

    elapsed, allocated, telemetry = asyncio.run(run())
    if conn.session.accepted != rounds + heap_rounds:
        raise SystemExit("requests refused: %r" % conn.session.errors)
    return elapsed / rounds, allocated // heap_rounds, telemetry / rounds


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rows = []
    for name, message, as_json, ocpp in (("SETPOINT", SETPOINT, SETPOINT_JSON, OCPP_SETPOINT),
                                         ("TELEMETRY", TELEMETRY, TELEMETRY_JSON, None)):
        row = sizes(name, message, as_json, ocpp)
        rows.append(row)
        row["encode_decode_us"] = round(timed(rounds, roundtrip, message), 1)
        row["sign_verify_us"] = round(timed(rounds, sign_verify, message), 1)
    per_request_us, per_request_bytes, telemetry_us = handled(min(rounds, 300))  # in RAM
    print("%-10s %5s %10s %7s %5s %12s %15s %15s" % (
        "message", "cbor", "cose_mac0", "framed", "json", "ocpp21_json", "enc+dec us",
        "sign+verify us"))
    for row in rows:
        print("%-10s %5d %10d %7d %5d %12s %15.1f %15.1f" % (
            row["message"], row["cbor"], row["cose_mac0"], row["framed"], row["json"],
            row.get("ocpp21_json", "-"), row["encode_decode_us"], row["sign_verify_us"]))
    print("signed SETPOINT handled end to end (deframe, verify, apply, signed and framed ACK): "
          "%.1f us, %d heap bytes per request" % (per_request_us, per_request_bytes))
    print("TELEMETRY sent (built, signed, framed, written): %.1f us" % telemetry_us)
    print(json.dumps({"rows": rows, "request_us": per_request_us,
                      "request_heap_bytes": per_request_bytes, "telemetry_us": telemetry_us}))


main()
