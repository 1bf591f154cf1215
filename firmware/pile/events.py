"""The event log: what a technician wants to know about, kept across reboots.

Each entry is [index, uptime s, code, value]; indexes keep counting when old
entries fall out of the ring (and across boots, with a journal on flash), so a
reader asks "from index N" and sees gaps. Logging only fills a RAM ring; `flush()`,
called by the control loop between ticks, copies what is new to the journal, so a
tick never waits on flash.
"""

from array import array

from micropython import const

EVENT_BOOT = const(1)  # value: RESET_* (why the pile booted)
EVENT_FAULT = const(2)  # value: converter fault code, or 0 when the converter went silent
EVENT_FAULT_CLEARED = const(3)
EVENT_STOP = const(4)  # value: 1 COMMAND, 2 E-stop input
EVENT_RELEASE = const(5)
EVENT_SETPOINT_EXPIRED = const(6)
EVENT_CONFIG_CHANGED = const(7)  # value: number of keys changed (one EVENT_CONFIG_KEY each)
EVENT_METER_LOST = const(8)
EVENT_METER_BACK = const(9)
EVENT_KEY_PROVISIONED = const(10)  # value: 1 set, 0 removed
EVENT_REBOOT_REQUESTED = const(11)
EVENT_EV_PLUGGED = const(12)
EVENT_EV_UNPLUGGED = const(13)
EVENT_FAULT_RESET_REQUESTED = const(14)
EVENT_STORE_DAMAGED = const(15)  # a settings file could not be read (value: which; 5 the
# V2G budget's counters, counted as spent)
EVENT_SESSION_ENDED = const(16)  # an unplug dropped the setpoint, departure and reserve
EVENT_CONFIG_KEY = const(17)  # value: key slot << 8 | config.KEY_NUMBERS index + 1
EVENT_AUTH_FAILED = const(18)  # value: refusals (auth or replay) since the last entry
EVENT_LIMITS = const(19)  # value: the envelope's limiting reasons bits, now (0: none)
EVENT_FLASH_ERROR = const(20)  # the journal could not be written (entries wait); value: errno
EVENT_UPDATE = const(21)  # a field update; value: UPDATE_* below
EVENT_BUDGET = const(22)  # the owner's V2G budget; value: budget.SPENT_* bits, 0 open again

# EVENT_UPDATE values
UPDATE_ACCEPTED = const(0)  # a package's signature checked: its chunks are taken
UPDATE_COMMITTED = const(1)  # every file checked: the trial boot is next
UPDATE_CONFIRMED = const(2)  # the trial found itself healthy: it boots from now on
UPDATE_ROLLED_BACK = const(3)  # the trial failed: the old firmware runs again

# EVENT_BOOT values
RESET_POWER_ON = const(1)  # power on, or a process killed on the unix port
RESET_WATCHDOG = const(2)
RESET_REQUESTED = const(3)  # COMMAND reboot, or a soft reset at the REPL

_CAPACITY = const(64)


class EventLog:
    """A ring of [index, uptime s, code, value] kept in one preallocated array, so logging
    an event allocates nothing."""

    def __init__(self, capacity=_CAPACITY):
        self._capacity = capacity
        self._ring = array("i", bytes(4 * 3 * capacity))  # uptime, code, value per entry
        self.next_index = 0
        self.journal = None  # entries below its next_index are on flash
        self.lost = 0  # entries that left the RAM ring before reaching flash
        self._lost_below = 0  # those are counted up to here

    def attach(self, journal):
        """Keep entries on flash from now on: indexes go on from the journal's."""
        self.journal = journal
        self.next_index = journal.next_index

    def add(self, uptime_s, code, value=0):
        at = 3 * (self.next_index % self._capacity)
        ring = self._ring
        ring[at] = uptime_s
        ring[at + 1] = code
        ring[at + 2] = value
        self.next_index += 1

    def flush(self):
        """Copy the entries logged since the last flush to the journal; return how many.
        An OSError from the flash leaves them pending for the next flush."""
        journal = self.journal
        if journal is None:
            return 0
        start = max(journal.next_index, self._lost_below)
        oldest = self.next_index - self._capacity
        if start < oldest:  # the flash fell behind by more than the ring holds
            self.lost += oldest - start
            start = self._lost_below = oldest
        if start == self.next_index:
            return 0
        entries = self._entries(start, self.next_index)
        journal.append(entries)
        return len(entries)

    def since(self, first, limit):
        """Up to `limit` entries with index >= first, oldest first: with a journal, those
        on flash only (flush first); without, those still in the RAM ring."""
        if self.journal is not None:
            return self.journal.read(first, limit)
        oldest = max(first, self.next_index - self._capacity, 0)
        return self._entries(oldest, min(self.next_index, oldest + limit))

    def _entries(self, start, end):
        ring = self._ring
        found = []
        for index in range(start, end):
            at = 3 * (index % self._capacity)
            found.append([index, ring[at], ring[at + 1], ring[at + 2]])
        return found
