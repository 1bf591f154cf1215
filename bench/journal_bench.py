"""What one event costs the flash: the journal's append against rewriting the log.

    MICROPYPATH=firmware:tests/mp micropython bench/journal_bench.py   (make bench-perf)

On littlefs (`vfs.VfsLfs2`, 4 KiB blocks as on the RP2040) on a flash chip in RAM that
counts bytes written and blocks erased: 1000 events, each committed as the firmware does it
(pile/journal.py: one 16-byte record appended to a segment file), against the obvious
alternative, the last 512 entries saved as one JSON file through pile/store.py (write a
temporary file, rename it over the old one) after each event. Flash wears by the erase,
and time on a board is mostly the flash's, so bytes written and blocks erased per event
are the figures to compare; the unix port's microseconds are shown too. Ends with one
JSON line.
"""

import json
import time

import vfs
from pile.journal import Journal
from pile.store import Store
from ramflash import CutDevice

_EVENTS = 1000
_KEPT = 512


def measure(commit):
    device = CutDevice()
    vfs.VfsLfs2.mkfs(device)
    vfs.mount(vfs.VfsLfs2(device), "/flash")
    try:
        started = time.ticks_us()
        for index in range(_EVENTS):
            commit(index)
        elapsed = time.ticks_diff(time.ticks_us(), started)
    finally:
        vfs.umount("/flash")
    return device.programmed / _EVENTS, device.erases / _EVENTS, elapsed / _EVENTS


def journal_commit():
    journal = [None]

    def commit(index):
        if journal[0] is None:
            journal[0] = Journal("/flash", 16384)
        journal[0].append([[index, index, 2, index]])

    return commit


def rewrite_commit():
    entries = []

    def commit(index):
        entries.append([index, index, 2, index])
        del entries[:-_KEPT]
        Store("/flash").save("events.json", entries)

    return commit


journal = measure(journal_commit())
rewrite = measure(rewrite_commit())
print("per event, on littlefs with 4 KiB blocks (and the unix port's time):")
print("  %-22s %9s %9s %9s" % ("", "bytes", "erases", "us"))
for name, (written, erased, us) in (("journal append", journal), ("rewrite the log", rewrite)):
    print("  %-22s %9.0f %9.3f %9.0f" % (name, written, erased, us))
print("  %-22s %8.0fx %8.0fx %8.1fx" % ("ratio", rewrite[0] / journal[0],
                                        rewrite[1] / max(journal[1], 0.001),
                                        rewrite[2] / journal[2]))
print(json.dumps({"journal_bytes_per_event": round(journal[0]),
                  "journal_erases_per_event": round(journal[1], 3),
                  "rewrite_bytes_per_event": round(rewrite[0]),
                  "rewrite_erases_per_event": round(rewrite[1], 3),
                  "journal_us_per_event": round(journal[2]),
                  "rewrite_us_per_event": round(rewrite[2])}))
