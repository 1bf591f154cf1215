"""One aggregator worker for bench/fleet_mqtt_bench.py: `pile-aggregator run --worker`,
plus what the bench measures inside it.

    python bench/fleet_mqtt_worker.py FLEET.toml WORKER PASSWORD_FILE

Prints a JSON line a period ({"status": ...}, as --json, with "states": how many of the
piles it owns are at each step to being served, which the bench shows when some never
are, and "behind_s": how far behind it reads what the broker sends it) and, after each
target change
that came through the broker, one {"acked": [epoch s ...], "wanted": N, "target_at": epoch
s} once every pile it sent a new setpoint has ACKed it (or 10 s have passed): the ACKs'
wall-clock times and when the change reached it, which the bench compares with the time
it published the change.
"""

import asyncio
import json
import sys
import time

import aiomqtt
from pilectl.aggregator import run as run_loop
from pilectl.aggregator.cli import as_worker
from pilectl.aggregator.fleet import load
from pilectl.aggregator.service import Aggregator

_ACK_WAIT_S = 10.0


async def follow_acks(aggregator, since, target_at):
    wanted = {link: link.sent_seq for link in aggregator.links
              if link.sent_at is not None and link.sent_at >= since}
    count = len(wanted)
    acked = []
    while wanted and time.monotonic() - since < _ACK_WAIT_S:
        await asyncio.sleep(0.02)
        for link in [link for link, seq in wanted.items() if link.acked_seq >= seq]:
            acked.append(time.time() - (time.monotonic() - link.acked_at))
            del wanted[link]
    print(json.dumps({"acked": acked, "wanted": count, "target_at": target_at}), flush=True)


def states(aggregator):
    """This worker's piles at each step to being served: owned, `online` seen (retained
    status or a first up message), up topic subscribed, attached (asked for its HELLO),
    HELLO heard (signed requests flow), TELEMETRY heard; and the HELLOs taken since the
    start from any pile, owned now or not."""
    broker = aggregator.broker
    owned = [link for link in aggregator.links if link.entry.pile_id in broker.owned]
    ids = [link.entry.pile_id for link in owned]
    return {"owned": len(owned), "online": sum(p in broker.online for p in ids),
            "subscribed": sum(p in broker._subscribed for p in ids),
            "attached": sum(link.attached for link in owned),
            "hello": sum(link.connected for link in owned),
            "telemetry": sum(link.heard_at is not None for link in owned),
            "hellos_taken": sum(link.connects for link in aggregator.links)}


def time_behind(broker, worker):
    """How far behind the worker reads what the broker sends it: every second it publishes
    the time to a topic of its own (QoS 0, behind all it is sent) and times its return. A
    dict {"s": seconds} kept current (None until the first came back)."""
    topic, behind = f"{broker.shared}/behind/{worker}", {"s": None, "sent": None}
    route = broker._route

    def routed(message_topic, payload):
        if message_topic != topic:
            return route(message_topic, payload)
        behind["sent"] = float(payload)
        behind["s"] = time.time() - behind["sent"]
        return None

    async def probe():
        subscribed = None
        while True:
            await asyncio.sleep(1)
            client = broker._client
            if client is not None and subscribed is not client:
                try:
                    await client.subscribe(topic, timeout=60)
                    subscribed = client
                except aiomqtt.MqttError:
                    continue
            if client is not None:
                broker.publish(topic, str(time.time()))
            if behind["sent"] is not None:  # the next should have come a second later
                behind["s"] = max(behind["s"], time.time() - behind["sent"] - 1.0)

    broker._route = routed
    behind["task"] = asyncio.create_task(probe())
    return behind


async def main(path, worker, password_file):
    fleet = load(path)
    fleet.broker = as_worker(fleet, worker, password_file)
    aggregator = Aggregator(fleet)
    aggregator.on_status = lambda status: print(json.dumps(
        {"status": status, "states": states(aggregator), "behind_s": behind["s"]}), flush=True)
    behind = {"s": None}
    aggregator.start()
    behind = time_behind(aggregator.broker, worker)
    following = set()

    def retarget():
        target_at, since = time.time(), time.monotonic()
        aggregator.dispatch_once(since)
        task = asyncio.create_task(follow_acks(aggregator, since, target_at))
        following.add(task)
        task.add_done_callback(following.discard)

    aggregator.broker.on_target = retarget
    await aggregator.run()


if __name__ == "__main__":
    run_loop(main(*sys.argv[1:4]))
