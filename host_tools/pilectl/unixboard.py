"""A MicroPython "board" made of the unix port behind a pty, for deploys without hardware.

It behaves like a board on its USB port: at boot it runs `main.py` (with
`board.json`) from its flash directory, Ctrl-C drops to the REPL, mpremote's raw REPL
works, and leaving the REPL (Ctrl-D) or the firmware's reboot boots it again.
A fresh flash directory is a board with MicroPython and nothing else on it.
"""

import json
import shlex
import subprocess
from pathlib import Path

from pilectl import MICROPYTHON, micropython_env
from pilectl.sim.harness import PlantThread, PtyPair, await_ptys, clear_links, stop_process
from pilectl.sim.run import Simulation
from pilectl.vbench import unix_board

# Boot forever, like a board: main.py when there is one; exit status 3 is the firmware's
# reboot (pile/firmware.py) and 140 its watchdog's reset (pile/hal/unix.py), anything
# else (Ctrl-C, a crash) leaves a REPL, as on a board.
_BOOT_LOOP = ("trap true INT; while true; do if [ -f main.py ]; then {mp} main.py board.json; "
              "s=$?; [ $s = 3 ] || [ $s = 140 ] || {mp}; else {mp}; fi; sleep 0.2; done")


class UnixBoard:
    """`UnixBoard(flash_dir, port_path)`; `port` is the pty a tool connects to."""

    def __init__(self, flash, port):
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        self.port = str(port)
        loop = _BOOT_LOOP.format(mp=shlex.quote(str(MICROPYTHON)))
        clear_links(self.port)
        # No `raw` on the board's side: Ctrl-C must raise KeyboardInterrupt in a running
        # program, as on a board's USB REPL; the REPL sets its own terminal mode.
        self.socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.port}",
             f"system:{loop},pty,setsid,ctty,stderr,opost=0"],
            cwd=self.flash, env=micropython_env("."), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await_ptys(self.socat, (self.port,), self)

    def close(self):
        """Power off: the boot loop and whatever it runs go with socat's session."""
        stop_process(self.socat)


class BoardBench:
    """A fresh unix-port board wired like a pile: its Modbus port on the simulated plant
    and its serial link on a pty (`link_host`), ready for `pilectl deploy`.

    The board file (`board_file`) names the pile's ends of both ptys, and whatever more
    `board` gives (pilectl.vbench.unix_board: `tcp_port`, an `update` part...); `usb` is
    the REPL.
    """

    def __init__(self, directory, scenario, pile_id="field-001", **board):
        self.dir = Path(directory).resolve()  # the board runs in its own folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self._parts = []
        try:
            bus = self._keep(PtyPair(self.dir / "bus-pile", self.dir / "bus-plant"))
            self._link = self._keep(PtyPair(self.dir / "link-pile", self.dir / "link-host"))
            self.link_host = self._link.b
            self.sim = Simulation(scenario)
            self._keep(PlantThread(self.sim, bus.b, duration_s=86400))
            self.board_file = self.dir / "board.json"
            self.board_file.write_text(json.dumps(unix_board(pile_id, bus.a, self._link.a,
                                                             state_dir="state", **board)))
            self.board = self._keep(UnixBoard(self.dir / "flash", self.dir / "usb"))
            self.usb = self.board.port
        except BaseException:
            self.close()
            raise

    def unplug_link(self):
        """Pull the serial link's cable: the host's end of it goes away."""
        self._parts.remove(self._link)
        self._link.close()

    def plug_link(self):
        """Plug it in again (the pile's end comes back too: the firmware reopens it at its
        next boot)."""
        if self._link not in self._parts:
            self._link = self._keep(PtyPair(self.dir / "link-pile", self.dir / "link-host"))

    def power_cycle(self):
        """Cut the power and turn it on again: whatever runs dies, the flash stays."""
        self._parts.remove(self.board)
        self.board.close()
        self.board = self._keep(UnixBoard(self.board.flash, self.usb))

    def _keep(self, part):
        self._parts.append(part)
        return part

    def close(self):
        for part in reversed(self._parts):
            part.close()
