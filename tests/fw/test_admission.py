"""Which TCP clients stay: pile/admission.py's policy on clients that are only their
state (CPython and MicroPython). tests/test_link_transport.py holds the firmware's TCP
link to it over real sockets."""

from pile import admission
from pile.clock import ticks_add


class Client:
    def __init__(self, opened_at, heard_at=None, admitted=False):
        self.opened_at = opened_at
        self.heard_at = opened_at if heard_at is None else heard_at
        self.admitted = admitted


def test_a_client_not_admitted_in_time_or_silent_too_long_is_overdue():
    fresh = Client(1000)
    assert not admission.overdue(fresh, 1000 + admission.AUTH_MS)
    assert admission.overdue(fresh, 1001 + admission.AUTH_MS)
    admitted = Client(1000, admitted=True)
    assert not admission.overdue(admitted, 1000 + admission.IDLE_MS)
    assert admission.overdue(admitted, 1001 + admission.IDLE_MS)
    talking = Client(1000, heard_at=50000, admitted=True)
    assert not admission.overdue(talking, 1001 + admission.IDLE_MS)


def test_overdue_across_the_tick_counters_wrap():
    opened = ticks_add(0, -100)  # just before the wrap
    client = Client(opened)
    assert not admission.overdue(client, ticks_add(opened, admission.AUTH_MS))
    assert admission.overdue(client, ticks_add(opened, admission.AUTH_MS + 1))


def test_a_new_connection_displaces_the_oldest_client_not_admitted():
    clients = [Client(1, admitted=True), Client(2), Client(3), Client(4)]
    assert admission.full(clients)
    assert admission.closed_for_new(clients) is clients[1]
    assert admission.closed_for_new(clients[:3]) is None  # a socket is free
    every = [Client(i, admitted=True) for i in range(admission.MAX_CLIENTS)]
    assert admission.closed_for_new(every) is None and admission.full(every)


def test_a_client_admitted_beside_two_others_closes_the_one_silent_longest():
    first = Client(1, heard_at=500, admitted=True)
    second = Client(2, heard_at=300, admitted=True)
    third = Client(3, admitted=True)
    waiting = Client(4)
    clients = [first, second, waiting, third]
    assert admission.closed_for_admitted(clients, third) is second
    assert admission.closed_for_admitted([first, waiting, third], third) is None
    assert admission.MAX_ADMITTED == 2
