"""The aggregator: every period, the fleet target split over the piles that are heard.

A pile is heard while its last TELEMETRY is at most 3 of its telemetry periods old; one
that falls silent is left out of the next split, so its share goes to the others within
one period, and it rejoins with its next TELEMETRY (which its HELLO asks for). Setpoints carry a
ttl of a few periods, so piles fall back on their own when the aggregator is gone; a
setpoint is sent again when it moved by more than the deadband, and in any case before
its ttl runs out.

A rollout (rollout.py) of a signed update package runs beside the dispatch, over the
same links, on the piles this process serves; its progress is in every status.
"""

import asyncio
import gc
import time
from collections import Counter, deque

from pile.surface import REASON_DEPARTURE_RESERVE, REASON_V2G_BUDGET

from pilectl import wire
from pilectl.aggregator.fleet import technician_key
from pilectl.aggregator.link import PileLink
from pilectl.aggregator.live import Live
from pilectl.aggregator.rollout import HALTING, RUNNING, Rollout
from pilectl.aggregator.split import Share, reach, split

_SILENT_PERIODS = 3
_POWER, _MAX_CHARGE, _MAX_DISCHARGE, _REASONS, _APPLIED, _ENERGY_OUT = 3, 7, 8, 9, 10, 16
_BUDGET_LEFT = wire.TELEMETRY_BUDGET_LEFT


class Target:
    """Where the fleet target comes from: the schedule, unless the API set one."""

    def __init__(self, power_w=0, schedule=(), start_epoch=None):
        """Schedule steps count from `start_epoch` (wall clock, s), or from now."""
        self.base_w = power_w
        self.schedule = list(schedule)
        self.started = time.monotonic()
        if start_epoch is not None:
            self.started -= time.time() - start_epoch
        self.override_w = None
        self.override_until = None

    def set(self, power_w, for_s=None):
        self.override_w = int(power_w)
        self.override_until = None if for_s is None else time.monotonic() + for_s

    def clear(self):
        self.override_w = self.override_until = None

    def now(self, at=None):
        """(W, source) at monotonic time `at`."""
        at = time.monotonic() if at is None else at
        if self.override_w is not None:
            if self.override_until is None or at < self.override_until:
                return self.override_w, "api"
            self.clear()
        watts, source = self.base_w, "default"
        for step_at, step_w in self.schedule:
            if at - self.started >= step_at:
                watts, source = step_w, "schedule"
        return watts, source


def budget_left(tel):
    """Wh the pile's owner's V2G budget still allows, from its TELEMETRY: 0 while the
    budget closes its discharge (reasons bit 17, also while its counters wait for a
    save), None without a budget."""
    if tel.get(_REASONS, 0) & REASON_V2G_BUDGET:
        return 0
    return tel.get(_BUDGET_LEFT)


class RolloutBusy(RuntimeError):
    """A rollout is under way already."""


class Aggregator:
    def __init__(self, fleet, target=None):
        self.fleet = fleet
        self.dispatch = fleet.dispatch
        self.counters = Counter()
        self.links = [PileLink(entry, self.counters) for entry in fleet.piles]
        self.target = target or Target(fleet.power_w, fleet.schedule, fleet.schedule_start)
        self.last = None  # the latest status, as /status shows it
        self.split_ms = 0.0
        self._wear = {link.entry.pile_id: deque() for link in self.links}
        self._tasks = []
        self._most_heard = 0
        self.on_status = None  # called with each period's status
        self.broker = None  # the BrokerLink of the piles with mqtt = true
        self.homeassistant = None  # Home Assistant's discovery, when the fleet file asks
        self.rollout = None  # the latest Rollout, under way or ended
        self._rollout_task = None
        self.live = Live(self)  # the live page's hour and push (api.py)

    def start(self):
        direct = [link for link in self.links if not link.entry.mqtt]
        self._tasks = [asyncio.create_task(link.run()) for link in direct]
        if len(direct) < len(self.links):
            from pilectl.aggregator.brokerlink import BrokerLink  # aiomqtt: the mqtt extra

            self.broker = BrokerLink(self.fleet.broker,
                                     [link for link in self.links if link.entry.mqtt],
                                     self.counters, self.target, self.dispatch.period_s)
            self.broker.on_target = self.dispatch_once  # a new target goes out at once
            self._tasks.append(asyncio.create_task(self.broker.run()))
            if self.fleet.homeassistant.enabled:
                from pilectl.aggregator.homeassistant import HomeAssistant

                self.homeassistant = HomeAssistant(self.fleet.homeassistant, self.broker)
                self.broker.homeassistant = self.homeassistant
                self._tasks.append(asyncio.create_task(self._home_assistant()))

    async def _home_assistant(self):
        """Home Assistant's configs and values of the piles served, every state period,
        and those of piles not yet shown every half second."""
        loop = asyncio.get_running_loop()
        last = None
        while True:
            if self.broker.connected and self.broker.joined:  # its piles are known
                due = last is None or loop.time() - last >= self.fleet.homeassistant.state_period_s
                self.homeassistant.publish(everything=due)
                last = loop.time() if due else last
            await asyncio.sleep(0.5)

    async def stop(self):
        if self.broker is not None:
            await self.broker.leave()  # the other workers take its piles at once
        tasks = self._tasks + ([self._rollout_task] if self._rollout_task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start_rollout(self, package, settings, technician_keys=None):
        """Roll `package` (pilectl.release.Package) out over the piles this process
        serves, beside the dispatch; `settings` a rollout.Settings, `technician_keys` the
        folder of PILE_ID.technician.key files (else the fleet file's [rollout] one).
        RolloutBusy while another is under way."""
        if self.rollout is not None and self.rollout.state in (RUNNING, HALTING):
            raise RolloutBusy(f"the rollout of {self.rollout.package.version} is under way: "
                              "halt it first (DELETE /rollout), or wait for its end")
        folder = technician_keys or self.fleet.rollouts.technician_keys
        links = {link.entry.pile_id: link for link in self.served()}
        found = {pile_id: technician_key(link.entry, folder) for pile_id, link in links.items()}
        self.rollout = Rollout(links, package, found, settings)
        self.rollout.begin()
        self._rollout_task = asyncio.create_task(self.rollout.run())
        return self.rollout

    async def rollout_ended(self):
        """Wait for the rollout under way to end (done or halted)."""
        if self._rollout_task is not None:
            await asyncio.shield(self._rollout_task)

    def heard(self, link, now):
        limit = _SILENT_PERIODS * self.dispatch.telemetry_period_s
        return link.connected and link.heard_at is not None and now - link.heard_at <= limit

    def _share(self, link, now):
        tel = link.telemetry or {}
        applied = tel.get(_APPLIED, 0)
        forced = None
        if tel.get(_REASONS, 0) & REASON_DEPARTURE_RESERVE and applied > 0 and \
                applied > (link.sent_w or 0):
            forced = applied  # the reserve makes it charge, whatever it is asked
        return Share(link.entry.pile_id, tel.get(_MAX_CHARGE, 0), tel.get(_MAX_DISCHARGE, 0),
                     link.entry.priority, self._wear_w(link, tel, now), forced,
                     budget_left(tel))

    def _wear_w(self, link, tel, now):
        """Energy discharged over the wear window, as mean power over the window."""
        if not self.dispatch.wear_fair or _ENERGY_OUT not in tel:
            return 0.0
        window = self.dispatch.wear_window_s
        samples = self._wear[link.entry.pile_id]
        samples.append((now, tel[_ENERGY_OUT]))
        while samples and now - samples[0][0] > window:
            samples.popleft()
        return (samples[-1][1] - samples[0][1]) * 3600 / window

    def dispatch_once(self, now=None):
        """One period: split the target over the piles heard, send what changed."""
        now = time.monotonic() if now is None else now
        began = time.perf_counter()
        target_w, source = self.target.now(now)
        heard = [link for link in self.links if self.heard(link, now)]
        if len(heard) > self._most_heard:
            self._most_heard = len(heard)
            self._freeze()
        started = time.perf_counter()
        shares = [self._share(link, now) for link in heard]
        asked_w = target_w  # this worker's part of the fleet target, when it has others
        if self.broker is not None:
            self.broker.publish_reach(*reach(shares))
            asked_w = self.broker.share(target_w, now)
        result = split(asked_w, shares, self.dispatch.wear_fair)
        self.split_ms = (time.perf_counter() - started) * 1000
        # renewed while 2 periods of its ttl are left (half a period's slack for timing), so
        # a restarted aggregator's first setpoint comes before the last one runs out
        refresh = self.dispatch.ttl_s - 2.5 * self.dispatch.period_s
        for link in heard:
            watts = result.setpoints.get(link.entry.pile_id)
            if watts is None:
                continue  # forced: its own setpoint does not matter now
            moved = link.sent_w is None or abs(watts - link.sent_w) > self.dispatch.deadband_w
            if moved or now - link.sent_at >= refresh:
                link.setpoint(watts, self.dispatch.ttl_s)
        self.last = self._status(now, target_w, source, result, heard)
        if self.broker is not None:
            self.last.update(worker=self.broker.worker, workers=len(self.broker.workers))
        if self.rollout is not None:
            self.last["rollout"] = self.rollout.summary()
        self.last["dispatch_ms"] = round((time.perf_counter() - began) * 1000, 2)
        self.live.record(self.last, heard)
        if self.on_status is not None:
            self.on_status(self.last)
        return self.last

    @staticmethod
    def _freeze():
        """Keep what the fleet holds for good (links, transports) out of Python's later
        collections: a full one walks every object, 65 ms at 10,000 piles, and came every
        few periods (each split's shares outlive a few young collections). Done when more
        piles are heard than ever before, so a fleet's start freezes a few times, then no
        more."""
        gc.collect()
        gc.freeze()

    def _status(self, now, target_w, source, result, heard):
        groups = {}
        served = self.served()
        for link in served:
            groups.setdefault(link.entry.group, {"piles": 0, "online": 0, "delivered_w": 0,
                                                 "planned_w": 0})["piles"] += 1
        for link in heard:  # heard piles have telemetry
            group = groups[link.entry.group]
            group["online"] += 1
            group["delivered_w"] += link.telemetry.get(_POWER, 0)
            group["planned_w"] += result.setpoints.get(link.entry.pile_id,
                                                       link.telemetry.get(_APPLIED, 0))
        budgets = [left for left in (budget_left(link.telemetry) for link in heard)
                   if left is not None]
        return {"t": round(time.time(), 3), "target_w": result.target_w,
                "fleet_target_w": target_w, "source": source,
                "planned_w": result.planned_w, "shortfall_w": result.shortfall_w,
                "delivered_w": sum(g["delivered_w"] for g in groups.values()),
                "envelope_low_w": result.low_w, "envelope_high_w": result.high_w,
                "forced_w": result.forced_w, "piles": len(served), "online": len(heard),
                "excluded": len(served) - len(heard), "split_ms": round(self.split_ms, 2),
                "budget_piles": len(budgets), "budget_spent": budgets.count(0),
                "budget_left_wh": sum(budgets),
                "groups": groups, "counters": dict(self.counters)}

    def served(self):
        """The piles this process serves: all, but of those on a broker shared with other
        workers only its own (pilectl/aggregator/shard.py)."""
        if self.broker is None:
            return self.links
        owned = self.broker.owned
        return [link for link in self.links if not link.entry.mqtt or link.entry.pile_id in owned]

    def pile_status(self):
        """Every pile's latest: for /status?piles=1."""
        now = time.monotonic()
        return [{"id": link.entry.pile_id, "group": link.entry.group,
                 "priority": link.entry.priority, "heard": self.heard(link, now),
                 "setpoint_w": link.sent_w,
                 "budget_spent": budget_left(link.telemetry or {}) == 0,
                 **{name: (link.telemetry or {}).get(key)
                    for key, name in wire.TELEMETRY_FIELDS.items()}} for link in self.links]

    async def run(self, duration_s=None):
        """Dispatch every period until `duration_s` has passed (for ever when None)."""
        loop = asyncio.get_running_loop()
        ends = None if duration_s is None else loop.time() + duration_s
        next_at = loop.time()
        while ends is None or loop.time() < ends:
            self.dispatch_once()
            next_at += self.dispatch.period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
