"""A flash chip in RAM for littlefs (`vfs.VfsLfs2`) on the unix port: counts its writes
and erases, and can lose power at the N-th (tests/mp/power_cut.py, bench/journal_bench.py).
"""

import vfs
from micropython import const

BLOCK = const(4096)  # the RP2040's flash erase size, and littlefs's block there
_BLOCKS = const(64)
_EIO = const(-5)
MOUNT = "/flash"  # where the harnesses mount the flash


class CutDevice:
    """A littlefs block device in RAM (the extended interface: offsets, erase ioctl) that
    loses power at its `cut_at`-th write or erase: from then on every write and erase
    fails with EIO and changes nothing. (An exception raised here would be caught and
    printed by MicroPython's block-device glue, and turned into EIO anyway.)"""

    def __init__(self, data=None, cut_at=0, torn=False):
        self.data = bytearray(data if data is not None else b"\xff" * (BLOCK * _BLOCKS))
        self.cut_at = cut_at  # 0: never
        self.torn = torn
        self.operations = 0
        self.programmed = 0  # bytes written
        self.erases = 0  # blocks erased: what wears a flash out
        self.dead = False

    def _cut(self):
        """True when this write or erase does not happen: the power is off, or goes now."""
        if not self.dead:
            self.operations += 1
            self.dead = self.cut_at == self.operations
        return self.dead

    def readblocks(self, block, buf, offset=0):
        at = block * BLOCK + offset
        data = self.data
        for i in range(len(buf)):  # no allocation: finalisers read with the heap locked
            buf[i] = data[at + i]

    def writeblocks(self, block, buf, offset=0):
        at = block * BLOCK + offset
        if self._cut():
            if self.torn and self.operations == self.cut_at:
                self.operations += 1  # the half write happens once
                half = len(buf) // 2
                self.data[at:at + half] = buf[:half]
            return _EIO
        self.data[at:at + len(buf)] = buf
        self.programmed += len(buf)
        return 0

    def ioctl(self, op, arg):
        if op == 4:
            return _BLOCKS
        if op == 5:
            return BLOCK
        if op == 6:  # erase
            if self._cut():
                return _EIO
            at = arg * BLOCK
            self.data[at:at + BLOCK] = b"\xff" * BLOCK
            self.erases += 1
        return 0


def mount(device):
    """littlefs on `device`, at MOUNT."""
    vfs.mount(vfs.VfsLfs2(device), MOUNT)


def unmount():
    try:
        vfs.umount(MOUNT)
    except OSError:
        pass  # a filesystem abandoned mid-write by the cut: nothing left to release


def every_cut(flash, attempt, check):
    """Cut the power at every write and erase of `attempt(progress)` on a copy of `flash`
    (mounted at MOUNT), plain then torn, until one runs through; each time print what
    `check(data, progress)` finds wrong. Returns (cut points, failures)."""
    tried = failures = 0
    for torn in (False, True):
        cut_at = 1
        while True:
            device = CutDevice(flash, cut_at, torn)
            mount(device)
            progress = {}
            try:
                attempt(progress)
            except Exception:  # noqa: BLE001 (the flash failing, as a power cut; else raised)
                if not device.dead:
                    raise
            unmount()
            if not device.dead:  # every write went through: all cuts tried
                break
            tried += 1
            for text in check(device.data, progress):
                failures += 1
                print("FAIL cut at write %d%s: %s" % (cut_at, " (torn)" if torn else "", text))
            cut_at += 1
    return tried, failures
