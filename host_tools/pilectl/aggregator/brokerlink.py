"""The fleet's piles on an MQTT broker: one client connection for all a worker serves.

Piles dial out to the broker (firmware pile/mqttlink.py) and publish every message to
`<prefix>/<pile_id>/up` and their state to the retained `.../status`; an aggregator
publishes requests to `.../down`. One aggregator process (a worker) or several share a
fleet (pilectl/aggregator/shard.py, docs/aggregator.md):

- each worker announces itself with a retained `<prefix>-agg/workers/<user>` and a last
  will that clears it, so every worker knows the live set, and a worker that dies
  leaves it as soon as the broker notices (at once when its socket closes, within 1.5
  keepalives when its host vanishes);
- every worker computes the same owner for each pile from that set and subscribes to
  the up topics of its own piles only;
- every period each worker publishes its reach (`<prefix>-agg/reach/<user>`) and takes
  its share of the fleet target from everyone's;
- a target set through one worker's API is published retained on `<prefix>-agg/target`
  and followed by all;
- with Home Assistant on (homeassistant.py), each worker publishes the discovery configs
  and JSON values of its own piles and takes Home Assistant's commands for them.

A pile's `online` (retained, so every online pile's comes at subscription) gives its
link, if the pile is this worker's, a publisher for the pile's down topic and asks the
pile for its HELLO: the broker says nothing else of a new connection. Its `offline`,
the last will, takes it out of the next split at once. Clean sessions and QoS 0 for
pile traffic (docs/protocol.md, MQTT); QoS 1 for the workers' own retained records. A
lost broker connection detaches every pile and is opened again after 1, 2, 4, 8, then
every 10 s, as a pile link is.

QoS 0 may be lost (a broker drops it for a client that reads too slowly, as Mosquitto
does past max_queued_messages): a pile that speaks without having answered the HELLO
asked of it is asked again after 5 s, then 10, 20 ... 60 s; and a SUBSCRIBE that goes
unacknowledged (a worker behind thousands of messages at a fleet's start reads its SUBACK
late) is sent again, so no pile stays unserved for good.
"""

import asyncio
import json
import time

import aiomqtt
import paho.mqtt.client as paho

from pilectl.aggregator import shard

_RETRY_S = (1, 2, 4, 8, 10)
_ONLINE = b"online"
_SUBSCRIBE_BATCH = 500  # topics in one SUBSCRIBE packet
_REACH_PERIODS = 3  # a worker's reach older than this many periods is not counted
# A pile heard without its HELLO this long after asking is asked again, then after twice
# as long each time up to a minute: a worker far behind at a fleet's start (10,000 piles on
# a busy machine: seconds) reads late HELLOs, not lost ones, and asking every 2 s asked
# 2,288 times more, adding to what it was behind on.
_HELLO_AGAIN_S = 5.0
_HELLO_AGAIN_MAX_S = 60.0
_SUBSCRIBE_S = 30.0  # for a SUBACK (aiomqtt's default, 10 s, was too short at a start)
_SUBSCRIBE_AGAIN_S = 1.0


class Publisher:
    """What a `PileLink` writes to while on the broker: each message a QoS 0 PUBLISH to
    the pile's down topic, sent without waiting (a fleet's target change is thousands of
    setpoints at once)."""

    def __init__(self, broker, topic):
        self.broker = broker
        self.topic = topic
        self.closed = False

    def write(self, message):
        if not self.closed:
            self.broker.publish(self.topic, message)

    def close(self):
        self.closed = True


class BrokerLink:
    def __init__(self, settings, links, counters, target=None, period_s=1.0):
        """`settings` the fleet file's [broker] (its user is this worker's name); `links`
        the PileLinks of every pile on the broker; `target` the aggregator's Target,
        shared with the other workers."""
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.shared = f"{self.prefix}-agg"
        self.worker = settings.user
        self.links = {link.entry.pile_id: link for link in links}
        self.counters = counters
        self.target = target
        self.period_s = period_s
        self.connected = False
        self.connects = 0
        self.workers = set()  # live workers, from their retained records
        self.owned = set()  # pile ids this worker serves
        self.online = set()  # pile ids whose status says online
        self.reaches = {}  # worker -> (low_w, high_w, monotonic time heard)
        self.on_target = None  # called when another worker's target came: dispatch now
        self.homeassistant = None  # a homeassistant.HomeAssistant when the fleet asks
        self._joined = False  # this worker's own record came back: the set is known
        self._client = None
        self._sending = set()  # publishes under way, held until done
        self._subscribing = asyncio.Lock()
        self._subscribed = set()  # pile ids whose up topic is subscribed
        self._asked = {}  # pile id -> (monotonic time its HELLO was asked, wait to ask again)

    # -- sending --------------------------------------------------------------------

    def publish(self, topic, payload, qos=0, retain=False):
        """QoS 0 straight onto paho's queue: aiomqtt's `publish` makes a task, an event and
        a `wait_for` for each message, and a target change for 5,000 piles took 2.2 s
        through it (docs/decisions.md); the QoS 1 records go through aiomqtt."""
        client = self._client
        if client is None:
            return
        if qos == 0:
            if client._client.publish(topic, payload, retain=retain).rc != \
                    paho.MQTT_ERR_SUCCESS:
                self.counters["publish_errors"] += 1
            return
        task = asyncio.create_task(client.publish(topic, payload, qos, retain))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task):
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["publish_errors"] += 1

    def publish_reach(self, low_w, high_w):
        """This worker's reach for the others' shares, each dispatch period. It is also
        the workers' heartbeat: a worker known only by its reach (a broker that does not
        send retained records to wildcard subscriptions) and silent for 3 periods leaves
        the live set."""
        now = time.monotonic()
        self.reaches[self.worker] = (low_w, high_w, now)
        self.publish(f"{self.shared}/reach/{self.worker}", json.dumps([low_w, high_w]))
        stale = [w for w, r in self.reaches.items()
                 if w != self.worker and now - r[2] > _REACH_PERIODS * self.period_s]
        for worker in stale:
            del self.reaches[worker]
            if worker in self.workers:
                self.workers.discard(worker)
                self._rebalance()

    def share(self, target_w, now):
        """This worker's part of `target_w`, from the fresh reaches of the live workers."""
        fresh = {w: r[:2] for w, r in self.reaches.items()
                 if w in self.workers and now - r[2] <= _REACH_PERIODS * self.period_s}
        if set(fresh) <= {self.worker}:  # alone: the whole target (its shortfall shows)
            return target_w
        return shard.worker_share(target_w, self.worker, fresh)

    def publish_target(self, power_w, until_epoch):
        """A target set here (the API) for every worker: retained until changed."""
        payload = b"" if power_w is None else json.dumps([power_w, until_epoch])
        self.publish(f"{self.shared}/target", payload, qos=1, retain=True)

    # -- the connection -------------------------------------------------------------

    async def run(self):
        """Keep the broker connection for ever."""
        attempt = 0
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError:
                self.counters["broker_errors"] += 1
            finally:
                self._detach()
            if self.connected:  # it was up: try again soon
                attempt = 0
            self.connected = False
            await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
            attempt += 1

    @property
    def joined(self):
        """This worker's own record came back: it knows the live set, so its piles."""
        return self._joined

    @property
    def _record(self):
        return f"{self.shared}/workers/{self.worker}"

    async def _session(self):
        s = self.settings
        will = aiomqtt.Will(self._record, b"", qos=1, retain=True)
        async with aiomqtt.Client(s.host, s.port, username=s.user, password=s.password,
                                  identifier=s.user, clean_session=True,
                                  keepalive=s.keepalive_s, will=will) as client:
            # every message routed in paho's own callback, before any subscription: through
            # aiomqtt's queue and iterator a message cost about twice as much
            # (docs/decisions.md); the iterator below then only waits for the end
            client._client.on_message = self._on_message
            home = self.homeassistant
            await client.subscribe([(f"{self.shared}/workers/+", 1),
                                    (f"{self.shared}/reach/+", 0),
                                    (f"{self.shared}/target", 1),
                                    (f"{self.prefix}/+/status", 0),
                                    *(home.subscriptions() if home else ())])
            if home is not None:
                home.connected()
            self._client = client
            self.connected = True
            self.connects += 1
            await client.publish(self._record, b"up", qos=1, retain=True)
            async for message in client.messages:  # ends with MqttError when the link does
                self._route(message.topic.value, bytes(message.payload), message.retain)

    async def leave(self):
        """Clear this worker's record before a clean stop, so the others take its piles
        at once (a DISCONNECT does not publish the will)."""
        if self._client is not None:
            try:
                await self._client.publish(self._record, b"", qos=1, retain=True, timeout=2)
            except aiomqtt.MqttError:
                self.counters["broker_errors"] += 1  # gone already: the will does it

    def _detach(self):
        self._client = None
        self._joined = False
        self.workers.clear()
        self.owned.clear()
        self.online.clear()
        self._subscribed.clear()
        for link in self.links.values():
            link.attach(None)

    # -- what comes in --------------------------------------------------------------

    def _on_message(self, _client, _userdata, message):
        self._route(message.topic, message.payload, message.retain)

    def _route(self, topic, payload, retained=False):
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == self.prefix:
            link = self.links.get(parts[1])
            if link is None:
                self.counters["unknown_topics"] += 1
            elif parts[2] == "up":
                if parts[1] in self.owned:
                    if not link.attached and parts[1] in self._subscribed:
                        # heard before its retained `online` (a broker that keeps retained
                        # messages from wildcard subscriptions, as RabbitMQ's plugin does)
                        self._status(parts[1], True)
                    if not link.receive(payload) and link.attached and not link.connected:
                        self._ask_again(parts[1])
            else:
                self._status(parts[1], payload == _ONLINE)
        elif len(parts) >= 2 and parts[0] == self.shared:
            self._shared(parts, payload)
        elif len(parts) == 5 and parts[0] == self.prefix and parts[2] == "ha" and \
                parts[4] == "set" and self.homeassistant is not None:  # <pile>/ha/<name>/set
            if retained:  # an old command, replayed at each connect: it would undo newer
                self.counters["ha_commands_refused"] += 1  # changes (pilectl budget's)
            else:
                self.homeassistant.command(parts[1], parts[3], payload)

    def _status(self, pile_id, online):
        if online:
            self.online.add(pile_id)
        else:
            self.online.discard(pile_id)
        if pile_id in self.owned:
            self._serve(pile_id, online)

    def _ask_again(self, pile_id):
        """A pile speaks but has not answered the HELLO asked of it: the request or its
        answer was lost (QoS 0), or is late. Ask again after _HELLO_AGAIN_S, then twice as
        long each time."""
        asked_at, wait = self._asked.get(pile_id, (0.0, _HELLO_AGAIN_S))
        if time.monotonic() - asked_at >= wait:
            self.counters["hellos_asked_again"] += 1
            self._serve(pile_id, True)
            self._asked[pile_id] = (time.monotonic(), min(2 * wait, _HELLO_AGAIN_MAX_S))

    def _serve(self, pile_id, serving):
        link = self.links[pile_id]
        if serving and pile_id in self.online and pile_id in self._subscribed:
            link.attach(Publisher(self, f"{self.prefix}/{pile_id}/down"))
            self._asked[pile_id] = (time.monotonic(), _HELLO_AGAIN_S)
        elif not serving:
            link.attach(None)
            link.telemetry = link.heard_at = None

    def _shared(self, parts, payload):
        kind, name = parts[1], parts[2] if len(parts) == 3 else None
        if kind == "workers" and name:
            if payload:
                self.workers.add(name)
            else:
                self.workers.discard(name)
                self.reaches.pop(name, None)
            if name == self.worker and payload:
                self._joined = True
            self._rebalance()
        elif kind == "reach" and name and name != self.worker:
            try:
                low, high = json.loads(payload)
                self.reaches[name] = (int(low), int(high), time.monotonic())
            except (ValueError, TypeError):
                self.counters["bad_shared_records"] += 1
                return
            if name not in self.workers:  # its record's retained copy never came to us
                self.workers.add(name)
                self._rebalance()
        elif kind == "target" and self.target is not None:
            self._follow_target(payload)
        elif kind == "ha" and name and self.homeassistant is not None:
            self.homeassistant.record(name, payload)

    def _follow_target(self, payload):
        if not payload:
            self.target.clear()
        else:
            try:
                power_w, until_epoch = json.loads(payload)
                for_s = None if until_epoch is None else until_epoch - time.time()
                if for_s is not None and for_s <= 0:
                    return  # ended already
                self.target.set(int(power_w), for_s)
            except (ValueError, TypeError):
                self.counters["bad_shared_records"] += 1
                return
        if self.on_target is not None:
            self.on_target()

    def _rebalance(self):
        """The live set changed: serve the piles this worker owns now, let go of others."""
        if not self._joined:
            return
        owned = {p for p in self.links if shard.owner(p, self.workers) == self.worker}
        for pile_id in self.owned - owned:
            self._serve(pile_id, False)
        self.owned = owned
        self._spawn(self._unsubscribe_lost())
        self._spawn(self._resubscribe())

    def _spawn(self, coroutine):
        task = asyncio.create_task(coroutine)
        self._sending.add(task)
        task.add_done_callback(self._sent)

    async def _unsubscribe_lost(self):
        """Up topics of piles no longer owned: every batch sent at once, neither behind the
        subscribes under way nor behind each other's UNSUBACK. Each UNSUBACK comes behind
        all the broker queued for this worker before: a worker that served the whole fleet
        until another joined is seconds behind, and batch after batch, each waiting for its
        UNSUBACK (6-7 s each at 10,000 piles, some after aiomqtt's 30 s), kept it reading up
        to twice its share, and so behind, for as long: a target change reaches it behind
        that backlog (docs/performance.md)."""
        client = self._client
        lost = sorted(self._subscribed - self.owned)
        if client is None or not lost:
            return
        self._subscribed.difference_update(lost)  # the broker stops when it reads the packet
        batches = [lost[i:i + _SUBSCRIBE_BATCH] for i in range(0, len(lost), _SUBSCRIBE_BATCH)]
        try:
            await asyncio.gather(*(self._acknowledged(
                client, client.unsubscribe, [f"{self.prefix}/{p}/up" for p in batch],
                lambda topic: topic.split("/")[-2] not in self.owned)  # not one owned again
                for batch in batches))
        except aiomqtt.MqttError:
            pass  # the connection is gone: the next one subscribes anew

    async def _resubscribe(self):
        """Up topics of the piles owned now: subscribe, then serve the new ones that are
        online (subscribed first: their HELLO is not missed)."""
        async with self._subscribing:
            client = self._client
            if client is None:
                return
            # batch by batch, each taken from what is owned then: a rebalance while batches
            # are under way (a worker joining) counts from the next batch on, where a list
            # taken at the start went on subscribing piles no longer owned
            while gained := sorted(self.owned - self._subscribed)[:_SUBSCRIBE_BATCH]:
                await self._acknowledged(client, client.subscribe,
                                         [(f"{self.prefix}/{p}/up", 0) for p in gained])
                self._subscribed |= set(gained)
                for pile_id in gained:
                    if pile_id in self.owned:
                        self._serve(pile_id, True)
                if not self._subscribed <= self.owned:  # lost while its SUBACK was awaited
                    self._spawn(self._unsubscribe_lost())

    async def _acknowledged(self, client, call, topics, still=None):
        """`call` (client.subscribe or unsubscribe) on `topics`, sent again until the broker
        acknowledges it: a batch given up on would leave its piles unserved (or served
        twice) until the next rebalance; sent again, only the topics `still` wanted.
        MqttError once the connection is gone."""
        while True:
            try:
                return await call(topics, timeout=_SUBSCRIBE_S)
            except aiomqtt.MqttError:
                if self._client is not client:
                    raise  # a new connection subscribes anew
                self.counters["subscribes_again"] += 1
            await asyncio.sleep(_SUBSCRIBE_AGAIN_S)
            if still is not None and not (topics := [t for t in topics if still(t)]):
                return None
