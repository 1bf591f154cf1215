"""Conformance vectors for the OCPP 2.1 bridge's mapping, written from the JSON schemas the
`ocpp` package ships (its own v21 tests are few): every request vector is first held
against SetChargingProfileRequest's schema, every report the bridge builds against its
message's schema, so a vector cannot drift from what a real CSMS may send."""

import json
from datetime import UTC, datetime, timedelta
from importlib import resources

import jsonschema
import pytest
from pilectl import wire
from pilectl.ocpp_bridge import mapping

TX = "tx-1"
NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


def schema(name):
    return json.loads((resources.files("ocpp.v21") / "schemas" / f"{name}.json").read_text())


def profile(mode=None, purpose="TxProfile", kind="Relative", unit="W", **period):
    if mode is not None:
        period["operationMode"] = mode
    body = {"id": 7, "stackLevel": 0, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind,
            "chargingSchedule": [{"id": 1, "chargingRateUnit": unit,
                                  "chargingSchedulePeriod": [{"startPeriod": 0, **period}]}]}
    if purpose == "TxProfile":
        body["transactionId"] = TX
    return body


CURVE = [{"frequency": 49.5, "power": -4000}, {"frequency": 49.9, "power": 0},
         {"frequency": 50.1, "power": 0}, {"frequency": 50.5, "power": 4000}]

# (name, evse id, profile, what the pile is asked: power W, or a curve too)
ACCEPTED = [
    ("idle", 1, profile("Idle"), 0, None),
    ("charging only", 1, profile("ChargingOnly", limit=7000), 7000, None),
    ("no mode is charging only", 1, profile(limit=3000.4), 3000, None),
    ("central setpoint discharge", 1, profile("CentralSetpoint", setpoint=-5000,
                                              dischargeLimit=-6000, limit=11000), -5000, None),
    ("central setpoint charge", 1, profile("CentralSetpoint", setpoint=4000), 4000, None),
    ("external limits", 1, profile("ExternalLimits", limit=5000, dischargeLimit=-5000), 0,
     None),
    ("local frequency", 1, profile("LocalFrequency", v2xBaseline=-1000,
                                   v2xFreqWattCurve=CURVE), -1000,
     [[49500, -4000], [49900, 0], [50100, 0], [50500, 4000]]),
    ("local frequency clamped by its limits", 1,
     profile("LocalFrequency", v2xFreqWattCurve=CURVE, limit=2000, dischargeLimit=-3000),
     0, [[49500, -3000], [49900, 0], [50100, 0], [50500, 2000]]),
    ("a default profile", 1, profile("CentralSetpoint", purpose="TxDefaultProfile",
                                     setpoint=-2000), -2000, None),
    ("a station maximum", 0, profile("ChargingOnly", purpose="ChargingStationMaxProfile",
                                     limit=9000), 9000, None),
]

# (name, evse id, profile, transaction under way, reasonCode)
REFUSED = [
    ("idle carries no limit", 1, profile("Idle", limit=0), TX, "InvalidSchedule"),
    ("charging only needs a limit", 1, profile("ChargingOnly"), TX, "InvalidSchedule"),
    ("charging only takes no setpoint", 1, profile("ChargingOnly", limit=5, setpoint=5), TX,
     "InvalidSchedule"),
    ("central setpoint needs a setpoint", 1, profile("CentralSetpoint", limit=5000), TX,
     "InvalidSchedule"),
    ("setpoint above its limit", 1, profile("CentralSetpoint", setpoint=6000, limit=5000), TX,
     "InvalidSchedule"),
    ("setpoint below its discharge limit", 1,
     profile("CentralSetpoint", setpoint=-6000, dischargeLimit=-5000), TX, "InvalidSchedule"),
    ("external limits need a limit", 1, profile("ExternalLimits"), TX, "InvalidSchedule"),
    ("local frequency needs a curve", 1, profile("LocalFrequency"), TX, "InvalidSchedule"),
    ("a one-point curve", 1, profile("LocalFrequency", v2xFreqWattCurve=CURVE[:1]), TX,
     "InvalidSchedule"),
    ("a falling curve", 1, profile("LocalFrequency", v2xFreqWattCurve=CURVE[::-1]), TX,
     "InvalidSchedule"),
    ("a curve at 70 Hz", 1, profile("LocalFrequency", v2xFreqWattCurve=[
        {"frequency": 50, "power": 0}, {"frequency": 70, "power": 0}]), TX, "InvalidSchedule"),
    ("a negative limit", 1, profile("ChargingOnly", limit=-100), TX, "InvalidSchedule"),
    ("external setpoint", 1, profile("ExternalSetpoint"), TX, "UnsupportedMode"),
    ("central frequency", 1, profile("CentralFrequency"), TX, "UnsupportedMode"),
    ("local load balancing", 1, profile("LocalLoadBalancing"), TX, "UnsupportedMode"),
    ("a station maximum steers no discharge", 0,
     profile("CentralSetpoint", purpose="ChargingStationMaxProfile", setpoint=-1000), TX,
     "InvalidOperationMode"),
    ("external constraints come from no CSMS", 1,
     profile("ChargingOnly", purpose="ChargingStationExternalConstraints", limit=1000), TX,
     "UnsupportedPurpose"),
    ("local generation", 1, profile("ChargingOnly", purpose="LocalGeneration", limit=1), TX,
     "UnsupportedPurpose"),
    ("a transaction profile without a transaction", 1, profile("Idle"), None, "NoTransaction"),
    ("another transaction", 1, {**profile("Idle"), "transactionId": "tx-9"}, TX, "TxNotFound"),
    ("a station maximum on the EVSE", 1,
     profile("ChargingOnly", purpose="ChargingStationMaxProfile", limit=1), TX, "UnknownEvse"),
    ("a transaction profile on the station", 0, profile("Idle"), TX, "UnknownEvse"),
    ("amperes", 1, profile("ChargingOnly", unit="A", limit=16), TX, "UnsupportedRateUnit"),
    ("recurring", 1, profile("Idle", kind="Recurring"), TX, "UnsupportedKind"),
]


def request_is_valid(evse_id, body):
    jsonschema.validate({"evseId": evse_id, "chargingProfile": body},
                        schema("SetChargingProfileRequest"))


@pytest.mark.parametrize("name, evse_id, body, power, curve", ACCEPTED,
                         ids=[v[0] for v in ACCEPTED])
def test_accepted_profiles_become_these_pile_requests(name, evse_id, body, power, curve):
    request_is_valid(evse_id, body)
    mapping.check_profile(evse_id, body, TX)
    period = mapping.current_period(body, NOW, NOW)
    request = mapping.request_for(period)
    assert request.power_w == power and request.freq_curve == curve
    fields = request.fields(5)
    assert (fields.get("freq_mode") == wire.FREQ_CURVE) == (curve is not None)


@pytest.mark.parametrize("name, evse_id, body, transaction, reason", REFUSED,
                         ids=[v[0] for v in REFUSED])
def test_refused_profiles_say_why(name, evse_id, body, transaction, reason):
    request_is_valid(evse_id, body)  # valid OCPP: refused by this station's rules
    with pytest.raises(mapping.Refused) as refused:
        mapping.check_profile(evse_id, body, transaction)
    assert refused.value.reason_code == reason
    status_info = schema("SetChargingProfileResponse")["definitions"]["StatusInfoType"]
    assert len(refused.value.reason_code) <= status_info["properties"]["reasonCode"]["maxLength"]


@pytest.mark.parametrize("body", [
    profile("CentralSetpoint", setpoint=1, dischargeLimit=100),  # dischargeLimit is <= 0
    profile("LocalFrequency", v2xFreqWattCurve=CURVE * 6),  # more than 20 points
    profile("Charging", limit=1)])  # no such operation mode
def test_what_the_schema_itself_refuses(body):
    with pytest.raises(jsonschema.ValidationError):
        request_is_valid(1, body)


def test_the_period_in_force_and_the_schedules_end():
    body = profile("CentralSetpoint", setpoint=-1000)
    body["chargingSchedule"][0]["chargingSchedulePeriod"].append(
        {"startPeriod": 60, "operationMode": "Idle"})
    body["chargingSchedule"][0]["duration"] = 120
    at = lambda s: mapping.current_period(body, NOW + timedelta(seconds=s), NOW)  # noqa: E731
    assert at(0)["operationMode"] == "CentralSetpoint" and at(59.9)["setpoint"] == -1000
    assert at(60)["operationMode"] == "Idle" and at(120) is None and at(-1) is None
    body["chargingProfileKind"] = "Absolute"
    body["chargingSchedule"][0]["startSchedule"] = "2026-12-03T17:59:00Z"
    assert mapping.current_period(body, NOW, NOW + timedelta(hours=1))["operationMode"] == "Idle"


def test_max_offline_duration_sets_the_ttl():
    assert mapping.ttl_for(profile("Idle")) == mapping.BRIDGE_TTL_S
    assert mapping.ttl_for({**profile("Idle"), "maxOfflineDuration": 3}) == 3
    assert mapping.ttl_for({**profile("Idle"), "maxOfflineDuration": 0}) == 1
    assert mapping.ttl_for({**profile("Idle"), "maxOfflineDuration": 86400}) == 5


TEL = {"state": 3, "power_w": -3500, "soc_permille": 612, "energy_in_wh": 1200,
       "energy_out_wh": 800, "max_charge_w": 11000, "max_discharge_w": 4000,
       "grid_freq_mhz": 49980, "applied_w": -3500}


@pytest.mark.parametrize("state, status", [(1, "Occupied"), (3, "Occupied"), (4, "Faulted"),
                                           (5, "Unavailable"), (6, "Available")])
def test_reports_the_csms_reads_are_valid_ocpp(state, status):
    tel = dict(TEL, state=state)
    assert mapping.connector_status(tel) == status
    jsonschema.validate({"timestamp": "2026-12-03T18:00:00Z", "connectorStatus": status,
                         "evseId": 1, "connectorId": 1}, schema("StatusNotificationRequest"))
    event = {"eventType": "Updated", "timestamp": "2026-12-03T18:00:00Z",
             "triggerReason": "MeterValuePeriodic", "seqNo": 3,
             "transactionInfo": {"transactionId": TX, "chargingState": mapping.charging_state(
                 tel), "operationMode": "CentralSetpoint"},
             "meterValue": [{"timestamp": "2026-12-03T18:00:00Z",
                             "sampledValue": mapping.sampled_values(tel)}]}
    jsonschema.validate(event, schema("TransactionEventRequest"))
    needs = {"evseId": 1, "chargingNeeds": mapping.charging_needs(tel)}
    jsonschema.validate(needs, schema("NotifyEVChargingNeedsRequest"))


def test_meter_values_split_power_by_direction():
    values = {v["measurand"]: v["value"] for v in mapping.sampled_values(TEL)}
    assert values["Power.Active.Import"] == 0 and values["Power.Active.Export"] == 3500
    assert values["SoC"] == 61.2 and values["Frequency"] == 49.98
    assert values["Energy.Active.Export.Register"] == 800
    needs = mapping.charging_needs(TEL)["v2xChargingParameters"]
    assert needs == {"maxChargePower": 11000, "maxDischargePower": 4000}
