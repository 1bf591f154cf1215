"""A CSMS for the tests, written with the same `ocpp` package (v21) on 127.0.0.1: it
accepts every station, records what each sends, and sends charging profiles."""

import asyncio
from datetime import UTC, datetime

import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint, call, call_result


def _stamp():
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class StationView(ChargePoint):
    """The CSMS's side of one station's connection."""

    def __init__(self, station_id, connection, csms):
        super().__init__(station_id, connection, response_timeout=10)
        self.csms = csms
        self.received = []  # (action, payload in snake_case)

    def _record(self, action, payload):
        self.received.append((action, payload))
        self.csms.arrived.set()

    @on("BootNotification")
    def on_boot(self, **payload):
        self._record("BootNotification", payload)
        return call_result.BootNotification(current_time=_stamp(),
                                            interval=self.csms.heartbeat_s, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **payload):
        self._record("Heartbeat", payload)
        return call_result.Heartbeat(current_time=_stamp())

    @on("StatusNotification")
    def on_status(self, **payload):
        self._record("StatusNotification", payload)
        return call_result.StatusNotification()

    @on("TransactionEvent")
    def on_transaction(self, **payload):
        self._record("TransactionEvent", payload)
        return call_result.TransactionEvent()

    @on("NotifyEVChargingNeeds")
    def on_needs(self, **payload):
        self._record("NotifyEVChargingNeeds", payload)
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    async def set_profile(self, profile, evse_id=1):
        """Send a SetChargingProfile (camelCase profile); the station's response."""
        return await self.call(call.SetChargingProfile(evse_id=evse_id,
                                                       charging_profile=profile))

    def last(self, action):
        found = [payload for name, payload in self.received if name == action]
        return found[-1] if found else None


class Csms:
    def __init__(self, heartbeat_s=30):
        self.heartbeat_s = heartbeat_s  # the interval BootNotification's response gives
        self.stations = {}
        self.arrived = asyncio.Event()
        self.server = None
        self.port = None

    async def start(self, port=0):
        self.server = await websockets.serve(self._serve, "127.0.0.1", port,
                                             subprotocols=["ocpp2.1"])
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def _serve(self, connection):
        station_id = connection.request.path.rsplit("/", 1)[-1]
        view = StationView(station_id, connection, self)
        self.stations[station_id] = view
        try:
            await view.start()
        except websockets.ConnectionClosed:
            pass  # the station went away: the view keeps what it received

    async def station(self, station_id, timeout=15.0):
        """The view of `station_id` once it has booted."""
        async def booted():
            while True:
                self.arrived.clear()  # before looking: nothing that comes after is missed
                if station_id in self.stations \
                        and self.stations[station_id].last("BootNotification"):
                    break
                await self.arrived.wait()
            return self.stations[station_id]
        return await asyncio.wait_for(booted(), timeout)

    async def until(self, station_id, action, condition=lambda payload: True, timeout=15.0):
        """The first `action` payload from `station_id` that meets `condition`."""
        async def found():
            while True:
                self.arrived.clear()
                view = self.stations.get(station_id)
                for name, payload in view.received if view else ():
                    if name == action and condition(payload):
                        return payload
                await self.arrived.wait()
        return await asyncio.wait_for(found(), timeout)

    async def stop(self):
        """Drop every station and stop listening: a CSMS that goes away."""
        self.server.close()
        await self.server.wait_closed()
