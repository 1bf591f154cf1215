"""The pile's state as the host link sees it: config, controller, readings, events, key.

Requests from any connection land here, so each change is made, persisted and
logged in one place. Storage is optional (None keeps everything in RAM, as in
tests); with a Store the config and the link key survive a reboot.
"""

import os
from hashlib import sha256

from micropython import const

from pile import VERSION, events
from pile.clock import ticks_diff, ticks_ms
from pile.config import CHOICES, INTEGERS, KEY_NUMBERS, Config, ConfigError
from pile.control import Controller
from pile.journal import Journal
from pile.telemetry import Telemetry

ACTION_RESET_FAULT = const(1 << 0)  # write the converter's fault-reset register
ACTION_REBOOT = const(1 << 1)  # reboot once the request's reply has gone out

# Key slots, and the seq window of each for the whole boot (docs/protocol.md): a signed
# message is accepted at most once per boot, whatever the connection or transport.
SLOT_UNSIGNED = const(0)  # no key provisioned: the wired link only, or an insecure bench
SLOT_LINK = const(1)  # the link key: the aggregator's, and what the pile signs with
SLOT_TECHNICIAN = const(2)  # the technician's key: limits, timing, keys, release, reboot
SLOT_SITE = const(3)  # the site key: a site group's leader, SITE_ALLOWANCE only

KEY_LENGTHS = (16, 24, 32)  # what RFC 9052 HMAC keys commonly are, and pycose accepts
_CONFIG = "config.json"
_BUDGET = "budget.json"  # the owner's V2G budget's counters (pile/budget.py)
# by slot: what CONFIG_SET calls each key (pile/protocol.py); its file is the name + ".json"
KEY_NAMES = (None, "link_key", "technician_key", "site_key")
_RESET = "reset.json"  # why the pile is about to reset, for the next boot's EVENT_BOOT
_AUTH_LOG_S = const(60)  # at most one EVENT_AUTH_FAILED a minute: no flash wear, no flush


class Pile:
    def __init__(self, pile_id, store=None, bounds=None, reset_cause=events.RESET_POWER_ON):
        """`bounds` are the pile maker's hard limits on config keys (the board's `limits`);
        `reset_cause` is the HAL's (events.RESET_*), unless the pile noted its own."""
        self.pile_id = pile_id
        self.version = VERSION
        self.nonce = os.urandom(8)  # new every boot: old signed messages never verify again
        self.store = store
        self.events = events.EventLog()
        self.bounds = bounds
        self.problems = []  # what was wrong with the saved state, for the console at boot
        self.config_aside = {}  # saved keys of another firmware version, kept for it
        if store is not None:
            self.events.attach(Journal(store.directory, INTEGERS["event_log_bytes"][0]))
            noted = self._load(_RESET)
            if noted in (events.RESET_WATCHDOG, events.RESET_REQUESTED):
                reset_cause = noted
            store.remove(_RESET)
        self.reset_cause = reset_cause
        self.events.add(0, events.EVENT_BOOT, reset_cause)
        self.cfg = Config(self._load_config(), bounds)
        if self.events.journal is not None:
            self.events.journal.resize(self.cfg.event_log_bytes)
        self.flash_errors = 0  # event journal and budget writes that failed
        self._flash_failing = False
        self._auth_failures = 0  # refusals not yet in the log
        self._auth_logged_s = None  # uptime of the last EVENT_AUTH_FAILED
        self.ctl = Controller(self.cfg)
        if store is not None:
            self._load_budget()
        self.tel = Telemetry()
        self.site_w = None  # W, + import; None while the meter is lost or absent
        self.actions = 0  # ACTION_* bits for the control loop
        self.diagnostics = _no_diagnostics  # diagnostics(part): the firmware's counters
        self.diagnostic_parts = 1  # once it is wired: parts that each fit one frame
        self.next_tick_at = None  # ticks_ms the control loop's next tick is due (its word)
        self.updater = None  # pile.update.Updater, once built (`updates`)
        self.make_updater = None  # builds it: the firmware's, when it takes field updates
        self.rollback = None  # [version, reason, count] of the last trial that rolled back
        self.rolled_back = False  # and this firmware is what it rolled back to
        self.keys = [None, None, None, None]  # by slot; SLOT_UNSIGNED stays None
        self.kids = [None, None, None, None]
        self.seqs = [-1, -1, -1, -1]  # the last seq accepted in this boot, by slot
        for slot in (SLOT_LINK, SLOT_TECHNICIAN, SLOT_SITE):
            self._load_key(slot)

    def _load_key(self, slot):
        """A damaged or wrong-length key file must not stop the boot: the pile starts
        without that key (its TCP link stays closed without one), says so, and logs it."""
        name = KEY_NAMES[slot] + ".json"
        saved = self._load(name)
        if saved is None:
            return
        try:
            key = bytes.fromhex(saved)
        except (TypeError, ValueError):
            key = b""
        if len(key) not in KEY_LENGTHS:
            self.store.set_aside(name)
            self.events.add(0, events.EVENT_STORE_DAMAGED, 1 + slot)
            self.problems.append("%s is damaged and was set aside as %s.bad: no key, provision "
                                 "one over USB serial" % (name, name))
            return
        self._use_key(slot, key)

    def _signing_slot(self):
        """The pile signs with the link key, else with the technician's."""
        return SLOT_LINK if self.keys[SLOT_LINK] is not None else SLOT_TECHNICIAN

    @property
    def key(self):
        """The key the pile signs with, or None without any."""
        return self.keys[self._signing_slot()]

    @property
    def kid(self):
        return self.kids[self._signing_slot()]

    def now(self):
        return ticks_ms()

    def _log(self, code, value=0):
        self.events.add(self.ctl.uptime_s, code, value)

    def _load(self, name):
        if self.store is None:
            return None
        try:
            return self.store.load(name)
        except ValueError as exc:
            self.events.add(0, events.EVENT_STORE_DAMAGED)
            self.problems.append(str(exc))
            return None

    def _load_config(self):
        """The saved config, as much of it as is still valid. Keys this firmware does not
        know (another version's) are kept aside and saved again with every change; a value
        no longer valid is left out. Both are logged and said on the console."""
        saved = self._load(_CONFIG)
        if type(saved) is not dict:
            return None
        known = {}
        for key, value in saved.items():
            if key in INTEGERS or key in CHOICES:
                known[key] = value
            else:
                self.config_aside[key] = value
        if self.config_aside:
            self.events.add(0, events.EVENT_STORE_DAMAGED, 4)
            self.problems.append("config keys this firmware does not know, kept aside: "
                                 + ", ".join(sorted(self.config_aside)))
        try:
            Config(known, self.bounds)
            return known
        except ConfigError:
            pass  # key by key below: one bad value must not cost the others
        cfg = Config(None, self.bounds)
        left_out = []
        for key in sorted(known):
            try:
                cfg.update({key: known[key]})
            except ConfigError:
                left_out.append(key)
        self.events.add(0, events.EVENT_STORE_DAMAGED, 1)
        self.problems.append("saved config values no longer valid, defaults used: "
                             + ", ".join(left_out))
        return {key: known[key] for key in known if key not in left_out}

    def _load_budget(self):
        """The budget's counters as last saved (discharge under a budget waits for the
        next save). Counters that cannot be read count 1 MWh as discharged: a damaged file
        must not give the owner's battery a fresh day."""
        budget = self.ctl.budget
        budget.durable = True
        try:
            saved = self.store.load(_BUDGET)  # a damaged file is set aside
        except ValueError as exc:
            return self._budget_lost(str(exc))
        if saved is None:  # never saved: nothing discharged under a budget yet
            return budget.hold()
        try:
            budget.restore(saved)
        except ValueError as exc:
            self.store.set_aside(_BUDGET)
            self._budget_lost("%s could not be read (%s); kept as %s.bad" % (_BUDGET, exc,
                                                                             _BUDGET))

    def _budget_lost(self, why):
        self.events.add(0, events.EVENT_STORE_DAMAGED, 5)
        self.problems.append(why + ": 1 MWh counted as discharged, so the daily V2G budget "
                             "stays spent for a day (a weekly one below 1 MWh for a week)")
        self.ctl.budget.assume_spent(INTEGERS["budget_wh_day"][2])

    def keep_budget(self, force=False):
        """Save the budget's counters when due (or `force`): between periods, never in
        one. Until a save, discharge under a budget stops once 100 Wh are unsaved; a
        failing flash is counted, and the next period tries again."""
        budget = self.ctl.budget
        if self.store is None or not (force or budget.save_due()):
            return
        try:
            self.store.save(_BUDGET, budget.state())
        except OSError:
            self.flash_errors += 1
            return
        budget.saved()

    # -- changes requested over the link ----------------------------------------------

    def set_config(self, changes, slot=SLOT_UNSIGNED):
        """Validate and apply all of `changes` or none (raises ConfigError), then persist.
        Logged: how many keys, then each key with the slot of the key that signed it. A
        change to what the pile already holds writes nothing (a host that repeats it
        wears neither the flash nor the event log)."""
        held = self.cfg.values
        if all(key in held and held[key] == value and type(held[key]) is type(value)
               for key, value in changes.items()):
            return
        self.cfg.update(changes)
        if self.store is not None:
            saved = dict(self.config_aside)
            saved.update(self.cfg.values)
            self.store.save(_CONFIG, saved)
            self.events.journal.resize(self.cfg.event_log_bytes)
        self._log(events.EVENT_CONFIG_CHANGED, len(changes))
        for key in changes:
            number = KEY_NUMBERS.index(key) + 1 if key in KEY_NUMBERS else 0
            self._log(events.EVENT_CONFIG_KEY, slot << 8 | number)

    def auth_refused(self):
        """A request refused as unauthenticated or replayed. Logged at most once a minute,
        with the count since the last entry, so a flood neither wears the flash nor pushes
        the log's other entries out."""
        self._auth_failures += 1
        up = self.ctl.uptime_s
        if self._auth_logged_s is None or up - self._auth_logged_s >= _AUTH_LOG_S:
            self._log(events.EVENT_AUTH_FAILED, self._auth_failures)
            self._auth_failures = 0
            self._auth_logged_s = up

    def flush_events(self):
        """New events onto flash: the control loop's, once a second between ticks, and
        before an EVENTS reply, which serves flushed entries only (so an index, once read,
        never names another entry after a power cut). A failing flash keeps them in RAM
        (the ring holds 64) and is logged once per run of failures."""
        try:
            self.events.flush()
        except OSError as exc:
            self.flash_errors += 1
            if not self._flash_failing:
                self._log(events.EVENT_FLASH_ERROR, exc.errno)
            self._flash_failing = True
            return
        self._flash_failing = False

    def note_reset(self, cause):
        """Say why the pile is about to reset (events.RESET_*), for the next boot's log.
        Best effort: a flash that fails now must not keep the pile from resetting."""
        if self.store is not None:
            try:
                self.store.save(_RESET, cause)
            except OSError as exc:  # the boot will say power-on instead
                self._log(events.EVENT_FLASH_ERROR, exc.errno)

    def set_key(self, key, slot=SLOT_LINK):
        """Provision (bytes) or remove (None) the key of `slot`; it is never read back.
        Logged with value 1 set / 0 removed (link key), 3 / 2 (technician's key), 5 / 4
        (site key)."""
        name = KEY_NAMES[slot] + ".json"
        if self.store is not None:
            if key is None:
                self.store.remove(name)
            else:
                self.store.save(name, key.hex())
        self._use_key(slot, key)
        self._log(events.EVENT_KEY_PROVISIONED, (0 if key is None else 1) + 2 * (slot - 1))

    def _use_key(self, slot, key):
        self.keys[slot] = key
        self.kids[slot] = None if key is None else key_id(key)

    def setpoint(self, power, ttl_s, departure_s=None, reserve_soc=None, freq_mode=None,
                 freq_curve=None, freq_revert_s=None):
        """Ask for `power` W for `ttl_s`; return (target W, reasons) against the envelope.

        Raises ValueError, changing nothing, when a field is out of range. Not logged:
        an aggregator renews its setpoint every few seconds and would flush the log.
        """
        return self.ctl.set_setpoint(power, ttl_s, self.now(), departure_s, reserve_soc,
                                     freq_mode, freq_curve, freq_revert_s)

    def stop(self):
        self.ctl.stop()
        self._log(events.EVENT_STOP, 1)

    def release(self):
        released = self.ctl.release()
        if released:
            self._log(events.EVENT_RELEASE)
        return released

    def reset_fault(self):
        self.actions |= ACTION_RESET_FAULT
        self._log(events.EVENT_FAULT_RESET_REQUESTED)

    def request_reboot(self):
        self.actions |= ACTION_REBOOT
        self._log(events.EVENT_REBOOT_REQUESTED)

    def tick_in(self):
        """Milliseconds until the control loop's next tick is due (negative: overdue);
        None without a control loop."""
        due = self.next_tick_at
        return None if due is None else ticks_diff(due, ticks_ms())

    def updates(self):
        """The field-update service (pile.update.Updater), built at the first update
        message rather than at boot: its modules cost heap a pile never updated does not
        spend. None when the firmware takes no field updates."""
        if self.updater is None and self.make_updater is not None:
            self.updater = self.make_updater()
        return self.updater

    def log_update(self, value):
        """A field update went a step on (events.UPDATE_*)."""
        self._log(events.EVENT_UPDATE, value)

    def take_actions(self):
        """The pending ACTION_* bits, cleared: the control loop carries them out."""
        actions = self.actions
        self.actions = 0
        return actions


def _no_diagnostics(part):
    return {}


def key_id(key):
    """The COSE kid: 4 bytes of the key's SHA-256, a fingerprint both sides can compare."""
    return sha256(key).digest()[:4]
