"""What the live fleet page (api.py: GET /, /events, /piles/ID) shows, and its push.

The aggregator keeps the fleet's last hour (one point a period: target, delivered and
the envelope; a ring, so memory is bounded) and, from each period's heard piles, the
events of a pile left out and heard again (each pile's own samples and link events are
in its link's `recent`, pilectl/aggregator/recent.py).

Every browser on the page holds one server-sent-events stream: a `snapshot` when it
connects (the fleet, the hour, every pile), then a `period` event after each dispatch
with the fleet and the piles whose row changed. The dispatch only notes that a period
ended; a task of its own (`run`) builds the event, once for every browser, and hands it
to each browser's queue without waiting. A browser whose queue is full (it reads too
slowly) has its stream ended: its EventSource opens it again and gets a new snapshot,
so the dispatch never waits for any browser.
"""

import asyncio
import functools
import json
import math
import time
from collections import deque

from pilectl import names, wire
from pilectl.aggregator.rollout import FAILED

HISTORY_S = 3600  # the chart's hour
QUEUE = 8  # events a browser may be behind; then its stream ends and it resyncs
MAX_ROWS = 1000  # changed piles in one event; the others in the next period's
_STATE, _SOC, _POWER, _REASONS, _TTL_LEFT = 2, 4, 3, 9, 11


class Live:
    MAX_STREAMS = 16  # pages open at once: each costs a snapshot, and the push its bytes

    def __init__(self, aggregator):
        self.aggregator = aggregator
        self.history = deque(maxlen=math.ceil(HISTORY_S / aggregator.dispatch.period_s))
        self.clients = {}  # one queue a browser -> what closes its connection (or None)
        self._snapshot = None  # ((its period's time, whether a token is set), its bytes)
        self.dropped = 0  # streams ended because their browser read too slowly
        self.push_ms = 0.0  # what building the latest period's event took
        self.status = None  # the latest period's
        self._heard = set()  # the links heard at the latest period
        self._pushed = {}  # pile id -> what its row was made of when last pushed
        self._start = 0  # where the next look for changed rows begins (MAX_ROWS)
        self._period = asyncio.Event()

    def record(self, status, heard):
        """A period ended (from the dispatch: cheap, no browser work here)."""
        self.status = status
        self.history.append((status["t"], status["target_w"], status["delivered_w"],
                             status["envelope_low_w"], status["envelope_high_w"]))
        now_heard = set(heard)  # links: hashed by identity, cheap at 10,000 piles
        if now_heard != self._heard:
            for link in self._heard - now_heard:
                link.recent.event("excluded: " + ("link lost" if not link.connected else
                                                  "no TELEMETRY for 3 periods"))
            for link in now_heard - self._heard:
                link.recent.event("in the split")
            self._heard = now_heard
        self._period.set()

    # -- what a browser is sent ---------------------------------------------------

    def row(self, link, now, rollout_piles, heard=None):
        """One pile's row of the table, in words."""
        tel = link.telemetry or {}
        state = tel.get(_STATE)
        if heard is None:
            heard = self.aggregator.heard(link, now)
        return {"id": link.entry.pile_id, "group": link.entry.group,
                "priority": link.entry.priority, "heard": heard,
                "connected": link.connected,
                "state": None if state is None else names.STATES.get(state, f"state {state}"),
                "reasons": _reason_words(tel.get(_REASONS, 0)),
                "soc_permille": tel.get(_SOC), "power_w": tel.get(_POWER),
                "setpoint_w": link.sent_w,  # an excluded pile's ttl left is long stale:
                "ttl_left_s": tel.get(_TTL_LEFT) if heard else None,  # none shown
                "heard_t": None if link.heard_at is None else
                round(time.time() - (now - link.heard_at), 1),
                "firmware": link.recent.firmware, "refusing": refusing(link),
                "rollout": _rollout_word(rollout_piles.get(link.entry.pile_id))}

    def fleet(self):
        """The latest status, with the page's counts (refusing, rolled back)."""
        served = self.aggregator.served()
        rollout = self.aggregator.rollout
        rolled_back = 0 if rollout is None else sum(
            1 for p in rollout.piles.values() if p.state == FAILED and p.kind == "rolled back")
        return {**(self.status or {}), "refusing": sum(1 for link in served if refusing(link)),
                "rolled_back": rolled_back}

    def snapshot(self, token_needed):
        now = time.monotonic()
        rollout_piles = self._rollout_piles()
        return {"fleet": self.fleet(), "history": list(self.history),
                "period_s": self.aggregator.dispatch.period_s, "token": token_needed,
                "piles": [self.row(link, now, rollout_piles)
                          for link in self.aggregator.served()]}

    def changes(self):
        """The period event: the fleet, the hour's newest point, the changed rows."""
        now = time.monotonic()
        rollout_piles = self._rollout_piles()
        served = self.aggregator.served()
        rows = []
        count = len(served)
        start = self._start % count if count else 0
        heard_now = self.aggregator.heard
        for n in range(count):
            link = served[(start + n) % count]
            heard = heard_now(link, now)
            key = (link.heard_at, heard, link.connected, link.sent_w, refusing(link),
                   link.recent.firmware, _rollout_word(rollout_piles.get(link.entry.pile_id)))
            if self._pushed.get(link.entry.pile_id) != key:
                self._pushed[link.entry.pile_id] = key
                rows.append(self.row(link, now, rollout_piles, heard))
                if len(rows) == MAX_ROWS:
                    self._start = start + n + 1
                    break
        return {"fleet": self.fleet(), "point": self.history[-1] if self.history else None,
                "piles": rows}

    def detail(self, pile_id):
        """A pile's row, latest TELEMETRY, recent samples and events; None if unknown."""
        link = next((link for link in self.aggregator.links
                     if link.entry.pile_id == pile_id), None)
        if link is None:
            return None
        rollout = self.aggregator.rollout
        progress = None if rollout is None else rollout.piles.get(pile_id)
        return {"pile": self.row(link, time.monotonic(), self._rollout_piles()),
                "telemetry": {name: (link.telemetry or {}).get(key)
                              for key, name in wire.TELEMETRY_FIELDS.items()},
                "recent": link.recent.series(),
                "events": [{"t": t, "text": text} for t, text in link.recent.events],
                "rollout": None if progress is None else progress.report()}

    def _rollout_piles(self):
        rollout = self.aggregator.rollout
        return {} if rollout is None else rollout.piles

    # -- the push -----------------------------------------------------------------

    def full(self):
        return len(self.clients) >= self.MAX_STREAMS

    def join(self, token_needed, close=None):
        """A browser's queue, its snapshot already in it; `close` ends its connection
        (when it reads too slowly, or the API shuts down). The snapshot is built once a
        period, whatever number of browsers come (at 10,000 piles one takes some 90 ms)."""
        queue = asyncio.Queue(QUEUE)
        made = (self.status and self.status.get("t"), token_needed)
        if self._snapshot is None or self._snapshot[0] != made:
            self._snapshot = (made, _event("snapshot", self.snapshot(token_needed)))
        queue.put_nowait(self._snapshot[1])
        self.clients[queue] = close
        return queue

    def leave(self, queue):
        self.clients.pop(queue, None)

    async def run(self):
        """After each period, its event to every browser (for ever)."""
        while True:
            await self._period.wait()
            self._period.clear()
            if not self.clients:
                continue
            began = time.perf_counter()
            data = _event("period", self.changes())
            self.push_ms = (time.perf_counter() - began) * 1000
            for queue in list(self.clients):
                try:
                    queue.put_nowait(data)
                except asyncio.QueueFull:  # too slow: its stream ends, it comes back
                    self.dropped += 1
                    self._end(queue)

    def end_streams(self):
        """Every browser's stream ends (the API is shutting down)."""
        for queue in list(self.clients):
            self._end(queue)

    def _end(self, queue):
        """End a browser's stream: at once if it waits for its queue, and by closing its
        connection if it is stuck writing to a browser that does not read."""
        close = self.clients.pop(queue, None)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
        if close is not None:
            close()


def refusing(link):
    """The pile's latest answer was an ERROR (no ACK since)."""
    refused = link.recent.refused_at
    return refused is not None and (link.acked_at is None or refused > link.acked_at)


@functools.lru_cache(maxsize=1024)
def _reason_words(bits):
    return tuple(names.reasons(bits))


def _rollout_word(progress):
    if progress is None:
        return None
    return progress.kind if progress.state == FAILED and progress.kind else progress.state


def _event(kind, payload):
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
