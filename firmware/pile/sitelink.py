"""A site group's network transport: UDP on the site LAN (docs/site-group.md).

Each pile of the group binds its UDP port (its member entry's `port`, else the group's
`udp_port`). The leader sends every period two datagrams to each member (pile/siteleader.py:
its allowance again, answered with its power, then the new one) and takes what comes back;
a member answers each datagram it takes from the sender's address, through its
SiteSession (pile/siteshare.py): a datagram carries one message, signed,
unframed (UDP has boundaries and a checksum of its own). A member takes HELLO and
SITE_ALLOWANCE only, 20 datagrams a second at most (the rest dropped unread, as a TCP
connection's), so the port opens no other way to the pile's requests and a flood costs
no more than that.

No asyncio datagram support in MicroPython: the socket is non-blocking and read every
`_POLL_MS`, so a reply waits that long at most.
"""

import asyncio
import socket

from micropython import const

from pile.app import SLOT_SITE
from pile.clock import ticks_diff, ticks_ms
from pile.protocol import HELLO
from pile.siteshare import SITE_ALLOWANCE, SiteSession, peek

_POLL_MS = const(10)
_MAX_DATAGRAM = const(640)  # the largest message and a COSE_Mac0 around it
_PER_SECOND = const(20)  # datagrams a member takes: two a period from its leader, and more
_ANSWER_MS = const(150)  # what the leader waits for the members' answers before it shares


def build_site_link(pile, step, board):
    """A site group's transport for `pile`, whose ControlStep `step` reads the leader's
    meter; without a site key the members keep their fallback shares, said at boot."""
    if pile.keys[SLOT_SITE] is None:
        pile.problems.append("site group %s: no site key yet, so no allowances: every pile "
                             "keeps its fallback share (provision site_key over USB)"
                             % board["site"]["group"])
    return SiteLink(pile, step, board["site"])


def _address(host, port):
    """The socket address of `host`:`port`, as recvfrom gives a sender's: hashable (bytes
    on MicroPython, whose getaddrinfo gives a bytearray; a tuple on CPython)."""
    address = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    return bytes(address) if type(address) is bytearray else address


def _bound(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(_address("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def _receive(sock):
    try:
        return sock.recvfrom(_MAX_DATAGRAM)
    except OSError:  # EAGAIN: nothing came
        return None, None


class SiteLink:
    def __init__(self, pile, step, site):
        self.pile = pile
        self.step = step  # the pile's ControlStep: the leader's meter readings
        self.site = site
        members = site["members"]
        self.port = members[pile.pile_id].get("port", site["udp_port"])
        self.leader = None  # the Leader, on the leader
        self.received = 0
        self.dropped = 0  # over the budget, or of a type a member does not take
        self.send_failures = 0

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

    def _send(self, sock, data, address):
        try:
            sock.sendto(data, address)
        except OSError:  # no route yet, a full buffer: the period after will tell
            self.send_failures += 1

    async def run(self):
        sock = _bound(self.port)
        if self.site["role"] == "leader":
            await self._lead(sock)
        else:
            await self._answer(sock)

    async def _lead(self, sock):
        pile = self.pile
        site = self.site
        addresses = {}
        for pile_id, member in site["members"].items():
            if pile_id != pile.pile_id:
                addresses[pile_id] = _address(member["host"], member.get("port",
                                                                          site["udp_port"]))
        from pile.siteleader import Leader  # the leader's alone: a member never loads it

        step = self.step
        leader = self.leader = Leader(pile, step, site, addresses)
        by_address = {}
        for peer in leader.peers:
            by_address[peer.address] = peer
        started_at = ticks_ms()
        reading = step.read_at
        late_ms = leader.period_ms + leader.period_ms // 2
        polling = False
        while True:
            now = ticks_ms()
            # a period starts after each fresh reading, so that the members report their
            # power as the meter saw it; without one for 1.5 periods (the meter lost), on
            # time. It shares once every member answered, or `_ANSWER_MS` after it started.
            fresh = step.read_at != reading and pile.site_w is not None
            if fresh or ticks_diff(now, started_at) >= late_ms:
                reading = step.read_at
                started_at = now
                polling = True
                for peer, data in leader.period(now):
                    self._send(sock, data, peer.address)
            if polling and (leader.ready() or ticks_diff(now, started_at) >= _ANSWER_MS):
                polling = False
                for peer, data in leader.share(now):
                    self._send(sock, data, peer.address)
            data, address = _receive(sock)
            if data is None:
                await asyncio.sleep_ms(_POLL_MS)
                continue
            peer = by_address.get(address)
            self.received += 1
            if peer is not None:
                leader.received(data, peer)

    async def _answer(self, sock):
        session = SiteSession(self.pile)
        second_at = ticks_ms()
        taken = 0
        while True:
            data, address = _receive(sock)
            if data is None:
                await asyncio.sleep_ms(_POLL_MS)
                continue
            self.received += 1
            now = ticks_ms()
            if ticks_diff(now, second_at) >= 1000:
                second_at = now
                taken = 0
            msg = peek(data)
            if taken >= _PER_SECOND or msg is None or msg.get(0) not in (HELLO, SITE_ALLOWANCE):
                self.dropped += 1
                continue
            taken += 1
            self._send(sock, session.handle(data), address)
