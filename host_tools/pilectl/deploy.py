"""`pilectl deploy`: put the firmware on a board over its USB REPL, changed files only.

The board's MicroPython says which .mpy version it loads; the firmware is built
with mpy-cross (pilectl.build) and compared by SHA-256 with what the board holds,
so a one-module change copies one file. Files are written as `name.new` and
renamed only once all of them are on the board, `main.py` last, so a deploy cut
by a power loss or a pulled cable leaves the old firmware (or, in the instant of
renaming, a mix that the next deploy repairs) but never a half-written module.
Stale modules under `pile/` are removed: a left-over `.py` would shadow its `.mpy`.
"""

import ast
import hashlib
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
from pile.board import BoardError
from pile.board import check as check_board

from pilectl import build as builder

_MPY_CROSS_VERSION = re.compile(r"mpy v(\d+)\.(\d+)")
_CHUNK = 512
_BANNER = re.compile(rb"pile (\S+) firmware (\S+) running")  # pile/firmware.py says it

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
for _f in ('main.py', 'board.json'):
    try:
        _o[_f] = _h(_f)
    except OSError:
        pass
print(repr((getattr(sys.implementation, '_mpy', 0), sys.platform, _o,
            getattr(sys.implementation, '_machine', sys.platform))))
"""


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
    """(to copy, to remove): files whose hash differs; stale modules under pile/ and the
    `.new` files of a deploy that was cut short."""
    copy = [path for path, digest in local.items() if remote.get(path) != digest]
    remove = sorted(path for path in remote if path not in local and (
        path.startswith("pile/") or path.endswith(".new")))
    return sorted(copy, key=lambda p: p == "main.py"), remove  # main.py last


def build_image(board_file, source=None):
    """{device path: bytes} for the firmware and the board file."""
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
    with tempfile.TemporaryDirectory() as out:
        try:
            written = builder.build(out, **({"source": Path(source)} if source else {}))
        except builder.BuildError as exc:
            raise DeployError(str(exc)) from None
        image = {p.relative_to(out).as_posix(): p.read_bytes() for p in written}
    image["board.json"] = board_bytes
    return board, image


class RawRepl:
    """A MicroPython board on a serial port, in the raw REPL while open."""

    def __init__(self, port):
        try:
            self.transport = SerialTransport(port, 115200)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise DeployError(f"cannot open {port}: {exc}. Is the board plugged in and the "
                              "port right (ls /dev/ttyUSB* /dev/ttyACM*)?") from None
        try:
            self.transport.enter_raw_repl(soft_reset=False)
        except (TransportError, OSError) as exc:
            self.transport.close()
            reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc)
            raise DeployError(f"no MicroPython REPL answers on {port} ({reason}): is it the "
                              "board's USB REPL port, not its link; is MicroPython flashed "
                              "(docs/field-guide.md); and no other program (a terminal, "
                              "mpremote) holding the port?") from None

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
                found = _BANNER.search(seen)
                if found:
                    return found.group(1).decode(), found.group(2).decode()
                time.sleep(0.05)
        finally:
            self.transport.close()
        return None


def deploy(board_file, port, source=None, on_bytes=lambda path, done: None):
    """Deploy and reset; returns the RawRepl (for its console `banner`) and a report (files,
    bytes, seconds). Waiting for HELLO is the caller's, which knows the link."""
    started = time.monotonic()
    board_spec, image = build_image(board_file, source)
    local_major = local_mpy_version()[0]
    board = RawRepl(port)
    try:
        mpy, platform, remote, machine = board.inventory()
        version = board_mpy_version(mpy)
        if version is None or version[0] != local_major:
            found = "no .mpy support" if version is None else "v{}.{}".format(*version)
            raise DeployError(f"the board's MicroPython loads .mpy {found}, this mpy-cross "
                              f"emits v{local_major}: flash MicroPython 1.22 or later "
                              "(docs/field-guide.md)")
        local = {path: hashlib.sha256(data).hexdigest() for path, data in image.items()}
        copy, remove = plan(local, remote)
        board.write(image, copy, on_bytes)
        board.remove(remove)
    except BaseException:
        board.restart_old()
        raise
    board.reset()
    return board, {"pile_id": board_spec["pile_id"], "platform": platform, "machine": machine,
            "board_mpy": "v{}.{}".format(*version), "files_total": len(image),
            "files_copied": copy, "bytes_copied": sum(len(image[p]) for p in copy),
            "files_removed": remove, "seconds": round(time.monotonic() - started, 2)}
