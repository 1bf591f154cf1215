"""What survives a reboot: the event journal, checksummed settings, the reset cause
(CPython and MicroPython)."""

import os

from fwtest import FreshState, Host, logged, pile_with_ev
from pile import events
from pile.app import Pile
from pile.journal import Journal
from pile.loop import ControlLoop
from pile.protocol import COMMAND, ERR_AUTH, EVENTS, EVENTS_GET
from pile.store import Store

_KEY = b"J" * 32


def _codes(pile, first=0):
    return [entry[2:] for entry in logged(pile, first)]


def test_events_survive_a_reboot_and_indexes_go_on():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        pile.stop()
        assert pile.events.flush() == 2 and pile.events.flush() == 0  # boot, stop; then none
        pile.release()  # logged, never flushed: lost with the power
        again = Pile("test-001", Store(state))
        assert _codes(again) == [[events.EVENT_BOOT, events.RESET_POWER_ON],
                                 [events.EVENT_STOP, 1],
                                 [events.EVENT_BOOT, events.RESET_POWER_ON]]
        assert [entry[0] for entry in logged(again, 0, 10)] == [0, 1, 2]
        assert logged(again, 2, 10)[0][:3] == [2, 0, events.EVENT_BOOT]
        assert len(logged(again, 0, 2)) == 2  # a page is a page, flash or RAM
        reply = Host(again).send(EVENTS_GET, {2: 1})
        assert reply[0] == EVENTS and [e[0] for e in reply[2]] == [1, 2]


def test_the_journal_is_a_bounded_ring():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        pile.set_config({"event_log_bytes": 2048})  # 64 records a segment
        for _ in range(300):
            pile.stop()
            pile.events.flush()
        for name in ("events.0", "events.1"):
            assert os.stat(state + "/" + name)[6] <= 64 * 16
        again = Pile("test-001", Store(state))
        kept = logged(again, 0, 200)
        assert 64 <= len(kept) - 1 <= 128  # one to two segments, and the new boot
        indexes = [entry[0] for entry in kept]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))  # no gap
        assert indexes[-1] == 303  # boot, config (2), 300 stops, then this boot


def test_a_record_cut_short_or_damaged_is_dropped_not_the_log():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        for _ in range(3):
            pile.stop()
        pile.events.flush()
        with open(state + "/events.0", "ab") as f:
            f.write(b"\x04\x00\x00\x00\x07")  # a record cut short by a power loss
        again = Pile("test-001", Store(state))
        assert [e[0] for e in logged(again, 0, 10)] == [0, 1, 2, 3, 4]
        again.stop()
        again.events.flush()  # a damaged tail is never appended to: a new segment starts
        third = Pile("test-001", Store(state))
        assert [e[0] for e in logged(third, 0, 10)] == [0, 1, 2, 3, 4, 5, 6]
        with open(state + "/events.0", "r+b") as f:
            f.seek(16 + 5)
            f.write(b"\xff")  # a flipped byte in record 1: its CRC fails, the rest stay
        assert [e[0] for e in Journal(state, 16384).read(0, 10)] == [0, 4, 5, 6]


def test_a_flush_cut_short_by_the_flash_appends_the_rest_once():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        pile.set_config({"event_log_bytes": 2048})  # 64 records a segment
        while pile.events.next_index < 60:
            pile.stop()
        pile.flush_events()  # events.0 holds 60
        for _ in range(10):
            pile.stop()
        os.mkdir(state + "/events.1")  # the next segment cannot be opened: the flash fails
        pile.flush_events()  # 4 records reach events.0, then the error
        assert pile.flash_errors == 1
        os.rmdir(state + "/events.1")
        pile.flush_events()  # the other 6, not the 4 again
        indexes = [entry[0] for entry in logged(pile, 0, 100)]
        assert indexes == list(range(indexes[0], 71))  # 70 entries and the flash error's


def test_reading_from_any_index_finds_what_a_full_read_finds():
    with FreshState() as state:
        Store(state)  # the folder
        journal = Journal(state, 2048)  # 64 records a segment
        indexes = list(range(100)) + list(range(150, 180))  # with a gap, as after a loss
        for at in range(0, len(indexes), 7):
            journal.append([[i, i, 2, -i] for i in indexes[at:at + 7]])
        full = journal.read(0, 1000)
        assert [e[0] for e in full] == indexes[-len(full):] and len(full) >= 64
        for first in range(0, 185):
            assert journal.read(first, 1000) == [e for e in full if e[0] >= first], first
            assert journal.read(first, 3) == [e for e in full if e[0] >= first][:3], first


def test_a_settings_file_carries_format_and_checksum():
    with FreshState() as state:
        store = Store(state)
        store.save("config.json", {"min_soc": 35})
        with open(state + "/config.json") as f:
            header = f.readline()
        assert header.startswith("#pile-store 1 ") and len(header.split()[2]) == 16
        with open(state + "/config.json", "r+b") as f:
            f.seek(len(header) + 12)
            f.write(b"4")  # 35 becomes 45: valid JSON, valid value, wrong checksum
        pile = Pile("test-001", store)
        assert pile.cfg.min_soc == 20 and "checksum does not match" in pile.problems[0]
        assert [events.EVENT_STORE_DAMAGED, 0] in _codes(pile)
        pile.set_config({"min_soc": 30})  # a fresh file; the damaged one stays aside
        assert "config.json.bad" in os.listdir(state)
        assert Pile("test-001", store).cfg.min_soc == 30
        with open(state + "/config.json", "w") as f:
            f.write('{"min_soc": 33}')  # format 0, as firmware before format 1 wrote it
        assert Pile("test-001", store).cfg.min_soc == 33
        with open(state + "/config.json", "w") as f:
            f.write('#pile-store 2 0011223344556677\n{"min_soc": 33}')
        newer = Pile("test-001", store)
        assert newer.cfg.min_soc == 20 and "format 2" in newer.problems[0]


def test_the_reset_cause_is_noted_for_the_next_boot():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        pile.note_reset(events.RESET_WATCHDOG)
        again = Pile("test-001", Store(state), reset_cause=events.RESET_POWER_ON)
        assert again.reset_cause == events.RESET_WATCHDOG
        assert logged(again, 0, 1)[0][2:] == [events.EVENT_BOOT, events.RESET_WATCHDOG]
        assert "reset.json" not in os.listdir(state)  # one boot only
        third = Pile("test-001", Store(state), reset_cause=events.RESET_POWER_ON)
        assert third.reset_cause == events.RESET_POWER_ON


def test_a_requested_reboot_flushes_the_log_and_says_why():
    with FreshState() as state:
        pile = Pile("test-001", Store(state))
        resets = []
        loop = ControlLoop(pile, _StoppedConverter(), reset=lambda: resets.append(1))
        pile.request_reboot()
        _run(loop._reboot())
        assert resets == [1]
        again = Pile("test-001", Store(state))
        assert _codes(again)[-2:] == [[events.EVENT_REBOOT_REQUESTED, 0],
                                      [events.EVENT_BOOT, events.RESET_REQUESTED]]


def test_auth_failures_are_logged_at_most_once_a_minute_with_a_count():
    pile = pile_with_ev()
    pile.set_key(_KEY)
    host = Host(pile, b"X" * 32)
    for _ in range(50):
        assert host.send(COMMAND, {2: 3})[3] == ERR_AUTH
    assert Host(pile).send(COMMAND, {2: 3})[3] == ERR_AUTH  # unsigned
    refusals = [e for e in logged(pile, 0, 64) if e[2] == events.EVENT_AUTH_FAILED]
    assert len(refusals) == 1 and refusals[0][3] == 1
    pile.ctl.uptime_s += 60
    assert Host(pile, b"X" * 32).send(COMMAND, {2: 3})[3] == ERR_AUTH
    refusals = [e for e in logged(pile, 0, 64) if e[2] == events.EVENT_AUTH_FAILED]
    assert [e[3] for e in refusals] == [1, 51]  # 49 + the unsigned one + this one


class _StoppedConverter:
    async def command(self, power, run):
        return True


def _run(coroutine):
    import asyncio

    return asyncio.run(coroutine)
