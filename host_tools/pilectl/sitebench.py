"""A simulated site: N piles behind one grid connection, each a real firmware on the
MicroPython unix port (docs/site-group.md).

Each pile has its own converter and EV battery (a `Plant`) on its own bus pty, and its
own serial link and TCP port, as on the virtual bench (`VirtualBench`, one a pile). One
shared site load and one site meter: the meter on the leader's bus reads the load plus
every pile's power (with `alone`, today's firmware, every pile has the same meter on its
own bus and no site group). The oracle checks the caps at the connection point, not a
pile's view of them: the export cap is broken when the site exports more than it, for
longer than the meter's reading delay and one period (`grace_s`).

The site link is the site LAN, real UDP on 127.0.0.1 through a relay the bench controls
(`transport="udp"`), or the site bus (`transport="bus"`): each pile's end of a pty pair,
the other ends joined by a multi-drop hub, what one pile writes every other reads, as on
an RS485 pair. Either can be cut; the bench can also stop the leader or a member, silence
the meter and send a forged allowance.
"""

import asyncio
import contextlib
import os
import secrets
import socket
import termios
import time
import tty
from types import SimpleNamespace

from pilectl import wire
from pilectl.sim.bus import Faults, start_server
from pilectl.sim.harness import PtyPair
from pilectl.sim.plant import Oracle, OracleLimits, Plant, PlantParams
from pilectl.sim.run import piecewise
from pilectl.vbench import VirtualBench

STEP_S = 0.05
METER_UNIT = 2


def udp_port():
    """A UDP port on 127.0.0.1 that nothing is bound to now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PileSim:
    """What `VirtualBench` runs on a pile's bus: that pile's converter (and the site
    meter, on the leader's) served until cancelled; `SiteBench` steps the physics."""

    def __init__(self, plant, faults, metered):
        self.plant = plant
        self.faults = faults
        self.devices = {plant.converter_unit: plant.converter}
        if metered:
            self.devices[METER_UNIT] = plant.meter

    async def run(self, bus_path, baud=115200, duration_s=None):
        server = await start_server(bus_path, self.devices, self.faults, baud)
        try:
            await asyncio.Event().wait()
        finally:
            await server.shutdown()


class _SitePile(VirtualBench):
    """One pile of the site: the virtual bench's wiring and provisioning, the site group's
    part in its board file, and the site key provisioned with the others."""

    def __init__(self, directory, pile_id, sim, site, site_key, config):
        super().__init__(directory, {"config": config})
        self.pile_id = pile_id
        self.sim = sim
        self.site = site
        self.site_key = site_key

    def board(self):
        board = super().board()
        board["pile_id"] = self.pile_id
        if METER_UNIT not in self.sim.devices:
            del board["modbus"]["meter_unit"]
        if self.site is not None:
            board["site"] = self.site
        return board

    async def _provision(self):
        await super()._provision()
        if self.site is not None:
            wired = await self.serial(key=self.key, technician_key=self.technician_key)
            try:
                await wired.provision_key(self.site_key, site=True)
            finally:
                await wired.close()


class _Relay:
    """The site LAN between the leader and one member: datagrams both ways, or none while
    `cut`."""

    def __init__(self, member_port):
        self.member = ("127.0.0.1", member_port)
        self.cut = False
        self.leader = None
        self.transport = None

    async def start(self):
        loop = asyncio.get_running_loop()
        relay = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data, address):
                if relay.cut:
                    return
                if address == relay.member:
                    if relay.leader is not None:
                        relay.transport.sendto(data, relay.leader)
                else:
                    relay.leader = address
                    relay.transport.sendto(data, relay.member)

        self.transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=("127.0.0.1", 0))
        return self.transport.get_extra_info("sockname")[1]

    def close(self):
        if self.transport is not None:
            self.transport.close()


class BusHub:
    """The site bus: one pty pair a pile, the hub's ends joined so that what one pile
    writes every other pile reads, as on an RS485 pair (and, with `echo`, itself too, as
    a transceiver whose receiver stays on while it drives the pair); nothing while
    `cut`."""

    def __init__(self, directory, ids, echo=False):
        self.pairs = [PtyPair(directory / f"site-bus-{i}", directory / f"site-hub-{i}")
                      for i in ids]
        self.devices = [pair.a for pair in self.pairs]  # the piles' ends
        self.cut = False
        self.echo = echo
        self._fds = []

    def start(self):
        loop = asyncio.get_running_loop()
        for pair in self.pairs:
            fd = os.open(pair.b, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd, termios.TCSANOW)
            self._fds.append(fd)
        for fd in self._fds:
            loop.add_reader(fd, self._forward, fd)

    def _forward(self, source):
        try:
            data = os.read(source, 4096)
        except BlockingIOError:
            return
        if not self.cut:
            self.write(data, None if self.echo else source)

    def write(self, data, source=None):
        """`data` onto the bus, read by every pile but the one at `source`."""
        for fd in self._fds:
            if fd != source:
                with contextlib.suppress(BlockingIOError):
                    os.write(fd, data)

    def close(self):
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
            os.close(fd)
        self._fds = []
        for pair in self.pairs:
            pair.close()


class SiteBench:
    """`piles` real firmwares as one site group (pile 0 leads) on `transport` ("udp" or
    "bus"), or with `alone` each keeping the caps alone from its own view of the meter
    (today's firmware)."""

    def __init__(self, directory, piles=3, alone=False, import_cap_w=40000, export_cap_w=11000,
                 load_w=((0, 2000),), period_ms=1000, shares=None, params=None, grace_s=None,
                 transport="udp"):
        self.dir = directory
        self.n = piles
        self.alone = alone
        self.transport = transport
        self.import_cap_w = import_cap_w
        self.export_cap_w = export_cap_w
        self.load_w = piecewise([list(point) for point in load_w])
        self.period_ms = period_ms
        # the meter's reading delay (1 s) and one period; as the goal counts it
        self.grace_s = grace_s if grace_s is not None else 1.0 + period_ms / 1000
        self.shares = shares or _even(piles, import_cap_w, export_cap_w)
        self.plants = [Plant(PlantParams(**(params or {})), lambda t: 0.0) for _ in range(piles)]
        self.faults = [Faults() for _ in range(piles)]
        self.oracle = Oracle(OracleLimits(site_import_limit_w=import_cap_w,
                                          site_export_limit_w=export_cap_w,
                                          site_reaction_s=self.grace_s))
        self.site_key = secrets.token_bytes(32)
        self.ids = [f"site-{i + 1}" for i in range(piles)]
        self.piles = []
        self.relays = []
        self.hub = None  # the site bus, on transport "bus"
        self.samples = []  # (t, site W, [pile W])
        self.t = 0.0
        self._stepper = None

    def _site_part(self, ports, relay_ports):
        members = {}
        for i, pile_id in enumerate(self.ids):
            imp, exp = self.shares[i]
            members[pile_id] = {"import_w": imp, "export_w": exp, "host": "127.0.0.1",
                                "port": ports[i]}
        site = {"group": "bench", "role": "member", "leader": self.ids[0],
                "import_cap_w": self.import_cap_w, "export_cap_w": self.export_cap_w,
                "period_ms": self.period_ms, "udp_port": ports[0], "members": members}
        leader = dict(site, role="leader", members={
            pile_id: dict(member, port=relay_ports[i]) if i else member
            for i, (pile_id, member) in enumerate(members.items())})
        return leader, site

    def _bus_parts(self):
        """Each pile's site part on the site bus: its own end of it."""
        members = {pile_id: {"import_w": imp, "export_w": exp}
                   for pile_id, (imp, exp) in zip(self.ids, self.shares, strict=True)}
        return [{"group": "bench", "role": "member" if i else "leader", "leader": self.ids[0],
                 "import_cap_w": self.import_cap_w, "export_cap_w": self.export_cap_w,
                 "period_ms": self.period_ms, "members": members,
                 "bus": {"device": device, "baud": 115200}}
                for i, device in enumerate(self.hub.devices)]

    async def start(self):
        """The plants, the site link (relays or the bus's hub), then each firmware started
        and provisioned."""
        if self.transport == "bus":
            self.dir.mkdir(parents=True, exist_ok=True)
            self.hub = BusHub(self.dir, self.ids)
            self.hub.start()
            parts = self._bus_parts()
        else:
            ports = [udp_port() for _ in range(self.n)]
            relay_ports = [None]
            for port in ports[1:]:
                relay = _Relay(port)
                self.relays.append(relay)
                relay_ports.append(await relay.start())
            leader_part, member_part = self._site_part(ports, relay_ports)
            parts = [leader_part] + [member_part] * (self.n - 1)
        config = {"site_import_limit_w": self.import_cap_w,
                  "site_export_limit_w": self.export_cap_w, "ramp_w_per_s": 5000}
        self._stepper = asyncio.create_task(self._step())
        try:
            for i, pile_id in enumerate(self.ids):
                site = None if self.alone else parts[i]
                sim = _PileSim(self.plants[i], self.faults[i], self.alone or i == 0)
                pile = _SitePile(self.dir / pile_id, pile_id, sim, site, self.site_key, config)
                self.piles.append(pile)
                await pile.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _step(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(STEP_S)
            now = time.monotonic()
            self.advance(now - last)
            last = now

    def advance(self, dt):
        """The physics by `dt` s: every pile, then the site meter and the oracle."""
        self.t += dt
        for plant in self.plants:
            plant.step(dt)
        piles_w = sum(plant.power_w for plant in self.plants)
        site_w = self.load_w(self.t) + piles_w
        for plant in self.plants:  # every meter device reads the connection point
            plant.site_w = site_w
            plant.publish()
        connection = SimpleNamespace(power_w=piles_w, soc=1.0, battery_temp_c=25.0,
                                     converter_temp_c=25.0, commanded_w=0, unheard_s=0.0,
                                     grid_hz=50.0)
        self.oracle.check(self.t, connection, site_w)
        self.samples.append((round(self.t, 2), round(site_w),
                             [round(plant.power_w) for plant in self.plants]))

    async def discharge(self, power_w=-11000, ttl_s=3600):
        """The aggregator asks every pile for `power_w`."""
        for pile in self.piles:
            client = await pile.aggregator()
            try:
                await client.setpoint(power_w, ttl_s)
            finally:
                await client.close()

    async def run_for(self, seconds):
        await asyncio.sleep(seconds)

    # -- failures ---------------------------------------------------------------------

    async def kill(self, index):
        """The pile's firmware stops (its converter stops by its own watchdog in 5 s)."""
        await self.piles[index].stop_firmware()

    def falling_load(self, high_w=7000, low_w=1000, cycle_s=4.3, cycles=5):
        """From now on the site's load falls from `high_w` to `low_w` over a second,
        stays there 1.3 s, rises back over a second and stays 1 s, `cycles` times: each
        fall at another phase of the meter's readings (once a second). Returns how long
        that takes, s."""
        t0 = self.t
        points = []
        for k in range(cycles):
            at = t0 + k * cycle_s
            points += [(at, high_w), (at + 1, low_w), (at + 2.3, low_w), (at + 3.3, high_w)]
        self.load_w = piecewise(points, high_w)
        return cycles * cycle_s

    def cut_link(self, on=True):
        for relay in self.relays:
            relay.cut = on
        if self.hub is not None:
            self.hub.cut = on

    def meter_lost(self, on=True):
        units = self.faults[0].silent_units
        if on:
            units.add(METER_UNIT)
        else:
            units.discard(METER_UNIT)

    def forge_allowance(self, index, import_w=1000000, export_w=1000000):
        """A SITE_ALLOWANCE to member `index` signed with a key that is not the site key:
        a datagram to its port, or a frame on the site bus."""
        from pilectl.cose import sign

        message = wire.encode({0: wire.SITE_ALLOWANCE, 1: 2**40, 2: import_w, 3: export_w,
                               4: self.ids[index], 5: self.period_ms})
        data = sign(secrets.token_bytes(32), message, secrets.token_bytes(8))
        if self.hub is not None:
            self.hub.write(wire.frame(data))
            return
        port = self.relays[index - 1].member[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", port))

    # -- results ----------------------------------------------------------------------

    def violations(self):
        return self.oracle.summary()

    def seconds_over_cap(self, since_s=0.0):
        """How long the site exported more than its cap (and the oracle's tolerance) after
        `since_s`, in all, s."""
        over = 0.0
        tolerance = self.oracle.limits.tolerance_w
        for (t0, site_w, _), (t1, _, _) in zip(self.samples, self.samples[1:], strict=False):
            if t0 >= since_s and -site_w > self.export_cap_w + tolerance:
                over += t1 - t0
        return round(over, 2)

    def worst_export_over_w(self, since_s=0.0):
        """The most the site exported beyond its cap after `since_s`, W (0 when never)."""
        over = [-site_w - self.export_cap_w for t, site_w, _ in self.samples if t >= since_s]
        return max(0, max(over, default=0))

    async def stop(self):
        if self._stepper is not None:
            self._stepper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stepper
        for pile in self.piles:
            with contextlib.suppress(Exception):
                await pile.stop()
        for relay in self.relays:
            relay.close()
        if self.hub is not None:
            self.hub.close()


def _even(piles, import_cap_w, export_cap_w):
    """Fallback shares splitting both caps evenly (the remainder to the first piles)."""
    return [(import_cap_w // piles + (i < import_cap_w % piles),
             export_cap_w // piles + (i < export_cap_w % piles)) for i in range(piles)]
