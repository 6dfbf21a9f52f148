"""The live page: a pane per camera with its status, zones and counts, the station's
counts and its events, from this server only.

One self-contained HTML document (no CDN, no build step): it reads well on a
phone (the panes stack) and on a wall screen (side by side).
"""

from __future__ import annotations

import html
from urllib.parse import quote

STYLE = """
body{margin:0;background:#111;color:#eee;font:15px system-ui,sans-serif}
header{padding:8px 12px;background:#222;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
h1{font-size:18px;margin:0}#warning{color:#f66}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px;padding:8px}
.pane img{width:100%;background:#000;aspect-ratio:16/9;object-fit:contain;display:block}
.status{padding:4px 0}.live{color:#6d6}.no_signal,.error{color:#f66}
#events{padding:0 8px 16px}#events li{list-style:none;padding:4px 0;border-bottom:1px solid #333}
#events img{height:48px;vertical-align:middle;margin-left:8px}
"""

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coral_mfg</title><style>{STYLE}</style></head>
<body>
<header><h1>coral_mfg</h1><span id="accelerator"></span><span id="counts"></span>
<span id="shift"></span><span id="warning"></span></header>
<main id="cameras">{{panes}}</main>
<ul id="events"></ul>
<script>
const text = (id, t) => {{ document.getElementById(id).textContent = t; }};
function pane(name) {{
  let el = document.getElementById("pane-" + name);
  if (el) return el;
  el = document.createElement("section");  // a camera the page did not know at load
  el.className = "pane";
  el.id = "pane-" + name;
  const img = document.createElement("img");
  img.id = "video-" + name;
  img.src = "/video/" + encodeURIComponent(name) + ".mjpg";
  img.alt = name;
  const st = document.createElement("div");
  st.className = "status";
  st.id = "status-" + name;
  const zones = document.createElement("div");
  zones.className = "zones";
  el.append(img, st, zones);
  document.getElementById("cameras").appendChild(el);
  return el;
}}
async function status() {{
  try {{
    const s = await (await fetch("/api/status")).json();
    for (const [name, st] of Object.entries(s.streams)) {{
      const el = pane(name);
      const line = el.querySelector(".status");
      line.className = "status " + st.status;
      line.textContent = name + ": " + (st.reason || st.status) + " · " + st.fps.toFixed(1)
        + " fps · dropped " + st.dropped + " · skipped " + st.skipped
        + " · errors " + st.errors;
      const parts = [];
      if (st.blind) parts.push("BLIND (" + st.blind + "): zones, lines and presence unknown");
      if (st.zones.length) parts.push("zones: " + st.zones.filter(z => z.enabled)
        .map(z => z.name + (z.people === null ? " (?)" : z.people ? " (" + z.people + " in)" : "")
             + (z.dwell_alarm ? " DWELL ALARM" : "")).join(", ")
        + " · keep-out entries " + st.violations);
      for (const [name, c] of Object.entries(st.lines))
        parts.push(name + ": " + Object.entries(c).filter(([k]) => k !== "by_grade")
          .map(([k, v]) => k + " " + v).join(", "));
      for (const [name, p] of Object.entries(st.presence))
        parts.push(name + ": " + (p.state === "unknown" ? "unknown"
          : p.seen + "/" + p.expected + " " + p.label + (p.missing ? " MISSING" : "")));
      const counts = Object.entries(st.counts);
      if (counts.length) parts.push(counts.map(([k, v]) => k + " " + v).join(" · "));
      el.querySelector(".zones").textContent = parts.join(" · ");
    }}
    const accel = s.accelerator;
    text("accelerator", accel.device + (accel.status ? ": " + accel.status : "")
      + (accel.processes.length > 1 ? " · " + accel.processes.map(p => p.device + " "
         + Math.round(p.busy_share * 100) + "% busy, " + p.capacity_fps + " fps max")
         .join(" · ") : ""));
    text("counts", Object.entries(s.counts).map(([k, v]) => k + " " + v).join(" · ")
      + " · keep-out entries " + s.violations);
    const sh = s.shift;  // this shift over every run of it, from the history
    text("shift", sh ? "shift " + sh.name.slice(-5) + ": " + Object.entries(sh.counts)
      .map(([k, v]) => k + " " + v).concat(["keep-out entries " + sh.violations])
      .join(" · ") : "");
    text("warning", s.warning || "");
  }} catch (e) {{ text("warning", "no answer from the station"); }}
}}
function show(e) {{
  const li = document.createElement("li");
  li.className = "event " + e.type;
  const what = (e.stream ? e.stream + ": " : "") + e.type + (e.zone ? " " + e.zone : "")
    + (e.track ? " #" + e.track : "")
    + (e.grade ? " " + e.grade : "") + (e.reason ? ": " + e.reason : "")
    + (e.seconds_in_zone !== undefined ? " (" + e.seconds_in_zone + " s)" : "");
  li.textContent = (e.timestamp || "").replace("T", " ").replace("Z", " UTC") + "  " + what;
  if (e.snapshot) {{
    const img = document.createElement("img");
    img.src = "/snapshots/" + e.snapshot.split("/").pop();
    img.alt = "snapshot";
    li.appendChild(img);
  }}
  const list = document.getElementById("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 100) list.removeChild(list.lastChild);
}}
new EventSource("/api/events/stream").onmessage = m => show(JSON.parse(m.data));
status(); setInterval(status, 1000);
</script>
</body></html>
"""

PANE = """<section class="pane" id="pane-{id}"><img id="video-{id}" src="/video/{url}.mjpg"
 alt="{id}"><div class="status" id="status-{id}"></div><div class="zones"></div>
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
