"""The event log: the last few things a technician wants to know about, in a ring.

Each entry is [index, uptime s, code, value]; indexes keep counting when old
entries fall out of the ring, so a reader asks "from index N" and sees gaps.
"""

from array import array

from micropython import const

EVENT_BOOT = const(1)
EVENT_FAULT = const(2)  # value: converter fault code, or 0 when the converter went silent
EVENT_FAULT_CLEARED = const(3)
EVENT_STOP = const(4)  # value: 1 COMMAND, 2 E-stop input
EVENT_RELEASE = const(5)
EVENT_SETPOINT_EXPIRED = const(6)
EVENT_CONFIG_CHANGED = const(7)  # value: number of keys changed
EVENT_METER_LOST = const(8)
EVENT_METER_BACK = const(9)
EVENT_KEY_PROVISIONED = const(10)  # value: 1 set, 0 removed
EVENT_REBOOT_REQUESTED = const(11)
EVENT_EV_PLUGGED = const(12)
EVENT_EV_UNPLUGGED = const(13)
EVENT_FAULT_RESET_REQUESTED = const(14)
EVENT_STORE_DAMAGED = const(15)  # a settings file could not be read; defaults were used
EVENT_SESSION_ENDED = const(16)  # an unplug dropped the setpoint, departure and reserve

_CAPACITY = const(64)


class EventLog:
    """A ring of [index, uptime s, code, value] kept in one preallocated array, so logging
    an event allocates nothing."""

    def __init__(self, capacity=_CAPACITY):
        self._capacity = capacity
        self._ring = array("i", bytes(4 * 3 * capacity))  # uptime, code, value per entry
        self.next_index = 0

    def add(self, uptime_s, code, value=0):
        at = 3 * (self.next_index % self._capacity)
        ring = self._ring
        ring[at] = uptime_s
        ring[at + 1] = code
        ring[at + 2] = value
        self.next_index += 1

    def since(self, first, limit):
        """Up to `limit` entries with index >= first, oldest first."""
        oldest = max(first, self.next_index - self._capacity, 0)
        last = min(self.next_index, oldest + limit)
        ring = self._ring
        entries = []
        for index in range(oldest, last):
            at = 3 * (index % self._capacity)
            entries.append([index, ring[at], ring[at + 1], ring[at + 2]])
        return entries
