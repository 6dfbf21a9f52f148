"""The supervisor's page: the alarm first, then each camera live with its health and
checks, this shift's and today's totals, counts per hour, the snapshots, and the
events in words.

One self-contained HTML document served by the station (no CDN, no build step,
charts drawn as SVG by the page). It reads on a phone (everything stacks) and
on a wall screen (cameras side by side, the panels beside them). Every name
from the station is put on the page as text, never as markup.
"""

from __future__ import annotations

import html
from urllib.parse import quote

STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#111;color:#eee;font:15px system-ui,sans-serif}
header{padding:8px 12px;background:#222;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
h1{font-size:20px;margin:0}h2{font-size:15px;margin:12px 0 6px;color:#aaa;font-weight:600}
#warning{color:#fb4}#clock{margin-left:auto;color:#aaa}
#banner{display:none;padding:12px 16px;background:#d01e1e;color:#fff;font-size:22px;
 font-weight:700;letter-spacing:.02em}
#banner.on{display:block}#banner.blind{background:#8a5a00}
.layout{display:grid;grid-template-columns:1fr;gap:8px;padding:8px}
@media(min-width:1100px){.layout{grid-template-columns:minmax(0,3fr) minmax(320px,1fr)}}
#cameras{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:8px}
.pane{background:#1b1b1b;border:4px solid #1b1b1b;border-radius:4px}
.pane.alarm{border-color:#e02020}.pane.blind{border-color:#b07800}
.pane img{width:100%;background:#000;display:block}
.status{padding:4px 8px;font-weight:600}.dot{display:inline-block;width:.8em;height:.8em;
 border-radius:50%;margin-right:6px;background:#888}
.live .dot{background:#3c5}.degraded .dot,.paused .dot,.ended .dot{background:#fb4}
.blind .dot{background:#e22}
.checks{padding:0 8px 6px;color:#ccc}.alarmtext{color:#ff6b6b;font-weight:700}
.pass{color:#6e6}.fail{color:#f77}
table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;text-align:right;
 border-bottom:1px solid #333}td:first-child,th:first-child{text-align:left}
.chart{background:#1b1b1b;border-radius:4px;padding:4px 6px;margin-bottom:6px}
.chart svg{width:100%;height:90px;display:block}.chart .t{fill:#aaa;font-size:10px}
#filters{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:6px}
#filters select{background:#222;color:#eee;border:1px solid #444;padding:3px}
#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:6px}
#gallery figure{margin:0;background:#1b1b1b;cursor:pointer}
#gallery img{width:100%;display:block}#gallery figcaption{font-size:12px;padding:2px 4px}
dialog{background:#111;color:#eee;border:1px solid #555;max-width:96vw;padding:8px}
dialog img{max-width:92vw;max-height:80vh;display:block}
#events{padding:0;margin:0}#events li{list-style:none;padding:4px 0;border-bottom:1px solid #333}
#events li.alarm{color:#ff8a8a}#events time{color:#999;margin-right:8px}
"""

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coral_mfg</title><style>{STYLE}</style></head>
<body>
<header><h1 id="station">coral_mfg</h1><span id="accelerator"></span>
<span id="warning"></span><span id="clock"></span></header>
<div id="banner" role="alert"></div>
<div class="layout">
<div><main id="cameras">{{panes}}</main>
<h2>Snapshots</h2>
<div id="filters"><select id="f-camera"><option value="">every camera</option></select>
<select id="f-zone"><option value="">every zone</option></select>
<select id="f-grade"><option value="">every grade</option></select>
<select id="f-since"><option value="1h">last hour</option><option value="today">today</option>
<option value="24h" selected>last 24 hours</option><option value="7d">last 7 days</option>
</select></div>
<div id="gallery"></div></div>
<aside><h2>Totals</h2><table id="totals"><thead><tr><th></th><th>this shift</th>
<th>today</th><th>this run</th></tr></thead><tbody></tbody></table>
<h2>Per hour, last 24 hours</h2><div id="charts"></div>
<h2>Events</h2><ul id="events"></ul></aside>
</div>
<dialog id="big"><img alt="snapshot"><p></p><form method="dialog"><button>Close</button>
</form></dialog>
<script>
"use strict";
const $ = id => document.getElementById(id);
const text = (id, t) => {{ $(id).textContent = t; }};
const el = (tag, cls, t) => {{
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (t !== undefined) e.textContent = t;
  return e;
}};
// a label as people read it: rotten_apple -> Rotten apple
const shown = s => {{ s = String(s).replace(/_/g, " ").trim(); return s.charAt(0).toUpperCase()
  + s.slice(1); }};
const cam = s => String(s).toUpperCase().replace(/_/g, " ");
let passing = {{}};  // camera -> grades that pass
const verdict = (stream, grade, passed) => {{
  const ok = passed !== undefined && passed !== null ? passed
    : (passing[stream] || []).includes(grade);
  return ok ? "PASS" : "FAIL";
}};
const when = e => e.timestamp ? new Date(e.timestamp).toLocaleTimeString() : "";

function pane(name) {{
  let p = $("pane-" + name);
  if (p) return p;
  p = el("section", "pane");  // a camera the page did not know at load
  p.id = "pane-" + name;
  const img = el("img");
  img.id = "video-" + name;
  img.src = "/video/" + encodeURIComponent(name) + ".mjpg";
  img.alt = name;
  const st = el("div", "status");
  st.id = "status-" + name;
  const edit = el("a", "edit-zones", "zones");
  edit.href = "/cameras/" + encodeURIComponent(name) + "/zones";
  p.append(img, st, el("div", "checks"), edit);
  $("cameras").appendChild(p);
  return p;
}}

function checks(st) {{
  const out = [];
  if (st.blind) out.push("zones, lines and presence UNKNOWN");
  if (st.zones.length) out.push("zones: " + st.zones.filter(z => z.enabled).map(z => z.name
    + (z.people === null ? " ?" : z.people ? " (" + z.people + " in)" : "")).join(", ")
    + " · entries " + st.violations);
  for (const [name, c] of Object.entries(st.lines))
    out.push(name + ": " + Object.entries(c).filter(([k]) => k !== "by_grade")
      .map(([k, v]) => k + " " + v).join(", "));
  for (const [name, p] of Object.entries(st.presence))
    out.push(name + ": " + (p.state === "unknown" ? "?" : p.seen + "/" + p.expected + " "
      + shown(p.label) + (p.missing ? " MISSING" : "")));
  return out;
}}

function render(s) {{
  text("station", s.station || "coral_mfg");
  document.title = (s.alarm ? "ALARM · " : "") + (s.station || "coral_mfg");
  const alarms = [], blind = [];
  for (const [name, st] of Object.entries(s.streams)) {{
    passing[name] = st.passing;
    const p = pane(name);
    const unseen = ["blind", "paused", "ended"].includes(st.health);
    p.className = "pane" + (st.alarms.length ? " alarm" : unseen ? " blind" : "");
    const line = p.querySelector(".status");
    line.className = "status " + st.health;
    line.replaceChildren(el("span", "dot"), cam(name) + "  " + st.health.toUpperCase() + ": "
      + st.health_reason + " · dropped " + st.dropped);
    const c = p.querySelector(".checks");
    c.replaceChildren();
    if (st.alarms.length) c.append(el("div", "alarmtext", st.alarms.join("  ·  ")));
    const parts = checks(st);
    if (parts.length) c.append(el("div", "", parts.join(" · ")));
    const grades = el("div");
    for (const [g, n] of Object.entries(st.counts)) {{
      const v = verdict(name, g);
      grades.append(el("span", v.toLowerCase(), shown(g) + " " + n + " " + v), "  ");
    }}
    if (grades.childNodes.length) c.append(grades);
    for (const a of st.alarms) alarms.push(cam(name) + ": " + a);
    if (unseen) blind.push(cam(name) + (st.health === "blind" ? " CANNOT SEE: " : " "
      + st.health.toUpperCase() + ": ") + st.health_reason);
  }}
  const banner = $("banner");
  banner.className = alarms.length ? "on" : blind.length ? "on blind" : "";
  banner.textContent = alarms.concat(blind).join("   |   ");
  const a = s.accelerator;
  text("accelerator", (a.device === "edgetpu" ? "Edge TPU" : "CPU")
    + (a.fallback ? " (fallback: the Edge TPU failed)" : "") + (a.status ? ": " + a.status : "")
    + (a.processes.length > 1 ? " · " + a.processes.map(p => p.device + " "
       + Math.round(p.busy_share * 100) + "% busy").join(" · ") : ""));
  text("warning", s.warning || "");
  run = s;
  totals();
}}

// --- totals: this shift (the status), today (the history), this run (the status) -----
let run = null, today = null;
function tally(rows) {{
  const t = {{}};
  const add = (k, n) => {{ t[k] = (t[k] || 0) + n; }};
  for (const r of rows) {{
    if (r.type === "graded") {{
      add("graded " + r.grade, r.count);
      if (r.passed === false) add("rejects", r.count);
    }} else if (r.type === "keepout_enter") add("keep-out entries", r.count);
    else if (r.type === "line_crossed") add("line " + r.line + " " + r.direction, r.count);
    else if (r.type === "presence_missing") add("presence alarms", r.count);
    else if (r.type === "zone_dwell_exceeded") add("dwell alarms", r.count);
    else if (r.type === "camera_blind") add("blind cameras", r.count);
  }}
  return t;
}}
function totals() {{
  if (!run) return;
  const rows = [];
  const shift = run.shift ? tally(run.shift.events) : {{}};
  const mine = {{"keep-out entries": run.violations}};
  for (const [g, n] of Object.entries(run.counts)) mine["graded " + g] = n;
  for (const st of Object.values(run.streams))
    for (const [g, n] of Object.entries(st.counts))
      if (!st.passing.includes(g)) mine.rejects = (mine.rejects || 0) + n;
  const day = today || {{}};
  const keys = [...new Set([...Object.keys(shift), ...Object.keys(day), ...Object.keys(mine)])]
    .sort();
  const body = $("totals").tBodies[0];
  body.replaceChildren();
  for (const k of keys) {{
    const tr = el("tr");
    const name = k.startsWith("graded ") ? shown(k.slice(7)) : k;
    tr.append(el("td", "", name), el("td", "", String(shift[k] ?? "-")),
      el("td", "", String(day[k] ?? "-")), el("td", "", String(mine[k] ?? "-")));
    body.appendChild(tr);
  }}
}}
async function history() {{
  try {{
    const r = await fetch("/api/history?by=day&since=today");
    today = r.ok ? tally((await r.json()).rows) : null;
    const h = await fetch("/api/history?by=hour&since=24h");
    if (h.ok) charts((await h.json()).rows);
  }} catch (e) {{ today = null; }}
  totals();
}}

// --- charts: SVG bars per hour ----------------------------------------------------------
const SERIES = [["inspected", r => r.type === "graded", "#4a9"],
                ["rejects", r => r.type === "graded" && r.passed === false, "#e55"],
                ["keep-out entries", r => r.type === "keepout_enter", "#fb4"]];
function charts(rows) {{
  const hours = [];
  const now = new Date();
  for (let i = 23; i >= 0; i--) {{
    const d = new Date(now.getTime() - i * 3600e3);
    const p = n => String(n).padStart(2, "0");
    hours.push(d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " "
      + p(d.getHours()) + ":00");
  }}
  const box = $("charts");
  box.replaceChildren();
  for (const [name, pick, color] of SERIES) {{
    const n = hours.map(h => rows.filter(r => r.period === h && pick(r))
      .reduce((a, r) => a + r.count, 0));
    const top = Math.max(1, ...n);
    const div = el("div", "chart");
    div.dataset.series = name;
    // only numbers and the page's own words go into the drawing
    const bars = n.map((v, i) => '<rect x="' + (i * 10 + 1) + '" width="8" y="'
      + (78 - 70 * v / top) + '" height="' + (70 * v / top) + '" fill="' + color + '"><title>'
      + hours[i].slice(11) + ": " + v + "</title></rect>").join("");
    div.innerHTML = '<svg viewBox="0 0 240 90" preserveAspectRatio="none">' + bars
      + '<text x="2" y="88" class="t">' + name + " · " + n.reduce((a, b) => a + b, 0)
      + " in 24 h · peak " + top + "</text></svg>";
    box.appendChild(div);
  }}
}}

// --- events in words ------------------------------------------------------------------
function words(e) {{
  const who = e.track !== undefined ? " (#" + e.track + ")" : "";
  switch (e.type) {{
    case "keepout_enter": return "Someone entered keep-out zone " + e.zone + who;
    case "keepout_exit": return "Left " + e.zone + who + " after " + e.seconds_in_zone + " s";
    case "zone_dwell_exceeded": return "Stayed in " + e.zone + who + " over "
      + e.max_seconds + " s";
    case "graded": return shown(e.grade) + " " + verdict(e.stream, e.grade, e.passed) + who
      + (e.anomaly_score !== undefined && e.grade_score === e.anomaly_score ? ""
         : " " + Math.round(100 * e.grade_score) + "%")
      + (e.anomaly_score === undefined ? ""
         : (e.anomalous ? " ANOMALY " : " anomaly ") + e.anomaly_score.toFixed(2));
    case "line_crossed": return shown(e.label) + who + " crossed " + e.line + " "
      + e.direction + (e.grade ? ": " + shown(e.grade) : "");
    case "presence_missing": return e.check + ": only " + e.seen + " of " + e.expected + " "
      + shown(e.label) + " in place";
    case "presence_restored": return e.check + ": " + shown(e.label) + " back in place";
    case "camera_blind": return "Camera cannot see: " + e.reason;
    case "camera_restored": return "Camera sees again after " + e.blind_s + " s";
    case "source_lost": return "Video lost: " + e.reason;
    case "source_restored": return "Video back after " + e.after_s + " s";
    case "accelerator_lost": return "Inference lost on " + e.device + ": " + e.reason;
    case "accelerator_restored": return "Inference back on " + e.device;
    case "accelerator_fallback": return "Running on the CPU: " + e.reason;
    case "zones_reloaded": return "Zones now: " + (e.zones || []).join(", ");
    case "zones_changed": return "Zones changed" + (e.by ? " by " + e.by : "");
    case "zones_error": return "Zone file refused: " + e.error;
    case "output_fault": return "Output " + e.output + " failing: " + e.reason;
    case "output_restored": return "Output " + e.output + " working again";
    default: return e.type;
  }}
}}
const ALARMS = new Set(["keepout_enter", "zone_dwell_exceeded", "presence_missing",
  "camera_blind", "accelerator_lost", "output_fault"]);
function show(e) {{
  const li = el("li", "event " + e.type + (ALARMS.has(e.type) || e.anomalous ? " alarm" : ""));
  li.append(el("time", "", when(e)), (e.stream ? cam(e.stream) + ": " : "") + words(e));
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 100) list.removeChild(list.lastChild);
  if (e.snapshot) gallery();
}}

// --- the snapshot gallery -------------------------------------------------------------
const seen = {{camera: new Set(), zone: new Set(), grade: new Set()}};
function option(kind, value) {{
  if (!value || seen[kind].has(value)) return;
  seen[kind].add(value);
  const o = el("option", "", kind === "grade" ? shown(value) : value);
  o.value = value;
  $("f-" + kind).appendChild(o);
}}
let asking = false, again = false;
async function gallery() {{
  if (asking) {{ again = true; return; }}
  asking = true;
  again = false;
  try {{
    const q = new URLSearchParams({{since: $("f-since").value, limit: "60"}});
    for (const k of ["camera", "zone", "grade"]) if ($("f-" + k).value) q.set(k, $("f-" + k).value);
    const r = await fetch("/api/snapshots?" + q);
    if (!r.ok) return;
    const box = $("gallery");
    box.replaceChildren();
    for (const e of (await r.json()).snapshots) {{
      option("camera", e.stream); option("zone", e.zone); option("grade", e.grade);
      const f = el("figure");
      const img = el("img");
      img.loading = "lazy";
      img.src = "/snapshots/" + encodeURIComponent(e.snapshot);
      img.alt = words(e);
      const caption = when(e) + " " + (e.stream ? cam(e.stream) + ": " : "") + words(e);
      f.append(img, el("figcaption", "", caption));
      f.onclick = () => {{
        $("big").querySelector("img").src = img.src;
        $("big").querySelector("p").textContent = caption;
        $("big").showModal();
      }};
      box.appendChild(f);
    }}
  }} catch (e) {{ /* the next event or filter change asks again */ }}
  finally {{ asking = false; if (again) setTimeout(gallery, 500); }}
}}
for (const k of ["camera", "zone", "grade", "since"]) $("f-" + k).onchange = gallery;

async function status() {{
  try {{
    render(await (await fetch("/api/status")).json());
  }} catch (e) {{ text("warning", "no answer from the station"); }}
  text("clock", new Date().toLocaleString());
}}
status(); setInterval(status, 1000);
history(); setInterval(history, 60000);
gallery();
// the stream begins with the run's recent events, then follows it
new EventSource("/api/events/stream").onmessage = m => show(JSON.parse(m.data));
</script>
</body></html>
"""

PANE = """<section class="pane" id="pane-{id}"><img id="video-{id}" src="/video/{url}.mjpg"
 alt="{id}"><div class="status" id="status-{id}"></div><div class="checks"></div>
<a class="edit-zones" href="/cameras/{url}/zones">zones</a></section>
"""


def page(cameras: tuple[str, ...]) -> str:
    """The page, with a pane per camera (names are escaped, though they were checked
    where they entered)."""
    panes = "".join(PANE.format(id=html.escape(c, quote=True), url=quote(c, safe=""))
                    for c in cameras)
    return _PAGE.replace("{panes}", panes)


LOGIN_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coral_mfg: sign in</title><style>{STYLE}</style></head>
<body><header><h1>coral_mfg</h1></header>
<form method="post" action="/login" style="padding:16px">
<label>Token <input type="password" name="token" autofocus></label>
<button type="submit">Sign in</button></form></body></html>
"""
