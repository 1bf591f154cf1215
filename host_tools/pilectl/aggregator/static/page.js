// The live fleet page: one server-sent-events stream (GET events) keeps the figures,
// the hour's chart, the groups and the pile table up to date; a pile's detail comes from
// GET piles/ID. Setting or clearing the target sends the operator's token (kept in this
// tab's sessionStorage only) as the Bearer header. No library, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const HOUR_S = 3600;
const page = {
  piles: new Map(), history: [], fleet: {}, sort: { key: "id", dir: 1 },
  detail: null, detailBusy: false,
};

// -- words and numbers -------------------------------------------------------------

const kw = (w) => (w == null ? "–" : `${(w / 1000).toFixed(1)} kW`);
const status = (p) => (!p.heard ? "excluded" : p.state || "heard");
const statusWords = (p) => (p.heard ? status(p)
  : `excluded (${p.connected ? "silent" : "no link"})`);
const age = (t) => (t == null ? "never" : `${Math.max(0, Date.now() / 1000 - t).toFixed(1)} s ago`);
const SORT_VALUES = {
  id: (p) => p.id, group: (p) => p.group, status: (p) => statusWords(p),
  reasons: (p) => p.reasons.join(", "), soc: (p) => p.soc_permille ?? -1,
  power: (p) => p.power_w ?? -Infinity, setpoint: (p) => p.setpoint_w ?? -Infinity,
  ttl: (p) => p.ttl_left_s ?? -1, heard: (p) => -(p.heard_t ?? 0),
  firmware: (p) => p.firmware || "",
};

// -- the stream ----------------------------------------------------------------------

function connect() {
  const source = new EventSource("events");
  source.onopen = () => { $("link").textContent = "live"; $("link").className = "link live"; };
  source.onerror = () => { $("link").textContent = "reconnecting…"; $("link").className = "link"; };
  source.addEventListener("snapshot", (e) => {
    const data = JSON.parse(e.data);
    page.piles = new Map(data.piles.map((p) => [p.id, p]));
    page.history = data.history;
    $("token").placeholder = data.token ? "the fleet file's http_token_file"
      : "none set: this API takes no writes";
    page.fleet = data.fleet;
    refresh();
  });
  source.addEventListener("period", (e) => {
    const data = JSON.parse(e.data);
    for (const p of data.piles) page.piles.set(p.id, p);
    if (data.point) {
      page.history.push(data.point);
      const since = data.point[0] - HOUR_S;
      while (page.history.length && page.history[0][0] < since) page.history.shift();
    }
    page.fleet = data.fleet;
    refresh();
  });
}

function refresh() {
  showFleet(page.fleet);
  drawChart($("chart"), page.history.map((p) => p[0]), [
    { values: page.history.map((p) => p[2]), color: "#1c7ed6", label: "delivered" },
    { values: page.history.map((p) => p[1]), color: "#d9480f", label: "target", dash: [6, 4] },
  ], { low: page.history.map((p) => p[3]), high: page.history.map((p) => p[4]) });
  showGroups(page.fleet.groups || {});
  showPiles();
  if (page.detail) loadDetail(page.detail);
}

function showFleet(f) {
  if (f.t) {
    $("link").dataset.t = f.t;
    $("link").textContent = `live · ${new Date(f.t * 1000).toLocaleTimeString()}`;
  }
  $("target").textContent = kw(f.target_w);
  $("source").textContent = f.source ? `(${f.source})` : "";
  $("delivered").textContent = kw(f.delivered_w);
  $("shortfall").textContent = kw(f.shortfall_w);
  $("envelope").textContent = f.envelope_low_w == null ? "–"
    : `${kw(f.envelope_low_w)} … ${kw(f.envelope_high_w)}`;
  for (const [id, key] of [["online", "online"], ["excluded", "excluded"],
    ["refusing", "refusing"], ["rolled-back", "rolled_back"]]) {
    $(id).textContent = f[key] ?? "–";
  }
}

function showGroups(groups) {
  const body = $("groups").tBodies[0];
  body.replaceChildren(...Object.entries(groups).sort().map(([name, g]) => row([
    [name], [g.piles, "num"], [g.online, "num"], [kw(g.planned_w), "num"],
    [kw(g.delivered_w), "num"]])));
}

function showPiles() {
  const text = $("filter").value.trim().toLowerCase();
  const show = $("show").value;
  const wanted = [...page.piles.values()].filter((p) => {
    if (show === "online" && !p.heard) return false;
    if (show === "excluded" && p.heard) return false;
    if (show === "refusing" && !p.refusing) return false;
    if (!text) return true;
    return [p.id, p.group, statusWords(p), p.reasons.join(" "), p.firmware || "", p.rollout || ""]
      .some((s) => s.toLowerCase().includes(text));
  });
  const { key, dir } = page.sort;
  const value = SORT_VALUES[key];
  wanted.sort((a, b) => {
    const x = value(a), y = value(b);
    return (x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0) * dir;
  });
  const body = $("piles").tBodies[0];
  body.replaceChildren(...wanted.map((p) => {
    const tr = row([
      [p.id], [p.group], [statusWords(p) + (p.refusing ? ", refusing" : "")
        + (p.rollout ? `, update ${p.rollout}` : "")],
      [p.reasons.join(", "), "reasons"],
      [p.soc_permille == null ? "–" : `${(p.soc_permille / 10).toFixed(1)} %`, "num"],
      [kw(p.power_w), "num"], [kw(p.setpoint_w), "num"],
      [p.ttl_left_s == null ? "–" : `${p.ttl_left_s} s`, "num"], [age(p.heard_t), "num"],
      [p.firmware || "–"]]);
    tr.dataset.pile = p.id;
    tr.dataset.status = p.heard ? "online" : "excluded";
    tr.className = `${p.heard ? "" : "excluded"} ${p.refusing ? "refusing" : ""}`.trim();
    tr.onclick = () => { page.detail = p.id; loadDetail(p.id); };
    return tr;
  }));
  $("shown").textContent = `${wanted.length} of ${page.piles.size}`;
  for (const th of $("piles").tHead.rows[0].cells) {
    th.className = th.dataset.key !== key ? "" : dir > 0 ? "sorted-up" : "sorted-down";
  }
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

// -- a pile's detail -------------------------------------------------------------------

async function loadDetail(id) {
  if (page.detailBusy) return;
  page.detailBusy = true;
  try {
    const reply = await fetch(`piles/${encodeURIComponent(id)}`);
    const data = await reply.json();
    if (page.detail !== id) return;
    if (!reply.ok) { say(data.error, true); return; }
    showDetail(data);
  } catch (err) {
    say(`cannot load ${id}: ${err}`, true);
  } finally {
    page.detailBusy = false;
  }
}

function showDetail(d) {
  const p = d.pile;
  $("detail").hidden = false;
  $("detail-id").textContent = p.id;
  $("detail-facts").textContent = [`group ${p.group}`, `tier ${p.priority}`, statusWords(p),
    p.reasons.length ? `reasons: ${p.reasons.join(", ")}` : "no reasons",
    `firmware ${p.firmware || "–"}`, `setpoint ${kw(p.setpoint_w)}`, `heard ${age(p.heard_t)}`,
    p.refusing ? "refusing" : "", d.rollout ? `update: ${d.rollout.state}` : ""]
    .filter(Boolean).join(" · ");
  const recent = d.recent;
  drawChart($("detail-chart"), recent.map((s) => s.t), [
    { values: recent.map((s) => s.power_w), color: "#1c7ed6", label: "power" },
    { values: recent.map((s) => s.setpoint_w), color: "#d9480f", label: "setpoint",
      dash: [6, 4] },
  ]);
  $("detail-telemetry").tBodies[0].replaceChildren(...Object.entries(d.telemetry)
    .filter(([, v]) => v != null).map(([k, v]) => row([[k], [String(v), "num"]])));
  $("detail-events").replaceChildren(...d.events.slice().reverse().map((e) => {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date(e.t * 1000).toLocaleTimeString();
    li.append(time, e.text);
    return li;
  }));
}

// -- the chart: lines over time, an optional band, on a canvas ----------------------

function drawChart(canvas, times, lines, band) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  g.font = "12px system-ui, sans-serif";
  const left = 64, right = 12, top = 22, bottom = 22;
  const all = lines.flatMap((l) => l.values).concat(band ? band.low.concat(band.high) : [])
    .filter((v) => v != null);
  if (times.length < 2 || !all.length) {
    g.fillStyle = "#889"; g.fillText("waiting for data…", left, top + 20); return;
  }
  let lo = Math.min(0, ...all), hi = Math.max(0, ...all);
  if (hi === lo) hi = lo + 1000;
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const t0 = times[0], t1 = times[times.length - 1];
  const x = (t) => left + ((t - t0) / Math.max(1e-9, t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom);
  // grid: kW lines, the zero line darker
  g.strokeStyle = "#e6e8ee"; g.fillStyle = "#667"; g.lineWidth = 1;
  const step = niceStep((hi - lo) / 5);
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    g.strokeStyle = Math.abs(v) < step / 2 ? "#aab" : "#e6e8ee";
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(width - right, y(v)); g.stroke();
    g.fillText(`${(v / 1000).toFixed(step < 1000 ? 1 : 0)} kW`, 4, y(v) + 4);
  }
  g.fillText(new Date(t0 * 1000).toLocaleTimeString(), left, height - 6);
  const end = new Date(t1 * 1000).toLocaleTimeString();
  g.fillText(end, width - right - g.measureText(end).width, height - 6);
  if (band) {
    g.fillStyle = "rgba(120, 130, 150, 0.16)";
    g.beginPath();
    times.forEach((t, i) => g.lineTo(x(t), y(band.high[i])));
    for (let i = times.length - 1; i >= 0; i--) g.lineTo(x(times[i]), y(band.low[i]));
    g.closePath(); g.fill();
  }
  let legend = left;
  for (const line of lines) {
    g.strokeStyle = line.color; g.lineWidth = 2; g.setLineDash(line.dash || []);
    g.beginPath();
    let drawn = false;  // straight between samples, both lines alike; a gap at a null
    times.forEach((t, i) => {
      const v = line.values[i];
      if (v == null) { drawn = false; return; }
      if (!drawn) g.moveTo(x(t), y(v)); else g.lineTo(x(t), y(v));
      drawn = true;
    });
    g.stroke();
    g.fillStyle = line.color; g.fillRect(legend, 6, 14, 3);
    g.fillStyle = "#334"; g.fillText(line.label, legend + 18, 12); legend += 30 + g.measureText(line.label).width;
  }
  if (band) { g.fillStyle = "rgba(120, 130, 150, 0.3)"; g.fillRect(legend, 3, 14, 9);
    g.fillStyle = "#334"; g.fillText("envelope", legend + 18, 12); }
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
}

// -- setting the target ----------------------------------------------------------------

function say(text, error) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "ok";
}

async function write(method, body) {
  const token = $("token").value.trim();
  sessionStorage.setItem("pile-token", token);
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const reply = await fetch("target", { method, headers, body: body && JSON.stringify(body) });
    const data = await reply.json();
    if (!reply.ok) {
      say(`refused (${reply.status}): ${data.error}`, true);
    } else {
      say(`target now ${kw(data.power_w)} (${data.source})`, false);
    }
  } catch (err) {
    say(`the aggregator did not answer: ${err}`, true);
  }
}

$("target-form").onsubmit = (e) => {
  e.preventDefault();
  const body = { power_w: Math.round(parseFloat($("power").value) * 1000) };
  const minutes = parseFloat($("minutes").value);
  if (minutes > 0) body.for_s = minutes * 60;
  write("PUT", body);
};
$("clear").onclick = () => write("DELETE");
$("close").onclick = () => { page.detail = null; $("detail").hidden = true; };
$("filter").oninput = showPiles;
$("show").onchange = showPiles;
for (const th of $("piles").tHead.rows[0].cells) {
  th.onclick = () => {
    const key = th.dataset.key;
    page.sort = { key, dir: page.sort.key === key ? -page.sort.dir : 1 };
    showPiles();
  };
}
$("token").value = sessionStorage.getItem("pile-token") || "";
connect();
