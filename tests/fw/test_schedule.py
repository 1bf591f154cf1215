"""Work scheduled around the control tick (CPython and MicroPython): a bulk message (an
update chunk) is never handled in the moments before a tick, and a period held up past
three quarters of its length leaves its mid-period watch to the next tick, and the
TELEMETRY goes out after that watch, away from either tick."""

import asyncio

from fwtest import pile_with_ev
from pile import _cpython
from pile.cbor import dumps
from pile.clock import ticks_add, ticks_diff, ticks_ms
from pile.connection import Connection
from pile.framing import frame
from pile.loop import ControlLoop
from pile.protocol import CONFIG_GET, Session

_SOON_MS = 20  # the tick is due this soon: inside the connection's quiet time
_BULK = dumps({0: CONFIG_GET, 1: 1, 99: b"x" * 300})  # an unknown key: ignored
_SHORT = dumps({0: CONFIG_GET, 1: 1})


def _arrives(message, due_in_ms):
    """(what happened first: its answer queued or the tick due, ms from the tick's due
    time to the answer) when `message` arrives with the next tick due in `due_in_ms`."""
    _cpython.install_asyncio()  # CPython: MicroPython's sleep_ms (a board has its own)
    pile = pile_with_ev()
    conn = Connection(None, None, Session(pile, True), "serial")
    happened = []
    conn.queue = lambda data: happened.append(("answer", ticks_ms()))

    async def tick():
        await asyncio.sleep_ms(due_in_ms)
        happened.append(("tick", ticks_ms()))

    async def run():
        pile.next_tick_at = ticks_add(ticks_ms(), due_in_ms)
        ticking = asyncio.create_task(tick())
        await conn.receive(frame(message))
        await ticking
        answered = [at for what, at in happened if what == "answer"][0]
        return happened[0][0], ticks_diff(answered, pile.next_tick_at)

    return asyncio.run(run())


def test_a_bulk_message_due_just_before_a_tick_waits_until_the_tick_is_due():
    assert _arrives(_BULK, _SOON_MS)[1] >= 0


def test_a_short_message_is_answered_at_once_even_just_before_a_tick():
    assert _arrives(_SHORT, _SOON_MS)[0] == "answer"


def test_a_bulk_message_is_answered_at_once_when_no_tick_is_near():
    assert _arrives(_BULK, 1000)[0] == "answer"


class _HoldingConverter:
    """Answers at once, or holds the core `hold_ms` after the tick's transaction (as a
    flash write with interrupts off would); counts the mid-period reads."""

    def __init__(self, hold_ms):
        self.hold_ms = hold_ms
        self.reads = 0

    async def poll(self, power, run):
        import time

        time.sleep(self.hold_ms / 1000)
        return True

    async def read(self):
        self.reads += 1
        return True

    async def command(self, power, run):
        return True


def _one_period(hold_ms, tick_ms):
    from pile import _cpython

    _cpython.install_asyncio()  # CPython: MicroPython's sleep_ms (a board has its own)
    pile = pile_with_ev()
    pile.cfg.update({"tick_ms": tick_ms})
    converter = _HoldingConverter(hold_ms)
    loop = ControlLoop(pile, converter)
    loop.converter_ok = True
    asyncio.run(loop.period())
    return converter.reads, loop.watches_late


def test_a_period_held_up_past_three_quarters_leaves_its_watch_to_the_next_tick():
    assert _one_period(hold_ms=320, tick_ms=400) == (0, 1)


def test_a_period_on_time_watches_at_its_middle():
    assert _one_period(hold_ms=0, tick_ms=400) == (1, 0)


def _late_after_two_periods(hold_ms, tick_ms):
    """The loop's `late_max_ms` after two periods, the first's tick held `hold_ms`."""
    from pile import _cpython

    _cpython.install_asyncio()
    pile = pile_with_ev()
    pile.cfg.update({"tick_ms": tick_ms})
    converter = _HoldingConverter(hold_ms)
    loop = ControlLoop(pile, converter)
    loop.converter_ok = True

    async def two():
        await loop.period()
        converter.hold_ms = 0
        await loop.period()

    asyncio.run(two())
    return loop.late_max_ms, loop.after_tick_max_ms


def test_a_tick_held_past_its_period_is_counted_late_by_as_much():
    late, _ = _late_after_two_periods(hold_ms=450, tick_ms=400)
    assert 50 - 5 <= late < 400  # the second tick began some 50 ms after it was due


def test_ticks_on_time_are_not_counted_late():
    late, after_tick = _late_after_two_periods(hold_ms=0, tick_ms=400)
    assert 0 <= late < 40 and 0 <= after_tick < 200


def _telemetry_sent(tick_ms, mid_period):
    """When the TELEMETRY went out over 2.6 s of periods of `tick_ms`: ms before the next
    tick was due, each time; with the loop's mid-period event, or (False) on its own timer."""
    from pile import _cpython
    from pile.link import Link

    _cpython.install_asyncio()
    pile = pile_with_ev()
    pile.cfg.update({"tick_ms": tick_ms, "telemetry_period_s": 1})
    loop = ControlLoop(pile, _HoldingConverter(0))
    loop.converter_ok = True
    link = Link(pile)
    sent = []
    link.broadcast_telemetry = lambda: sent.append(pile.tick_in())

    async def periods():
        while True:
            await loop.period()

    async def run():
        ticking = asyncio.create_task(periods())
        telemetry = asyncio.create_task(
            link.run_telemetry(None, loop.watched if mid_period else None))
        await asyncio.sleep_ms(2600)
        ticking.cancel()
        telemetry.cancel()
        await asyncio.sleep_ms(0)

    asyncio.run(run())
    return sent


def test_telemetry_goes_out_after_the_mid_period_watch_away_from_either_tick():
    sent = _telemetry_sent(200, True)
    assert len(sent) == 2 and all(30 <= left <= 100 for left in sent), sent

