"""The boot stage: which slot's firmware runs, a trial boot, and the rollback.

main.py hands over here. The firmware (the `pile` package and its profiles) lives in a
slot: "" is the flash's root, where `pilectl deploy` writes over USB; "a" and "b" are the
folders a field update writes (docs/field-update.md). One small record, `slots.json`
beside main.py, says which slot boots, and is replaced atomically (written to
`slots.tmp`, renamed over it), so a power cut leaves the old record or the new one.

A committed update is `trial`: the next boot marks it `tried` (on flash, before anything
of it runs) and runs it; once the new firmware finds itself healthy it calls `confirm()`,
which makes it the slot that boots. Any boot that finds a trial already `tried` and not
confirmed means the trial ended without confirming (a watchdog reset, a crash, a power
cut, a reboot): that boot rolls back to the old slot and records why (`rollback`). The
boot stage also rolls back at once when the trial raises at import or while running, and
when it has not confirmed within `trial_s` seconds.

Never replaced by a field update (a package says the lowest `VERSION` of this stage it
needs); `pilectl deploy` over USB writes it, and starts over from the root slot.
"""

import json
import os
import sys

VERSION = 1  # what a package's "boot" field is compared with
RECORD = "slots.json"
_REASON = 100  # characters of a rollback's reason kept
SLOTS = ("", "a", "b")  # the root (USB deploy), then the two update slots

base = "."  # the folder of main.py and the record
running = ""  # the slot this boot runs
trial = False  # True while running a trial that has not confirmed
_record = None
_timer = None


def _default():
    return {"boot": "", "trial": None, "tried": False, "trial_s": 0, "versions": {},
            "previous": None, "rollback": None}


def path(slot):
    """The folder of `slot` ("" is the root)."""
    return base + "/" + slot if slot else base


def record():
    """The slot record as on flash: a fresh one when there is none, or it cannot be read
    (the root boots: it is where a USB deploy puts a firmware)."""
    global _record
    if _record is None:
        found = _default()
        try:
            with open(base + "/" + RECORD) as f:
                saved = json.load(f)
            if type(saved) is dict and saved.get("boot") in SLOTS:
                found.update(saved)
        except (OSError, ValueError):
            pass
        _record = found
    return _record


def save(changed):
    """Replace the record by `changed`, atomically."""
    global _record
    name = base + "/" + RECORD
    with open(name + ".tmp", "w") as f:
        f.write(json.dumps(changed))
    os.rename(name + ".tmp", name)
    _record = changed


def other():
    """The slot a field update writes: the update slot that is not booting."""
    return "b" if record()["boot"] == "a" else "a"


def commit(slot, version, trial_s, running_version):
    """Boot `slot` (holding firmware `version`) on trial at the next boot; it has
    `trial_s` seconds to confirm itself. `running_version` is the firmware running now,
    the one a rollback returns to."""
    changed = dict(record())
    versions = dict(changed["versions"])
    versions[slot] = version
    versions[changed["boot"]] = running_version
    changed.update({"trial": slot, "tried": False, "trial_s": trial_s, "versions": versions,
                    "previous": changed["boot"]})
    save(changed)


def confirm():
    """The trial is healthy: it boots from now on. True when there was a trial to confirm."""
    global trial
    if not trial:
        return False
    changed = dict(record())
    changed.update({"boot": running, "trial": None, "tried": False})
    if changed["rollback"]:  # kept for the record; no longer what the pile runs after
        changed["rollback"] = dict(changed["rollback"], current=False)
    save(changed)
    trial = False
    if _timer is not None:
        _timer.deinit()
    return True


def roll_back(reason):
    """Give up the trial (or the one that ended unconfirmed): the old slot boots next."""
    changed = dict(record())
    failed = changed["trial"]
    count = (changed["rollback"] or {}).get("count", 0) + 1
    changed.update({"trial": None, "tried": False,
                    "rollback": {"slot": failed, "version": changed["versions"].get(failed),
                                 "reason": reason[:_REASON], "count": count, "news": True,
                                 "current": True}})
    save(changed)


def take_news():
    """True once after a rollback: the firmware that runs after it logs it."""
    rollback = record().get("rollback")
    if not rollback or not rollback.get("news"):
        return False
    changed = dict(record())
    changed["rollback"] = dict(rollback, news=False)
    save(changed)
    return True


def choose():
    """The slot to boot now (also `running`), marking a trial as tried (or rolling an
    unconfirmed one back) first."""
    global trial, running
    found = record()
    slot = found["trial"]
    if slot is None:
        running = found["boot"]
    elif found["tried"]:
        roll_back("the trial boot ended before it confirmed itself (%s)" % _reset_cause())
        running = found["boot"]
    else:
        changed = dict(found)
        changed["tried"] = True
        save(changed)
        trial = True
        running = slot
    return running


def init(root):
    """Work on the record in folder `root` (main.py's), as read from flash now."""
    global base, running, trial, _record
    base = root
    running = ""
    trial = False
    _record = None


def start(root):
    """Boot: choose the slot, put it first on the import path, and run its firmware."""
    init(root)
    choose()
    if running:
        sys.path.insert(0, path(running))
        for name in list(sys.modules):  # nothing of another slot stays imported
            if name == "pile" or name.startswith("pile."):
                del sys.modules[name]
    if trial:
        _arm(record()["trial_s"])
    try:
        from pile.firmware import main

        main(path(running))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a trial that cannot start has failed
        if not trial or _is_reboot(exc):
            raise
        roll_back("the trial raised %s: %s" % (type(exc).__name__, exc))
        _reset()


def _is_reboot(exc):
    """The unix port's reboot (exit status 3): a reset, which the next boot judges."""
    return isinstance(exc, SystemExit) and exc.args and exc.args[0] == 3


def _expired(_=None):
    if trial:
        roll_back("the trial did not confirm itself within %d s" % record()["trial_s"])
        _reset()


def _arm(seconds):
    """Give the trial `seconds` to confirm: a timer on a board, a thread on the unix port."""
    global _timer
    if seconds <= 0:
        return
    try:
        from machine import Timer

        _timer = Timer(-1 if sys.platform == "rp2" else 0, mode=Timer.ONE_SHOT,
                       period=seconds * 1000, callback=_expired)
    except ImportError:  # the unix port
        import _thread

        _thread.start_new_thread(_wait, (seconds,))


def _wait(seconds):
    import time

    time.sleep(seconds)
    _expired()


def _reset():
    try:
        from machine import reset
    except ImportError:  # the unix port: its boot loop starts the firmware again
        if _thread_running():
            os.system("kill -USR2 $PPID")  # a thread cannot end the process otherwise
        sys.exit(3)
    reset()


def _thread_running():
    try:
        import _thread

        return _thread.get_ident() != _main
    except ImportError:
        return False


def _reset_cause():
    try:
        import machine

        return "watchdog reset" if machine.reset_cause() == machine.WDT_RESET else "power or reset"
    except (ImportError, AttributeError):
        return "reset"


try:
    import _thread

    _main = _thread.get_ident()
except ImportError:
    _main = None
