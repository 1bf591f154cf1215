"""The fleet's piles on an MQTT broker: one client connection for all of them.

Piles dial out to the broker (firmware pile/mqttlink.py) and publish every message to
`<prefix>/<pile_id>/up` and their state to the retained `.../status`; the aggregator
publishes requests to `.../down`. This connection subscribes to every pile's up and
status topics at QoS 0 with a clean session and routes each message to its `PileLink`.
A pile's `online` (retained, so every pile online is told at subscription) gives its
link a publisher for the pile's down topic and asks the pile for its HELLO, since the
broker says nothing else of a new connection; its `offline` (the last will) takes it
out of the next split at once. A lost broker connection detaches every pile
and is opened again after 1, 2, 4, 8, then every 10 s, as a pile link is.
"""

import asyncio

import aiomqtt

_RETRY_S = (1, 2, 4, 8, 10)
_STATUS_ONLINE = b"online"


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
    def __init__(self, settings, links, counters):
        """`settings` the fleet file's [broker]; `links` the PileLinks it carries."""
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.links = {link.entry.pile_id: link for link in links}
        self.counters = counters
        self.connected = False
        self.connects = 0
        self._client = None
        self._sending = set()  # publishes under way, held until done

    def publish(self, topic, payload):
        if self._client is None:
            return
        task = asyncio.create_task(self._client.publish(topic, payload))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task):
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["publish_errors"] += 1

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

    async def _session(self):
        s = self.settings
        async with aiomqtt.Client(s.host, s.port, username=s.user, password=s.password,
                                  identifier=s.user, clean_session=True,
                                  keepalive=s.keepalive_s) as client:
            await client.subscribe(f"{self.prefix}/+/up")
            await client.subscribe(f"{self.prefix}/+/status")
            self._client = client
            self.connected = True
            self.connects += 1
            async for message in client.messages:
                self._route(message)

    def _route(self, message):
        parts = message.topic.value.split("/")
        link = self.links.get(parts[1]) if len(parts) == 3 else None
        if link is None:
            self.counters["unknown_topics"] += 1
            return
        payload = bytes(message.payload)
        if parts[2] == "up":
            link.receive(payload)
        elif payload == _STATUS_ONLINE:
            link.attach(Publisher(self, f"{self.prefix}/{parts[1]}/down"))
        else:
            link.attach(None)
            link.telemetry = link.heard_at = None

    def _detach(self):
        self._client = None
        for link in self.links.values():
            link.attach(None)
