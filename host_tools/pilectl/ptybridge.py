"""A pty joined to a TCP port: an emulated board's serial channel as a device node.

The emulators (rp2040js through host_tools/pico/pico.mjs, QEMU for the ESP32) serve each
UART on a TCP port; a PtyBridge joins one to a pty of its own and keeps the pty's other
side open, so a program that opens and closes the device (mpremote does, once a command)
never ends the bridge.
"""

import os
import select
import socket
import threading
import tty
from pathlib import Path


class PtyBridge(threading.Thread):
    """One channel: a pty (its path linked at `link`) joined to 127.0.0.1:`port`."""

    def __init__(self, port, link):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))  # first: it may fail
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.link = Path(link)
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(self.slave))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stopping = False
        self.start()

    def run(self):
        ends = [self.master, self.sock]
        try:
            while not self.stopping:
                ready, _, _ = select.select(ends, [], [], 0.2)
                if self.master in ready:
                    self.sock.sendall(os.read(self.master, 4096))
                if self.sock in ready:
                    data = self.sock.recv(4096)
                    if not data:
                        return  # the emulator is gone
                    os.write(self.master, data)
        except OSError:
            return  # closed under us by close()

    def close(self):
        self.stopping = True
        self.join(1)
        for fd in (self.master, self.slave):
            os.close(fd)
        self.sock.close()
        self.link.unlink(missing_ok=True)
