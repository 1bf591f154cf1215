"""A site group's link, whatever carries it (docs/site-group.md): what both transports share.

- The leader's periods (`lead`): a period starts right after each fresh meter reading, so
  that the members report their power as the meter saw it, or on time (1.5 periods after
  the last) when none came; the leader (pile/siteleader.py: its allowance again to each
  member, answered with its power, then the new one) hands its messages to the
  transport's `exchange`, which sends them and passes every reply back, and shares once
  every member answered the first, or `ANSWER_MS` after (on a bus, once each was asked).
- A member's answer to one message (`answer`): HELLO and SITE_ALLOWANCE only, through its
  SiteSession (pile/siteshare.py), 20 a second at most (the rest dropped unread), so the
  link opens no other way to the pile's requests and a flood costs no more than that.
- The counters (`diagnostics`).

The transports: UDP on the site LAN (pile/siteudp.py) and a second RS485 bus
(pile/sitebus.py); pile/sitegroup.py picks the one the board file names.
"""

import asyncio

from micropython import const

from pile.clock import ticks_diff, ticks_ms
from pile.protocol import HELLO
from pile.siteshare import SITE_ALLOWANCE, SiteSession, peek

POLL_MS = const(10)  # how often a transport looks for what came
ANSWER_MS = const(150)  # what the leader waits for the members' answers
_PER_SECOND = const(20)  # messages a member takes: two a period from its leader, and more
_HELLO_TO = const(2)  # a leader's HELLO field: the member asked (a bus carries every one's)
_ALLOWANCE_TO = const(4)  # SITE_ALLOWANCE's member pile id


class SiteLink:
    """Subclassed by each transport, which gives `run()` and `exchange(messages)`."""

    def __init__(self, pile, step, site):
        self.pile = pile
        self.step = step  # the pile's ControlStep: the leader's meter readings
        self.site = site
        self.leader = None  # the Leader, on the leader
        self.session = None  # the SiteSession, on a member
        self.received = 0
        self.dropped = 0  # over the budget, or of a type a member does not take
        self.send_failures = 0
        self._second_at = ticks_ms()
        self._taken = 0

    def diagnostics(self):
        """The site group's counters since boot (DIAGNOSTICS, docs/site-group.md)."""
        share = self.pile.ctl.inputs.share
        found = {"site_allowances": share.allowances, "site_fallbacks": share.fallbacks,
                 "site_received": self.received, "site_dropped": self.dropped,
                 "site_send_failures": self.send_failures}
        leader = self.leader
        if self.site["role"] == "leader":
            peers = leader.peers if leader is not None else ()
            found["site_periods"] = leader.periods if leader is not None else 0
            found["site_meter_lost"] = leader.meter_lost if leader is not None else 0
            found["site_reports"] = sum(peer.reports for peer in peers)
            found["site_refusals"] = sum(peer.refusals for peer in peers)
        return found

    def answer(self, data, addressed=False):
        """A member's reply (wire bytes) to one message `data`, or None when it is dropped:
        over the budget, not HELLO or SITE_ALLOWANCE, or, `addressed` (on a bus, which
        carries every member's messages and replies), not asked of this pile."""
        msg = peek(data)
        mtype = None if msg is None else msg.get(0)
        if addressed:
            to = None if msg is None else msg.get(_HELLO_TO if mtype == HELLO
                                                  else _ALLOWANCE_TO)
            if to != self.pile.pile_id or mtype == HELLO and 4 in msg:
                return None  # another member's, or a reply: not this pile's to answer
        self.received += 1
        now = ticks_ms()
        if ticks_diff(now, self._second_at) >= 1000:
            self._second_at = now
            self._taken = 0
        if self._taken >= _PER_SECOND or mtype not in (HELLO, SITE_ALLOWANCE):
            self.dropped += 1
            return None
        self._taken += 1
        if self.session is None:
            self.session = SiteSession(self.pile)
        return self.session.handle(data)

    async def lead(self, addresses):
        """The leader's periods, forever; `addresses` maps each other member's pile id to
        its address on the transport."""
        from pile.siteleader import Leader  # the leader's alone: a member never loads it

        pile = self.pile
        step = self.step
        leader = self.leader = Leader(pile, step, self.site, addresses)
        started_at = ticks_ms()
        reading = step.read_at
        late_ms = leader.period_ms + leader.period_ms // 2
        while True:
            now = ticks_ms()
            fresh = step.read_at != reading and pile.site_w is not None
            if not fresh and ticks_diff(now, started_at) < late_ms:
                await asyncio.sleep_ms(POLL_MS)
                continue
            reading = step.read_at
            started_at = now
            await self.exchange(leader.period(now))
            # the new allowances to the members that answered: one that did not is counted
            # over its whole range, and on a bus each silent member costs a reply's wait
            await self.exchange([m for m in leader.share(ticks_ms()) if m[0].reported])
