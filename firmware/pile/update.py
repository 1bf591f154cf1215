"""Field updates: a maker-signed package received into the other slot, then committed.

A package is a signed head and a stream (docs/field-update.md). The head (a CBOR map,
signed with the pile maker's release key, `signature`) names the firmware's version,
the .mpy version and architecture it is built for, the boot stage it needs, and the
stream: its size, its chunk size, the size of its file table, and `h0`, the first link
of a hash chain. The stream is the file table (a CBOR list of [path, size, SHA-256])
followed by every file's bytes; chunk i arrives with the next link, and
sha256(chunk i ‖ link i+1) must equal link i, so each chunk is checked against the
signed head before a byte of it is written. Chunks come in order; the progress (bytes
held and the link expected next) is saved after each one, so a dropped link or a reboot
resumes where it stopped. Commit checks every file on flash against the table, and
hands the slot to the boot stage (bootstage.py) for a trial boot.

Pure of I/O but the slot's files and the store; the slow parts (the signature, reading
files back) are generators the firmware's update task runs a slice at a time.
"""

import os
import sys
from binascii import hexlify, unhexlify
from hashlib import sha256

from micropython import const

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
_READ = const(512)  # bytes read back a slice at a time
_IDLE_MS = const(200)  # how often an idle update task looks for work
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
    deflate module; a host emulator hands its own).
    """

    def __init__(self, pile, slots, release_key, verifying, codec, trial_s, mpy=None,
                 inflater=None):
        self.pile = pile
        self.slots = slots
        self.release_key = release_key
        self.verifying = verifying
        self.codec = codec
        self.trial_s = trial_s
        self.mpy = getattr(sys.implementation, "_mpy", 0) if mpy is None else mpy
        self.inflater = inflater or inflating
        self.state = TRIAL if slots.trial else IDLE
        self.detail = None
        self.head = None  # the offered package's head, decoded
        self.package = None  # its id: sha256 of the head
        self.held = 0  # stream bytes received and written
        self._link = None  # the hash the next chunk must make
        self._files = None  # [(path, size, sha256, first stream byte, bytes in the stream)]
        self.job = None  # a generator for the update task to run (slice by slice)

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
        """The firmware's update task: runs `job` a slice at a time between periods."""
        import asyncio

        while True:
            if self.job is None:
                await asyncio.sleep_ms(_IDLE_MS)
            else:
                self.step()
                await asyncio.sleep_ms(0)

    def step(self):
        """One slice of `job`; False once there is none left."""
        job = self.job
        if job is None:
            return False
        try:
            next(job)
        except StopIteration:
            self.job = None
        except (OSError, UpdateError) as exc:  # the flash failed, or the table is bad
            self.job = None
            if self.state != REFUSED:
                self._refuse("the update stopped: %s" % exc)
        return self.job is not None

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
        saved = self._progress()
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
        if self.state != RECEIVING:
            raise UpdateError(7 if self.state == VERIFYING else 6,
                              "the package's signature is being checked" if
                              self.state == VERIFYING else "no package is being received: "
                              "offer one first")
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
        try:
            self._write(offset, data)
        except OSError as exc:
            raise UpdateError(7, "writing the chunk at %d failed (%s): send it again" % (
                offset, exc))
        self.held = offset + len(data)
        self._link = link
        self._save()

    def commit(self, package):
        if self.state != RECEIVING or package != self.package:
            raise UpdateError(6, "commit the package being received")
        if self.held != self.head["size"]:
            raise UpdateError(6, "the package is not all here: %d of %d bytes" % (
                self.held, self.head["size"]))
        self.state = CHECKING
        self.job = self._check()

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
        free = _free_bytes(self.slots.path(""))
        if free is not None and head["size"] * 2 > free:
            raise UpdateError(6, "the package needs %d bytes of flash; %d are free" % (
                head["size"] * 2, free))

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
        yield from _empty(self.slots.path(slot))
        self.held = 0
        self._link = self.head["h0"]
        self._files = None
        self.state = RECEIVING
        self._save()
        self.pile.log_update(UPDATE_ACCEPTED)

    def _resume(self, saved):
        """Go on with the package saved in `update.json`: every file as long as what was
        saved says it holds (a write cut short by a reset is cut back)."""
        self.held = saved["held"]
        self._link = unhexlify(saved["next"])
        self._files = None
        self.state = RECEIVING
        if self.held >= self.head["table"]:
            self._read_table()
        for path, start, length in self._pieces(0, self.held):
            _cut(self._where(path), start + length)

    def _check(self):
        """The update task's job for a commit: every file unpacked (when the package packs
        them) and read back against the table."""
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
                data = stream.read(_READ)
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
        """(file in the slot, offset in it, bytes) for the stream's bytes offset..+length:
        the table, then each file as the stream carries it (`path`.z when packed)."""
        end = offset + length
        table = self.head["table"]
        if offset < table:
            yield _TABLE, offset, min(end, table) - offset
        packed = _PACKED if self.head.get("z") else ""
        for path, _, _, first, stored in self._files or ():
            start, stop = max(offset, first), min(end, first + stored)
            if start < stop:
                yield path + packed, start - first, stop - start

    def _write(self, offset, data):
        """Write the stream's bytes at `offset`: into the file table first (read once it
        is whole, so the bytes after it find their files), then into the files."""
        table = self.head["table"]
        if offset < table:
            cut = min(len(data), table - offset)
            _append(self._where(_TABLE), offset, data[:cut])
            offset, data = offset + cut, data[cut:]
            if offset == table:
                self._read_table()
        done = 0
        for path, start, length in self._pieces(offset, len(data)):
            _append(self._where(path), start, data[done:done + length])
            done += length

    def _save(self):
        self.pile.store.save(_PROGRESS, {"id": hexlify(self.package).decode(),
                                         "held": self.held,
                                         "next": hexlify(self._link).decode()})

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


def _append(path, start, data):
    """`data` at byte `start` of the file at `path`: a new file when `start` is 0, else
    added at its end (which `_cut` made `start` long)."""
    makedirs(path.rsplit("/", 1)[0])
    with open(path, "ab" if start else "wb") as f:
        f.write(data)


def _digest(path):
    """The SHA-256 of the file at `path`, read a slice at a time (a generator)."""
    found = sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(_READ)
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
