"""A site group's network transport: UDP on the site LAN (docs/site-group.md).

Each pile of the group binds its UDP port (its member entry's `port`, else the group's
`udp_port`). The leader sends each period's messages to every member at once and takes
the replies as they come from the members' addresses (pile/sitelink.py has the periods);
a member answers each datagram it takes from the sender's address. A datagram carries
one message, signed, unframed (UDP has boundaries and a checksum of its own).

No asyncio datagram support in MicroPython: the socket is non-blocking and read every
`POLL_MS`, so a reply waits that long at most.
"""

import asyncio
import socket

from micropython import const

from pile.clock import ticks_diff, ticks_ms
from pile.sitelink import ANSWER_MS, POLL_MS, SiteLink

_MAX_DATAGRAM = const(640)  # the largest message and a COSE_Mac0 around it


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


class SiteUdp(SiteLink):
    def __init__(self, pile, step, site):
        super().__init__(pile, step, site)
        self.port = site["members"][pile.pile_id].get("port", site["udp_port"])
        self._sock = None
        self._by_address = {}  # the leader's: sender address -> Peer

    def _send(self, data, address):
        try:
            self._sock.sendto(data, address)
        except OSError:  # no route yet, a full buffer: the period after will tell
            self.send_failures += 1

    async def run(self):
        self._sock = _bound(self.port)
        site = self.site
        if site["role"] != "leader":
            await self._answer()
            return
        addresses = {}
        for pile_id, member in site["members"].items():
            if pile_id != self.pile.pile_id:
                addresses[pile_id] = _address(member["host"], member.get("port",
                                                                          site["udp_port"]))
        await self.lead(addresses)

    async def exchange(self, messages):
        """Send every message at once; take the replies until each was answered, or
        `ANSWER_MS` passed."""
        by_address = self._by_address
        if not by_address:
            for peer in self.leader.peers:
                by_address[peer.address] = peer
        awaited = set()
        for peer, data in messages:
            self._send(data, peer.address)
            awaited.add(peer)
        started_at = ticks_ms()
        while awaited and ticks_diff(ticks_ms(), started_at) < ANSWER_MS:
            data, address = _receive(self._sock)
            if data is None:
                await asyncio.sleep_ms(POLL_MS)
                continue
            self.received += 1
            peer = by_address.get(address)
            if peer is not None:
                awaited.discard(peer)
                self.leader.received(data, peer)

    async def _answer(self):
        while True:
            data, address = _receive(self._sock)
            if data is None:
                await asyncio.sleep_ms(POLL_MS)
                continue
            reply = self.answer(data)
            if reply is not None:
                self._send(reply, address)
