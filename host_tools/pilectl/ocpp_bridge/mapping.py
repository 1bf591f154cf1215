"""OCPP 2.1 charging profiles onto protocol-v1 setpoints, and the pile's telemetry onto
OCPP 2.1 reports: pure functions, so the conformance vectors test them without a socket.

Profiles arrive as the JSON the CSMS sent (camelCase, as the schemas spell it). A refused
profile raises `Refused(reason_code, info)`, which becomes the SetChargingProfile
response's `statusInfo`. docs/grid-services.md has the mapping table; every rule here
names where it comes from.
"""

from dataclasses import dataclass
from datetime import datetime

from pilectl import wire

# operationMode -> what the bridge does with it (the others are refused)
SUPPORTED_MODES = ("Idle", "ChargingOnly", "CentralSetpoint", "ExternalLimits", "LocalFrequency")
KNOWN_MODES = SUPPORTED_MODES + ("ExternalSetpoint", "CentralFrequency", "LocalLoadBalancing")
# purpose -> the operation modes it may carry (2.1 Part 2 §Q: only transaction profiles
# steer bidirectional power; a station maximum limits charging; external constraints
# come from a local system, never from the CSMS)
MODES_BY_PURPOSE = {
    "TxProfile": SUPPORTED_MODES,
    "TxDefaultProfile": SUPPORTED_MODES,
    "ChargingStationMaxProfile": ("ChargingOnly",),
}
# fields of a schedule period each mode needs, and those it must not carry (Q §2.2:
# Idle carries none, ChargingOnly a limit, CentralSetpoint a setpoint, LocalFrequency a
# curve; a setpoint stays within [dischargeLimit, limit])
_NEEDS = {"Idle": (), "ChargingOnly": ("limit",), "CentralSetpoint": ("setpoint",),
          "ExternalLimits": (), "LocalFrequency": ("v2xFreqWattCurve",)}
_FORBIDS = {
    "Idle": ("limit", "setpoint", "dischargeLimit", "v2xFreqWattCurve", "v2xBaseline"),
    "ChargingOnly": ("setpoint", "dischargeLimit", "v2xFreqWattCurve", "v2xBaseline"),
    "CentralSetpoint": ("v2xFreqWattCurve", "v2xBaseline"),
    "ExternalLimits": ("setpoint", "v2xFreqWattCurve", "v2xBaseline"),
    "LocalFrequency": ("setpoint",),
}
MAX_TTL_S = 3600  # protocol v1's longest ttl
BRIDGE_TTL_S = 5  # the pile falls back this soon after the bridge itself is gone
MAX_W = 1000000  # protocol v1's bound on any power


class Refused(ValueError):
    def __init__(self, reason_code, info):
        super().__init__(f"{reason_code}: {info}")
        self.reason_code = reason_code
        self.info = info


@dataclass
class PileRequest:
    """What the bridge asks the pile for while a profile is active."""

    power_w: int
    mode: str  # the operationMode it came from, for TransactionEvent
    freq_curve: list | None = None  # [[mHz, W], ...] for SETPOINT field 7

    def fields(self, ttl_s):
        """Keyword arguments for pilectl.client.Client.setpoint."""
        if self.freq_curve is None:
            return {"power_w": self.power_w, "ttl_s": ttl_s}
        return {"power_w": self.power_w, "ttl_s": ttl_s, "freq_mode": wire.FREQ_CURVE,
                "freq_curve": self.freq_curve}


def check_profile(evse_id, profile, transaction_id):
    """Raise Refused unless this station can carry out `profile` on `evse_id` (1: the
    pile's one EVSE; 0: the station) while `transaction_id` (or None) is under way."""
    purpose = profile["chargingProfilePurpose"]
    if purpose not in MODES_BY_PURPOSE:
        raise Refused("UnsupportedPurpose", f"{purpose} profiles are not taken from a CSMS "
                                            "by this station")
    station_wide = purpose == "ChargingStationMaxProfile"
    if evse_id != (0 if station_wide else 1):
        raise Refused("UnknownEvse", f"{purpose} goes to evseId {0 if station_wide else 1} "
                                     "on this one-EVSE station")
    if purpose == "TxProfile":
        if transaction_id is None:
            raise Refused("NoTransaction", "a TxProfile needs a transaction under way")
        if profile.get("transactionId") not in (None, transaction_id):
            raise Refused("TxNotFound", f"no transaction {profile['transactionId']!r}")
    if profile["chargingProfileKind"] == "Recurring":
        raise Refused("UnsupportedKind", "recurring profiles are not supported")
    for schedule in profile["chargingSchedule"]:
        if schedule["chargingRateUnit"] != "W":
            raise Refused("UnsupportedRateUnit", "a DC pile takes power limits in W")
        for period in schedule["chargingSchedulePeriod"]:
            _check_period(purpose, period)


def _check_period(purpose, period):
    mode = period.get("operationMode", "ChargingOnly")
    if mode not in SUPPORTED_MODES:
        raise Refused("UnsupportedMode", f"{mode} is not supported")
    if mode not in MODES_BY_PURPOSE[purpose]:
        raise Refused("InvalidOperationMode", f"{mode} is not allowed in a {purpose}")
    for name in _NEEDS[mode]:
        if name not in period:
            raise Refused("InvalidSchedule", f"{mode} needs {name}")
    for name in _FORBIDS[mode]:
        if name in period:
            raise Refused("InvalidSchedule", f"{mode} does not take {name}")
    if mode == "ExternalLimits" and "limit" not in period and "dischargeLimit" not in period:
        raise Refused("InvalidSchedule", "ExternalLimits needs limit or dischargeLimit")
    if "limit" in period and period["limit"] < 0:
        raise Refused("InvalidSchedule", "limit must not be negative (dischargeLimit is the "
                                         "discharge limit)")
    low, high = _bounds(period)
    if "setpoint" in period and not low <= period["setpoint"] <= high:
        raise Refused("InvalidSchedule", "setpoint outside [dischargeLimit, limit]")
    if mode == "LocalFrequency":
        curve = period["v2xFreqWattCurve"]
        hz = [point["frequency"] for point in curve]
        if not 2 <= len(curve) <= 20 or hz != sorted(set(hz)) or not 45 <= hz[0] <= hz[-1] <= 65:
            raise Refused("InvalidSchedule", "v2xFreqWattCurve needs 2..20 points with rising "
                                             "frequencies within 45..65 Hz")
        if any(abs(point["power"]) > MAX_W for point in curve) \
                or abs(period.get("v2xBaseline", 0)) > MAX_W:
            raise Refused("InvalidSchedule", f"curve powers must be within +-{MAX_W} W")


def _bounds(period):
    return (max(-MAX_W, period.get("dischargeLimit", -MAX_W)),
            min(MAX_W, period.get("limit", MAX_W)))


def current_period(profile, now, received):
    """The schedule period in force at `now` (a datetime), or None when the profile's
    schedules have ended or not begun. Relative and Dynamic profiles count from
    `received`, Absolute ones from their startSchedule."""
    schedule = profile["chargingSchedule"][0]
    start = received
    if profile["chargingProfileKind"] == "Absolute" and "startSchedule" in schedule:
        start = datetime.fromisoformat(schedule["startSchedule"].replace("Z", "+00:00"))
    elapsed = (now - start).total_seconds()
    if elapsed < 0 or "duration" in schedule and elapsed >= schedule["duration"]:
        return None
    found = None
    for period in sorted(schedule["chargingSchedulePeriod"], key=lambda p: p["startPeriod"]):
        if period["startPeriod"] <= elapsed:
            found = period
    return found


def request_for(period, station_max_w=None):
    """The pile request a schedule period makes, clamped to [dischargeLimit, limit] and
    the station maximum (a ChargingStationMaxProfile's limit), if any."""
    mode = period.get("operationMode", "ChargingOnly")
    low, high = _bounds(period)
    if station_max_w is not None:
        high = min(high, int(station_max_w))
    if mode == "ChargingOnly":
        low = 0
    clamp = lambda watts: int(max(low, min(high, round(watts))))  # noqa: E731
    if mode == "CentralSetpoint":
        return PileRequest(clamp(period["setpoint"]), mode)
    if mode == "ChargingOnly":
        return PileRequest(clamp(period["limit"]), mode)
    if mode == "LocalFrequency":
        # baseline + curve, both clamped: the pile adds the curve to its setpoint, and a
        # line between two clamped points stays inside the limits too
        base = clamp(period.get("v2xBaseline", 0))
        curve = [[round(point["frequency"] * 1000), clamp(base + point["power"]) - base]
                 for point in period["v2xFreqWattCurve"]]
        return PileRequest(base, mode, curve)
    return PileRequest(clamp(0), mode)  # Idle; ExternalLimits: no power of the bridge's own


def ttl_for(profile):
    """The setpoint ttl: the bridge's own dead-man time, shorter when the profile's
    maxOfflineDuration is."""
    offline = profile.get("maxOfflineDuration")
    if offline is None:
        return BRIDGE_TTL_S
    return max(1, min(BRIDGE_TTL_S, int(offline)))


# -- the pile's telemetry as OCPP reports -------------------------------------------------

STATE_NO_EV, STATE_FAULT, STATE_STOPPED = 6, 4, 5
STATE_CHARGING, STATE_DISCHARGING = 2, 3


def connector_status(tel):
    state = tel["state"]
    if state == STATE_FAULT:
        return "Faulted"
    if state == STATE_STOPPED:
        return "Unavailable"
    if state == STATE_NO_EV:
        return "Available"
    return "Occupied"


def charging_state(tel):
    return "Charging" if tel["state"] in (STATE_CHARGING, STATE_DISCHARGING) else \
        "SuspendedEVSE"


def sampled_values(tel):
    """MeterValues: power split into import (into the EV) and export, SoC, both energies."""
    power = tel["power_w"] or 0
    values = [
        {"measurand": "Power.Active.Import", "value": max(0, power),
         "unitOfMeasure": {"unit": "W"}},
        {"measurand": "Power.Active.Export", "value": max(0, -power),
         "unitOfMeasure": {"unit": "W"}},
        {"measurand": "SoC", "value": round(tel["soc_permille"] / 10, 1),
         "unitOfMeasure": {"unit": "Percent"}},
        {"measurand": "Energy.Active.Import.Register", "value": tel["energy_in_wh"],
         "unitOfMeasure": {"unit": "Wh"}},
        {"measurand": "Energy.Active.Export.Register", "value": tel["energy_out_wh"],
         "unitOfMeasure": {"unit": "Wh"}},
    ]
    if tel.get("grid_freq_mhz"):
        values.append({"measurand": "Frequency", "value": tel["grid_freq_mhz"] / 1000})
    return values


def charging_needs(tel):
    """NotifyEVChargingNeeds' chargingNeeds from what the pile reports it may do now."""
    return {"requestedEnergyTransfer": "DC_BPT", "availableEnergyTransfer": ["DC", "DC_BPT"],
            "controlMode": "DynamicControl",
            "v2xChargingParameters": {"maxChargePower": tel["max_charge_w"],
                                      "maxDischargePower": tel["max_discharge_w"]}}
