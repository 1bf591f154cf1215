"""An emulated ESP32 with emulated Wi-Fi: the official MicroPython ESP32 image in the QEMU
of ../shared/esp32 (a fork of Espressif's QEMU with the ESP32's Wi-Fi radio), with its
UART0 (the REPL), UART1 and UART2 as ptys (pilectl.ptybridge), so mpremote, pilectl and
the plant use it as they use a board on a cable.

The board's flash is a file in the directory given: a board started again on it (a power
cycle) keeps what was deployed. Its Wi-Fi joins the emulated open access point
`ACCESS_POINT` on a QEMU user network with `restrict=on`: the board reaches nothing but
the host ports named in `reach` (at `SERVICES_IP`, one socat per connection to the same
port on the host's 127.0.0.1), and the host reaches the board's ports named in `listen`
on 127.0.0.1 (`Esp32.listening`). Commands go through QEMU's QMP socket (the fork's
human monitor and qtest answer nothing: docs/esp32.md): the Wi-Fi's uplink cut and
restored, a hard reset. What the emulator cannot do is in docs/esp32.md: drive a GPIO
input from outside, drop the access point (the station stays associated: `wifi(False)`
cuts its traffic instead), model pull-ups or baud-rate timing.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pilectl
from pilectl import build, deploy
from pilectl.ptybridge import PtyBridge
from pilectl.sim.harness import free_port, stop_process

SHARED = Path(pilectl.__file__).resolve().parents[3] / "shared" / "esp32"
FIRMWARE_NAME = "ESP32_GENERIC-20260406-v1.28.0.bin"
ACCESS_POINT = "Espressif"  # one of the three open access points the emulator has
SERVICES_IP = "192.168.4.100"  # where the board finds the host's services (guestfwd)
NETWORK = "192.168.4.0/24"
_FLASH_SIZE = 4 * 1024 * 1024  # the emulator takes 2, 4, 8 or 16 MiB images
_IMAGE_OFFSET = 0x1000  # where the second-stage bootloader starts on an ESP32
_PARTITION_TABLE = 0x8000
_PARTITION_TABLE_SIZE = 0xC00
_PARTITION_MAGIC = 0x50AA
_BLOCK = 4096
_RUNTIME = ("libglib2.0-0 libpixman-1-0 libslirp0 libfdt1 libgcrypt20 libgnutls30 "
            "libpng16-16")
WHERE_TO_GET = (f"the official MicroPython v1.28.0 image for the ESP32 ({FIRMWARE_NAME}, "
                f"micropython.org/download/ESP32_GENERIC) and the Wi-Fi QEMU of "
                f"../shared/esp32 (qemu-system-xtensa, its ROMs and esp32_efuse.bin)")
CHANNELS = ("uart0", "uart1", "uart2")
_MACHINE = "Generic ESP32 module with ESP32"  # sys.implementation._machine of the image
# MicroPython's banner, or main.py's first words: the firmware's start-up line or its error
_STARTED = re.compile(rb"MicroPython v|Traceback|" + deploy.BANNER.pattern)
_MPY = 11014  # sys.implementation._mpy of the v1.28.0 image: .mpy v6.3, xtensawin
# Tidying a littlefs directory of 30 entries took the emulated flash 85 s (a flash
# operation takes 6 ms here, microseconds on a chip: docs/esp32.md)
_FLASH_QUIET_S = 300
_BOOT_S = 180  # the firmware's imports take about 40 s


class Esp32Error(RuntimeError):
    pass


def _path(variable, default):
    path = Path(os.environ.get(variable) or default)
    return path if path.is_file() else None


def firmware_image():
    """The MicroPython image (.bin, from the bootloader on), or None: $ESP32_FIRMWARE,
    else the shared official build."""
    return _path("ESP32_FIRMWARE", SHARED / FIRMWARE_NAME)


def qemu_binary():
    return _path("ESP32_QEMU", SHARED / "qemu-system-xtensa")


def rom_dir():
    """The folder with the ESP32's ROM (esp32-v3-rom.bin) and its eFuse file."""
    return Path(os.environ.get("ESP32_ROM_DIR") or SHARED)


def missing():
    """Why an emulated ESP32 cannot start here, or None when it can."""
    qemu, image = qemu_binary(), firmware_image()
    if qemu is None or image is None or not (rom_dir() / "esp32-v3-rom.bin").is_file() \
            or not (rom_dir() / "esp32_efuse.bin").is_file():
        return (f"no emulated ESP32: set ESP32_QEMU, ESP32_FIRMWARE and ESP32_ROM_DIR to "
                f"{WHERE_TO_GET}, or put them in {SHARED}")
    if shutil.which("socat") is None:
        return "socat is not installed: run `make setup`"
    try:
        done = subprocess.run([str(qemu), "--version"], capture_output=True, text=True,
                              timeout=30)
    except OSError as exc:
        return f"{qemu} does not run ({exc})"
    if done.returncode:
        return (f"{qemu} does not run ({done.stderr.strip()[-200:]}): run `make setup`, "
                f"which installs its Debian libraries ({_RUNTIME})")
    return None


# The emulator's workaround, in the board's boot.py (outside the firmware, which deploy
# leaves alone): every flash operation stalls the other core, which costs this QEMU 6 ms
# where a chip takes microseconds, and littlefs reads 128 bytes an operation as
# MicroPython's ESP32 port mounts it. Mounted again with 512-byte reads (a 2 KiB cache; the
# format is the same), the firmware boots in 38 s instead of 260 s. 1024-byte reads crash
# the port in littlefs. docs/esp32.md.
BOOT_PY = b"""import vfs, esp32
_p = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='vfs')[0]
vfs.umount('/')
vfs.mount(vfs.VfsLfs2(_p, readsize=512, progsize=32, lookahead=32), '/')
del _p
"""


def flash_image(firmware, files=None):
    """A board's flash: the image at 0x1000 of 4 MiB erased (0xff) flash, and a littlefs
    with the runner's boot.py (BOOT_PY) and `files` ({path: bytes}), as a factory programs
    a board: MicroPython mounts the littlefs it finds."""
    data = Path(firmware).read_bytes()
    flash = bytearray(b"\xff" * _FLASH_SIZE)
    flash[_IMAGE_OFFSET:_IMAGE_OFFSET + len(data)] = data
    start = _filesystem_start(data)
    flash[start:] = _littlefs({"boot.py": BOOT_PY, **(files or {})}, _FLASH_SIZE - start)
    return bytes(flash)


def _filesystem_start(image):
    """Where the filesystem begins: after the application partition, which the image's
    partition table (at 0x8000 of the flash) lists; MicroPython's ESP32 port gives the
    rest of the flash to its "vfs" partition."""
    table = image[_PARTITION_TABLE - _IMAGE_OFFSET:][:_PARTITION_TABLE_SIZE]
    end = 0
    for at in range(0, len(table), 32):
        magic, kind, _, offset, size = struct.unpack_from("<HBBII", table, at)
        if magic != _PARTITION_MAGIC:
            break
        if kind == 0:  # an application
            end = max(end, offset + size)
    if not end:
        raise Esp32Error("the image has no partition table with an application at 0x8000")
    return end


def _littlefs(files, size):
    """A littlefs image of `size` bytes holding `files`, laid out as MicroPython's ESP32
    port formats its flash (4 KiB blocks, 32-byte reads and programs)."""
    import littlefs

    fs = littlefs.LittleFS(block_size=_BLOCK, block_count=size // _BLOCK, read_size=32,
                           prog_size=32, lookahead_size=32)
    for path, data in sorted(files.items()):
        folder = path.rpartition("/")[0]
        if folder:
            fs.makedirs(folder, exist_ok=True)
        with fs.open(path, "wb") as out:
            out.write(data)
    return bytes(fs.context.buffer)


class Qmp:
    """QEMU's machine protocol on a unix socket: one command at a time."""

    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise Esp32Error(f"QEMU's QMP socket {path} did not open") from None
                time.sleep(0.1)
        self.file = self.sock.makefile("rw")
        self.file.readline()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command, **arguments):
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(message) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise Esp32Error(f"QEMU closed its QMP socket during {command}")
            reply = json.loads(line)
            if "error" in reply:
                raise Esp32Error(f"QEMU refused {command}: {reply['error'].get('desc')}")
            if "return" in reply:
                return reply["return"]

    def human(self, line):
        """A human-monitor command (its own socket answers nothing in this QEMU)."""
        return self.execute("human-monitor-command", **{"command-line": line})

    def close(self):
        self.file.close()
        self.sock.close()


class Esp32:
    """`with Esp32(directory) as board:` an ESP32 running MicroPython; `board.uart0` (the
    REPL), `board.uart1`, `board.uart2` are its ptys.

    `reach`: the host's TCP ports the board may dial, each at SERVICES_IP:port. `listen`:
    the board's TCP ports the host may dial, each at 127.0.0.1:`board.listening[port]`.
    `icount`: QEMU's -icount shift (2**shift ns an instruction): emulated time counted in
    instructions, so timings on the board are the same run to run; None: real time."""

    def __init__(self, directory, firmware=None, reach=(), listen=(), icount=None):
        reason = missing()
        if reason is not None:
            raise Esp32Error(reason)
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flash = self.dir / "flash.bin"
        self.firmware = Path(firmware) if firmware else firmware_image()
        self.reach = tuple(reach)
        self.listening = {port: free_port() for port in listen}
        self.icount = icount
        self.uart0, self.uart1, self.uart2 = (str(self.dir / name) for name in CHANNELS)
        self.proc = None
        self.qmp = None
        self._bridges = {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _network(self):
        parts = [f"user,id=wan,model=esp32_wifi,net={NETWORK},restrict=on"]
        parts += [f"guestfwd=tcp:{SERVICES_IP}:{port}-cmd:socat - tcp:127.0.0.1:{port}"
                  for port in self.reach]
        parts += [f"hostfwd=tcp:127.0.0.1:{host}-:{board}"
                  for board, host in self.listening.items()]
        return ",".join(parts)

    def command_line(self, ports):
        efuse = self.dir / "efuse.bin"
        command = [str(qemu_binary()), "-L", str(rom_dir()), "-M", "esp32-picsimlab",
                   "-nographic", "-display", "none",
                   "-drive", f"file={self.flash},if=mtd,format=raw",
                   "-drive", f"file={efuse},if=none,format=raw,id=efuse",
                   "-global", "driver=nvram.esp32.efuse,property=drive,value=efuse",
                   "-nic", self._network(),
                   "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
                   "-monitor", "none"]
        for n, port in enumerate(ports):
            # UART0 waits for its client, so nothing the ROM prints is lost; QEMU opens
            # the others after it
            wait = "on" if n == 0 else "off"
            log = f",logfile={self.dir / 'uart0.log'}" if n == 0 else ""
            command += ["-chardev", f"socket,id=s{n},host=127.0.0.1,port={port},"
                                    f"server=on,wait={wait}{log}",
                        "-serial", f"chardev:s{n}"]
        if self.icount is not None:
            command += ["-icount", f"shift={self.icount}"]
        return command

    def start(self, timeout=_BOOT_S):
        """Power on (a fresh flash from the image when the folder has none) and wait for
        MicroPython's banner on UART0."""
        if not self.flash.exists():
            self.flash.write_bytes(flash_image(self.firmware))
        efuse = self.dir / "efuse.bin"  # QEMU opens every drive read-write
        efuse.write_bytes((rom_dir() / "esp32_efuse.bin").read_bytes())
        (self.dir / "qmp.sock").unlink(missing_ok=True)
        (self.dir / "uart0.log").unlink(missing_ok=True)
        ports = [free_port() for _ in CHANNELS]
        with open(self.dir / "qemu.log", "w") as log:  # QEMU keeps its own copy
            self.proc = subprocess.Popen(self.command_line(ports), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        try:
            for name, port in zip(CHANNELS, ports, strict=True):  # in QEMU's order: UART0 first
                self._bridges[name] = self._bridge(name, port)
            self.qmp = Qmp(self.dir / "qmp.sock")
            self.wait_for_banner(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _bridge(self, name, port, timeout=30):
        """The pty of channel `name`, once QEMU serves its port."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return PtyBridge(port, self.dir / name)
            except ConnectionRefusedError:
                if self.proc.poll() is not None:
                    raise Esp32Error(f"QEMU stopped: {self.log()[-500:]}") from None
                if time.monotonic() > deadline:
                    raise Esp32Error(f"QEMU did not open its {name} port") from None
                time.sleep(0.1)

    def log(self):
        path = self.dir / "qemu.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def console(self):
        """What the board printed on UART0 since it was started."""
        path = self.dir / "uart0.log"
        return path.read_bytes().decode(errors="replace") if path.exists() else ""

    def _watch(self, pattern, timeout, since, what):
        """The first match of `pattern` (bytes) in the console after `since` characters,
        waiting up to `timeout` s; Esp32Error naming `what` if none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.console()[since:].encode())
            if found:
                return found
            if self.proc.poll() is not None:
                raise Esp32Error(f"QEMU stopped: {self.log()[-500:]}")
            time.sleep(0.1)
        raise Esp32Error(f"the emulated ESP32 printed no {what} within {timeout} s: "
                         f"{self.console()[-500:]!r}")

    def wait_for_banner(self, timeout=_BOOT_S, since=0):
        """Wait until the board has started (after `since` characters of the console):
        MicroPython's banner, or what main.py printed first (the firmware's start-up line,
        or its error)."""
        self._watch(_STARTED, timeout, since, "MicroPython banner")
        time.sleep(0.3)  # the REPL prompt follows the banner

    def program(self, board_file, source=None, leave_out=()):
        """Before the first power-on, the factory's way: the flash written with the image
        and, in its filesystem, the firmware built for the ESP32 (`source`: another tree)
        and the board file, but the paths in `leave_out`. `pilectl deploy` then finds it
        and copies what differs."""
        if self.proc is not None:
            raise Esp32Error("program the flash before the board is powered on")
        board_bytes = Path(board_file).read_bytes()
        image = deploy.build_image(board_bytes, source, build.march_of(_MPY))
        kept = {path: data for path, data in image.items() if path not in leave_out}
        self.flash.write_bytes(flash_image(self.firmware, kept))

    def deploy(self, board_file, source=None, wait_s=_BOOT_S):
        """The firmware onto this board as onto a real one: `pilectl deploy` over UART0,
        waiting long for the flash (docs/esp32.md), then its start-up line; the deploy's
        report with `banner` (pile id, version)."""
        try:
            repl, report = deploy.deploy(board_file, self.uart0, source, quiet_s=_FLASH_QUIET_S)
        except deploy.DeployError as exc:
            raise Esp32Error(str(exc)) from None
        found = repl.banner(wait_s)
        if found is None:
            raise Esp32Error(f"the firmware did not start on the emulated ESP32 within "
                             f"{wait_s} s: {self.console()[-500:]}")
        return dict(report, banner=found)

    def programmed(self, wait_s=_BOOT_S):
        """The firmware a factory programmed (`program`), started at power-on: its
        start-up line; a report as `deploy` gives, with nothing copied."""
        found = self._watch(deploy.BANNER, wait_s, 0, "firmware start-up line")
        return {"banner": tuple(part.decode() for part in found.groups()),
                "machine": _MACHINE, "files_copied": [], "seconds": 0}

    def wifi(self, up):
        """The access point's uplink cut (False) or restored (True). The emulated access
        point itself stays: the station stays associated and its traffic goes nowhere."""
        self.qmp.human(f"set_link wan {'on' if up else 'off'}")

    def hard_reset(self):
        """The reset button: the chip restarts from its ROM, the flash kept."""
        since = len(self.console())
        self.qmp.execute("system_reset")
        return since

    def stop(self):
        """Power off: the flash file keeps what was written."""
        for bridge in self._bridges.values():
            bridge.close()
        self._bridges = {}
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            stop_process(self.proc, grace_s=2)
