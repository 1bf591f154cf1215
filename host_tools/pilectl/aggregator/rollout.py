"""A signed update package rolled out over the fleet, in waves (docs/aggregator.md, Rollouts).

`Rollout(links, package, technician_keys, settings)` puts `package`
(pilectl.release.Package) on the piles of `links`, the aggregator's own PileLinks (TCP,
serial or the broker), while the aggregator goes on dispatching:

- a canary wave first (`canary_percent` of the piles, at least one; the `canaries`
  named first), then the rest in waves of `wave_percent`, in an order fixed by the
  package and the pile ids (so the canaries spread over the fleet's sites);
- a wave starts only once every pile of the one before runs the new version and has
  confirmed it after its trial boot;
- a pile that refuses the package, rolls back, or has not confirmed within
  `confirm_s` of its start halts the rollout: no pile is offered the package any more,
  the piles of the wave that had not committed it get no more of it, and those already
  committed are followed until they confirm or roll back, so that the report says where
  every pile stands.

Each pile follows pilectl.transfer's plan (the one `pilectl update` follows) from what
the pile says in its UPDATE_STATUS, so a dropped link or the reboot into the trial
resumes where the pile stands. One request at a time a pile, each at least `gap_s`
after its last (a pile takes 20 requests a second on a connection, and the dispatch's
setpoints share them), and at most `parallel` piles receiving a package at once.

Keys: UPDATE_OFFER, UPDATE_CHUNK and UPDATE_COMMIT, which install firmware, are signed
with the pile's technician's key; UPDATE_GET, which anyone may ask, with the link key.
A pile without a technician's key is skipped and reported, never offered the package
under its link key.
"""

import asyncio
import functools
import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from pilectl import wire
from pilectl.aggregator.link import LinkLost
from pilectl.session import PileError, Session
from pilectl.transfer import DONE, REBOOT, WAIT, Transfer, UpdateFailed, named

IDLE, RUNNING, HALTING, HALTED, DONE_STATE = "idle", "running", "halting", "halted", "done"
STATES = (IDLE, RUNNING, HALTING, HALTED, DONE_STATE)
PENDING, UPDATING, UPDATED, FAILED, SKIPPED, STOPPED = (
    "pending", "updating", "updated", "failed", "skipped", "stopped")
PILE_STATES = (PENDING, UPDATING, UPDATED, FAILED, SKIPPED, STOPPED)

_REPLY_S = 5.0  # for a request's UPDATE_STATUS; then the pile is asked where it stands
_POLL_S = 0.5  # between asking a pile that checks a signature or its files
_TRIAL_POLL_S = 1.0  # between asking a pile on its trial boot
_LINK_POLL_S = 0.1  # between looking whether a link is up (again)
_TRANSIENT = 20  # busy or replay refusals in a row after which a pile fails


@dataclass
class Settings:
    """How a rollout goes: its waves, its pace, its deadline."""

    canary_percent: float = 5.0  # of the piles, in the first wave (at least one)
    wave_percent: float = 25.0  # of the piles, in each later wave (at least one)
    parallel: int = 50  # piles receiving a package at once
    confirm_s: float = 600.0  # from a pile's start to its confirmed trial
    gap_s: float = 0.06  # between one pile's requests: under its 20 a second
    canaries: tuple = ()  # pile ids in the canary wave whatever the percentages
    downgrade: bool = False  # an older version than a pile runs may go on it

    def problem(self):
        """What is wrong with these settings, in words; None when nothing."""
        if not 0 < self.canary_percent <= 100 or not 0 < self.wave_percent <= 100:
            return "canary_percent and wave_percent must be percentages above 0, up to 100"
        if not isinstance(self.parallel, int) or self.parallel < 1:
            return "parallel must be a whole number of piles, at least 1"
        if not self.confirm_s > 0:
            return "confirm_s must be seconds > 0"
        return None


@dataclass
class PileProgress:
    pile_id: str
    wave: int = 0  # 1 is the canary wave; 0: in none (skipped)
    state: str = PENDING
    phase: str = ""  # while updating: where the pile stands (its update state)
    held: int = 0  # bytes of the package the pile holds
    asked_again: int = 0  # requests unanswered in time, lost with the link, or busy
    kind: str | None = None  # a failure's: refused, rolled back, deadline
    reason: str | None = None  # why it failed, or was skipped
    started: float | None = None  # monotonic times
    finished: float | None = None
    seconds: float | None = None  # from its start to its confirmation (or failure)

    def report(self):
        found = {"pile": self.pile_id, "wave": self.wave, "state": self.state}
        for name in ("phase", "kind", "reason", "seconds", "asked_again"):
            value = getattr(self, name)
            if value:
                found[name] = value
        if self.state == UPDATING:
            found["held"] = self.held
        return found


class _Stopped(Exception):
    """The rollout halted before this pile committed the package: it gets no more."""


@dataclass
class Rollout:
    links: dict  # pile id -> PileLink
    package: object  # pilectl.release.Package
    technician_keys: dict  # pile id -> the technician's key, or why there is none (text)
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self):
        self.state = IDLE
        self.wave = 0  # the wave under way (1: the canary), or the last one
        self.halted_because = None
        self.started = self.ended = None
        self.wave_seconds = []
        self.piles = {pile_id: PileProgress(pile_id) for pile_id in self.links}
        for pile_id, key in self.technician_keys.items():
            if not isinstance(key, bytes) and pile_id in self.piles:
                self.piles[pile_id].state = SKIPPED
                self.piles[pile_id].reason = key
        self.waves = self._plan()
        self._slots = asyncio.Semaphore(self.settings.parallel)
        self._last_sent = {}  # pile id -> loop time of its last update request

    # -- the plan -------------------------------------------------------------------

    def _plan(self):
        """The waves: lists of pile ids, the canary wave first."""
        eligible = [p for p in self.piles if self.piles[p].state == PENDING]
        named_first = [p for p in self.settings.canaries if p in eligible]
        rest = sorted((p for p in eligible if p not in named_first), key=self._order)
        count = len(eligible)
        canary = max(1, math.ceil(count * self.settings.canary_percent / 100), len(named_first))
        size = max(1, math.ceil(count * self.settings.wave_percent / 100))
        ordered = named_first + rest
        waves = [ordered[:canary]] if ordered else []
        waves += [ordered[i:i + size] for i in range(canary, count, size)]
        for number, wave in enumerate(waves, 1):
            for pile_id in wave:
                self.piles[pile_id].wave = number
        return waves

    def _order(self, pile_id):
        return hashlib.blake2b(self.package.id + pile_id.encode(), digest_size=8).digest()

    # -- running --------------------------------------------------------------------

    def begin(self):
        """Under way from now (`run` then takes the waves)."""
        if self.state == IDLE:
            self.state = RUNNING
            self.started = time.monotonic()

    async def run(self):
        """Wave after wave until every pile runs the package, or one fails: the state
        ends as done or halted."""
        self.begin()
        try:
            for number, wave in enumerate(self.waves, 1):
                if self.halted_because is not None:
                    break
                self.wave = number
                began = time.monotonic()
                await asyncio.gather(*(self._pile(self.piles[p]) for p in wave))
                self.wave_seconds.append(round(time.monotonic() - began, 2))
        except asyncio.CancelledError:
            self.halt("the aggregator stopped")
            raise
        finally:
            self.ended = time.monotonic()
            self.state = HALTED if self.halted_because is not None else DONE_STATE

    def halt(self, reason):
        """Stop offering the package (the operator's, or a failed pile's): piles that have
        not committed it get no more, piles on trial are followed to their end."""
        if self.halted_because is None:
            self.halted_because = reason
        if self.state == RUNNING:
            self.state = HALTING

    async def _pile(self, progress):
        """One pile, from its first UPDATE_GET to its confirmed trial (or its failure)."""
        if self.halted_because is not None:
            return
        progress.state = UPDATING
        progress.started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self.settings.confirm_s
        sending = _Slot(self._slots)
        try:
            async with asyncio.timeout_at(deadline):
                await self._drive(progress, sending)
            progress.state = UPDATED
            progress.phase = ""
        except UpdateFailed as exc:
            self._fail(progress, "rolled back" if exc.rolled_back else "refused", exc.reason)
        except TimeoutError:
            self._fail(progress, "deadline", f"not confirmed within "
                       f"{self.settings.confirm_s:g} s of its start (it was "
                       f"{progress.phase or 'not reached'})")
        except _Stopped:
            progress.state = STOPPED
        except Exception as exc:  # noqa: BLE001 (a fault of ours: this pile fails, said)
            self._fail(progress, "error", f"{type(exc).__name__}: {exc}")
        finally:
            sending.release()
            progress.finished = time.monotonic()
            progress.seconds = round(progress.finished - progress.started, 2)

    def _fail(self, progress, kind, reason):
        progress.state, progress.kind, progress.reason = FAILED, kind, reason
        self.halt(f"{progress.pile_id} {kind}: {reason}")

    async def _drive(self, progress, sending):
        link = self.links[progress.pile_id]
        signer = Session(technician_key=self.technician_keys[progress.pile_id],
                         pile_id=progress.pile_id)
        plan = Transfer(self.package, self.settings.downgrade)
        committed = [False]  # the pile took the commit: it goes on to its trial by itself

        def stopped():
            if self.halted_because is not None and not committed[0]:
                raise _Stopped

        ask = functools.partial(self._ask, link, progress=progress, stopped=stopped)
        status, boot = await ask(wire.UPDATE_GET, {})
        while True:
            step = plan.next(status)  # UpdateFailed: refused, or rolled back
            committed[0] = committed[0] or plan.committed
            progress.held = plan.held
            progress.phase = named(status)["state"]
            if step == DONE:
                return
            if step == WAIT:
                await asyncio.sleep(_TRIAL_POLL_S if committed[0] else _POLL_S)
                status, boot = await ask(wire.UPDATE_GET, {})
            elif step == REBOOT:
                sending.release()
                progress.phase = "rebooting"
                await self._rebooted(link, boot)
                status, boot = await ask(wire.UPDATE_GET, {})
            else:
                stopped()
                if not sending.held:
                    progress.phase = "waiting for its turn"
                    await sending.acquire()
                    stopped()  # halted meanwhile
                status, boot = await ask(step.mtype, step.fields, signer)
                if step.mtype == wire.UPDATE_COMMIT:
                    committed[0] = True
                    sending.release()  # the files are in: another pile may send

    async def _ask(self, link, mtype, fields, signer=None, *, progress, stopped):
        """(UPDATE_STATUS fields, the boot nonce they came under) for one request, sent
        once the link is up and `gap_s` after the pile's last. A request unanswered
        within _REPLY_S, or lost with its link, and a busy pile, make an UPDATE_GET
        instead (the plan goes on from what the pile says); any other refusal is the
        pile's refusal of the package (UpdateFailed, with its words). `stopped()` raises
        _Stopped once the pile is to get no more."""
        transient = 0
        while True:
            while not link.connected:
                stopped()
                await asyncio.sleep(_LINK_POLL_S)
            await self._pace(link)
            try:
                future = link.update_request(mtype, fields, signer)
                found = await asyncio.wait_for(future, _REPLY_S)
                return found, link.session.nonce
            except (TimeoutError, LinkLost):
                pass
            except PileError as exc:
                if exc.code not in (wire.ERR_BUSY, wire.ERR_REPLAY) or transient >= _TRANSIENT:
                    raise UpdateFailed(_refusal(mtype, exc)) from None
                transient += 1
                await asyncio.sleep(_POLL_S)
            progress.asked_again += 1
            stopped()
            mtype, fields, signer = wire.UPDATE_GET, {}, None

    async def _pace(self, link):
        pile_id = link.entry.pile_id
        loop = asyncio.get_running_loop()
        wait = self._last_sent.get(pile_id, 0.0) + self.settings.gap_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_sent[pile_id] = loop.time()

    @staticmethod
    async def _rebooted(link, boot):
        """Until the pile has said HELLO under a new boot's nonce."""
        while not link.connected or link.session.nonce == boot:
            await asyncio.sleep(_LINK_POLL_S)

    # -- what it says ---------------------------------------------------------------

    def summary(self, piles=False):
        """Where the rollout stands, for /status, GET /rollout and the live table; with
        `piles`, every pile's progress too."""
        counts = Counter(p.state for p in self.piles.values())
        now = self.ended or time.monotonic()
        found = {"state": self.state, "version": self.package.version,
                 "package": self.package.id.hex(), "wave": self.wave,
                 "waves": len(self.waves), "wave_sizes": [len(w) for w in self.waves],
                 "piles": len(self.piles), **{state: counts[state] for state in PILE_STATES},
                 "seconds": round(now - self.started, 2) if self.started else 0.0,
                 "wave_seconds": list(self.wave_seconds),
                 "canaries": list(self.waves[0]) if self.waves else [],
                 "asked_again": sum(p.asked_again for p in self.piles.values()),
                 "halted_because": self.halted_because,
                 "failures": [p.report() for p in self.piles.values() if p.state == FAILED],
                 "skips": [p.report() for p in self.piles.values() if p.state == SKIPPED]}
        if piles:
            found["pile_list"] = [p.report() for p in self.piles.values()]
        return found


class _Slot:
    """One pile's place among the `parallel` receiving a package, held from its first
    offer or chunk to its commit."""

    def __init__(self, semaphore):
        self.semaphore = semaphore
        self.held = False

    async def acquire(self):
        if not self.held:
            await self.semaphore.acquire()
            self.held = True

    def release(self):
        if self.held:
            self.held = False
            self.semaphore.release()


def _refusal(mtype, exc):
    """A pile's ERROR to an update request, in words that say which request."""
    what = {wire.UPDATE_OFFER: "the offer", wire.UPDATE_CHUNK: "a chunk",
            wire.UPDATE_COMMIT: "the commit", wire.UPDATE_GET: "UPDATE_GET"}.get(mtype, "a request")
    if exc.code == wire.ERR_UNKNOWN_TYPE:
        return f"this pile's firmware takes no field updates ({exc.detail})"
    if exc.code == wire.ERR_AUTH:
        return (f"it refused {what}: {exc.detail}: is the technician's key the aggregator "
                "holds for it the one provisioned on the pile?")
    return f"it refused {what}: {exc.detail}"
