"""One pile as an OCPP 2.1 charging station: its link (protocol v1) on one side, a CSMS
(OCPP-J over WebSocket, the `ocpp` package's v21 classes) on the other.

The pile link and the CSMS session live apart: the pile keeps its profile's setpoints
while the CSMS is away, for the profile's `maxOfflineDuration`, and the bridge's short
setpoint ttl makes the pile fall back on its own if the bridge itself dies.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v21 import ChargePoint, call, call_result

from pilectl.client import PileError
from pilectl.ocpp_bridge import mapping

LOG = logging.getLogger("ocpp_bridge")
SUBPROTOCOL = "ocpp2.1"
RENEW_S = 1.0  # how often the active profile is looked at and its setpoint renewed
RETRY_S = (1, 2, 5, 10)  # CSMS reconnect backoff


def _now():
    return datetime.now(UTC)


def _stamp():
    return _now().isoformat().replace("+00:00", "Z")


class _Session(ChargePoint):
    """The CSMS's requests, handed to the Station."""

    def __init__(self, station, connection):
        super().__init__(station.station_id, connection, response_timeout=10)
        self.station = station

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id, charging_profile, **_):
        return await self.station.set_profile(evse_id, snake_to_camel_case(charging_profile))

    @on("ClearChargingProfile")
    async def on_clear_charging_profile(self, charging_profile_id=None, **_):
        return self.station.clear_profile(charging_profile_id)


class Station:
    """`pile` is a connected pilectl.client.Client with the pile's link (aggregator) key;
    `csms_url` the CSMS's WebSocket URL including this station's id, as OCPP-J wants."""

    def __init__(self, station_id, pile, csms_url, meter_interval_s=10.0, model="V2G pile",
                 vendor="pile-edge"):
        self.station_id = station_id
        self.pile = pile
        self.csms_url = csms_url
        self.meter_interval_s = meter_interval_s
        self.model, self.vendor = model, vendor
        self.tel = None  # the latest TELEMETRY, by name
        self.session = None  # the CSMS session while connected
        self.offline_since = time.monotonic()  # None while connected
        self.profiles = {}  # purpose -> (profile, received datetime), the highest stack
        self.transaction = None  # transaction id while an EV is connected
        self._seq = 0  # TransactionEvent seqNo
        self._status = None  # the connectorStatus last reported
        self._metered_at = 0.0
        self.sent = None  # the (request, ttl) last sent to the pile
        self.setpoints_sent = 0
        self._changed = asyncio.Event()

    # -- the CSMS's requests ------------------------------------------------------------

    async def set_profile(self, evse_id, profile):
        try:
            mapping.check_profile(evse_id, profile, self.transaction)
        except mapping.Refused as refused:
            LOG.info("%s: profile %s refused: %s", self.station_id, profile.get("id"), refused)
            return call_result.SetChargingProfile(
                status="Rejected", status_info={"reason_code": refused.reason_code,
                                                "additional_info": refused.info[:1024]})
        purpose = profile["chargingProfilePurpose"]
        held = self.profiles.get(purpose)
        if held is None or held[0]["id"] == profile["id"] \
                or profile["stackLevel"] >= held[0]["stackLevel"]:
            self.profiles[purpose] = (profile, _now())
        self._changed.set()  # applied at once, not at the next renewal
        return call_result.SetChargingProfile(status="Accepted")

    def clear_profile(self, profile_id):
        cleared = [purpose for purpose, (profile, _) in self.profiles.items()
                   if profile_id is None or profile["id"] == profile_id]
        for purpose in cleared:
            del self.profiles[purpose]
        self._changed.set()
        return call_result.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    # -- what goes to the pile ----------------------------------------------------------

    def wanted(self):
        """(PileRequest, ttl) from the profiles in force now, or None for none."""
        now = _now()
        station_max = None
        if "ChargingStationMaxProfile" in self.profiles:
            profile, received = self.profiles["ChargingStationMaxProfile"]
            period = mapping.current_period(profile, now, received)
            station_max = None if period is None else period["limit"]
        for purpose in ("TxProfile", "TxDefaultProfile"):
            if purpose in self.profiles:
                profile, received = self.profiles[purpose]
                period = mapping.current_period(profile, now, received)
                if period is not None:
                    return mapping.request_for(period, station_max), mapping.ttl_for(profile)
        return None

    def _offline_expired(self, ttl):
        """The profile's maxOfflineDuration is spent: no renewal may outlive it."""
        if self.offline_since is None:
            return False
        for profile, _ in self.profiles.values():
            limit = profile.get("maxOfflineDuration")
            if limit is not None and time.monotonic() - self.offline_since + ttl > limit:
                return True
        return False

    async def steer(self):
        """Renew the active profile's setpoint every RENEW_S, and at once on a change."""
        while True:
            wanted = self.wanted()
            if wanted is not None and not self._offline_expired(wanted[1]):
                request, ttl = wanted
                try:
                    await self.pile.setpoint(**request.fields(ttl))
                    self.setpoints_sent += 1
                    self.sent = wanted
                except PileError as refused:  # the pile's own rules: logged, retried
                    LOG.warning("%s: the pile refused %s: %s", self.station_id, request, refused)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RENEW_S)

    # -- what goes to the CSMS ----------------------------------------------------------

    async def watch_pile(self):
        """Telemetry in; status, transaction events, meter values and needs out."""
        while True:
            self.tel = await self.pile.telemetry()
            if self.session is not None:
                try:
                    await self.report()
                except (websockets.WebSocketException, TimeoutError, OSError) as lost:
                    LOG.info("%s: a report was lost with the CSMS (%s)", self.station_id, lost)

    async def report(self):
        tel = self.tel
        session = self.session
        status = mapping.connector_status(tel)
        if status != self._status:
            await session.call(call.StatusNotification(
                timestamp=_stamp(), connector_status=status, evse_id=1, connector_id=1))
            self._status = status
        plugged = status != "Available"
        if plugged and self.transaction is None:
            self.transaction = str(uuid.uuid4())
            self.profiles.pop("TxProfile", None)  # a new transaction starts without one
            await self._transaction_event("Started", "CablePluggedIn")
            await session.call(call.NotifyEVChargingNeeds(
                evse_id=1, charging_needs=mapping.charging_needs(tel), timestamp=_stamp()))
        elif not plugged and self.transaction is not None:
            await self._transaction_event("Ended", "EVDeparted", stopped_reason="EVDisconnected")
            self.transaction = None
            self.profiles.pop("TxProfile", None)
        elif plugged and time.monotonic() - self._metered_at >= self.meter_interval_s:
            await self._transaction_event("Updated", "MeterValuePeriodic")

    async def _transaction_event(self, event_type, trigger, stopped_reason=None):
        self._seq += 1
        self._metered_at = time.monotonic()
        info = {"transaction_id": self.transaction, "charging_state": mapping.charging_state(
            self.tel)}
        if self.sent is not None:
            info["operation_mode"] = self.sent[0].mode
        if stopped_reason:
            info["stopped_reason"] = stopped_reason
        await self.session.call(call.TransactionEvent(
            event_type=event_type, seq_no=self._seq, timestamp=_stamp(), trigger_reason=trigger,
            transaction_info=info, evse={"id": 1, "connector_id": 1},
            meter_value=[{"timestamp": _stamp(), "sampled_value": mapping.sampled_values(
                self.tel)}]))

    async def _heartbeat(self, interval):
        while True:
            await asyncio.sleep(interval)
            await self.session.call(call.Heartbeat())

    async def _session(self, connection):
        session = _Session(self, connection)
        reader = asyncio.create_task(session.start())
        try:
            boot = await session.call(call.BootNotification(
                charging_station={"model": self.model, "vendor_name": self.vendor,
                                  "firmware_version": (self.pile.hello or {}).get(3, "?")},
                reason="PowerUp"))
            if boot is None or boot.status != "Accepted":
                raise ConnectionError(f"the CSMS did not accept the boot: {boot}")
            self.session = session
            self.offline_since = None
            self._status = None  # report afresh to this session
            heartbeat = asyncio.create_task(self._heartbeat(max(1, boot.interval)))
            try:
                if self.tel is not None:
                    await self.report()
                await reader  # until the CSMS goes away
            finally:
                heartbeat.cancel()
        finally:
            self.session = None
            if self.offline_since is None:
                self.offline_since = time.monotonic()
            reader.cancel()

    async def serve_csms(self):
        """Connect to the CSMS, and again after it drops, backing off."""
        failures = 0
        while True:
            try:
                async with websockets.connect(self.csms_url, subprotocols=[SUBPROTOCOL],
                                              open_timeout=5) as connection:
                    failures = 0
                    await self._session(connection)
            except (OSError, websockets.WebSocketException, ConnectionError,
                    TimeoutError) as lost:
                LOG.info("%s: CSMS unreachable or gone (%s)", self.station_id, lost)
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1

    async def run(self):
        """Until cancelled, or the pile link fails (raised as LinkError)."""
        tasks = [asyncio.create_task(coroutine) for coroutine in
                 (self.watch_pile(), self.steer(), self.serve_csms())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await _cancel(tasks)


async def _cancel(tasks):
    """Cancel `tasks` and wait until they end. A cancel can be lost on Python 3.11, when a
    task's `wait_for` finishes in the same step (a telemetry arriving every second makes
    that likely over a long run), so the ones still running are cancelled again."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
