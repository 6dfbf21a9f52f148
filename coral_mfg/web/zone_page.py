"""The zone editor: a camera's zones, lines and presence regions drawn over its live
picture, to add, move, rename, disable and delete, saved through the station's API.

One self-contained page (no CDN): an SVG over the MJPEG picture, in the pane's
own pixels, so what is drawn lies where the station draws it. Anyone who may
view sees the shapes; only an admin's session gets the controls, and its CSRF
token, which every change sends back.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote

STYLE = """
body{margin:0;background:#111;color:#eee;font:15px system-ui,sans-serif}
header{padding:8px 12px;background:#222;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
h1{font-size:18px;margin:0}a{color:#8cf}
main{display:flex;flex-wrap:wrap;gap:12px;padding:8px}
#stage{position:relative;flex:1 1 560px;max-width:1280px;background:#000;touch-action:none}
#stage img{display:block;width:100%;height:100%}
#stage svg{position:absolute;inset:0;width:100%;height:100%}
aside{flex:0 1 360px;min-width:280px}
button{font:inherit;padding:4px 10px;margin:2px}
.shape{padding:6px;border:1px solid #333;margin:4px 0;border-radius:4px}
.shape.selected{border-color:#fff}.shape input.name{width:150px}
.shape input[type=number]{width:60px}.kind{color:#aaa;font-size:12px;text-transform:uppercase}
#message{min-height:1.4em;padding:4px 0;white-space:pre-wrap}.error{color:#f66}.ok{color:#6d6}
.help{color:#aaa;font-size:13px}
svg .shape-zones{fill:rgba(255,0,0,.18);stroke-width:3}
svg .shape-presence{fill:rgba(255,200,0,.15);stroke-width:3}
svg .shape-lines{fill:none;stroke-width:4}
svg .off{stroke-dasharray:10 8;opacity:.5}
svg .picked{stroke-width:6}
svg .handle{fill:#fff;stroke:#000;stroke-width:2;cursor:grab}
svg text{font:bold 22px system-ui,sans-serif;fill:#fff;paint-order:stroke;stroke:#000;
stroke-width:4px}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coral_mfg: zones of {title}</title><style>{style}</style></head>
<body>
<header><h1>Zones of {title}</h1><a href="/">back to the station</a>
<span id="who"></span></header>
<main>
<div id="stage"><img id="video" src="/video/{url}.mjpg" alt="{title}, live">
<svg id="shapes" xmlns="http://www.w3.org/2000/svg"></svg></div>
<aside>
<div id="tools" hidden>
<button id="add-zone" type="button">Add zone</button>
<button id="add-line" type="button">Add line</button>
<button id="add-presence" type="button">Add presence region</button><br>
<button id="save" type="button">Save</button>
<button id="revert" type="button">Undo all</button>
<p class="help">Drag a corner to move it. Double-click an edge of the selected shape to add
a corner; right-click a corner to delete it. Changes apply to the running station when
saved.</p>
</div>
{sign_in}
<div id="message" role="status"></div>
<div id="list"></div>
</aside>
</main>
<script nonce="{nonce}">
const CAMERA = {camera_json}, CSRF = {csrf_json};
const SVG = "http://www.w3.org/2000/svg";
const KINDS = {{zones: "zone", lines: "line", presence: "presence region"}};
const COLORS = {{zones: "#ff0000", lines: "#00c8ff", presence: "#ffc800"}};
let S = null, saved = null, pick = null, drag = null;
const $ = id => document.getElementById(id);
const api = "/api/cameras/" + encodeURIComponent(CAMERA) + "/zones";
const canEdit = kind => S && S.admin && CSRF && S.editable.includes(kind);
function say(text, kind) {{
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}}
function toPane(s, p) {{
  const [x, y, w, h] = S.picture;
  const r = s.units === "relative" ? p : [p[0] / s.frame_size[0], p[1] / s.frame_size[1]];
  return [x + r[0] * w, y + r[1] * h];
}}
function fromPane(s, q) {{
  const [x, y, w, h] = S.picture;
  const r = [Math.min(1, Math.max(0, (q[0] - x) / w)), Math.min(1, Math.max(0, (q[1] - y) / h))];
  if (s.units === "relative") return r.map(v => Math.round(v * 1e4) / 1e4);
  return [Math.round(r[0] * s.frame_size[0] * 10) / 10,
          Math.round(r[1] * s.frame_size[1] * 10) / 10];
}}
function frame() {{  // the picture sent: the pane, and the strip under it
  const v = $("video");
  return v.naturalWidth ? [S.pane[0], S.pane[0] * v.naturalHeight / v.naturalWidth] : S.pane;
}}
function at(ev) {{
  const b = $("shapes").getBoundingClientRect(), f = frame();
  return [(ev.clientX - b.left) / b.width * f[0], (ev.clientY - b.top) / b.height * f[1]];
}}
function el(name, attrs) {{
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}}
function draw() {{
  const svg = $("shapes");
  const f = frame();
  svg.setAttribute("viewBox", "0 0 " + f[0] + " " + f[1]);
  $("stage").style.aspectRatio = f[0] + " / " + f[1];
  svg.replaceChildren();
  for (const kind of Object.keys(KINDS)) S[kind].forEach((s, i) => {{
    const pts = s.points.map(p => toPane(s, p));
    const picked = pick && pick.kind === kind && pick.i === i;
    const cls = "shape-" + kind + (s.enabled === false ? " off" : "")
      + (picked ? " picked" : "");
    const attrs = {{class: cls, stroke: s.color || COLORS[kind], "data-kind": kind, "data-i": i,
                   points: pts.map(p => p.join(",")).join(" ")}};
    const shape = el(kind === "lines" ? "polyline" : "polygon", attrs);
    shape.addEventListener("pointerdown", ev => {{ pick = {{kind, i}}; draw(); list(); }});
    shape.addEventListener("dblclick", ev => addCorner(kind, i, at(ev)));
    svg.appendChild(shape);
    const label = el("text", {{x: pts[0][0] + 6, y: pts[0][1] - 8}});
    label.textContent = s.name + (s.enabled === false ? " (off)" : "");
    svg.appendChild(label);
    if (!picked || !canEdit(kind)) return;
    pts.forEach((p, j) => {{
      const h = el("circle", {{class: "handle", cx: p[0], cy: p[1], r: 9, "data-kind": kind,
                              "data-i": i, "data-j": j}});
      h.addEventListener("pointerdown", ev => {{
        ev.stopPropagation(); ev.preventDefault();
        if (ev.button !== 0) return;
        drag = {{kind, i, j}};
        svg.setPointerCapture(ev.pointerId);
      }});
      h.addEventListener("contextmenu", ev => {{ ev.preventDefault(); dropCorner(kind, i, j); }});
      svg.appendChild(h);
    }});
  }});
}}
function changed() {{ draw(); say(JSON.stringify(pick_all()) === saved ? "" : "not saved yet"); }}
function pick_all() {{ return {{zones: S.zones, lines: S.lines, presence: S.presence}}; }}
function addCorner(kind, i, q) {{
  if (!canEdit(kind) || kind === "lines") return;
  const s = S[kind][i], pts = s.points.map(p => toPane(s, p));
  let best = 0, bestD = Infinity;
  pts.forEach((a, k) => {{
    const b = pts[(k + 1) % pts.length], dx = b[0] - a[0], dy = b[1] - a[1];
    const along = ((q[0] - a[0]) * dx + (q[1] - a[1]) * dy) / (dx * dx + dy * dy || 1);
    const t = Math.max(0, Math.min(1, along));
    const d = Math.hypot(a[0] + t * dx - q[0], a[1] + t * dy - q[1]);
    if (d < bestD) {{ bestD = d; best = k; }}
  }});
  s.points.splice(best + 1, 0, fromPane(s, q));
  changed();
}}
function dropCorner(kind, i, j) {{
  const s = S[kind][i];
  if (kind === "lines" || s.points.length <= 3) {{
    say("a " + KINDS[kind] + " keeps at least " + (kind === "lines" ? 2 : 3) + " corners",
        "error");
    return;
  }}
  s.points.splice(j, 1);
  changed();
}}
function unique(base) {{
  const names = new Set(Object.keys(KINDS).flatMap(k => S[k].map(s => s.name)));
  let n = 1;
  while (names.has(base + "-" + n)) n++;
  return base + "-" + n;
}}
function add(kind) {{
  const sq = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]];
  const base = kind === "presence" ? "region" : kind.replace(/s$/, "");
  const s = {{name: unique(base), units: "relative", enabled: true,
             points: kind === "lines" ? [[0.3, 0.5], [0.7, 0.5]] : sq}};
  if (kind === "presence") Object.assign(s, {{label: "person", expected: 1}});
  S[kind].push(s);
  pick = {{kind, i: S[kind].length - 1}};
  changed(); list();
  const input = document.querySelector(".shape.selected input.name");
  if (input) {{ input.focus(); input.select(); }}
}}
function field(s, key, type, attrs) {{
  const input = document.createElement("input");
  input.type = type; input.className = key;
  Object.assign(input, attrs || {{}});
  if (type === "checkbox") input.checked = s[key] !== false; else input.value = s[key];
  input.addEventListener("input", () => {{
    s[key] = type === "checkbox" ? input.checked
      : type === "number" ? Number(input.value) : input.value;
    changed();
  }});
  return input;
}}
function list() {{
  const box = $("list");
  box.replaceChildren();
  for (const kind of Object.keys(KINDS)) S[kind].forEach((s, i) => {{
    const row = document.createElement("div");
    const picked = pick && pick.kind === kind && pick.i === i;
    row.className = "shape" + (picked ? " selected" : "");
    row.dataset.kind = kind; row.dataset.name = s.name;
    const k = document.createElement("div");
    k.className = "kind"; k.textContent = KINDS[kind];
    row.appendChild(k);
    row.addEventListener("click", () => {{
      if (!picked) {{ pick = {{kind, i}}; draw(); list(); }}
    }});
    if (!canEdit(kind)) {{
      row.append(s.name + (s.enabled === false ? " (disabled)" : ""));
      box.appendChild(row);
      return;
    }}
    row.appendChild(field(s, "name", "text", {{maxLength: 64, title: "name"}}));
    const on = document.createElement("label");
    on.append(field(s, "enabled", "checkbox"), " on");
    row.appendChild(on);
    if (kind === "presence") {{
      row.append(" ", field(s, "label", "text", {{title: "detector label", size: 8}}),
                 " expected ", field(s, "expected", "number", {{min: 1, title: "expected"}}));
    }}
    const del = document.createElement("button");
    del.type = "button"; del.className = "delete"; del.textContent = "Delete";
    del.addEventListener("click", ev => {{
      ev.stopPropagation();
      S[kind].splice(i, 1);
      pick = null;
      changed(); list();
    }});
    row.appendChild(del);
    box.appendChild(row);
  }});
}}
function show(state) {{
  S = state;
  saved = JSON.stringify(pick_all());
  if (pick && !(S[pick.kind] || [])[pick.i]) pick = null;
  $("tools").hidden = !(S.admin && CSRF && S.editable.length);
  for (const kind of Object.keys(KINDS))
    $("add-" + kind.replace(/s$/, "")).hidden = !canEdit(kind);
  $("who").textContent = S.admin && CSRF ? "signed in as admin" : "view only";
  draw(); list();
}}
async function answerOf(r) {{
  const text = await r.text();
  try {{ return JSON.parse(text); }} catch (e) {{ return {{error: text.trim() || r.statusText}}; }}
}}
function refused(r, answer, what) {{
  if (r.status === 401) {{
    $("who").textContent = "signed out";
    say(what + ": your sign-in has ended (the station restarted?); sign in again", "error");
  }} else say(answer.error || r.statusText, "error");
}}
async function load() {{
  const r = await fetch(api, {{cache: "no-store"}});
  const body = await answerOf(r);
  if (!r.ok) {{ refused(r, body, "not loaded"); return; }}
  show(body);
}}
async function save() {{
  const body = {{}};
  for (const kind of S.editable) body[kind] = S[kind];
  const r = await fetch(api, {{method: "PUT", body: JSON.stringify(body), cache: "no-store",
    headers: {{"Content-Type": "application/json", "X-CSRF-Token": CSRF}}}});
  const answer = await answerOf(r);
  if (!r.ok) {{ refused(r, answer, "not saved"); return; }}
  show(answer);
  say(answer.changes.length ? "saved and in force: " + answer.changes.join("; ")
      : "nothing changed", "ok");
}}
$("shapes").addEventListener("pointermove", ev => {{
  if (!drag) return;
  const s = S[drag.kind][drag.i];
  s.points[drag.j] = fromPane(s, at(ev));
  changed();
}});
const stop = () => {{ drag = null; }};
$("shapes").addEventListener("pointerup", stop);
$("shapes").addEventListener("pointercancel", stop);
$("shapes").addEventListener("contextmenu", ev => ev.preventDefault());
$("add-zone").addEventListener("click", () => add("zones"));
$("add-line").addEventListener("click", () => add("lines"));
$("add-presence").addEventListener("click", () => add("presence"));
$("save").addEventListener("click", save);
$("revert").addEventListener("click", () => {{
  Object.assign(S, JSON.parse(saved));
  pick = null;
  draw(); list(); say("");
}});
load().catch(e => say("no answer from the station", "error"));
const sized = setInterval(() => {{  // once the first picture gives its size
  if (S && $("video").naturalWidth) {{ clearInterval(sized); draw(); }}
}}, 200);
</script>
</body></html>
"""

#: The page with the braces of its script as they are (written doubled above).
_TEMPLATE = _PAGE.replace("{{", "{").replace("}}", "}")

_SIGN_IN = """<form method="post" action="/login" id="sign-in">
<input type="hidden" name="next" value="{next}">
{note}<label>Admin token
<input type="password" name="token" autocomplete="current-password"></label>
<button type="submit">Sign in to edit</button></form>"""


def editor_page(camera: str, csrf: str | None, *, admins: bool, nonce: str) -> str:
    """The editor of ``camera``; with an admin session's ``csrf`` token, its controls; else
    a sign-in form (when the station has an admin token at all)."""
    title = html.escape(camera, quote=True)
    path = f"/cameras/{quote(camera, safe='')}/zones"
    sign_in = ""
    if csrf is None:
        sign_in = (_form(path, "") if admins else
                   '<p class="help">View only: this station has no admin token '
                   "(http_admin_token), so nobody may change its zones from here.</p>")
    return (_TEMPLATE.replace("{style}", STYLE).replace("{title}", title)
            .replace("{url}", quote(camera, safe="")).replace("{sign_in}", sign_in)
            .replace("{nonce}", nonce)
            .replace("{camera_json}", _script_json(camera))
            .replace("{csrf_json}", _script_json(csrf or "")))


def sign_in_page(path: str, note: str | None) -> str:
    """A page with the sign-in form alone, back to ``path`` once signed in."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>coral_mfg: sign in</title><style>{STYLE}</style></head><body>"
            "<header><h1>coral_mfg</h1></header><main><aside>"
            + _form(path, note or "") + "</aside></main></body></html>")


def _form(path: str, note: str) -> str:
    said = f'<p class="error">{html.escape(note)}</p>' if note else ""
    return _SIGN_IN.replace("{next}", html.escape(path, quote=True)).replace("{note}", said)


def _script_json(value: str) -> str:
    """A string as a JavaScript literal that cannot end the script element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")
