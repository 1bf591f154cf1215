"""The OCPP 2.1 bridge between a CSMS written with the same `ocpp` package (127.0.0.1) and
the real firmware on the virtual bench: each operation mode drives the converter, the
CSMS going away leads to the profile's maxOfflineDuration fallback, the oracle watches."""

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ocpp_csms import Csms
from pilectl import keys
from pilectl.ocpp_bridge.station import Station
from pilectl.sim.plant import first_write, setpoint_w
from pilectl.vbench import VirtualBench

SCENARIO = {"name": "ocpp", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 3000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000,
                       "ramp_w_per_s": 1000000, "telemetry_period_s": 1},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000}}
STATION = "pile-ocpp-001"

pytestmark = pytest.mark.usefixtures("socat")


class Rig:
    """The bench, the CSMS and the bridge between them, and a watcher on the pile."""

    def __init__(self, tmp_path, heartbeat_s=30):
        self.bench = VirtualBench(tmp_path, SCENARIO)
        self.csms = Csms(heartbeat_s)

    async def __aenter__(self):
        self.running = None
        await self.csms.start()
        try:
            await self.bench.start()
            self.station = Station(STATION, await self.bench.tcp(),
                                   f"{self.csms.url}/{STATION}", meter_interval_s=1.0)
            self.running = asyncio.create_task(self.station.run())
            await self._connected()
        except BaseException:
            await self._stop()
            raise
        return self

    async def _connected(self):
        self.view = await self.csms.station(STATION)
        self.writes = self.bench.sim.plant.control_writes()
        self.transaction = (await self.csms.until(
            STATION, "TransactionEvent", lambda p: p["event_type"] == "Started"))[
            "transaction_info"]["transaction_id"]

    async def _stop(self):
        if self.running is not None:
            self.running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.running, 10)  # a hang fails, not waits
        await self.csms.stop()
        await self.bench.stop()

    async def __aexit__(self, *exc):
        violations = self.bench.sim.oracle.summary()
        await self._stop()
        assert not violations, violations

    def profile(self, mode, **period):
        return {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Relative", "transactionId": self.transaction,
                "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                      "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                  "operationMode": mode,
                                                                  **period}]}]}

    async def write_of(self, since, condition, timeout=5.0):
        """Seconds from `since` to the first converter write meeting `condition`."""
        return await first_write(self.writes, since, condition, timeout)

    async def drive(self, mode, condition, **period):
        """Send a profile; seconds from the CSMS's call to the converter write it makes."""
        sent = time.monotonic()
        response = await self.view.set_profile(self.profile(mode, **period))
        assert response.status == "Accepted", response
        return await self.write_of(sent, condition)


async def test_the_station_boots_reports_and_tells_the_evs_needs(tmp_path):
    async with Rig(tmp_path, heartbeat_s=1) as rig:
        boot = rig.view.last("BootNotification")
        assert boot["reason"] == "PowerUp" and boot["charging_station"]["vendor_name"]
        status = await rig.csms.until(STATION, "StatusNotification")
        assert status["connector_status"] == "Occupied"  # the bench's EV is plugged in
        needs = await rig.csms.until(STATION, "NotifyEVChargingNeeds")
        v2x = needs["charging_needs"]["v2x_charging_parameters"]
        assert v2x["max_charge_power"] > 0 and v2x["max_discharge_power"] > 0
        update = await rig.csms.until(STATION, "TransactionEvent",
                                      lambda p: p["event_type"] == "Updated")
        measured = {v["measurand"]: v["value"] for v in update["meter_value"][0]["sampled_value"]}
        assert measured["SoC"] == pytest.approx(60, abs=1)
        assert {"Power.Active.Import", "Power.Active.Export", "Energy.Active.Import.Register",
                "Energy.Active.Export.Register", "Frequency"} <= set(measured)
        await rig.csms.until(STATION, "Heartbeat")  # at the interval the CSMS gave


async def test_each_operation_mode_drives_the_converter_within_a_second(tmp_path):
    async with Rig(tmp_path) as rig:
        delays = []
        for watts in (-3000, 2500, -4500, 1000, -2000, 3500, -1500, 500, -3500, 2000):
            delays.append(await rig.drive("CentralSetpoint", lambda v, w=watts: v == w,
                                          setpoint=watts))
        delays.append(await rig.drive("ChargingOnly", lambda v: v == 4000, limit=4000))
        delays.append(await rig.drive("Idle", lambda v: v == 0))
        await rig.drive("CentralSetpoint", lambda v: v == -2000, setpoint=-2000)
        delays.append(await rig.drive("ExternalLimits", lambda v: v == 0, limit=5000,
                                      dischargeLimit=-5000))
        curve = [{"frequency": 49.5, "power": -4000}, {"frequency": 49.9, "power": 0},
                 {"frequency": 50.1, "power": 0}, {"frequency": 50.5, "power": 4000}]
        delays.append(await rig.drive("LocalFrequency", lambda v: v == -1000,
                                      v2xBaseline=-1000, v2xFreqWattCurve=curve))
        plant = rig.bench.sim.plant
        plant.hold_grid(49.7)  # the curve: -2000 W more at 49.70 Hz
        await rig.write_of(time.monotonic() - 0.5, lambda v: v == -3000)
        plant.hold_grid(50.0)
        p95 = statistics.quantiles(delays, n=20)[-1]
        print(f"CSMS SetChargingProfile -> converter write: median "
              f"{statistics.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
        assert p95 <= 1.0, delays


async def test_refused_profiles_change_nothing_on_the_pile(tmp_path):
    async with Rig(tmp_path) as rig:
        await rig.drive("CentralSetpoint", lambda v: v == -2000, setpoint=-2000)
        for mode, period, reason in (("Idle", {"limit": 0}, "InvalidSchedule"),
                                     ("ExternalSetpoint", {}, "UnsupportedMode"),
                                     ("CentralSetpoint", {"setpoint": 9000, "limit": 100},
                                      "InvalidSchedule")):
            response = await rig.view.set_profile(rig.profile(mode, **period))
            assert response.status == "Rejected" and \
                response.status_info["reason_code"] == reason, response
        other = {**rig.profile("Idle"), "transactionId": "not-this-one"}
        response = await rig.view.set_profile(other)
        assert response.status_info["reason_code"] == "TxNotFound"
        since = time.monotonic()
        await asyncio.sleep(2)
        assert {setpoint_w(r) for at, r in list(rig.writes) if at >= since} == {-2000}


async def test_the_csms_going_away_leads_to_the_offline_fallback(tmp_path):
    async with Rig(tmp_path) as rig:
        profile = {**rig.profile("CentralSetpoint", setpoint=-3000), "maxOfflineDuration": 3}
        assert (await rig.view.set_profile(profile)).status == "Accepted"
        await rig.write_of(time.monotonic() - 1, lambda v: v == -3000)
        await rig.csms.stop()
        gone = time.monotonic()
        fallback = await rig.write_of(gone, lambda v: v == 0, timeout=8)
        assert 2.0 <= fallback <= 3.0 + 0.5, fallback  # maxOfflineDuration, and a tick
        assert rig.station.session is None


PILE_OCPP = Path(sys.executable).parent / "pile-ocpp"


def test_the_cli_names_its_users_mistakes(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[pile]]\nid = "a"\ntcp = "127.0.0.1:1"\nkey_file = "nope.key"\n')
    for args, said in ((["--csms", "http://x"], "is not a ws:// or wss:// URL"),
                       (["--csms", "ws://127.0.0.1:9/ocpp"], "no key file")):
        result = subprocess.run([str(PILE_OCPP), str(fleet), *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


async def test_the_cli_bridges_a_fleet_file_pile(tmp_path):
    bench = VirtualBench(tmp_path / "bench", SCENARIO)
    csms = await Csms().start()
    await bench.start()
    try:
        key_file = keys.save(bench.key, tmp_path / "pile.key")
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(f'[[pile]]\nid = "{STATION}"\ntcp = "127.0.0.1:{bench.tcp_port}"\n'
                         f'key_file = "{key_file}"\n')
        process = await asyncio.create_subprocess_exec(
            str(PILE_OCPP), str(fleet), "--csms", csms.url, "--json", "--duration", "6",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        view = await csms.station(STATION)
        transaction = (await csms.until(STATION, "TransactionEvent"))["transaction_info"]
        profile = {"id": 3, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Relative",
                   "transactionId": transaction["transaction_id"],
                   "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                         "chargingSchedulePeriod": [{
                                             "startPeriod": 0, "operationMode": "CentralSetpoint",
                                             "setpoint": -2500}]}]}
        assert (await view.set_profile(profile)).status == "Accepted"
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        last = json.loads(out.decode().splitlines()[-1])["stations"][0]
        assert last["csms"] == "online" and last["mode"] == "CentralSetpoint", last
        assert last["applied_w"] == -2500 and last["setpoints_sent"] >= 1
    finally:
        await csms.stop()
        await bench.stop()
