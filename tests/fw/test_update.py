"""Field updates on the pile: the package checks, the chunks, resume, commit, and the boot
stage's trial and rollback (CPython and MicroPython).

The signature check is a parameter of the Updater: here a stand-in that takes one
signature, because MicroPython cannot make a real one; pile.signature itself is tested
against `cryptography` in tests/test_signature.py, and signed packages go through the
whole firmware in tests/test_field_update.py.
"""

import os
import sys
from hashlib import sha256

import bootstage
from fwtest import FreshState, Host, logged
from pile import cbor, events
from pile.app import Pile
from pile.protocol import (
    ERR_AUTH,
    ERR_BAD_FIELD,
    ERR_BUSY,
    ERR_OUT_OF_RANGE,
    ERROR,
    UPDATE_CHUNK,
    UPDATE_COMMIT,
    UPDATE_GET,
    UPDATE_OFFER,
    UPDATE_STATUS,
)
from pile.store import Store, exists
from pile.update import (
    IDLE,
    REBOOTING,
    RECEIVING,
    REFUSED,
    TRIAL,
    VERIFYING,
    Updater,
    mpy_of,
)

_GOOD = b"S" * 64  # the one signature the stand-in verifier takes
_RELEASE = b"R" * 32
_CHUNK = 64
_TECH = b"T" * 32
_LINK = b"L" * 32
_FILES = {"pile/__init__.mpy": b"v" * 150, "pile/new.mpy": bytes(range(200)),
          "profiles/generic-v2g.json": b'{"name": "generic"}'}


def verifying(key, message, signature):
    yield
    return key == _RELEASE and signature == _GOOD


def package(version="9.0.0", files=None, mpy=None, arch=None, table=None):
    """(head bytes, stream, links) of a package as pilectl.release makes one."""
    files = _FILES if files is None else files
    names = sorted(files)
    if table is None:
        table = cbor.dumps([[n, len(files[n]), sha256(files[n]).digest()] for n in names])
    stream = table + b"".join(files[n] for n in names)
    count = (len(stream) + _CHUNK - 1) // _CHUNK
    links = [bytes(32)] * (count + 1)
    for i in range(count - 1, -1, -1):
        links[i] = sha256(stream[i * _CHUNK:(i + 1) * _CHUNK] + links[i + 1]).digest()
    mine = sys.implementation._mpy if hasattr(sys.implementation, "_mpy") else 0x306
    head = cbor.dumps({"v": version, "mpy": (mine & 0x3FF) if mpy is None else mpy,
                       "arch": arch, "boot": 1, "size": len(stream), "chunk": _CHUNK,
                       "table": len(table), "h0": links[0]})
    return head, stream, links


class Rig:
    """A pile with a technician's and a link key, its boot stage on `root`."""

    def __init__(self, root, release_key=_RELEASE, boot=False):
        bootstage.init(root)
        if boot:  # as main.py does: choose the slot (a trial is marked tried)
            bootstage.choose()
        self.root = root
        self.pile = Pile("test-001", Store(root + "/state"))
        self.pile.set_key(_LINK)
        self.pile.set_key(_TECH, 2)
        self.updater = Updater(self.pile, bootstage, release_key, verifying, cbor, 60,
                               mpy=sys.implementation._mpy if hasattr(
                                   sys.implementation, "_mpy") else 0x306)
        self.pile.updater = self.updater
        self.tech = Host(self.pile, _TECH, may_provision=False)
        self.aggregator = Host(self.pile, _LINK, may_provision=False)

    def offer(self, head, signature=_GOOD, downgrade=False, host=None):
        fields = {2: head, 3: signature}
        if downgrade:
            fields[4] = 1
        reply = (host or self.tech).send(UPDATE_OFFER, fields)
        while self.updater.step():
            pass
        return reply

    def chunk(self, stream, links, index, data=None):
        start = index * _CHUNK
        piece = stream[start:start + _CHUNK] if data is None else data
        reply = self.tech.send(UPDATE_CHUNK, {2: start, 3: piece, 4: links[index + 1]})
        while self.updater.step():  # the update task: a block written once one is here
            pass
        return reply

    def send_all(self, stream, links, first=0):
        for index in range(first, len(links) - 1):
            reply = self.chunk(stream, links, index)
            assert reply[0] == UPDATE_STATUS, reply
        return reply

    def status(self, host=None):
        return (host or self.tech).send(UPDATE_GET)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_a_package_is_received_checked_and_committed_for_a_trial_boot():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        assert rig.offer(head)[2] == VERIFYING
        assert rig.status()[2] == RECEIVING
        reply = rig.send_all(stream, links)
        assert reply[3] == len(stream) == reply[4]
        reply = rig.tech.send(UPDATE_COMMIT, {2: sha256(head).digest()})
        while rig.updater.step():
            pass
        assert rig.status()[2] == REBOOTING
        for name, data in _FILES.items():
            assert _read(root + "/a/" + name) == data
        assert bootstage.record()["trial"] == "a"
        assert rig.pile.take_actions() & 2  # the reboot into the trial
        codes = [e[2:] for e in logged(rig.pile) if e[2] == events.EVENT_UPDATE]
        assert codes == [[events.EVENT_UPDATE, events.UPDATE_ACCEPTED],
                         [events.EVENT_UPDATE, events.UPDATE_COMMITTED]]


def test_a_tampered_chunk_is_refused_and_nothing_of_it_written():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        rig.offer(head)
        rig.send_all(stream[:_CHUNK * 3], links[:4])
        bad = bytearray(stream[3 * _CHUNK:4 * _CHUNK])
        bad[5] ^= 1
        reply = rig.chunk(stream, links, 3, bytes(bad))
        assert reply[0] == ERROR and reply[3] == ERR_BAD_FIELD and "nothing" in reply[4]
        assert rig.status()[3] == 3 * _CHUNK
        rig.send_all(stream, links, 3)  # the right bytes go on from there
        assert rig.status()[3] == len(stream)


def test_chunks_come_in_order_and_one_sent_again_is_taken_once():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        rig.offer(head)
        reply = rig.chunk(stream, links, 2)
        assert reply[0] == ERROR and reply[3] == ERR_OUT_OF_RANGE and "at 0" in reply[4]
        rig.chunk(stream, links, 0)
        assert rig.chunk(stream, links, 0)[3] == _CHUNK  # again: acknowledged, not written


def test_a_package_signed_by_another_key_is_refused_and_the_slot_untouched():
    with FreshState() as root:
        rig = Rig(root)
        os.mkdir(root + "/a")
        with open(root + "/a/kept", "w") as f:
            f.write("x")
        head, stream, links = package()
        rig.offer(head, signature=b"X" * 64)
        status = rig.status()
        assert status[2] == REFUSED and "not signed by this pile's release key" in status[9]
        assert exists(root + "/a/kept")
        reply = rig.chunk(stream, links, 0)
        assert reply[0] == ERROR and reply[3] == ERR_OUT_OF_RANGE


def _flash_with_slot_a(root, capacity):
    """`update._free_bytes` as a flash of `capacity` bytes free but for what slot "a"
    holds (the real one sees this machine's disk); returns the module and the real one."""
    from pile import update

    def free(folder):
        slot = root + "/a"
        held = sum(os.stat(slot + "/" + n)[6] for n in os.listdir(slot)) if exists(slot) else 0
        return capacity - held

    real, update._free_bytes = update._free_bytes, free
    return update, real


def test_an_older_firmware_in_the_slot_to_write_counts_as_room():
    """A pile updated twice keeps an older firmware in the slot the next update writes:
    the room is counted once that slot is emptied (refused before, the old firmware
    counted against the new). A flash too small even then: refused, saying so."""
    for spare, taken in ((0, True), (-1, False)):
        with FreshState() as root:
            head, stream, links = package()
            rig = Rig(root)
            os.mkdir(root + "/a")
            with open(root + "/a/old.mpy", "wb") as f:
                f.write(bytes(600))
            update, real = _flash_with_slot_a(root, 2 * len(stream) + spare)
            try:
                rig.offer(head)
            finally:
                update._free_bytes = real
            status = rig.status()
            if taken:
                assert status[2] == RECEIVING, status
                assert rig.send_all(stream, links)[3] == len(stream)
            else:
                assert status[2] == REFUSED and "bytes of flash" in status[9], status


def test_a_package_for_another_architecture_or_mpy_version_is_refused_at_once():
    with FreshState() as root:
        rig = Rig(root)
        mine = rig.updater.mpy
        arch, _ = mpy_of(mine)
        other_arch = "armv6m" if arch != "armv6m" else "xtensawin"
        for head in (package(arch=other_arch)[0], package(mpy=(mine & 0x3FF) + 1)[0]):
            reply = rig.offer(head)
            assert reply[0] == ERROR and reply[3] == ERR_OUT_OF_RANGE, reply
            assert "this pile runs" in reply[4]
        assert rig.status()[2] == IDLE


def test_a_downgrade_needs_to_be_asked_for():
    with FreshState() as root:
        rig = Rig(root)
        head = package(version="0.0.1")[0]
        reply = rig.offer(head)
        assert reply[0] == ERROR and "ask for a downgrade" in reply[4]
        assert rig.offer(head, downgrade=True)[0] == UPDATE_STATUS


def test_the_aggregators_key_never_installs_firmware_but_may_ask_how_it_stands():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        reply = rig.offer(head, host=rig.aggregator)
        assert reply[0] == ERROR and reply[3] == ERR_AUTH and "technician" in reply[4]
        assert rig.status(rig.aggregator)[2] == IDLE
        rig.offer(head)
        reply = rig.aggregator.send(UPDATE_CHUNK, {2: 0, 3: stream[:_CHUNK], 4: links[1]})
        assert reply[0] == ERROR and reply[3] == ERR_AUTH
        assert rig.status()[3] == 0


def test_a_pile_without_a_release_key_takes_no_update():
    with FreshState() as root:
        rig = Rig(root, release_key=None)
        reply = rig.offer(package()[0])
        assert reply[0] == ERROR and "release key" in reply[4]


def test_a_chunk_during_the_signature_check_is_busy():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        rig.tech.send(UPDATE_OFFER, {2: head, 3: _GOOD})  # not stepped: still verifying
        reply = rig.chunk(stream, links, 0)
        assert reply[0] == ERROR and reply[3] == ERR_BUSY


_BIG = {"pile/__init__.mpy": bytes(range(256)) * 20, "pile/new.mpy": b"n" * 6000}
_BLOCK = 4096  # pile.update's: RAM holds two of these, the progress is saved about once each


def _table(files):
    return cbor.dumps([[n, len(files[n]), sha256(files[n]).digest()] for n in sorted(files)])


def test_a_reboot_resumes_from_the_last_whole_file_saved_and_cuts_a_torn_write():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package(files=_BIG)
        rig.offer(head)
        rig.send_all(stream[:_CHUNK * 90], links[:91])  # __init__.mpy whole, new.mpy begun
        assert rig.status()[3] == 90 * _CHUNK
        whole = len(_table(_BIG)) + len(_BIG["pile/__init__.mpy"])
        saved = whole // _CHUNK * _CHUNK  # the last chunk's end in whole files
        assert rig.updater.written == saved
        with open(root + "/a/pile/new.mpy", "ab") as f:  # a write the power cut
            f.write(b"torn")
        again = Rig(root)  # the reboot: everything in RAM is gone
        assert again.status()[2] == IDLE
        assert again.offer(head)[2] == RECEIVING  # no second signature check
        assert again.status()[3] == saved  # the rest is sent again
        assert os.stat(root + "/a/pile/__init__.mpy")[6] == saved - len(_table(_BIG))
        again.send_all(stream, links, saved // _CHUNK)
        again.tech.send(UPDATE_COMMIT, {2: sha256(head).digest()})
        while again.updater.step():
            pass
        assert again.status()[2] == REBOOTING
        for name, data in _BIG.items():
            assert _read(root + "/a/" + name) == data


def test_chunks_wait_in_ram_and_a_flood_beyond_two_blocks_is_not_taken():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package(files=_BIG)
        rig.offer(head)
        for index in range(2 * _BLOCK // _CHUNK + 1):  # the update task never runs
            start = index * _CHUNK
            reply = rig.tech.send(UPDATE_CHUNK, {2: start, 3: stream[start:start + _CHUNK],
                                                 4: links[index + 1]})
            assert reply[0] == UPDATE_STATUS
        assert reply[3] == 2 * _BLOCK  # two blocks held in RAM: the last chunk not taken
        assert not exists(root + "/a/.table")  # nothing written yet
        while rig.updater.step():
            pass
        assert rig.updater.written > 0
        assert rig.chunk(stream, links, 2 * _BLOCK // _CHUNK)[3] == 2 * _BLOCK + _CHUNK


def test_the_update_task_writes_only_in_the_gap_after_a_tick():
    import asyncio

    from pile import _cpython
    from pile.clock import ticks_add, ticks_ms

    _cpython.install_asyncio()  # CPython: MicroPython's sleep_ms (a board has its own)

    async def run(rig, gap, stream, links):
        task = asyncio.create_task(rig.updater.run())
        for index in range(8):
            start = index * _CHUNK
            rig.tech.send(UPDATE_CHUNK, {2: start, 3: stream[start:start + _CHUNK],
                                         4: links[index + 1]})
        await asyncio.sleep_ms(300)  # chunks waiting, but no tick
        before = exists(rig.root + "/a/.table")
        rig.pile.next_tick_at = ticks_add(ticks_ms(), 100)  # a gap that came late
        gap.set()  # the control loop's tick
        await asyncio.sleep_ms(50)
        late = exists(rig.root + "/a/.table")
        rig.pile.next_tick_at = ticks_add(ticks_ms(), 4 * rig.pile.cfg.tick_ms)
        gap.set()  # a tick, and its gap in time
        await asyncio.sleep_ms(50)
        task.cancel()
        return before, late, exists(rig.root + "/a/.table")

    with FreshState() as root:
        rig = Rig(root)
        gap = asyncio.Event()
        rig.updater.gap = gap
        head, stream, links = package(files=_BIG)
        rig.offer(head)
        assert asyncio.run(run(rig, gap, stream, links)) == (False, False, True)


def test_the_signature_check_starts_no_slice_just_before_a_tick():
    """A tick due within pile.update's _CHECK_QUIET_MS (10 ms), or overdue: the check
    waits for the gap after it; with the next tick far off, it goes on."""
    import asyncio

    from pile import _cpython
    from pile.clock import ticks_add, ticks_ms

    _cpython.install_asyncio()  # CPython: MicroPython's sleep_ms (a board has its own)
    slices = []

    def slow_verifying(key, message, signature):
        for _ in range(100000):
            slices.append(1)
            yield
        return True

    async def run(gap):
        rig.pile.next_tick_at = ticks_add(ticks_ms(), 5)  # due in 5 ms, then overdue
        task = asyncio.create_task(rig.updater.run())
        await asyncio.sleep_ms(100)
        before = len(slices)
        rig.pile.next_tick_at = ticks_add(ticks_ms(), 1000)  # the tick, and its gap
        gap.set()
        await asyncio.sleep_ms(50)
        task.cancel()
        return before, len(slices)

    with FreshState() as root:
        rig = Rig(root)
        gap = asyncio.Event()
        rig.updater.gap = gap
        rig.updater.verifying = slow_verifying
        head, _, _ = package()
        rig.tech.send(UPDATE_OFFER, {2: head, 3: _GOOD})  # the task checks it
        before, after = asyncio.run(run(gap))
        assert rig.updater.state == VERIFYING
        assert before == 0 and after > 0, (before, after)


def test_a_file_damaged_on_flash_fails_the_commit_and_the_package_starts_again():
    with FreshState() as root:
        rig = Rig(root)
        head, stream, links = package()
        rig.offer(head)
        rig.send_all(stream, links)
        with open(root + "/a/pile/new.mpy", "wb") as f:
            f.write(b"flipped")
        rig.tech.send(UPDATE_COMMIT, {2: sha256(head).digest()})
        while rig.updater.step():
            pass
        status = rig.status()
        assert status[2] == REFUSED and "pile/new.mpy" in status[9]
        assert bootstage.record()["trial"] is None
        assert rig.offer(head)[2] == VERIFYING  # from the start


def test_a_file_table_that_leaves_the_slot_is_refused():
    with FreshState() as root:
        rig = Rig(root)
        files = {"../main.py": b"evil"}
        table = cbor.dumps([["../main.py", 4, sha256(b"evil").digest()]])
        head, stream, links = package(files=files, table=table)
        rig.offer(head)
        rig.chunk(stream, links, 0)  # the table, whole: read once written
        status = rig.status()
        assert status[2] == REFUSED and "file table" in status[9]
        reply = rig.chunk(stream, links, 1) if len(stream) > _CHUNK else rig.chunk(
            stream, links, 0)
        assert reply[0] == ERROR and "file table" in reply[4]
        assert not exists(root + "/main.py")


def test_a_trial_that_confirms_boots_from_then_on():
    with FreshState() as root:
        bootstage.init(root)
        bootstage.commit("a", "9.0.0", 60, "1.0.0")
        rig = Rig(root, boot=True)
        assert bootstage.running == "a" and bootstage.trial and rig.updater.state == TRIAL
        reply = rig.offer(package()[0])
        assert reply[0] == ERROR and "on trial" in reply[4]
        assert bootstage.confirm()
        rig.updater.confirmed()
        assert rig.status()[2] == IDLE
        bootstage.init(root)
        assert bootstage.choose() == "a" and not bootstage.trial
        assert bootstage.record()["versions"] == {"": "1.0.0", "a": "9.0.0"}


def test_a_trial_that_ends_unconfirmed_rolls_back_and_says_why():
    with FreshState() as root:
        bootstage.init(root)
        bootstage.commit("a", "9.0.0", 60, "1.0.0")
        assert bootstage.choose() == "a"
        bootstage.init(root)  # reset before confirming: a watchdog, a crash, a power cut
        assert bootstage.choose() == "" and not bootstage.trial
        rollback = bootstage.record()["rollback"]
        assert rollback["version"] == "9.0.0" and "before it confirmed" in rollback["reason"]
        assert rollback["count"] == 1 and bootstage.take_news() and not bootstage.take_news()
        bootstage.init(root)
        assert bootstage.choose() == ""  # and stays on the old firmware


def test_a_torn_record_write_leaves_the_old_record():
    with FreshState() as root:
        bootstage.init(root)
        bootstage.commit("a", "9.0.0", 60, "1.0.0")
        with open(root + "/slots.json.tmp", "w") as f:
            f.write('{"boot": "b", "tri')  # the power went during the next save
        bootstage.init(root)
        assert bootstage.choose() == "a"
