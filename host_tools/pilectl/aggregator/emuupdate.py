"""An emulated pile's field updates: the firmware's own `Updater` on a model of its boot stage.

pile-emulator (emulator.py) gives each pile the firmware's `Updater` (pile/update.py,
through pile.surface): the same checks of an offered package, the same hash chain, the
same files written into the other slot and read back at commit. What the emulator
supplies around it, in place of a board's:

- `BootStage`: firmware/bootstage.py's record and rules on the host (slots "" for the
  root, "a" and "b"; commit, a trial boot marked tried before it runs, confirm, roll
  back with a reason and a count), each slot a folder under the pile's own folder and
  the record in memory, so it outlives the pile's emulated reboots as flash would;
- `MemoryStore`: the pile's settings store for the Updater's progress (`update.json`),
  kept across reboots as well;
- `verifying`: the release signature checked with `cryptography` (the emulator is a
  host), as the generator pile.signature's is.

`Updates` holds what every pile of one emulator shares: the release key, the .mpy
version and architecture the piles claim, the trial's length, the versions whose trial
never confirms (a planted bad release), and the folder of the piles' slots.
"""

import atexit
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pile.surface import ARCHES, BOOT_STAGE_VERSION, SIGNATURE_SCHEME, VERSION

_REASON = 100  # characters of a rollback's reason kept, as bootstage.py keeps
_temporary = None  # the folder of every pile's slots when no --state folder was given


@dataclass
class Updates:
    """Field-update settings shared by an emulator's piles."""

    release_key: bytes | None = None  # the maker's public key; None: updates are off
    arch: str | None = "xtensawin"  # what the piles' MicroPython runs natively (an ARCHES name)
    mpy: str = "6.3"  # the .mpy version they load
    trial_s: int = 120  # a trial boot's time to confirm itself (the board's update.trial_s)
    confirm_periods: int = 3  # healthy control periods before a trial confirms itself
    bad_versions: frozenset = field(default_factory=frozenset)  # trials that never confirm
    version: str = VERSION  # the firmware version in the root slot at the start
    root: Path | None = None  # every pile's folder is ROOT/PILE_ID

    def mpy_value(self):
        """sys.implementation._mpy of the piles' MicroPython."""
        major, minor = (int(part) for part in self.mpy.split("."))
        return major | minor << 8 | ARCHES.index(self.arch) << 10

    def folder(self, pile_id):
        """The pile's flash: a folder of its own under `root` (a temporary one, removed at
        exit, when none was given)."""
        global _temporary
        root = self.root
        if root is None:
            if _temporary is None:
                _temporary = Path(tempfile.mkdtemp(prefix="pile-emulator-"))
                atexit.register(shutil.rmtree, _temporary, True)
            root = _temporary
        return Path(root) / pile_id


class BootStage:
    """firmware/bootstage.py for one emulated pile: the same API (VERSION, running, trial,
    record(), other(), path(slot), commit(), confirm()) and the same rules; `choose` is
    what a boot runs. The slot "" (the root) holds `version` at the start."""

    VERSION = BOOT_STAGE_VERSION  # as new as the firmware needs

    def __init__(self, folder, version):
        self.folder = Path(folder)
        self.running = ""
        self.trial = False
        self._record = {"boot": "", "trial": None, "tried": False, "trial_s": 0,
                        "versions": {"": version}, "previous": None, "rollback": None}

    def record(self):
        return self._record

    def path(self, slot):
        """The folder of `slot` ("" is the root)."""
        return str(self.folder / slot) if slot else str(self.folder)

    def other(self):
        """The slot a field update writes: the update slot that is not booting."""
        return "b" if self._record["boot"] == "a" else "a"

    def version(self):
        """The firmware version in the slot that runs."""
        return self._record["versions"].get(self.running)

    def commit(self, slot, version, trial_s, running_version):
        """Boot `slot` (holding `version`) on trial at the next boot, `trial_s` seconds
        to confirm itself; a rollback returns to `running_version`."""
        record = self._record
        record["versions"] = dict(record["versions"], **{slot: version,
                                                         record["boot"]: running_version})
        record.update({"trial": slot, "tried": False, "trial_s": trial_s,
                       "previous": record["boot"]})

    def confirm(self):
        """The trial is healthy: it boots from now on. True when there was a trial."""
        if not self.trial:
            return False
        record = self._record
        record.update({"boot": self.running, "trial": None, "tried": False})
        if record["rollback"]:
            record["rollback"] = dict(record["rollback"], current=False)
        self.trial = False
        return True

    def roll_back(self, reason):
        """Give up the trial: the old slot boots next, and the record says why."""
        record = self._record
        failed = record["trial"]
        count = (record["rollback"] or {}).get("count", 0) + 1
        record.update({"trial": None, "tried": False,
                       "rollback": {"slot": failed, "version": record["versions"].get(failed),
                                    "reason": reason[:_REASON], "count": count,
                                    "news": True, "current": True}})

    def take_news(self):
        """True once after a rollback: the firmware that runs after it logs it."""
        rollback = self._record["rollback"]
        if not rollback or not rollback.get("news"):
            return False
        self._record["rollback"] = dict(rollback, news=False)
        return True

    def choose(self):
        """A boot: the slot to run, marking a trial as tried, or rolling back one that
        was tried already and ended without confirming (a reset during its trial)."""
        record = self._record
        self.trial = False
        if record["trial"] is None:
            self.running = record["boot"]
        elif record["tried"]:
            self.roll_back("the trial boot ended before it confirmed itself (reset)")
            self.running = record["boot"]
        else:
            record["tried"] = True
            self.trial = True
            self.running = record["trial"]
        return self.running


class MemoryStore:
    """The settings an emulated pile keeps across its reboots (the Updater's progress):
    pile.store's save, load and remove, on values copied as JSON would."""

    def __init__(self):
        self._values = {}

    def save(self, name, value):
        self._values[name] = json.dumps(value)

    def load(self, name):
        text = self._values.get(name)
        return None if text is None else json.loads(text)

    def remove(self, name):
        self._values.pop(name, None)


class PileView:
    """The pile as its Updater sees it: the firmware's `Pile` (version, events, reboot
    request, rollback), with the emulated flash's store, since an emulated `Pile` keeps
    none of its own (no config file, no event journal)."""

    def __init__(self, pile, store):
        self._pile = pile
        self.store = store

    def __getattr__(self, name):
        return getattr(self._pile, name)


def verifying(key, message, signature):
    """pile.signature's `verifying` on the host: one slice, then True or False; ValueError
    for a key that is no public key of the scheme (the Updater takes it as False)."""
    yield
    return verify(key, message, signature)


def verify(key, message, signature):
    from cryptography.exceptions import InvalidSignature

    try:
        if SIGNATURE_SCHEME == "ed25519":
            from cryptography.hazmat.primitives.asymmetric import ed25519

            ed25519.Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        else:
            _verify_p256(key, message, signature)
    except InvalidSignature:
        return False
    return True


def _verify_p256(key, message, signature):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if len(key) != 64 or len(signature) != 64:
        raise ValueError("a P-256 key and signature are 64 bytes each")
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(key[:32], "big"),
                                           int.from_bytes(key[32:], "big"),
                                           ec.SECP256R1()).public_key()
    public.verify(encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big")),
                  message, ec.ECDSA(hashes.SHA256()))
