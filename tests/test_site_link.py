"""A site group over real UDP on 127.0.0.1 (pile/siteudp.py): the leader and two members,
each a firmware Pile with its SiteUdp task, on CPython's asyncio (the firmware's own
coroutines); a converter that does what it is told and a site meter read every 250 ms
(into the leader's real ControlStep) stand in for the plant (the bench with three
MicroPython firmwares is tests/test_site_bench.py). Also: a member's port takes HELLO and
SITE_ALLOWANCE only."""

import asyncio
import socket

from pile.app import SLOT_SITE, Pile
from pile.cbor import dumps
from pile.clock import ticks_ms
from pile.loop import ControlStep
from pile.meter import NEVER
from pile.protocol import SETPOINT
from pile.siteshare import SiteShare, peek
from pile.siteudp import SiteUdp
from pilectl.sim.harness import free_port

SITE = b"S" * 32
LOAD_W = 2000


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group(ports, period_ms=250):
    ids = ("pile-a", "pile-b", "pile-c")
    return {"group": "bench", "role": "member", "leader": "pile-a", "import_cap_w": 40000,
            "export_cap_w": 11000, "period_ms": period_ms, "udp_port": ports[0],
            "members": {pile_id: {"import_w": imp, "export_w": exp, "host": "127.0.0.1",
                                  "port": port}
                        for pile_id, imp, exp, port in zip(ids, (14000, 13000, 13000),
                                                           (4000, 3500, 3500), ports,
                                                           strict=True)}}


def a_pile(pile_id, site):
    pile = Pile(pile_id)
    pile.set_key(SITE, SLOT_SITE)
    pile.tel.__dict__.update(status=1 | 16, soc=600, battery_temp=250, converter_temp=400,
                             ev_max_charge=11000, ev_max_discharge=11000, rated_charge=11000,
                             rated_discharge=11000, grid_freq=5000)
    pile.set_config({"ramp_w_per_s": 20000, "site_export_limit_w": 11000,
                     "site_import_limit_w": 40000})
    share = site["members"][pile_id]
    pile.ctl.inputs.share = SiteShare(share["import_w"], share["export_w"], site["period_ms"])
    return pile


async def run_site(seconds, piles, links, silent=()):
    """Every 50 ms each pile decides and its converter follows; every 250 ms the leader's
    meter reads the site. Returns the worst export seen after the first second."""
    leader = piles[0]
    tasks = [asyncio.create_task(link.run()) for pile, link in zip(piles, links, strict=True)
             if pile.pile_id not in silent]
    worst = 0
    started = ticks_ms()
    try:
        step = 0
        while ticks_ms() - started < seconds * 1000:
            now = ticks_ms()
            site_w = LOAD_W + sum(p.tel.power for p in piles)
            if step % 5 == 0:
                leader.site_w = site_w
                links[0].step.meter_polled(now, site_w, leader.tel.power)
            for pile in piles:
                metered = pile is leader
                pile.tel.power = pile.ctl.decide(now, pile.tel, True,
                                                 site_w if metered else None,
                                                 0 if metered else NEVER)
            if step == 0:
                for pile in piles:
                    pile.ctl.set_setpoint(-11000, 3600, now)
            if now - started > 1000:
                worst = max(worst, -(LOAD_W + sum(p.tel.power for p in piles)))
            step += 1
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return worst


def build(period_ms=250):
    ports = [udp_port() for _ in range(3)]
    site = group(ports, period_ms)
    piles = [a_pile(pile_id, site) for pile_id in sorted(site["members"])]
    links = [SiteUdp(p, ControlStep(p),
                      dict(site, role="leader" if p.pile_id == "pile-a" else "member"))
             for p in piles]
    return piles, links


def test_three_piles_share_the_export_cap_over_udp():
    piles, links = build()
    worst = asyncio.run(run_site(3, piles, links))
    powers = [p.tel.power for p in piles]
    assert sum(powers) == -(11000 + LOAD_W)  # all of the headroom, split evenly
    assert max(powers) - min(powers) <= 1
    assert worst <= 11000 + 0  # the connection point never past its export cap
    leader = links[0].leader
    assert all(peer.reports >= 5 for peer in leader.peers)
    assert all(p.ctl.inputs.share.allowances >= 5 for p in piles[1:])


def test_a_silent_member_keeps_its_share_and_the_others_make_room():
    piles, links = build()
    worst = asyncio.run(run_site(3, piles, links, silent=("pile-c",)))
    assert piles[2].tel.power == -3500  # on its fallback share, never heard
    assert worst <= 11000
    assert links[0].leader.peers[1].reports == 0


def test_a_members_port_takes_allowances_and_hellos_only():
    piles, links = build()
    member = piles[1]
    port = links[1].port

    async def probe():
        task = asyncio.create_task(links[1].run())
        await asyncio.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(dumps({0: SETPOINT, 1: 1, 2: -11000, 3: 60}), ("127.0.0.1", port))
            s.sendto(dumps({0: 1, 1: 0}), ("127.0.0.1", port))
            data, _ = await asyncio.wait_for(
                asyncio.get_running_loop().sock_recvfrom(s, 640), 2)
            hello = peek(data)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return hello

    hello = asyncio.run(probe())
    assert hello[0] == 1 and hello[4] == member.nonce  # the HELLO answered
    assert links[1].dropped == 1 and member.ctl.setpoint_live is False
    assert free_port()  # the harness's helper is importable here too
