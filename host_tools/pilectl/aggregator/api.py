"""The aggregator's HTTP API (aiohttp) and its Prometheus metrics (prometheus_client).

    GET  /target            {"power_w": W, "source": "api" | "schedule" | "default"}
    PUT  /target            {"power_w": W, "for_s": S (optional)}: until S have passed
    DELETE /target          back to the schedule
    GET  /status            the fleet now (?piles=1 adds every pile)
    GET  /metrics           Prometheus text: dispatch latency, piles online, refused ...

Bodies are JSON; a bad one gets 400 with {"error": "..."} saying what to send instead.
"""

import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)

_MAX_W = 10**9  # 1 GW: a target beyond it is a typo


class Metrics:
    """The figures an operator graphs, in a registry of the aggregator's own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        gauge = lambda name, text: Gauge(name, text, registry=self.registry)  # noqa: E731
        self.dispatch = Histogram("aggregator_dispatch_seconds",
                                  "Time to split the target and send the setpoints",
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
                                  registry=self.registry)
        self.online = gauge("aggregator_piles_online", "Piles heard within 3 telemetry periods")
        self.excluded = gauge("aggregator_piles_excluded", "Piles left out as silent")
        self.target = gauge("aggregator_target_watts", "Fleet target (+ charge, - discharge)")
        self.delivered = gauge("aggregator_delivered_watts", "Fleet power the piles report")
        self.shortfall = gauge("aggregator_shortfall_watts", "Target the envelopes cannot meet")
        self.refused = gauge("aggregator_messages_refused", "ERROR replies from piles, in all")
        self.verified = gauge("aggregator_frames_verified", "Pile messages verified, in all")
        self.sent = gauge("aggregator_setpoints_sent", "Setpoints sent, in all")

    def record(self, status):
        self.dispatch.observe(status["dispatch_ms"] / 1000)
        self.online.set(status["online"])
        self.excluded.set(status["excluded"])
        self.target.set(status["fleet_target_w"])
        self.delivered.set(status["delivered_w"])
        self.shortfall.set(status["shortfall_w"])
        counters = status["counters"]
        self.refused.set(counters.get("refused", 0))
        self.verified.set(counters.get("frames_verified", 0))
        self.sent.set(counters.get("setpoints_sent", 0))


def application(aggregator, metrics):
    app = web.Application()

    async def get_target(request):
        watts, source = aggregator.target.now()
        return web.json_response({"power_w": watts, "source": source})

    async def put_target(request):
        try:
            body = await request.json()
        except ValueError:
            return _bad('send JSON: {"power_w": -150000, "for_s": 900}')
        if not isinstance(body, dict):
            return _bad('send a JSON object: {"power_w": -150000}')
        watts, for_s = body.get("power_w"), body.get("for_s")
        if not isinstance(watts, int) or isinstance(watts, bool) or abs(watts) > _MAX_W:
            return _bad("power_w must be whole watts (+ charge, - discharge), at most 1 GW")
        if for_s is not None and (not isinstance(for_s, int | float) or for_s <= 0):
            return _bad("for_s must be seconds > 0, or left out for until changed")
        aggregator.target.set(watts, for_s)
        if aggregator.broker is not None:  # every worker of the fleet follows it
            until = None if for_s is None else time.time() + for_s
            aggregator.broker.publish_target(watts, until)
        aggregator.dispatch_once()  # at once, not at the next period
        return await get_target(request)

    async def delete_target(request):
        aggregator.target.clear()
        if aggregator.broker is not None:
            aggregator.broker.publish_target(None, None)
        aggregator.dispatch_once()
        return await get_target(request)

    async def status(request):
        found = dict(aggregator.last or {})
        if request.query.get("piles") == "1":
            found["pile_list"] = aggregator.pile_status()
        return web.json_response(found)

    async def prometheus(request):
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/target", get_target)
    app.router.add_put("/target", put_target)
    app.router.add_delete("/target", delete_target)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    return app


def _bad(message):
    return web.json_response({"error": message}, status=400)


async def serve(app, host, port):
    """Start the API; returns the runner to clean up with."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
