"""Field updates: a maker-signed package received into the other slot, then committed.

A package is a signed head and a stream (docs/field-update.md). The head (a CBOR map,
signed with the pile maker's release key, `signature`) names the firmware's version,
the .mpy version and architecture it is built for, the boot stage it needs, and the
stream: its size, its chunk size, the size of its file table, and `h0`, the first link
of a hash chain. The stream is the file table (a CBOR list of [path, size, SHA-256])
followed by every file's bytes; chunk i arrives with the next link, and
sha256(chunk i ‖ link i+1) must equal link i, so each chunk is checked against the
signed head before it is taken. Chunks come in order and wait in RAM (two blocks at
most); the update task writes them into their files right after a control tick, in the
gap before the next one, each file in one sitting and closed once whole, and saves the
progress (bytes on flash in whole files, at a chunk's end, and the link expected next)
once a block more is there, so a dropped link or a reboot resumes where it stopped.
Commit checks every file on flash against the table, and hands the slot to the boot
stage (bootstage.py) for a trial boot.

Pure of I/O but the slot's files and the store; the slow parts (the signature, writing
and reading files back) are generators the firmware's update task runs a slice at a time. Whatever
writes the flash waits for the gap after a tick (`gap`, the control loop's event): on a
board the flash is written with interrupts off (an erase holds the core 45 ms), so a
write at any other moment could hold the next tick back.
"""

import gc
import os
import sys
from binascii import hexlify, unhexlify
from hashlib import sha256

from micropython import const

from pile.clock import ticks_add, ticks_diff, ticks_ms
from pile.events import UPDATE_ACCEPTED, UPDATE_COMMITTED, UPDATE_CONFIRMED
from pile.store import exists, makedirs

# The architectures in bits 10 and up of sys.implementation._mpy (MicroPython's
# py/persistentcode.h), the names mpy-cross's -march takes; 0 is none (bytecode only).
ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
          "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")

BOOT_STAGE = const(1)  # the boot stage (bootstage.VERSION) this firmware needs at least

IDLE = const(0)  # no package under way
VERIFYING = const(1)  # checking an offered package's signature
RECEIVING = const(2)  # taking chunks
CHECKING = const(3)  # committing: every file read back against the table
REBOOTING = const(4)  # committed: rebooting into the trial boot
REFUSED = const(5)  # the last offer or commit failed: `detail` says why
TRIAL = const(6)  # running a trial boot that has not confirmed itself yet

LINK_BYTES = const(32)
_PROGRESS = "update.json"  # in the pile's store: the package under way
_TABLE = ".table"  # in the slot: the stream's file table
_PACKED = ".z"  # a file as a packed stream carries it (raw deflate), unpacked at commit
_IDLE_MS = const(200)  # how often an idle update task looks for work
_BLOCK = const(4096)  # RAM holds two of these; the progress is saved about once each
_SLICE = const(512)  # bytes written (or read back) a slice at a time
# A chunk's request leaves some 2 KB of garbage (frame, MAC, CBOR, reply): at 5 a second
# the heap would fill between the control loop's collections (every 10 s), and a collection
# MicroPython starts where it runs out (16 ms on an RP2040) can hold a tick back. So the
# update task collects after a tick once this many chunks came.
_COLLECT_CHUNKS = const(16)
_GAP_SHARE = const(16)  # flash work after a tick starts slices for tick_ms / this at most
# The signature check's big numbers fill the heap in some two periods on an RP2040 (six
# collections of about 20 ms in a check of 866 slices, at any moment, one of them at a tick):
# a check slice (7 ms at most there) does not start this close to a tick, and after the
# tick the task collects, in the gap, so MicroPython never needs to in the check.
_CHECK_QUIET_MS = const(10)
_MAX_CHUNK = const(427)  # what fits a signed frame (512 B) with its link, offset and seq
_MAX_FILES = const(64)
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


class UpdateError(Exception):
    """An update message refused: `code` is the protocol's ERR_* for it."""

    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def version_tuple(text):
    """"1.2.10" as (1, 2, 10), for comparing versions; ValueError when not numbers."""
    return tuple(int(part) for part in text.split("."))


def mpy_of(value):
    """(architecture name or None, "6.3") of a sys.implementation._mpy value."""
    arch = value >> 10
    return (ARCHES[arch] if arch < len(ARCHES) else str(arch),
            "%d.%d" % (value & 0xFF, (value >> 8) & 3))


class Updater:
    """The pile's end of a field update.

    `pile` (pile.app.Pile) gives the version, the store and the event log; `slots` is the
    boot stage (the `bootstage` module, or a host emulator's model of it); `release_key`
    the maker's public key (bytes) or None (updates off); `verifying(key, message,
    signature)` a generator ending in True or False (pile.signature's); `codec` the CBOR
    codec, as for pile.protocol.Session; `mpy` this MicroPython's sys.implementation._mpy;
    `inflater(stream, window)` a reader of a packed file's bytes (`inflating`, MicroPython's
    deflate module; a host emulator hands its own); `gap` an asyncio.Event the control
    loop sets after each tick, which `run` waits for before writing the flash (None: no
    waiting, for a host that calls `step` itself).
    """

    def __init__(self, pile, slots, release_key, verifying, codec, trial_s, mpy=None,
                 inflater=None, gap=None):
        self.pile = pile
        self.slots = slots
        self.release_key = release_key
        self.verifying = verifying
        self.codec = codec
        self.trial_s = trial_s
        self.mpy = getattr(sys.implementation, "_mpy", 0) if mpy is None else mpy
        self.inflater = inflater or inflating
        self.gap = gap
        self.state = TRIAL if slots.trial else IDLE
        self.detail = None
        self.head = None  # the offered package's head, decoded
        self.package = None  # its id: sha256 of the head
        self.held = 0  # stream bytes received (written, or waiting in `_pending`)
        self._link = None  # the hash the next chunk must make
        self.written = 0  # stream bytes on flash, as the saved progress says
        self._pending = []  # [(chunk, the link after it)] received, not yet written
        self._buffered = 0  # their bytes
        self._consumed = 0  # stream bytes handed to the slot's files (saved or not)
        self._mark = None  # (the last chunk's end among those, the link after it)
        self._out = None  # the slot's file being written: a file is written in one sitting
        self._garbage = 0  # chunks taken since the update task last collected
        self.slice_max_ms = 0  # the update task's longest slice (`step`) in this boot, ms
        self._files = None  # [(path, size, sha256, first stream byte, bytes in the stream)]
        self.job = None  # a generator for the update task to run (slice by slice)
        self._writing = False  # the job's slices write the flash: they wait for the gap

    # -- what the host sees -------------------------------------------------------

    def status(self):
        """The UPDATE_STATUS fields."""
        record = self.slots.record()
        head = self.head
        return {2: self.state, 3: self.held, 4: head["size"] if head else 0,
                5: head["v"] if head else None, 6: self.pile.version,
                7: record["versions"].get(record.get("previous")),
                8: self.pile.rollback,
                9: self.detail, 10: self.package, 11: self.slots.running}

    # -- the update task ---------------------------------------------------------

    async def run(self):
        """The firmware's update task. Work that reads only (the signature) runs a slice
        at a time between the other tasks, but not just before a tick; work that writes
        the flash waits for the gap after a tick, and starts slices there for tick_ms /
        `_GAP_SHARE` at most, in the first quarter of the period."""
        import asyncio

        while True:
            if self._flashing() or (self.gap is not None and self.state == RECEIVING):
                await self._after_tick()
                if self._garbage >= _COLLECT_CHUNKS:
                    self._garbage = 0
                    gc.collect()
                until = ticks_add(ticks_ms(), self.pile.cfg.tick_ms // _GAP_SHARE)
                while (self._flashing() and ticks_diff(until, ticks_ms()) > 0
                       and self._room()):
                    self._timed_step()
            elif self.job is not None:
                if self.state == VERIFYING and self._tick_near():
                    while self._tick_near():  # (a tick overdue is near too)
                        await self._after_tick()
                    gc.collect()
                self._timed_step()
            else:
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            await asyncio.sleep_ms(0)

    def _timed_step(self):
        started = ticks_ms()
        self.step()
        self.slice_max_ms = max(self.slice_max_ms, ticks_diff(ticks_ms(), started))

    async def _after_tick(self):
        """Wait for the gap after the next tick (at once without a control loop)."""
        if self.gap is not None:
            self.gap.clear()
            await self.gap.wait()

    def _room(self):
        """Whether flash work may start a slice: always without a control loop, else
        while three quarters of the period are left before the next tick (a gap that
        came late, after a slow flush of the event log, is skipped): a slice in which
        littlefs scans the filesystem for free blocks takes up to 140 ms on an RP2040."""
        if self.gap is None:
            return True
        left = self.pile.tick_in()
        return left is not None and left >= self.pile.cfg.tick_ms * 3 // 4

    def _tick_near(self):
        """Whether the control loop's next tick is due within `_CHECK_QUIET_MS`."""
        left = self.pile.tick_in()
        return self.gap is not None and left is not None and left < _CHECK_QUIET_MS

    def working(self):
        """Whether `step` has anything to do."""
        return self.job is not None or self._waiting()

    def step(self):
        """One slice of work: of `job`, or of writing the chunks waiting in RAM (a job of
        its own while receiving); False once nothing is left."""
        if self._waiting():
            self.job = self._write_pending()
            self._writing = True
        job = self.job
        if job is None:
            return False
        try:
            next(job)
        except StopIteration:
            if self.job is job:
                self._end_job()
        except (OSError, UpdateError) as exc:  # the flash failed, or the table is bad
            self._end_job()
            if self.state == RECEIVING:
                self._back_to_written()
                self._refuse("writing the package failed (%s): offer it again to go on "
                             "from byte %d" % (exc, self.written))
            else:
                self._stop_writing()
                if self.state != REFUSED:
                    self._refuse("the update stopped: %s" % exc)
        return self.working()

    def _waiting(self):
        """Chunks wait in RAM and nothing writes them yet."""
        return self.job is None and self.state == RECEIVING and bool(self._pending)

    def _end_job(self):
        job = self.job
        self.job = None
        self._writing = False
        if job is not None:
            job.close()  # a job cut short lets go of what it holds

    def _flashing(self):
        return (self.job is not None and self._writing) or self._waiting()

    def confirmed(self):
        """The trial confirmed itself (the firmware's health check): no package is left
        under way, and the event log says so."""
        self.state = IDLE
        self._forget()
        self.pile.log_update(UPDATE_CONFIRMED)

    # -- requests ---------------------------------------------------------------

    def offer(self, head_bytes, signature, downgrade):
        """Take a package's signed head: checked at once for what can be read, then its
        signature by the update task (`job`)."""
        if self.release_key is None:
            raise UpdateError(6, "this pile has no release key, so field updates are off: "
                                 "set update.release_key in its board file")
        if self.state in (VERIFYING, CHECKING, REBOOTING):
            raise UpdateError(7, "an update is being %s" % (
                "checked" if self.state != REBOOTING else "booted"))
        if self.slots.trial:
            raise UpdateError(7, "this firmware is on trial: an update waits until it "
                                 "confirms itself")
        if type(head_bytes) is not bytes or type(signature) is not bytes:
            raise UpdateError(3, "an offer carries the head and its signature as bytes")
        head = self._head(head_bytes)
        self._fits(head, downgrade)
        package = sha256(head_bytes).digest()
        if self.state == RECEIVING and package == self.package:
            self.detail = None
            return  # offered again (a host that lost its place): go on where it stands
        saved = self._progress()
        self._end_job()
        self._stop_writing()
        self.head = head
        self.package = package
        self.detail = None
        if saved is not None and saved.get("id") == hexlify(package).decode():
            self._resume(saved)  # this package's signature was checked when it began
            return
        self.state = VERIFYING
        self.job = self._verify(head_bytes, signature)

    def chunk(self, offset, data, link):
        """Take one chunk of the stream; returns nothing, raises UpdateError."""
        if self.state == VERIFYING:
            raise UpdateError(7, "the package's signature is being checked")
        if self.state != RECEIVING:
            raise UpdateError(6, self.detail if self.state == REFUSED and self.detail else
                              "no package is being received: offer one first")
        if type(data) is not bytes or type(link) is not bytes or len(link) != LINK_BYTES:
            raise UpdateError(3, "a chunk carries its bytes and a 32-byte link")
        if offset < self.held:
            return  # sent again after a lost reply: it is here already
        if offset != self.held:
            raise UpdateError(6, "chunks come in order: the next is at %d" % self.held)
        size = self.head["size"]
        expected = min(self.head["chunk"], size - offset)
        if len(data) != expected:
            raise UpdateError(3, "the chunk at %d must be %d bytes" % (offset, expected))
        if sha256(data + link).digest() != self._link:
            raise UpdateError(3, "the chunk at %d does not match the signed package: "
                                 "nothing of it was written" % offset)
        if self._buffered + len(data) > 2 * _BLOCK:
            return  # not taken: RAM holds two blocks until the update task writes some;
            # the status says the next offset is still this one, so the host sends it again
        self._pending.append((data, link))
        self._garbage += 1
        self._buffered += len(data)
        self.held = offset + len(data)
        self._link = link

    def commit(self, package):
        if self.state != RECEIVING or package != self.package:
            raise UpdateError(6, "commit the package being received")
        if self.held != self.head["size"]:
            raise UpdateError(6, "the package is not all here: %d of %d bytes" % (
                self.held, self.head["size"]))
        self.state = CHECKING
        self.job = self._check(self.job)  # after the chunks being written, if any
        self._writing = True

    # -- checks -----------------------------------------------------------------

    def _head(self, head_bytes):
        try:
            head = self.codec.loads(head_bytes)
        except self.codec.CBORError:
            head = None
        if type(head) is not dict:
            raise UpdateError(3, "the package's head is not a CBOR map")
        for key, kind in (("v", str), ("mpy", int), ("boot", int), ("size", int),
                          ("chunk", int), ("table", int), ("h0", bytes)):
            if type(head.get(key)) is not kind:
                raise UpdateError(3, "the package's head lacks %r" % key)
        packed = head.get("z")
        if packed is not None and (type(packed) is not int or not 0 <= packed <= 15
                                   or 0 < packed < 8):
            raise UpdateError(3, "the package's head names no valid deflate window")
        arch = head.get("arch")
        if arch is not None and arch not in ARCHES:
            raise UpdateError(3, "the package's head names an unknown architecture")
        if not 0 < head["table"] <= head["size"] or not 0 < head["chunk"] <= _MAX_CHUNK \
                or len(head["h0"]) != LINK_BYTES:
            raise UpdateError(3, "the package's head describes no valid stream")
        try:
            version_tuple(head["v"])
        except ValueError:
            raise UpdateError(3, "the package's version %r is not numbers" % head["v"])
        return head

    def _fits(self, head, downgrade):
        """Refuse a package this pile cannot run, or an unasked-for downgrade."""
        arch, mpy = mpy_of(self.mpy)
        wanted = "%d.%d" % (head["mpy"] & 0xFF, (head["mpy"] >> 8) & 3)
        if wanted != mpy or head.get("arch") not in (None, arch):
            raise UpdateError(6, "the package is for %s, .mpy %s; this pile runs %s, .mpy %s"
                              % (head.get("arch") or "any architecture", wanted, arch, mpy))
        if head["boot"] > self.slots.VERSION:
            raise UpdateError(6, "the package needs boot stage %d; this pile has %d: "
                                 "deploy over USB first" % (head["boot"], self.slots.VERSION))
        new, old = version_tuple(head["v"]), version_tuple(self.pile.version)
        if new < old and not downgrade:
            raise UpdateError(6, "%s is older than the running %s: ask for a downgrade "
                                 "explicitly" % (head["v"], self.pile.version))

    def _verify(self, head_bytes, signature):
        """The update task's job for an offer: the signature, then a fresh slot."""
        try:
            good = yield from self.verifying(self.release_key, head_bytes, signature)
        except ValueError:
            good = False
        if not good:
            self._refuse("the package is not signed by this pile's release key")
            return
        slot = self.slots.other()
        self._writing = True
        yield from _empty(self.slots.path(slot))
        # The room counted once the slot is empty: a pile updated twice holds an older
        # firmware there, which would otherwise count against the new one.
        free = _free_bytes(self.slots.path(""))
        if free is not None and self.head["size"] * 2 > free:
            self._refuse("the package needs %d bytes of flash; %d are free with slot "
                         "\"%s\" emptied" % (self.head["size"] * 2, free, slot))
            return
        self.held = self._consumed = 0
        self._link = self.head["h0"]
        self._mark = (0, self._link)
        self._files = None
        self.state = RECEIVING
        self._save(0, self._link)
        self.pile.log_update(UPDATE_ACCEPTED)

    def _resume(self, saved):
        """Go on with the package saved in `update.json`: every file as long as what was
        saved says it holds (a write cut short by a reset is cut back)."""
        self.held = self.written = self._consumed = saved["held"]
        self._link = unhexlify(saved["next"])
        self._mark = (self.held, self._link)
        self._files = None
        self.state = RECEIVING
        if self.held >= self.head["table"]:
            self._read_table()
        for path, start, length, _ in self._pieces(0, self.held):
            _cut(self._where(path), start + length)

    def _back_to_written(self):
        """After a failed write: RAM and flash back to the progress last saved, where an
        offer of the same package goes on."""
        self._stop_writing()
        saved = self._progress()
        if saved is not None and saved.get("id") == hexlify(self.package).decode():
            try:
                self._resume(saved)
            except (OSError, UpdateError):
                pass

    def _stop_writing(self):
        """The chunks in RAM dropped, the file being written closed."""
        self._pending = []
        self._buffered = 0
        self._close_out()

    def _check(self, writing):
        """The update task's job for a commit: the chunks still in RAM written (`writing`,
        the job writing them, first), then every file unpacked (when the package packs
        them) and read back against the table."""
        if writing is not None:
            yield from writing
        yield from self._write_pending()
        slot = self.slots.other()
        for path, _, digest, _, _ in self._files:
            try:
                found = yield from self._unpack(path) if self.head.get("z") else \
                    _digest(self._where(path))
            except (OSError, ValueError):  # unreadable, or not a deflate stream
                found = None
            if found != digest:
                self._forget()
                self._refuse("%s does not match the package after writing: send the "
                             "package again" % path)
                return
        self._forget()  # before the record: a cut between the two sends the package again
        self.slots.commit(slot, self.head["v"], self.trial_s, self.pile.version)
        self.state = REBOOTING
        self.pile.log_update(UPDATE_COMMITTED)
        self.pile.request_reboot()

    def _unpack(self, path):
        """Inflate `path`.z into `path` a slice at a time; the SHA-256 of what came out. A
        cut here leaves the .z: the commit, asked again, unpacks it again."""
        found = sha256()
        where = self._where(path)
        with open(where + _PACKED, "rb") as packed, open(where, "wb") as out:
            stream = self.inflater(packed, self.head["z"])
            while True:
                data = stream.read(_SLICE)
                if not data:
                    break
                found.update(data)
                out.write(data)
                yield
        return found.digest()

    def _refuse(self, detail):
        self.state = REFUSED
        self.detail = detail

    # -- the stream on flash ----------------------------------------------------

    def _where(self, path):
        return self.slots.path(self.slots.other()) + "/" + path

    def _read_table(self):
        with open(self._where(_TABLE), "rb") as f:
            table = f.read()
        try:
            entries = self.codec.loads(table)
        except self.codec.CBORError:
            entries = None
        files = []
        first = self.head["table"]
        if type(entries) is list and len(entries) <= _MAX_FILES:
            for entry in entries:
                if not _valid_entry(entry):
                    files = None
                    break
                stored = entry[3] if len(entry) == 4 else entry[1]
                files.append((entry[0], entry[1], entry[2], first, stored))
                first += stored
        if files is None or first != self.head["size"] or type(entries) is not list:
            self._forget()
            self._refuse("the package's file table is not valid")
            raise UpdateError(3, self.detail)
        self._files = files

    def _pieces(self, offset, length):
        """(file in the slot, offset in it, bytes, the file's size) for the stream's bytes
        offset..+length: the table, then each file as the stream carries it (`path`.z when
        packed). The files are known once the table is read: a piece at a time."""
        end = offset + length
        table = self.head["table"]
        if offset < table:
            yield _TABLE, offset, min(end, table) - offset, table
        packed = _PACKED if self.head.get("z") else ""
        for path, _, _, first, stored in self._files or ():
            start, stop = max(offset, first), min(end, first + stored)
            if start < stop:
                yield path + packed, start - first, stop - start, stored

    def _write_pending(self):
        """The chunks in RAM written into their files a slice at a time: the table first
        (read once whole, so the bytes after it find their files), then each file, written
        in one sitting and closed once whole (littlefs copies a file's last block at every
        reopening), the progress saved once a block more is in whole files."""
        size = self.head["size"]
        while self._pending:
            data, link = self._pending[0]
            offset = self._consumed
            done = 0
            for path, start, length, total in self._pieces(offset, len(data)):
                while length:
                    count = min(length, _SLICE)
                    self._out_to(path, start).write(data[done:done + count])
                    done += count
                    start += count
                    length -= count
                    yield
                if start == total:  # whole: every byte before the last chunk's end is too
                    self._close_out()
                    if path == _TABLE:
                        self._read_table()
                    mark = (offset + done, link) if done == len(data) else self._mark
                    if mark[0] - self.written >= _BLOCK or mark[0] == size:
                        self._save(*mark)
                        yield
            del self._pending[0]
            self._buffered -= len(data)
            self._consumed = offset + len(data)
            self._mark = (self._consumed, link)

    def _out_to(self, path, start):
        """The slot's file at `path`, open for its bytes from `start` on: written anew at 0,
        else added at its end (which `_cut` made `start` long)."""
        if self._out is None:
            where = self._where(path)
            makedirs(where.rsplit("/", 1)[0])
            self._out = open(where, "ab" if start else "wb")
        return self._out

    def _close_out(self):
        out = self._out
        self._out = None
        if out is not None:
            out.close()

    def _save(self, held, link):
        self.pile.store.save(_PROGRESS, {"id": hexlify(self.package).decode(),
                                         "held": held, "next": hexlify(link).decode()})
        self.written = held

    def _progress(self):
        try:
            return self.pile.store.load(_PROGRESS)
        except ValueError:  # damaged: set aside by the store, the package starts again
            return None

    def _forget(self):
        self.pile.store.remove(_PROGRESS)


def inflating(stream, window):
    """Raw deflate in a 2**`window`-byte window, read from `stream` (MicroPython's)."""
    import deflate

    return deflate.DeflateIO(stream, deflate.RAW, window)


def _valid_entry(entry):
    """[path, size, sha256] or, packed, [path, size, sha256, bytes in the stream]."""
    if type(entry) is not list or len(entry) not in (3, 4):
        return False
    if len(entry) == 4 and (type(entry[3]) is not int or entry[3] < 0):
        return False
    path, size, digest = entry[:3]
    return (type(path) is str and 0 < len(path) <= 64 and not path.startswith("/")
            and ".." not in path and all(c in _SAFE for c in path) and path != _TABLE
            and not path.endswith(_PACKED)
            and type(size) is int and size >= 0
            and type(digest) is bytes and len(digest) == 32)


def _digest(path):
    """The SHA-256 of the file at `path`, read a slice at a time (a generator)."""
    found = sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(_SLICE)
            if not data:
                break
            found.update(data)
            yield
    return found.digest()


def _free_bytes(folder):
    try:
        stat = os.statvfs(folder or ".")
    except (AttributeError, OSError):
        return None
    return stat[1] * stat[4]  # fragment size, blocks free to us


def _is_dir(path):
    return os.stat(path)[0] & 0x4000 != 0


def _empty(folder):
    """Remove everything in `folder` (kept, or made), a file a slice."""
    if not exists(folder):
        makedirs(folder)
        return
    for name in os.listdir(folder):
        path = folder + "/" + name
        if _is_dir(path):
            yield from _empty(path)
            os.rmdir(path)
        else:
            os.remove(path)
        yield


def _cut(path, length):
    """Make the file at `path` `length` bytes long at most (a write a reset cut short may
    have left more): MicroPython has no truncate, so the kept bytes are copied."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return
    if size <= length:
        return
    with open(path, "rb") as f:
        kept = f.read(length)
    with open(path + ".tmp", "wb") as f:
        f.write(kept)
    os.rename(path + ".tmp", path)
