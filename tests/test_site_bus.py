"""A site group over the site bus (pile/sitebus.py): the leader and two members, each a
firmware Pile with its SiteBus task on its own pty, the ptys joined by the bench's
multi-drop hub (what one writes every other reads); on CPython's asyncio (the firmware's
own coroutines), the plant as in tests/test_site_link.py (the bench with three
MicroPython firmwares on the bus is tests/test_site_bench.py). The leader polls each
member in turn and a member answers only when asked, so the frames never collide: none
is dropped.

The unix HAL's line (pile/hal/unix.py's SerialPort) runs on MicroPython only (its termios
has setraw); here `PtyLine` stands in for it, the same four calls on the same raw,
non-blocking pty (the firmwares on the bus use the HAL's own)."""

import asyncio
import os
import termios
import tty

import pytest
from pile.loop import ControlStep
from pile.sitebus import SiteBus
from pilectl.sitebench import BusHub
from test_site_link import LOAD_W, a_pile, run_site

IDS = ("pile-a", "pile-b", "pile-c")


class PtyLine:
    """The HAL's RS485 line on a pty: `readinto`, `start_send`, `sent`, `drain_input`."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)

    def readinto(self, buf):
        try:
            data = os.read(self.fd, len(buf))
        except BlockingIOError:
            return None
        buf[:len(data)] = data
        return len(data)

    def start_send(self, frame):
        os.write(self.fd, frame)  # a pty takes a frame whole
        return 0

    def sent(self):
        return True

    def drain_input(self):
        while self.readinto(bytearray(64)):
            pass

    def close(self):
        os.close(self.fd)


def bus_group(device, role):
    return {"group": "bench", "role": role, "leader": "pile-a", "import_cap_w": 40000,
            "export_cap_w": 11000, "period_ms": 250,
            "members": {pile_id: {"import_w": imp, "export_w": exp}
                        for pile_id, imp, exp in zip(IDS, (14000, 13000, 13000),
                                                     (4000, 3500, 3500), strict=True)},
            "bus": {"device": device, "baud": 115200}}


async def on_the_bus(tmp_path, seconds, silent=(), echo=False):
    hub = BusHub(tmp_path, IDS, echo)
    hub.start()
    lines = []
    try:
        piles, links = [], []
        for pile_id, device in zip(IDS, hub.devices, strict=True):
            site = bus_group(device, "leader" if pile_id == "pile-a" else "member")
            pile = a_pile(pile_id, site)
            lines.append(PtyLine(device))
            piles.append(pile)
            links.append(SiteBus(pile, ControlStep(pile), site, lines[-1]))
        worst = await run_site(seconds, piles, links, silent)
        return piles, links, worst
    finally:
        for line in lines:
            line.close()
        hub.close()


@pytest.mark.usefixtures("socat")
def test_three_piles_share_the_export_cap_over_the_bus(tmp_path):
    piles, links, worst = asyncio.run(on_the_bus(tmp_path, 3))
    powers = [p.tel.power for p in piles]
    assert sum(powers) == -(11000 + LOAD_W)  # all of the headroom, split evenly
    assert max(powers) - min(powers) <= 1
    assert worst <= 11000
    leader = links[0].leader
    assert all(peer.reports >= 5 for peer in leader.peers)
    assert links[0].unanswered == 0  # every poll answered in time
    assert all(link.deframer.dropped() == 0 for link in links)  # no collision, no garble


@pytest.mark.usefixtures("socat")
def test_a_silent_member_on_the_bus_keeps_its_share(tmp_path):
    piles, links, worst = asyncio.run(on_the_bus(tmp_path, 3, silent=("pile-c",)))
    assert piles[2].tel.power == -3500  # on its fallback share, never heard
    assert worst <= 11000
    assert links[0].leader.peers[1].reports == 0 and links[0].unanswered > 0


@pytest.mark.usefixtures("socat")
def test_piles_that_hear_their_own_frames_still_share(tmp_path):
    """A transceiver whose receiver stays on while it drives the pair hears its own frames
    back: the leader does not take its own message for the member's reply, nor does a
    member answer its own reply."""
    piles, links, worst = asyncio.run(on_the_bus(tmp_path, 3, echo=True))
    assert sum(p.tel.power for p in piles) == -(11000 + LOAD_W) and worst <= 11000
    assert all(peer.reports >= 5 for peer in links[0].leader.peers)
    assert links[0].unanswered == 0
