"""A power cut at every flash write of a field update, on littlefs under the unix port.

`micropython update_cut.py PACKAGE RELEASE_KEY_HEX` (MICROPYPATH=firmware:tests/mp).
The flash (`vfs.VfsLfs2` on ramflash's CutDevice) holds an old firmware in the root slot
and the pile's state. The update runs as the firmware runs it: the signed package
offered (its signature checked by pile.signature), every chunk, the commit (every file
read back), the reboot into the trial (the boot stage marks it tried) and the trial's
confirmation. For every N the power goes at the N-th block write or erase (or, torn,
half of it is written); the flash as the cut left it is then booted:
- the boot stage must choose a slot whose firmware is whole: the old version's files
  in the root, or the new version's in slot "a" (never neither, never a mix);
- after a confirmation that completed, the new version; before a commit that completed,
  the old one;
- the update, offered again, must resume (chunks already written kept) and finish, and
  the next boot run the new version on trial.
Prints one line per failure and "N cut points, M failures"; exit status 1 on any.
"""

import sys
from binascii import unhexlify
from hashlib import sha256

import bootstage
import vfs
from pile import cbor
from pile.app import Pile
from pile.signature import verifying
from pile.store import Store
from pile.update import REBOOTING, RECEIVING, Updater
from ramflash import MOUNT as _MOUNT
from ramflash import CutDevice, every_cut, mount, unmount

_OLD = {"pile/__init__.mpy": b"old init " * 40, "pile/app.mpy": b"old app " * 300,
        "profiles/generic-v2g.json": b'{"old": true}'}


def write(path, data):
    parts = path.split("/")
    for i in range(2, len(parts)):
        try:
            import os

            os.mkdir("/".join(parts[:i]))
        except OSError:
            pass
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class Package:
    def __init__(self, path):
        with open(path, "rb") as f:
            found = cbor.loads(f.read())
        self.head = found["head"]
        self.signature = found["signature"]
        self.stream = found["stream"]
        fields = cbor.loads(self.head)
        self.version = fields["v"]
        self.chunk = fields["chunk"]
        self.id = sha256(self.head).digest()
        count = (len(self.stream) + self.chunk - 1) // self.chunk
        self.links = [bytes(32)] * (count + 1)
        for i in range(count - 1, -1, -1):
            piece = self.stream[i * self.chunk:(i + 1) * self.chunk]
            self.links[i] = sha256(piece + self.links[i + 1]).digest()
        table = cbor.loads(self.stream[:fields["table"]])
        self.files = {}  # what each file holds once unpacked
        at = fields["table"]
        for entry in table:
            carried = entry[3] if len(entry) == 4 else entry[1]
            data = self.stream[at:at + carried]
            if fields.get("z"):
                from io import BytesIO

                import deflate

                data = deflate.DeflateIO(BytesIO(data), deflate.RAW, fields["z"]).read()
            self.files[entry[0]] = data
            at += carried


def prepared_flash():
    device = CutDevice()
    vfs.VfsLfs2.mkfs(device)
    mount(device)
    for path, data in _OLD.items():
        write(_MOUNT + "/" + path, data)
    Pile("cut-001", Store(_MOUNT + "/state"))
    unmount()
    return bytes(device.data)


def boot(key):
    """A boot: the boot stage chooses (marking a trial tried), the pile and its Updater."""
    bootstage.init(_MOUNT)
    bootstage.choose()
    pile = Pile("cut-001", Store(_MOUNT + "/state"))
    pile.version = "1.0.0" if bootstage.running == "" else _new_version
    updater = Updater(pile, bootstage, key, verifying, cbor, 60)
    return pile, updater


def drain(updater):
    while updater.step():
        pass


def update(package, key, progress):
    """The update from wherever the flash stands to a confirmed trial; `progress` notes
    what completed."""
    pile, updater = boot(key)
    if not bootstage.trial and bootstage.record()["boot"] != "a":
        updater.offer(package.head, package.signature, False)
        drain(updater)
        if updater.state != RECEIVING:
            raise RuntimeError("offer: state %d, %s" % (updater.state, updater.detail))
        size = len(package.stream)
        while updater.held < size:
            index = updater.held // package.chunk
            updater.chunk(updater.held, package.stream[updater.held:updater.held + package.chunk],
                          package.links[index + 1])
            drain(updater)  # the update task: a block written once one is here
        updater.commit(package.id)
        drain(updater)
        if updater.state != REBOOTING:
            raise RuntimeError("commit: state %d, %s" % (updater.state, updater.detail))
        progress["committed"] = True
        pile, updater = boot(key)  # the reboot into the trial
    if bootstage.trial:
        if not bootstage.confirm():
            raise RuntimeError("the trial did not confirm")
        progress["confirmed"] = True


def check(data, package, key, progress):
    """What a boot from the flash as the cut left it finds wrong, as a list of texts."""
    device = CutDevice(data)
    try:
        mount(device)
    except OSError as exc:
        return ["the flash does not mount: %r" % (exc,)]
    wrong = []
    try:
        bootstage.init(_MOUNT)
        slot = bootstage.choose()
        expected = _OLD if slot == "" else package.files
        for path, content in expected.items():
            if read(bootstage.path(slot) + "/" + path) != content:
                wrong.append("slot %r boots with %s not whole" % (slot, path))
        if slot not in ("", "a"):
            wrong.append("slot %r booted" % slot)
        if progress.get("confirmed") and slot != "a":
            wrong.append("confirmed, but slot %r boots" % slot)
        if not progress.get("committed") and slot != "":
            wrong.append("not committed, but slot %r boots" % slot)
        resumed = {}
        try:
            update(package, key, resumed)
        except Exception as exc:  # noqa: BLE001 (the check reports it)
            wrong.append("the update did not resume: %r" % (exc,))
        else:
            bootstage.init(_MOUNT)
            if bootstage.choose() != "a":
                wrong.append("after resuming, slot %r boots" % bootstage.running)
    finally:
        unmount()
    return wrong


_new_version = None


def main():
    global _new_version
    package = Package(sys.argv[1])
    _new_version = package.version
    key = unhexlify(sys.argv[2])
    flash = prepared_flash()
    tried, failures = every_cut(flash, lambda progress: update(package, key, progress),
                                lambda data, progress: check(data, package, key, progress))
    print("%d cut points, %d failures" % (tried, failures))
    sys.exit(1 if failures or not tried else 0)


main()
