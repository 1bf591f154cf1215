"""Who stays on the TCP link: the admission policy, as pure functions.

A client here is anything with `opened_at` and `heard_at` (ticks_ms: when it connected,
and when its last request came in) and `admitted` (one of its requests was accepted
under a key): the firmware's `pile.connection.Connection`, or a host emulator's own, so
both keep one policy. TCP keeps at most `MAX_ADMITTED` authenticated clients (the
aggregator and a technician) and `MAX_CLIENTS` sockets in all:
- a client not admitted within `AUTH_MS` of connecting, or silent for `IDLE_MS`, is
  closed (`overdue`);
- a new connection while every socket is taken closes the oldest client not admitted
  (`closed_for_new`), or is refused when all are admitted (`full`);
- a client admitted while `MAX_ADMITTED` others are closes the one silent the longest
  (`closed_for_admitted`).
So idle, slow or half-open connections never lock an aggregator out.
"""

from micropython import const

from pile.clock import ticks_diff

MAX_ADMITTED = const(2)  # authenticated: the aggregator and a technician
MAX_CLIENTS = const(4)  # TCP sockets in all, authenticated or not yet
AUTH_MS = const(5000)  # a TCP client's first accepted request comes within this
IDLE_MS = const(60000)  # a TCP client silent this long is gone (pilectl pings at 20 s)


def overdue(client, now):
    """True when `client` is to be closed at `now` (ticks_ms): it was not admitted in
    time, or fell silent."""
    return (not client.admitted and ticks_diff(now, client.opened_at) > AUTH_MS
            or ticks_diff(now, client.heard_at) > IDLE_MS)


def full(clients):
    """True when `clients` (the TCP clients, oldest first) take every socket."""
    return len(clients) >= MAX_CLIENTS


def closed_for_new(clients):
    """The client a new connection displaces: when `clients` (oldest first) take every
    socket, the oldest one not admitted; None when there is room, or none to close."""
    if not full(clients):
        return None
    for client in clients:
        if not client.admitted:
            return client
    return None


def closed_for_admitted(clients, admitted):
    """The admitted client that gives way now that `admitted` is admitted too: the one
    silent the longest when `MAX_ADMITTED` others are; None otherwise."""
    others = [c for c in clients if c.admitted and c is not admitted]
    if len(others) < MAX_ADMITTED:
        return None
    oldest = others[0]
    for other in others:
        if ticks_diff(oldest.heard_at, other.heard_at) > 0:
            oldest = other
    return oldest
