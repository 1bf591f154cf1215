"""An emulated Raspberry Pi Pico: host_tools/pico/pico.mjs (rp2040js under Node), with
its USB serial and both UARTs as ptys (pilectl.ptybridge), so mpremote, pilectl and the
plant use it as they use a board on a cable. The board's flash is a file in
the directory given: a Pico started again on it (a power cycle) keeps what was deployed.
"""

import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pilectl
from pilectl.ptybridge import PtyBridge

RUNNER = Path(pilectl.__file__).resolve().parent.parent / "pico" / "pico.mjs"
SHARED = Path(pilectl.__file__).resolve().parents[3] / "shared" / "rp2"
FIRMWARE_NAME = "RPI_PICO-v1.28.0.uf2"
FROZEN_BUILD = Path(pilectl.__file__).resolve().parents[2] / "build" / "PILE_PICO" / "firmware.uf2"
LAYOUTS = {"stock": ("PICO_FIRMWARE", SHARED / FIRMWARE_NAME),
           "romfs": ("PICO_FIRMWARE_ROMFS", SHARED / "RPI_PICO_ROMFS-v1.28.0.uf2"),
           "frozen": ("PICO_FIRMWARE_FROZEN", FROZEN_BUILD)}
WHERE_TO_GET = (f"the official MicroPython v1.28.0 build for the Raspberry Pi Pico "
                f"({FIRMWARE_NAME}, from micropython.org/download/RPI_PICO) and the RP2040 "
                f"B1 boot ROM (rp2040-bootrom-B1.bin)")
CHANNELS = ("usb", "uart0", "uart1")


class PicoError(RuntimeError):
    pass


class Frame(NamedTuple):
    """A frame on an emulated UART (`Pico.record_frames`): emulated seconds since boot of
    its first and last byte, `way` "out" (the firmware sent it) or "in" (the host's), and
    its first bytes."""

    start: float
    end: float
    way: str
    data: bytes


def firmware_image(layout="stock"):
    """The UF2 to flash, or None when absent. `layout` "stock": $PICO_FIRMWARE, else the
    shared RPI_PICO build; "romfs", with a ROMFS partition: $PICO_FIRMWARE_ROMFS, else the
    shared RPI_PICO_ROMFS build; "frozen", the firmware frozen in: $PICO_FIRMWARE_FROZEN,
    else what `make firmware-rp2` built (boards/rp2/PILE_PICO)."""
    variable, default = LAYOUTS[layout]
    path = Path(os.environ.get(variable) or default)
    return path if path.is_file() else None


def bootrom_image():
    path = Path(os.environ.get("PICO_BOOTROM") or SHARED / "rp2040-bootrom-B1.bin")
    return path if path.is_file() else None


def missing():
    """Why an emulated Pico cannot start here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed: run `make setup` (it installs Debian's nodejs)"
    if not (RUNNER.parent / "node_modules" / "rp2040js").is_dir():
        return "rp2040js is not installed: run `make setup` (npm ci in host_tools/pico)"
    if firmware_image() is None or bootrom_image() is None:
        return (f"no Pico firmware image: set PICO_FIRMWARE (and PICO_BOOTROM) to "
                f"{WHERE_TO_GET}, or put them in {SHARED}")
    return None


def send_command(control, **command):
    """One command to a running emulated Pico from another process, by its control port
    (HOST:PORT, `Pico.control`): `send_command(address, gpio=[15, 0])` presses an E-stop."""
    host, _, port = control.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(json.dumps(command).encode() + b"\n")


class Pico:
    """`with Pico(directory) as pico:` a Pico running MicroPython; `pico.usb`,
    `pico.uart0`, `pico.uart1` are its ptys; `pico.events` what the runner reports."""

    def __init__(self, directory, firmware=None, flash_firmware=True, flash_timing=False):
        """`flash_timing`: erases and programs take the time the Pico's flash takes
        (typical), with the core stopped, instead of none (pico.mjs --flash-timing)."""
        reason = missing()
        if reason is not None:
            raise PicoError(reason)
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flash = self.dir / "flash.img"
        self.firmware = Path(firmware) if firmware else firmware_image()
        self.flash_firmware = flash_firmware or not self.flash.exists()
        self.flash_timing = flash_timing
        self.events = queue.Queue()
        self.history = []  # (time.monotonic(), event) of every event, whoever waits for them
        self.control = None  # HOST:PORT of the runner's control port, once started
        self.proc = None
        self._bridges = {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        command = ["node", str(RUNNER), "--bootrom", str(bootrom_image()),
                   "--flash", str(self.flash)]
        if self.flash_firmware:
            command += ["--uf2", str(self.firmware)]
        if self.flash_timing:
            command.append("--flash-timing")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_events, daemon=True).start()
        ready = self.wait_for("ready", 30)
        self.control = f"127.0.0.1:{ready['control']}"
        for name in CHANNELS:
            self._bridges[name] = PtyBridge(ready[name], self.dir / name)
        self.flash_firmware = False  # a restart is a power cycle, not a reflash
        return self

    def _read_events(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "line": line.rstrip("\n")}
            self.history.append((time.monotonic(), event))
            self.events.put(event)
        self.events.put({"event": "exit", "code": self.proc.wait(),
                         "stderr": self.proc.stderr.read()})

    def wait_for(self, name, timeout):
        """The next event called `name`; PicoError if the runner stops or it takes longer."""
        try:
            while True:
                event = self.events.get(timeout=timeout)
                if event["event"] == name:
                    return event
                if event["event"] == "exit":
                    raise PicoError(f"the emulated Pico stopped: {event['stderr'].strip()}")
        except queue.Empty:
            raise PicoError(f"the emulated Pico said no {name!r} within {timeout} s") from None

    def path(self, channel):
        return str(self.dir / channel)

    @property
    def usb(self):
        return self.path("usb")

    @property
    def uart0(self):
        return self.path("uart0")

    @property
    def uart1(self):
        return self.path("uart1")

    def command(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def gpio(self, pin, high):
        """Drive input `pin` from the outside (a button, the E-stop loop)."""
        self.command(gpio=[pin, 1 if high else 0])

    def deploy(self, board_file, source=None, wait_s=60, layout="stock"):
        """The firmware onto this board as onto a real one: its E-stop loop (the board
        file's `estop_pin`, active low) held closed, `pilectl deploy` over the USB serial
        (`--romfs` or `--frozen` for those layouts), then its start-up line; the deploy's
        report with `banner` (pile id, version)."""
        from pilectl import deploy

        pin = json.loads(Path(board_file).read_text()).get("estop_pin")
        if pin is not None:
            self.gpio(pin, 1)
        try:
            repl, report = deploy.deploy(board_file, self.usb, source, romfs=layout == "romfs",
                                         frozen=layout == "frozen")
        except deploy.DeployError as exc:
            raise PicoError(str(exc)) from None
        found = repl.banner(wait_s)
        if found is None:
            raise PicoError(f"the firmware did not start on the emulated Pico within {wait_s} s")
        return dict(report, banner=found)

    def interrupt(self):
        """Stop a running firmware at the REPL: it goes to its service mode."""
        from pilectl import deploy

        try:
            deploy.interrupt(self.usb)
        except deploy.DeployError as exc:
            raise PicoError(str(exc)) from None

    def stats(self):
        """The runner's counters now: emulated ns, of which idle, instructions, wall ms
        since boot, and the flash erases and programs since boot."""
        self.command(stats=True)
        while True:
            found = self.wait_for("stats", 10)
            if "tag" not in found:  # not one `stamp` asked for
                return found

    def stamp(self, tag="stamp"):
        """Ask for the counters without waiting: they come into `history` (a thread
        watching the console stamps a line with the emulated time it came at)."""
        self.command(stats=True, tag=tag)

    def stamped(self, after, tag="stamp", timeout=10):
        """The first counters `stamp(tag)` got after wall time `after` (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, event in list(self.history):
                if at > after and event["event"] == "stats" and event.get("tag") == tag:
                    return event
            time.sleep(0.01)
        raise PicoError(f"the emulated Pico gave no {tag!r} counters within {timeout} s")

    def power_cycle(self, timeout=10):
        """Cut the power between two instructions and restore it: the chip starts again
        on what the flash holds (every erase and program it finished); the ptys stay, and
        what a host sends while the new chip's UARTs are off is lost. Returns the boot
        event once the new chip runs."""
        self.command(power="cycle")
        return self.wait_for("boot", timeout)

    def record_frames(self, *channels, first_bytes=16, gap_us=1000):
        """From now on, note every frame each way on `channels` ("uart0", "uart1") with the
        emulated time of its first and last byte (the firmware's as it sent them, the
        host's as they entered the receive FIFO); `recorded_frames()` returns them. A
        frame is bytes less than `gap_us` apart; its first `first_bytes` are kept."""
        self.command(frames=list(channels), bytes=first_bytes, gap_us=gap_us)

    def recorded_frames(self):
        """{channel: [Frame]} of what `record_frames` asked for (emulated seconds since
        boot), and the recording stops."""
        self.command(frames=None)
        found = self.wait_for("frames", 10)["channels"]
        return {name: [Frame(start / 1e9, end / 1e9, way, bytes.fromhex(data))
                       for start, end, way, data in frames]
                for name, frames in found.items()}

    def profile(self, seconds, every=97, callers=0):
        """Where the core spends its instructions over `seconds`: {program counter:
        samples}, one sample every `every` instructions (pilectl.armprofile names them).
        With `callers`, {(program counter, return address, ...): samples}: up to that many
        return addresses found on the stack (pilectl.armprofile.callers)."""
        self.command(profile=every, callers=callers)
        time.sleep(seconds)
        self.command(profile=0)
        samples = self.wait_for("profile", 10)["samples"]
        if callers:
            return {tuple(int(a) for a in key.split(":")): n for key, n in samples.items()}
        return {int(pc): n for pc, n in samples.items()}

    def stop(self):
        """Power off: the flash file keeps what was written."""
        for bridge in self._bridges.values():
            bridge.close()
        self._bridges = {}
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
