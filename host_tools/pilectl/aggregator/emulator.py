"""Many piles in one CPython process, for fleet tests and benchmarks.

    pile-emulator --piles 1000 --port 20000 --keys DIR [--prefix emu-] [--seed N]
                  [--fleet FILE] [--groups N]
    pile-emulator --piles 1000 --broker HOST:PORT --keys DIR [--keepalive S] ...
    pile-emulator ... --release-key HEX [--arch xtensawin] [--mpy 6.3] [--trial-s S]
                  [--confirm-periods N] [--bad-version V ...] [--state DIR]

Each emulated pile is the firmware's own `Pile` (config, controller and safety
envelope), its control period's rules (`ControlStep`: decisions, cuts, the stale-meter
rule, the event log) and its protocol `Session` on TCP 127.0.0.1 (port, port + 1, ...):
protocol v1 exactly, COSE-signed with the key in DIR/PILE_ID.key (written when missing),
each session handed the host's C codec (pilectl/aggregator/hostcodec.py: the same
bytes). Instead of a converter, a small model: an EV battery (20-80 kWh, SOC 25-90 %)
that takes the power the controller applies, a household load as the site meter's, and
temperatures that stay normal. So emulated piles clamp and cut exactly like real ones.
One task steps every pile once a second (one control period: the watch, then the
tick), a tenth of them every 0.1 s (a fleet's piles are not in step); each pile sends
TELEMETRY every second to the clients whose request it accepted. Prints "ready N" when
every pile listens. --fleet writes the [[pile]] entries of a fleet file for them
(groups g0, g1, ... in turn).

Each pile also has a technician's key, DIR/PILE_ID.technician.key (written when
missing, named in the fleet entries as `technician_key_file`), and takes field updates
(UPDATE_OFFER, _CHUNK, _GET, _COMMIT) through the firmware's own `Updater` once
--release-key names the maker's public key (pilectl/aggregator/emuupdate.py: the boot
stage's slots under --state DIR/PILE_ID, its record in memory). A committed package
reboots the pile into its trial: every connection ends and a new `Pile` boots (a new
nonce, the seq windows empty, the slot's version), which confirms itself after
--confirm-periods healthy periods, unless its version is a --bad-version: then it rolls
back after --trial-s, and says so in HELLO, TELEMETRY and UPDATE_STATUS as the firmware
does. The piles claim to run .mpy --mpy code for --arch, which a package must fit.

With --broker the piles dial an MQTT broker instead of listening
(pilectl/aggregator/mqttpile.py: the firmware's packets and topics), each as its own
user with the password in DIR/PILE_ID.mqtt (written when missing: `broker_users` gives
them to the broker's config); "ready N" once every pile is subscribed. SIGUSR1 freezes
--freeze piles more (silent, sockets open, as piles whose power died) and prints
"frozen N".

The transport is an asyncio protocol a pile, not the firmware's `Link` (a reader and a
writer task a connection): a pile costs a few callbacks a message, so thousands fit in
a process. Like the firmware, a pile greets each connection with HELLO, sends TELEMETRY
only after an accepted request, admits TCP clients by the firmware's own policy
(pile/admission.py: two authenticated, four sockets; a third authenticated client sends
away the one silent longest) and drops TELEMETRY while a client is not reading; it has
no request budget and no idle timeout (it faces the aggregator under test, not a
hostile host).
"""

import argparse
import asyncio
import random
import re
import resource
import signal
import sys
import time
from pathlib import Path

from pile.surface import (
    ACTION_REBOOT,
    ARCHES,
    NEVER,
    RESET_POWER_ON,
    RESET_REQUESTED,
    SLOT_TECHNICIAN,
    STATUS_EV_CONNECTED,
    STATUS_READY,
    UPDATE_ROLLED_BACK,
    VERSION,
    ControlStep,
    Pile,
    Session,
    Updater,
    admission,
    ticks_add,
    ticks_diff,
    ticks_ms,
)

from pilectl import keys, wire
from pilectl.aggregator import hostcodec
from pilectl.aggregator import run as run_loop
from pilectl.aggregator.broker import kept_password
from pilectl.aggregator.emuupdate import (
    BootStage,
    MemoryStore,
    PileView,
    Updates,
    verifying,
)
from pilectl.release import Inflater

_RATED_W = 11000
_STEP_S = 1.0
_PHASES = 10  # a tenth of the piles ticks every 0.1 s
_BACKLOG = 4096  # bytes unsent to a client above which its replies are dropped too
_HANDSHAKES = 64  # broker connections being opened at once
_SLICES = 16  # of an update job, a turn of the update task
_REBOOT_DELAY_S = 0.1  # from a reboot's request to the reset: its reply goes out first


class EmulatedPile:
    """A pile: the firmware's `Pile` and its control period's rules (`pile.loop.ControlStep`)
    with a battery model as its converter and the household load as its site meter, and
    the firmware's field-update `Updater` on a model of its boot stage (emuupdate.py)."""

    def __init__(self, pile_id, key, port, rng, technician_key=None, updates=None):
        self.pile_id = pile_id
        self.key = key
        self.technician_key = technician_key
        self.updates = updates or Updates()
        self.stage = BootStage(self.updates.folder(pile_id), self.updates.version)
        self.flash = MemoryStore()  # what the pile keeps across reboots besides the stage
        self.capacity_wh = rng.randint(20, 80) * 1000
        self.energy_wh = self.capacity_wh * rng.uniform(0.25, 0.9)
        self.load_w = rng.randint(0, 3000)
        self.power_w = 0  # what the converter runs at: the power last written to it
        self.meter_answers = True  # the site meter: False leaves its reading to go stale
        self.port = port
        self.clients = []  # _Client, oldest first
        self.broker = None  # a mqttpile.BrokerPile, on a broker
        self.boots = 0
        self._in_wh = self._out_wh = 0.0
        self.pile = None
        self._boot()

    def _boot(self, cause=RESET_POWER_ON):
        """Power on, or a reboot (`cause`, events.RESET_*): the boot stage picks the slot,
        and the firmware starts afresh as a board's would (a new `Pile`: a new nonce, every
        seq window empty, no setpoint), its config and keys as saved, its version the
        slot's."""
        old = self.pile
        self.stage.choose()
        self.pile = pile = Pile(self.pile_id, reset_cause=cause)
        pile.set_key(self.key)
        if self.technician_key is not None:
            pile.set_key(self.technician_key, SLOT_TECHNICIAN)
        pile.cfg.update(dict(old.cfg.values) if old is not None else {
            "site_import_limit_w": 25000, "site_export_limit_w": _RATED_W, "tick_ms": 1000})
        if old is not None:  # the V2G budget's counters, as a board saves them to reboot
            pile.ctl.budget.restore(old.ctl.budget.state())
        pile.version = self.stage.version()
        tel = pile.tel
        tel.status = STATUS_READY | STATUS_EV_CONNECTED
        tel.rated_charge = tel.rated_discharge = _RATED_W
        tel.ev_max_charge = tel.ev_max_discharge = _RATED_W
        tel.battery_temp, tel.converter_temp = 250, 350
        self.control = ControlStep(pile)
        updates = self.updates
        self.updater = pile.updater = Updater(
            PileView(pile, self.flash), self.stage, updates.release_key, verifying, hostcodec,
            updates.trial_s, mpy=updates.mpy_value(), inflater=Inflater)
        self._rolled_back()
        self.boots += 1
        self.booted_at = time.monotonic()
        self._trial_periods = 0
        self._working = False  # the update task has a turn waiting
        self._meter_w = 0  # W, the meter's last reading: the load and the converter's power
        self._meter_at = None  # ticks_ms of that reading
        self._read()  # the first decision has the converter's readings, SOC included

    def _rolled_back(self):
        """The last rollback, as the firmware says it (pile/firmware.py): in UPDATE_STATUS,
        and in HELLO and TELEMETRY while the firmware it returned to runs; logged once."""
        rollback = self.stage.record()["rollback"]
        if rollback is None:
            return
        self.pile.rollback = [rollback["version"], rollback["reason"], rollback["count"]]
        self.pile.rolled_back = rollback["current"]
        if self.stage.take_news():
            self.pile.log_update(UPDATE_ROLLED_BACK)

    async def listen(self):
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: _Client(self), "127.0.0.1", self.port)

    def broadcast_telemetry(self):
        for client in self.clients:
            if client.session.verified:
                client.send(client.session.telemetry(), droppable=True)
        if self.broker is not None:
            self.broker.telemetry()

    def step(self, now):
        """One control period of the firmware's, as its ControlLoop runs it (pile/loop.py),
        each half a period after the model ran for half a period at the power last
        written: the last period's watch, half a period before `now`, then this period's
        tick at `now`. The converter answers every transaction, and its readings (power,
        SOC) are taken when the firmware's would be: at the tick's transaction and the
        watch's read; the meter reads the household load plus the converter's power."""
        control = self.control
        tel = self.pile.tel
        half_ms = int(_STEP_S * 500)
        self._run(_STEP_S / 2)
        if control.converter_ok:  # the watch: the converter read, a cut written at once
            then = ticks_add(now, -half_ms)
            self._read()
            age = NEVER if self._meter_at is None else ticks_diff(then, self._meter_at)
            again = control.decide(then, self._meter_w, age)
            if control.cut_due(again):
                self.power_w = again
                control.cut_written(again)
        self._run(_STEP_S / 2)
        age = NEVER if self._meter_at is None else ticks_diff(now, self._meter_at)
        applied = control.decide(now, self._meter_w, age)  # the tick
        self.power_w = applied
        self._read()  # the tick's transaction: written, read back
        control.polled(True, applied)
        again = control.decide(now, self._meter_w, age)
        if control.cut_due(again):
            self.power_w = again
            control.cut_written(again)
        if control.meter_due(now):
            reading = None
            if self.meter_answers:
                reading = self._meter_w = self.load_w + self.power_w
                self._meter_at = now
            control.meter_polled(now, reading, tel.power)
        if self.stage.trial:
            self._judge_trial()

    def _judge_trial(self):
        """A trial boot, once a period: it confirms itself after `confirm_periods` healthy
        periods (the firmware's health check: the converter answering), unless its
        version is a planted bad one; one that has not confirmed within its `trial_s`
        rolls back, and the pile boots the old slot again (firmware/bootstage.py)."""
        self._trial_periods += 1
        if self.pile.version not in self.updates.bad_versions and self.control.converter_ok \
                and self._trial_periods >= self.updates.confirm_periods:
            self.stage.confirm()
            self.updater.confirmed()
            return
        trial_s = self.stage.record()["trial_s"]
        if time.monotonic() - self.booted_at >= trial_s:
            self.stage.roll_back(f"the trial did not confirm itself within {trial_s:g} s")
            self.reboot()

    def after_request(self):
        """What a request left to do: the update task's job (a package's signature, or
        its files read back), and a reboot once the reply has gone out."""
        if self.updater.working() and not self._working:
            self._working = True
            asyncio.get_running_loop().call_soon(self._work, self.updater)
        self._reboot_if_asked()

    def _work(self, updater):
        """One turn of the firmware's update task: a few slices of the Updater's job, then
        the event loop's other work, until the job is done."""
        if updater is not self.updater:
            return  # the pile rebooted meanwhile: that job went with it
        for _ in range(_SLICES):
            if not updater.step():
                break
        if updater.working():
            asyncio.get_running_loop().call_soon(self._work, updater)
            return
        self._working = False
        self._reboot_if_asked()

    def _reboot_if_asked(self):
        if self.pile.take_actions() & ACTION_REBOOT:  # a fault reset has nothing to reset
            asyncio.get_running_loop().call_later(_REBOOT_DELAY_S, self._reboot_now, self.pile)

    def _reboot_now(self, pile):
        if pile is self.pile:  # not rebooted meanwhile by its trial's end
            self.reboot(RESET_REQUESTED)

    def reboot(self, cause=RESET_POWER_ON):
        """A reset: every connection ends, as when a board resets, and the pile boots
        again (the boot stage choosing the slot); its boot event says `cause`."""
        for client in list(self.clients):
            client.transport.close()
        self.clients.clear()
        if self.broker is not None:
            self.broker.drop()
        self._boot(cause)

    def _run(self, seconds):
        """The model runs for `seconds` at the converter's power."""
        wh = self.power_w * seconds / 3600
        self.energy_wh = min(self.capacity_wh, max(0.0, self.energy_wh + wh))
        if wh > 0:
            self._in_wh += wh
        else:
            self._out_wh -= wh

    def _read(self):
        """The converter's readings as the firmware reads them: its power and the SOC."""
        tel = self.pile.tel
        tel.power = self.power_w
        tel.soc = int(1000 * self.energy_wh / self.capacity_wh)
        tel.energy_in, tel.energy_out = int(self._in_wh), int(self._out_wh)


class _Client(asyncio.Protocol):
    """One TCP connection to an emulated pile: its own protocol session, as on a board."""

    def __init__(self, emulated):
        self.emulated = emulated
        self.session = Session(emulated.pile, codec=hostcodec)
        self.deframer = wire.Deframer()
        self.transport = None
        self.opened_at = self.heard_at = ticks_ms()  # what the admission policy reads
        self.admitted = False

    def connection_made(self, transport):
        self.transport = transport
        clients = self.emulated.clients
        gone = admission.closed_for_new(clients)  # the firmware's TCP admission policy
        if gone is not None:
            gone.transport.close()
            clients.remove(gone)
        elif admission.full(clients):
            transport.close()  # every socket taken by an authenticated client
            return
        clients.append(self)
        self.send(self.session.hello())

    def connection_lost(self, exc):
        if self in self.emulated.clients:
            self.emulated.clients.remove(self)

    def data_received(self, data):
        for message in self.deframer.feed(data):
            self.heard_at = ticks_ms()
            self.send(self.session.handle(message))
            self.emulated.after_request()
            if self.session.verified and not self.admitted:
                self.admitted = True
                gone = admission.closed_for_admitted(self.emulated.clients, self)
                if gone is not None:
                    gone.transport.close()

    def send(self, message, droppable=False):
        """TELEMETRY (`droppable`) only when nothing waits; nothing once 4 KB wait."""
        waiting = self.transport.get_write_buffer_size()
        if waiting and droppable or waiting > _BACKLOG:
            return
        self.transport.write(wire.frame(message))


def fleet_entries(piles, first_port, key_dir, groups=1):
    """The [[pile]] entries of a fleet file (TOML) for emulated piles: on TCP from
    `first_port`, or on the fleet's broker when `first_port` is None; each with its link
    key and, for rollouts, its technician's key."""
    folder = Path(key_dir).resolve()
    return "".join(
        f'[[pile]]\nid = "{p.pile_id}"\n'
        + ("mqtt = true\n" if first_port is None else f'tcp = "127.0.0.1:{first_port + i}"\n')
        + f'key_file = "{folder / (p.pile_id + ".key")}"\n'
        + (f'technician_key_file = "{folder / (p.pile_id + ".technician.key")}"\n'
           if p.technician_key is not None else "")
        + f'group = "g{i % groups}"\n\n' for i, p in enumerate(piles))


def pile_ids(count, prefix):
    return [f"{prefix}{i:05d}" for i in range(count)]


def broker_users(key_dir, ids):
    """{pile id: broker password}, from DIR/PILE_ID.mqtt, each written when missing: what
    the broker's config (pilectl/aggregator/broker.py) and the emulated piles both read."""
    return {pile_id: kept_password(Path(key_dir) / f"{pile_id}.mqtt") for pile_id in ids}


def make_piles(count, first_port, key_dir, prefix, seed, updates=None):
    """`count` emulated piles, each with its link key DIR/PILE_ID.key and its technician's
    key DIR/PILE_ID.technician.key (pilectl.keys' files, written when missing)."""
    rng = random.Random(seed)
    piles = []
    for i, pile_id in enumerate(pile_ids(count, prefix)):
        key = _kept_key(Path(key_dir) / f"{pile_id}.key")
        technician_key = _kept_key(Path(key_dir) / f"{pile_id}.technician.key")
        port = None if first_port is None else first_port + i  # None: on a broker
        piles.append(EmulatedPile(pile_id, key, port, rng, technician_key, updates))
    return piles


def _kept_key(path):
    if path.exists():
        return keys.read(path)
    key = keys.new_key()
    keys.save(key, path)
    return key


async def serve(piles):
    """Listen for every pile, then step them all once a second and send TELEMETRY."""
    try:
        await asyncio.gather(*(p.listen() for p in piles))
    except OSError as exc:  # a port in use, most likely: say which, and stop
        raise SystemExit(f"pile-emulator: cannot listen: {exc}") from None
    print(f"ready {len(piles)}", flush=True)
    await step_for_ever(piles)


async def dial(piles, broker, users, keepalive_s, freeze):
    """Every pile onto the broker, then step them for ever; SIGUSR1 freezes `freeze` more."""
    from pilectl.aggregator.mqttpile import BrokerPile

    for emulated in piles:
        emulated.broker = BrokerPile(emulated, broker, users[emulated.pile.pile_id],
                                     keepalive_s)
    gate = asyncio.Semaphore(_HANDSHAKES)
    dialling = [asyncio.create_task(p.broker.run(gate)) for p in piles]
    loop = asyncio.get_running_loop()
    frozen = iter(piles)

    def freeze_more():
        for _, emulated in zip(range(freeze), frozen, strict=False):
            emulated.broker.freeze()
        print(f"frozen {freeze}", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, freeze_more)
    stepping = asyncio.create_task(step_for_ever(piles))
    while not all(p.broker.ready for p in piles):
        await asyncio.sleep(0.1)
    print(f"ready {len(piles)}", flush=True)
    await asyncio.gather(stepping, *dialling)


async def step_for_ever(piles):
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        for part in range(_PHASES):  # piles tick out of step, as a real fleet's do
            now = ticks_ms()
            for emulated in piles[part::_PHASES]:
                emulated.step(now)
                emulated.broadcast_telemetry()
            next_at += _STEP_S / _PHASES
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pile-emulator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--piles", type=int, required=True)
    parser.add_argument("--port", type=int, help="the first pile's TCP port")
    parser.add_argument("--broker", help="HOST:PORT of an MQTT broker to dial instead")
    parser.add_argument("--keepalive", type=int, default=10, help="MQTT keepalive, s")
    parser.add_argument("--freeze", type=int, default=0,
                        help="piles SIGUSR1 freezes (MQTT: silent, sockets left open)")
    parser.add_argument("--keys", required=True, help="folder of PILE_ID.key files")
    parser.add_argument("--prefix", default="emu-", help="pile ids are PREFIX00000 ...")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fleet", help="write the piles' [[pile]] entries to this file")
    parser.add_argument("--groups", type=int, default=1, help="groups in the fleet entries")
    parser.add_argument("--release-key", help="the pile maker's public release key (hex, "
                        "pilectl release keygen): field updates on")
    parser.add_argument("--arch", default="xtensawin",
                        help="the architecture the piles run .mpy code for, or 'none'")
    parser.add_argument("--mpy", default="6.3", help="the .mpy version the piles load")
    parser.add_argument("--trial-s", type=float, default=120,
                        help="seconds a trial boot has to confirm itself")
    parser.add_argument("--confirm-periods", type=int, default=3,
                        help="healthy periods after which a trial boot confirms itself")
    parser.add_argument("--bad-version", action="append", default=[],
                        help="a firmware version whose trial never confirms (repeat)")
    parser.add_argument("--version", default=VERSION,
                        help="the firmware version the piles run at the start")
    parser.add_argument("--state", help="folder of the piles' firmware slots (default: a "
                        "temporary one, removed at exit)")
    args = parser.parse_args(argv)
    if (args.port is None) == (args.broker is None):
        parser.error("give --port (piles listen on TCP) or --broker (piles dial MQTT)")
    updates = _updates(parser, args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = (1 if args.broker else 2) * args.piles + 64  # TCP: listening and accepted
    if need > hard:
        sys.exit(f"pile-emulator: {args.piles} piles need {need} file descriptors, the "
                 f"limit is {hard}: run several emulators with fewer piles each")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    piles = make_piles(args.piles, args.port, args.keys, args.prefix, args.seed, updates)
    if args.fleet:
        Path(args.fleet).write_text(fleet_entries(piles, args.port, args.keys, args.groups))
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        users = broker_users(args.keys, [p.pile.pile_id for p in piles])
        running = dial(piles, (host, int(port)), users, args.keepalive, args.freeze)
    else:
        running = serve(piles)
    try:
        run_loop(running)
    except KeyboardInterrupt:
        pass  # Ctrl-C or the bench stopping it: nothing to save


def _updates(parser, args):
    """The field-update settings of the command line, or the parser's error saying what
    to write instead."""
    release_key = None
    if args.release_key is not None:
        try:
            release_key = bytes.fromhex(args.release_key)
        except ValueError:
            parser.error("--release-key must be hex digits: the public key `pilectl release "
                         "keygen` printed")
    arch = None if args.arch == "none" else args.arch
    if arch not in ARCHES:
        parser.error(f"--arch {args.arch}: one of {', '.join(a for a in ARCHES if a)} or none")
    if not re.fullmatch(r"\d+\.[0-3]", args.mpy):
        parser.error(f"--mpy {args.mpy}: a .mpy version such as 6.3")
    if args.trial_s <= 0 or args.confirm_periods < 1:
        parser.error("--trial-s must be > 0 and --confirm-periods at least 1")
    return Updates(release_key, arch, args.mpy, args.trial_s, args.confirm_periods,
                   frozenset(args.bad_version), args.version,
                   Path(args.state).resolve() if args.state else None)


if __name__ == "__main__":
    main()
