"""Power cut at every flash write, on littlefs, under MicroPython's unix port.

`micropython power_cut.py` (MICROPYPATH=firmware:tests/fw). The pile's state lives
on a littlefs2 filesystem (`vfs.VfsLfs2`, the one rp2 and esp32 boards use) on a
block device in RAM that loses power at its N-th block write or erase: either the
write never happens, or (torn) only its first half does. For every N through a
config change, a key change, event-log appends (one of them starting a new
segment of the ring) and saves of the V2G budget's counters, the flash as the cut left
it is mounted again and the pile boots from it, and must find: the old or the new
config, never damaged or reset; the old or the new key; an event log that reads,
without a gap, and has lost at most the entries of the append under way; budget
counters that read and hold at least every Wh counted before the cut. Prints one line
per failure and a closing "N cut points, M failures" line; exit status 1 on any failure.
"""

import sys

import vfs
from micropython import const
from pile import events
from pile.app import Pile
from pile.budget import RESERVE_WH
from pile.store import Store
from ramflash import CutDevice, every_cut, mount, unmount

_STATE = "/flash/state"
_OLD_KEY = b"O" * 32
_NEW_KEY = b"N" * 32
_SEGMENT = const(64)  # records a segment holds at event_log_bytes 2048
_FILLED = const(58)  # entries on flash before the cut runs: the appends cross a segment




def prepared_flash():
    """A formatted flash with the old config, the old key and _FILLED journal entries."""
    device = CutDevice()
    vfs.VfsLfs2.mkfs(device)
    mount(device)
    pile = Pile("cut-001", Store(_STATE))
    pile.set_config({"min_soc": 30, "event_log_bytes": 2048, "budget_wh_day": 5000})
    pile.keep_budget()  # the boot's save: the counters' file exists
    pile.set_key(_OLD_KEY)
    while pile.events.next_index < _FILLED:
        pile.stop()
    pile.events.flush()
    unmount()
    return bytes(device.data)


def run_changes(progress):
    """The changes a cut may interrupt; `progress` records what completed."""
    pile = Pile("cut-001", Store(_STATE))
    progress["durable"] = pile.events.journal.next_index  # below it: on flash
    pile.set_config({"min_soc": 40})
    progress["config"] = True
    pile.set_key(_NEW_KEY)
    progress["key"] = True
    pile.events.flush()
    progress["durable"] = pile.events.journal.next_index
    for _ in range(10):  # one entry an append, as in a quiet pile: crosses a segment
        pile.stop()
        pile.events.flush()
        progress["durable"] = pile.events.journal.next_index
    budget = pile.ctl.budget
    for _ in range(4):  # the boot's save, then a minute at 4.5 kW (75 Wh) and its save
        pile.keep_budget()  # counts a failed write rather than raising: the pile runs on,
        if pile.flash_errors:  # but here the power is off
            raise OSError(5)
        budget.run(60000, 4500)
        progress["counted"] = budget.day_wh()


def check(data, progress):
    """What a boot from the flash as the cut left it finds wrong, as a list of texts."""
    device = CutDevice(data)
    try:
        mount(device)
    except OSError as exc:
        return ["the flash does not mount: %r" % (exc,)]
    try:
        pile = Pile("cut-001", Store(_STATE))
        wrong = ["at boot: " + problem for problem in pile.problems]
        min_soc = pile.cfg.min_soc
        if min_soc not in (30, 40) or progress.get("config") and min_soc != 40:
            wrong.append("config min_soc %d after %r" % (min_soc, progress))
        if pile.cfg.event_log_bytes != 2048:
            wrong.append("config was reset: event_log_bytes %d" % pile.cfg.event_log_bytes)
        if pile.key not in (_OLD_KEY, _NEW_KEY) or progress.get("key") and pile.key != _NEW_KEY:
            wrong.append("key %r after %r" % (pile.key, progress))
        kept = pile.events.since(0, 400)  # on flash: this boot's own entry is not yet
        indexes = [entry[0] for entry in kept]
        if indexes != list(range(indexes[0], indexes[0] + len(indexes))):
            wrong.append("the event log has a gap: %r" % indexes)
        durable = progress["durable"]
        if indexes[-1] < durable - 1:
            wrong.append("committed entries lost: last %d, durable up to %d" % (indexes[-1],
                                                                                   durable - 1))
        if len(kept) < min(durable, _SEGMENT):
            wrong.append("only %d entries kept of %d" % (len(kept), durable))
        if kept[0][2:] != [events.EVENT_BOOT, events.RESET_POWER_ON] and indexes[0] == 0:
            wrong.append("entry 0 is not the first boot: %r" % kept[0])
        found = pile.ctl.budget.day_wh()
        if found < max(progress.get("counted", 0), RESERVE_WH) or pile.cfg.budget_wh_day != 5000:
            wrong.append("budget counters %d Wh after %r" % (found, progress))
        return wrong
    finally:
        unmount()


def main():
    tried, failures = every_cut(prepared_flash(), run_changes, check)
    print("%d cut points, %d failures" % (tried, failures))
    sys.exit(1 if failures or not tried else 0)


main()
