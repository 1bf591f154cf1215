"""The aggregator's HTTP API (aiohttp) and its Prometheus metrics (prometheus_client).

    GET  /target            {"power_w": W, "source": "api" | "schedule" | "default"}
    PUT  /target            {"power_w": W, "for_s": S (optional)}: until S have passed
    DELETE /target          back to the schedule
    GET  /status            the fleet now (?piles=1 adds every pile)
    GET  /metrics           Prometheus text: dispatch latency, piles online, refused ...,
                            and each pile's SOC, power, setpoint, state (labelled pile)
    POST /rollout           the body a signed update package (pilectl release build), the
                            query its settings (?canary_percent=5&wave_percent=25&
                            parallel=50&confirm_s=600&canary=PILE_ID...): rolled out in waves
    GET  /rollout           where it stands (?piles=1 adds every pile)
    DELETE /rollout         halt it: no pile is offered the package any more
    GET  /                  the live fleet page (static/: HTML, a script, a style sheet)
    GET  /events            its push: server-sent events, a snapshot then one a period
    GET  /history           the last hour: [t, target, delivered, envelope low, high]
    GET  /piles/ID          a pile's row, latest TELEMETRY, recent samples and events

Bodies are JSON (but a package); a bad one gets 400 with {"error": "..."} saying what to
send instead. Every write (PUT and DELETE /target, POST and DELETE /rollout) needs
`Authorization: Bearer TOKEN`, the operator token of the fleet file ([target]
http_token_file): 401 without it, and 403 for every write while the fleet file names none;
reads need none.
"""

import asyncio
import contextlib
import hmac
import math
import tempfile
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    generate_latest,
)

from pilectl import wire
from pilectl.aggregator.rollout import IDLE, PILE_STATES, STATES, Settings

_STATIC = Path(__file__).parent / "static"
_PUSH = web.AppKey("push", asyncio.Task)  # the live page's push task
_MAX_W = 10**9  # 1 GW: a target beyond it is a typo
_MAX_PACKAGE = 16 * 1024 * 1024  # bytes of a package a POST /rollout may carry
_SETTINGS = {"canary_percent": float, "wave_percent": float, "parallel": int,
             "confirm_s": float}


# the piles' own series: name, help, TELEMETRY field (None: the setpoint sent), divisor
_PILE_SERIES = (
    ("aggregator_pile_soc_percent", "The pile's battery SOC", 4, 10),
    ("aggregator_pile_power_watts", "The pile's power (+ charge, - discharge)", 3, 1),
    ("aggregator_pile_setpoint_watts", "The last setpoint sent to the pile", None, 1),
    ("aggregator_pile_state", "The pile's state (DESIGN: 0 boot, 1 idle, 2 charging, "
     "3 discharging, 4 fault, 5 stopped, 6 no EV)", 2, 1),
    ("aggregator_pile_max_charge_watts", "The most its envelope lets it charge", 7, 1),
    ("aggregator_pile_max_discharge_watts", "The most its envelope lets it discharge", 8, 1),
    ("aggregator_pile_budget_left_watthours", "What its owner's V2G budget still allows "
     "(none without a budget)", wire.TELEMETRY_BUDGET_LEFT, 1),
)
_HEARD = ("aggregator_pile_heard", "1 while the pile is in the split (heard within 3 "
          "telemetry periods)")


class PileSeries:
    """Each pile's figures, labelled by pile id, read from the aggregator at each scrape
    (nothing a period): only the piles this process serves, so a pile that leaves it
    (another worker's now) or the fleet file loses its series, and a pile not heard has
    none but `aggregator_pile_heard 0`. Written as Prometheus text directly: through
    prometheus_client's collector a scrape took 68 ms at 1,000 piles and 593 ms at
    10,000, on the event loop the dispatch runs on."""

    def __init__(self, aggregator):
        self.aggregator = aggregator

    def exposition(self):
        """The series in the Prometheus text format, to follow the registry's."""
        heard = [f"# HELP {_HEARD[0]} {_HEARD[1]}\n# TYPE {_HEARD[0]} gauge\n"]
        rows = [[f"# HELP {name} {text}\n# TYPE {name} gauge\n"]
                for name, text, _, _ in _PILE_SERIES]
        now = time.monotonic()
        for link in self.aggregator.served():
            pile = _label(link.entry.pile_id)
            on = self.aggregator.heard(link, now)
            heard.append(f'{_HEARD[0]}{{pile="{pile}"}} {1 if on else 0}\n')
            if not on:
                continue
            tel = link.telemetry
            for (name, _, field, divisor), lines in zip(_PILE_SERIES, rows, strict=True):
                value = link.sent_w if field is None else tel.get(field)
                if value is not None:
                    shown = value if divisor == 1 else value / divisor
                    lines.append(f'{name}{{pile="{pile}"}} {shown}\n')
        return "".join(heard + [line for lines in rows for line in lines]).encode()


def _label(text):
    """A label value as the text format writes it (backslash, quote and newline escaped)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The figures an operator graphs, in a registry of the aggregator's own; with the
    `aggregator`, each pile's own too (PileSeries)."""

    def __init__(self, aggregator=None):
        self.registry = CollectorRegistry()
        self.piles = None if aggregator is None else PileSeries(aggregator)
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
        # the aggregator's own totals, as counters (`_total`), so rate() sees a restart
        self.totals = {key: Counter(name, text, registry=self.registry) for key, name, text in (
            ("refused", "aggregator_messages_refused", "ERROR replies from piles"),
            ("frames_verified", "aggregator_frames_verified", "Pile messages verified"),
            ("setpoints_sent", "aggregator_setpoints_sent", "Setpoints sent"))}
        self._counted = dict.fromkeys(self.totals, 0)  # what the counters hold of each
        self.budget_spent = gauge("aggregator_piles_budget_spent", "Piles heard whose "
                                  "owner's V2G budget is spent: they discharge no more")
        self.budget_left = gauge("aggregator_budget_left_watthours", "The V2G budgets the "
                                 "piles heard still allow, in all")
        self.rollout_piles = Gauge("aggregator_rollout_piles", "Piles of the latest rollout "
                                   "by where they stand", ["state"], registry=self.registry)
        self.rollout_wave = gauge("aggregator_rollout_wave", "The rollout's wave under way "
                                  "(1: the canary), or its last")
        self.rollout_waves = gauge("aggregator_rollout_waves", "Waves the rollout has")
        self.rollout_state = Enum("aggregator_rollout_state", "The latest rollout's state",
                                  states=list(STATES), registry=self.registry)
        self.rollout_state.state(IDLE)

    def exposition(self):
        """Everything in the Prometheus text format: /metrics."""
        found = generate_latest(self.registry)
        return found if self.piles is None else found + self.piles.exposition()

    def record(self, status):
        self.dispatch.observe(status["dispatch_ms"] / 1000)
        self.online.set(status["online"])
        self.excluded.set(status["excluded"])
        self.target.set(status["fleet_target_w"])
        self.delivered.set(status["delivered_w"])
        self.shortfall.set(status["shortfall_w"])
        self.budget_spent.set(status["budget_spent"])
        self.budget_left.set(status["budget_left_wh"])
        counters = status["counters"]
        for key, counter in self.totals.items():
            total = counters.get(key, 0)
            counter.inc(max(0, total - self._counted[key]))
            self._counted[key] = total
        rollout = status.get("rollout")
        if rollout is not None:
            for state in PILE_STATES:
                self.rollout_piles.labels(state).set(rollout[state])
            self.rollout_wave.set(rollout["wave"])
            self.rollout_waves.set(rollout["waves"])
            self.rollout_state.state(rollout["state"])


def application(aggregator, metrics, token=None):
    """The API of `aggregator`; writes need `token`, and without one it takes none."""

    @web.middleware
    async def writes_need_the_token(request, handler):
        if request.method in ("GET", "HEAD"):
            return await handler(request)
        if token is None:
            return web.json_response({"error": "this API takes no writes until the fleet "
                                      "file names an operator token: [target] "
                                      "http_token_file (docs/aggregator.md)"}, status=403)
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                   f"Bearer {token}".encode()):
            return web.json_response({"error": "this API takes writes with its token only: "
                                      "send Authorization: Bearer TOKEN (the fleet file's "
                                      "[target] http_token_file)"}, status=401)
        return await handler(request)

    app = web.Application(middlewares=[writes_need_the_token], client_max_size=_MAX_PACKAGE)

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
        if for_s is not None and (not isinstance(for_s, int | float) or isinstance(for_s, bool)
                                  or not math.isfinite(for_s) or for_s <= 0):
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

    async def post_rollout(request):
        from pilectl import release

        settings = _settings(request.query, aggregator.fleet.rollouts)
        if isinstance(settings, str):
            return _bad(settings)
        body = await request.read()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "posted.pkg"
            path.write_bytes(body)
            try:
                package = release.Package.load(path)
            except release.ReleaseError:
                return _bad("send an update package (pilectl release build) as the body: "
                            "curl --data-binary @new.pkg")
        from pilectl.aggregator.service import RolloutBusy

        try:
            rollout = aggregator.start_rollout(package, settings)
        except RolloutBusy as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(rollout.summary(), status=202)

    async def get_rollout(request):
        if aggregator.rollout is None:
            return web.json_response({"error": "no rollout yet: POST /rollout a package"},
                                     status=404)
        return web.json_response(aggregator.rollout.summary(request.query.get("piles") == "1"))

    async def delete_rollout(request):
        if aggregator.rollout is None:
            return web.json_response({"error": "no rollout to halt"}, status=404)
        aggregator.rollout.halt("halted by the operator")
        return web.json_response(aggregator.rollout.summary())

    async def prometheus(request):
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    live = aggregator.live

    async def page(request):
        return web.FileResponse(_STATIC / "index.html")

    async def events(request):
        if live.full():
            return web.json_response({"error": f"{live.MAX_STREAMS} pages are open on this "
                                      "aggregator already: close one, or use GET /status"},
                                     status=503)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")  # the browser's wait before it dials again
        transport = request.transport
        queue = live.join(token is not None, None if transport is None else transport.abort)
        try:
            while (data := await queue.get()) is not None:  # None: too slow, ended
                await response.write(data)
        except ConnectionError:
            pass  # the browser went away, or was too slow and its connection was closed
        finally:
            live.leave(queue)
        return response

    async def history(request):
        return web.json_response({"fields": ["t", "target_w", "delivered_w", "envelope_low_w",
                                             "envelope_high_w"],
                                  "points": list(live.history)})

    async def pile(request):
        found = live.detail(request.match_info["pile_id"])
        if found is None:
            return web.json_response({"error": f"no pile {request.match_info['pile_id']!r} "
                                      "in the fleet file: GET /status?piles=1 lists them"},
                                     status=404)
        return web.json_response(found)

    async def start_push(app):
        app[_PUSH] = asyncio.create_task(live.run())

    async def end_streams(app):  # before the runner waits for open requests to end
        live.end_streams()

    async def stop_push(app):
        app[_PUSH].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[_PUSH]

    app.on_startup.append(start_push)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_push)
    app.router.add_get("/", page)
    app.router.add_static("/static/", _STATIC)
    app.router.add_get("/events", events)
    app.router.add_get("/history", history)
    app.router.add_get("/piles/{pile_id}", pile)
    app.router.add_get("/target", get_target)
    app.router.add_put("/target", put_target)
    app.router.add_delete("/target", delete_target)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    app.router.add_post("/rollout", post_rollout)
    app.router.add_get("/rollout", get_rollout)
    app.router.add_delete("/rollout", delete_rollout)
    return app


def _bad(message):
    return web.json_response({"error": message}, status=400)


def _settings(query, defaults):
    """A rollout's Settings from a query string over the fleet file's [rollout], or what
    is wrong with it (text)."""
    values = {name: getattr(defaults, name) for name in _SETTINGS}
    unknown = set(query) - set(_SETTINGS) - {"canary"}
    if unknown:
        return f"unknown setting {sorted(unknown)[0]!r}; known: canary, {', '.join(_SETTINGS)}"
    for name, kind in _SETTINGS.items():
        if name in query:
            try:
                values[name] = kind(query[name])
            except ValueError:
                return f"{name} must be a {'whole ' if kind is int else ''}number"
    settings = Settings(**values, canaries=tuple(query.getall("canary", ())))
    return settings.problem() or settings


async def serve(app, host, port):
    """Start the API; returns the runner to clean up with."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
