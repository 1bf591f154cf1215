"""The pile firmware, started by main.py: `micropython firmware/main.py BOARD_JSON`.

`Firmware(board, hal)` is the only wiring. It is built from the factories below, so
a bench or test script assembles just the control loop (`build_loop`) or just the
host link (`build_link`) from the same code the board runs. A supervisor feeds the
watchdog only while every supervised task keeps checking in.
"""

import asyncio
import gc
import json
import sys

from micropython import const

from pile import events, profile
from pile.app import Pile
from pile.board import BoardError, check
from pile.cbor import dumps
from pile.converter import Converter
from pile.link import Link
from pile.loop import ControlLoop
from pile.meter import Meter
from pile.modbus import Master
from pile.protocol import PAGE_BYTES
from pile.store import Store
from pile.supervisor import Supervisor

# A hung firmware resets within 3 s, so the next boot's first tick stops the converter
# before its own heartbeat watchdog (5 s) has to; every supervised task checks in at least
# once a second (the control task every period, at most 1 s).
_WATCHDOG_MS = const(3000)
# A trial boot confirms itself (bootstage.confirm) once the control loop has run this many
# periods since boot with the converter answering, and every link is up.
_HEALTHY_PERIODS = const(10)
_HEALTH_POLL_MS = const(500)
# The DIAGNOSTICS counters are paged by the most each can take in CBOR, so a part keeps
# its counters however they grow, and the number of parts is known from the start.
_INT_BYTES = const(9)  # the most a CBOR integer takes (up to 64 bits)
_TEXT = const(24)  # characters a text counter (a device's last error) shows at most
_TEXT_BYTES = const(26)  # the most such a text takes in CBOR: its head, 24 ASCII characters


def load_board(path):
    """The board file at `path`, checked (pile/board.py); BoardError says what is wrong."""
    try:
        with open(path) as f:
            board = json.load(f)
    except OSError:
        raise BoardError("no board file %s: deploy one with pilectl deploy --board" % path)
    except ValueError as exc:
        raise BoardError("%s is not JSON: %s" % (path, exc))
    check(board)
    return board


def build_pile(board, reset_cause=events.RESET_POWER_ON):
    """The pile's state: its id, config, keys and event journal kept in the board's
    `state_dir`, and the pile maker's hard limits on config (`limits`), which no message
    can pass. `reset_cause` (events.RESET_*) is the HAL's, for the boot's log entry. In a
    site group (the board's `site`), the pile's share of the connection's caps is one more
    input of its envelope (docs/site-group.md)."""
    pile = Pile(board["pile_id"], Store(board.get("state_dir", "state")), board.get("limits"),
                reset_cause)
    if "site" in board:  # the site modules load only on a pile in a group
        from pile.siteshare import join

        join(pile, board)
    return pile


def build_loop(pile, hal, board):
    """The control loop: the converter and the optional meter on the board's Modbus bus,
    the E-stop, the contactor and status LED, and the HAL's reset for reboots."""
    bus = board["modbus"]
    master = Master(hal.rs485("modbus"), bus["baud"])
    spec = profile.load(bus.get("converter_profile", "generic-v2g"), hal.profiles)
    converter = Converter(master, spec, pile.tel, bus.get("converter_unit"))
    meter = None
    if bus.get("meter_unit") is not None:
        spec = profile.load(bus.get("meter_profile", "sdm630"), hal.profiles)
        meter = Meter(master, spec, bus["meter_unit"])
    return ControlLoop(pile, converter, meter, hal.estop(), hal.output("contactor_pin"),
                       hal.output("status_led_pin"), hal.reset)


def build_link(pile, hal, board, on_refused=None):
    """The host link: the serial line the board file names, TCP on its `tcp_port`, and the
    MQTT broker of its `mqtt` part."""
    wiring = board.get("link", {})
    link = Link(pile, hal.link_stream(), wiring.get("tcp_port"),
                wiring.get("tcp_host", "0.0.0.0"), board.get("insecure", False), on_refused)
    if board.get("mqtt") is not None:
        from pile.mqttlink import MqttLink  # only boards that dial a broker pay for it

        link.broker = MqttLink(link, board["mqtt"])
    return link


def build_updater(pile, board, slots, gap):
    """Field updates into the other slot of the boot stage `slots` (the `bootstage`
    module), signed with the board's `update.release_key`, their task started, writing
    the flash in the `gap` after each tick (ControlLoop.ticked). Built at the first update
    message (Pile.updates), never at boot."""
    from binascii import unhexlify

    from pile import cbor
    from pile.board import TRIAL_S
    from pile.signature import verifying
    from pile.update import Updater

    update = board.get("update", {})
    key = update.get("release_key")
    updater = Updater(pile, slots, unhexlify(key) if key else None, verifying, cbor,
                      update.get("trial_s", TRIAL_S), gap=gap)
    asyncio.create_task(updater.run())
    return updater


def parts_of(counters, budget=PAGE_BYTES):
    """The names of `counters` (name: value), sorted, in parts whose counters take at most
    `budget` bytes of CBOR each, at the most every value can take (`_INT_BYTES`, or
    `_TEXT_BYTES` for a text or None): so a part that fits one frame now always will."""
    parts = [[]]
    size = 0
    for name in sorted(counters):
        value = counters[name]
        need = len(dumps(name)) + (_INT_BYTES if type(value) is int else _TEXT_BYTES)
        if size + need > budget and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(name)
        size += need
    return parts


def _shown(value):
    """A counter's value as DIAGNOSTICS carries it: a text cut to `_TEXT` characters."""
    return value[:_TEXT] if type(value) is str else value


class Firmware:
    def __init__(self, board, hal):
        self.board = board
        self.hal = hal
        self.pile = build_pile(board, hal.reset_cause())
        self.loop = build_loop(self.pile, hal, board)
        self.link = build_link(self.pile, hal, board, on_refused=say)
        self.site = None  # a site group's transport (pile/sitegroup.py), in a group only
        if "site" in board:
            from pile.sitegroup import build_site_link

            self.site = build_site_link(self.pile, self.loop, board, hal)
        self.wdt = hal.watchdog(_WATCHDOG_MS, self._watchdog_fired)
        self.supervisor = Supervisor(self.wdt)
        self.wifi = hal.wifi()
        self.slots = _boot_stage()
        if self.slots is not None:  # a firmware started without main.py takes no updates
            self.pile.make_updater = lambda: build_updater(self.pile, board, self.slots,
                                                           self.loop.ticked)
            if self.slots.trial:
                self.loop.reset = self._reboot_trial
        self._rolled_back()
        self._parts = parts_of(self.counters())
        self.pile.diagnostics = self.diagnostics
        self.pile.diagnostic_parts = len(self._parts)

    def _reboot_trial(self):
        """A reboot requested while the trial has not confirmed itself: the next boot rolls
        back, so roll back now, saying why (the RP2040 resets through its watchdog, which
        the next boot would name instead)."""
        if self.slots.trial:
            self.slots.roll_back("a reboot was requested before the trial confirmed itself")
        self.hal.reset()

    def _rolled_back(self):
        """The last rollback, for UPDATE_STATUS; in HELLO and TELEMETRY too while the
        firmware it returned to runs; logged once."""
        slots = self.slots
        if slots is None:
            return
        rollback = slots.record().get("rollback")
        if rollback is None:
            return
        self.pile.rollback = [rollback.get("version"), rollback["reason"],
                              rollback.get("count", 1)]
        self.pile.rolled_back = rollback.get("current", False)
        if slots.take_news():
            self.pile.log_update(events.UPDATE_ROLLED_BACK)
            self.pile.problems.append("firmware %s rolled back: %s" % (
                rollback.get("version"), rollback["reason"]))

    async def confirm_trial(self):
        """On a trial boot: confirm the firmware once it is healthy (`_HEALTHY_PERIODS`
        periods run with the converter answering, every link up). An exception or a hang
        before that, and the boot stage rolls back."""
        loop = self.loop
        first = loop.periods
        while loop.periods - first < _HEALTHY_PERIODS or not loop.converter_ok \
                or not self.link.up():
            await asyncio.sleep_ms(_HEALTH_POLL_MS)
        if self.slots.confirm():
            self.pile.updates().confirmed()
            say("pile %s: firmware %s confirmed itself after its trial boot" % (
                self.pile.pile_id, self.pile.version))

    def _watchdog_fired(self):
        """The unix port's watchdog, about to end the process: the next boot logs why."""
        self.pile.note_reset(events.RESET_WATCHDOG)

    def counters(self):
        """Every counter a technician reads with `pilectl status` (DIAGNOSTICS message), by
        name: the loop's, the bus's and the devices', the link's, Wi-Fi's, heap and flash."""
        found = self.loop.diagnostics()
        found.update(self.link.diagnostics())
        if self.wifi is not None:
            found["wifi_connects"] = self.wifi.connects
        if self.site is not None:
            found.update(self.site.diagnostics())
        pile = self.pile
        log = pile.events
        updater = pile.updater
        found["update_slice_max_ms"] = 0 if updater is None else updater.slice_max_ms
        found.update({"heap_free": self.loop.heap_free, "heap_low": self.loop.heap_low,
                      "flash_writes": pile.store.writes + log.journal.writes,
                      "flash_errors": pile.flash_errors, "events_lost": log.lost,
                      "event_next": log.next_index, "reset_cause": pile.reset_cause})
        return found

    def diagnostics(self, part):
        """Part `part` of the counters (`parts_of`: each fits one signed frame)."""
        found = self.counters()
        return {name: _shown(found[name]) for name in self._parts[part]}

    def service_mode(self):
        """Stopped at the REPL: the converter told to stop (its own heartbeat watchdog
        would stop it within 5 s anyway), the contactor open, the event log on flash, the
        board's watchdog fed by a timer until the next reset."""
        asyncio.run(self.loop.converter.command(0, False))
        if self.loop.contactor is not None:
            self.loop.contactor.value(0)
        self.pile.flush_events()  # what was logged stays, whatever a deploy does next
        self.pile.keep_budget(force=True)
        self.hal.service_mode(self.wdt)

    async def control(self, token):
        while True:
            await self.loop.period()
            self.supervisor.check_in(token)

    async def run(self):
        supervisor = self.supervisor
        control, telemetry = supervisor.task(), supervisor.task()
        tasks = [asyncio.create_task(self.control(control)),
                 asyncio.create_task(self.link.run_telemetry(
                     lambda: supervisor.check_in(telemetry), self.loop.watched))]
        if self.link.serial is not None:  # the technician's line: a write must not hang
            serial = supervisor.task()
            tasks.append(asyncio.create_task(self.link.watch_serial(
                lambda: supervisor.check_in(serial))))
        tasks += [asyncio.create_task(server) for server in self.link.servers()]
        if self.loop.estop is not None:  # not supervised: it waits for a press
            tasks.append(asyncio.create_task(self.loop.watch_estop()))
        if self.wifi is not None:  # not supervised: a missing access point is no hang
            tasks.append(asyncio.create_task(self.wifi.keep_connected()))
        if self.slots is not None and self.slots.trial:
            tasks.append(asyncio.create_task(self.confirm_trial()))
        if self.site is not None:  # not supervised: a silent site LAN is no hang
            tasks.append(asyncio.create_task(self.site.run()))
        say("pile %s firmware %s running" % (self.pile.pile_id, self.pile.version))
        for problem in self.pile.problems:  # after the start-up line, which tools wait for
            say("pile %s: %s" % (self.pile.pile_id, problem))
        await asyncio.gather(*tasks)


def _boot_stage():
    """The boot stage (bootstage.py beside main.py), None when the firmware was started
    without one."""
    try:
        import bootstage
    except ImportError:
        return None
    return bootstage


def say(message):
    print(message)


def main(root):
    """Run the pile from the board file named on the command line (/board.json on a board)."""
    from pile.hal import select

    path = sys.argv[1] if len(sys.argv) > 1 else "/board.json"
    try:
        board = load_board(path)
        firmware = Firmware(board, select(board, root))
    except (BoardError, OSError, ValueError) as exc:  # a wrong board file or wiring
        say("pile cannot start: %s" % exc)
        sys.exit(2)
    gc.collect()  # start the loop with only what stays
    try:
        asyncio.run(firmware.run())
    except KeyboardInterrupt:  # Ctrl-C on the USB REPL: a technician or `pilectl deploy`
        firmware.service_mode()
        say("firmware stopped; at the REPL until reset")
        raise
