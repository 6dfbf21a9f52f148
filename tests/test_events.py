"""The JSON form of every event, byte for byte: what the event log writes, MQTT publishes
and the docs document."""

from __future__ import annotations

import dataclasses
import json
import re
import typing

import pytest

from coral_mfg.core import events as ev
from coral_mfg.core.events import Stamp, event_json
from tests.conftest import ROOT

STAMP = Stamp(1764410400.25, "0123456789abcdef0123456789abcdef", "line-1")
TAIL = '"timestamp":"2025-11-29T10:00:00.250Z","id":"0123456789abcdef0123456789abcdef",' \
       '"station":"line-1"'


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev.KeepoutEnter(zone="press-1", track=7, frame=212, time=14.1, stream="worker_safety",
                         stamp=STAMP, snapshot="/s/x.jpg"),
         '{"type":"keepout_enter","zone":"press-1","track":7,"frame":212,"time":14.1,'
         f'"stream":"worker_safety",{TAIL},"snapshot":"/s/x.jpg"}}'),
        (ev.KeepoutEnter(zone="press-1", track=7, frame=212, time=14.1, stream="worker_safety",
                         stamp=STAMP),
         '{"type":"keepout_enter","zone":"press-1","track":7,"frame":212,"time":14.1,'
         f'"stream":"worker_safety",{TAIL}}}'),
        (ev.KeepoutExit(zone="press-1", track=7, frame=260, time=17.3, seconds_in_zone=3.2,
                        stream="worker_safety", stamp=STAMP),
         '{"type":"keepout_exit","zone":"press-1","track":7,"frame":260,"time":17.3,'
         f'"seconds_in_zone":3.2,"stream":"worker_safety",{TAIL}}}'),
        (ev.Graded(label="apple", track=2, grade="rotten_apple", passed=False,
                   grade_score=0.62, frames=18, graded_frames=18, frame=40, time=3.2,
                   stream="visual_inspection", stamp=STAMP),
         '{"type":"graded","label":"apple","track":2,"grade":"rotten_apple","passed":false,'
         '"grade_score":0.62,"frames":18,"graded_frames":18,"frame":40,"time":3.2,'
         f'"stream":"visual_inspection",{TAIL}}}'),
        (ev.SourceLost(stream="worker_safety", reason="no frame", time=3.0, stamp=STAMP),
         '{"type":"source_lost","stream":"worker_safety","reason":"no frame","time":3.0,'
         f'{TAIL}}}'),
        (ev.SourceRestored(stream="worker_safety", after_s=2.5, time=5.5, stamp=STAMP),
         f'{{"type":"source_restored","stream":"worker_safety","after_s":2.5,"time":5.5,{TAIL}}}'),
        (ev.AcceleratorLost(device="cpu", process="cpu-0", reason="killed by SIGKILL",
                            time=9.0, stamp=STAMP),
         '{"type":"accelerator_lost","device":"cpu","worker":"cpu-0",'
         f'"reason":"killed by SIGKILL","time":9.0,{TAIL}}}'),
        (ev.AcceleratorRestored(device="cpu", process="cpu-0", time=10.0, stamp=STAMP),
         f'{{"type":"accelerator_restored","device":"cpu","worker":"cpu-0","time":10.0,{TAIL}}}'),
        (ev.AcceleratorLost(device="edgetpu", process="edgetpu-1", reason="killed by SIGABRT",
                            time=9.0, stamp=STAMP, edgetpu_device="usb:1"),
         '{"type":"accelerator_lost","device":"edgetpu","worker":"edgetpu-1",'
         f'"reason":"killed by SIGABRT","time":9.0,{TAIL},"edgetpu_device":"usb:1"}}'),
        (ev.AcceleratorRestored(device="edgetpu", process="edgetpu-1", time=10.0, stamp=STAMP,
                                edgetpu_device="usb:1"),
         '{"type":"accelerator_restored","device":"edgetpu","worker":"edgetpu-1","time":10.0,'
         f'{TAIL},"edgetpu_device":"usb:1"}}'),
        (ev.AcceleratorRestored(device="edgetpu", from_="cpu", time=10.0, stamp=STAMP),
         f'{{"type":"accelerator_restored","device":"edgetpu","from":"cpu","time":10.0,{TAIL}}}'),
        (ev.AcceleratorFallback(device="cpu", from_="edgetpu", reason="SIGABRT", time=11.0,
                                stamp=STAMP),
         '{"type":"accelerator_fallback","device":"cpu","from":"edgetpu","reason":"SIGABRT",'
         f'"time":11.0,{TAIL}}}'),
        (ev.ZonesReloaded(zones=("a", "b"), time=1.5, stamp=STAMP),
         f'{{"type":"zones_reloaded","zones":["a","b"],"time":1.5,{TAIL}}}'),
        (ev.ZonesChanged(stream="press", by="admin token (bearer, 10.0.0.5)",
                         changes=("added zone 'walkway'",), zones=("press-1", "walkway"),
                         file="station.toml", time=2.5, stamp=STAMP),
         '{"type":"zones_changed","stream":"press","by":"admin token (bearer, 10.0.0.5)",'
         '"changes":["added zone \'walkway\'"],"zones":["press-1","walkway"],'
         f'"file":"station.toml","time":2.5,{TAIL}}}'),
        (ev.ZonesError(error="bad", time=1.5, stamp=STAMP),
         f'{{"type":"zones_error","error":"bad","time":1.5,{TAIL}}}'),
        (ev.OutputFault(output="recording", reason="No space left on device",
                        at="2025-11-29T09:59:59.000Z", time=7.0, stamp=STAMP),
         '{"type":"output_fault","output":"recording","reason":"No space left on device",'
         f'"at":"2025-11-29T09:59:59.000Z","time":7.0,{TAIL}}}'),
        (ev.OutputRestored(output="recording", lost=12, at="2025-11-29T10:00:00.000Z",
                           time=8.0, stamp=STAMP),
         '{"type":"output_restored","output":"recording","lost":12,'
         f'"at":"2025-11-29T10:00:00.000Z","time":8.0,{TAIL}}}'),
        (ev.KeepoutEnter(zone="press-1", track=7, frame=212, time=14.1, stream="press",
                         stamp=STAMP, entered_at="2025-11-29T09:59:59.900Z"),
         '{"type":"keepout_enter","zone":"press-1","track":7,"frame":212,"time":14.1,'
         f'"stream":"press",{TAIL},"entered_at":"2025-11-29T09:59:59.900Z"}}'),
        (ev.ZoneDwellExceeded(zone="press-1", track=7, seconds=61.2, max_seconds=60.0,
                              frame=1130, time=75.3, stream="press", stamp=STAMP,
                              entered_at="2025-11-29T09:58:58.900Z"),
         '{"type":"zone_dwell_exceeded","zone":"press-1","track":7,"seconds":61.2,'
         '"max_seconds":60.0,"frame":1130,"time":75.3,"stream":"press",'
         f'{TAIL},"entered_at":"2025-11-29T09:58:58.900Z"}}'),
        (ev.LineCrossed(line="end", direction="down", track=2, label="apple", frame=62,
                        time=3.6, stream="belt", stamp=STAMP, grade="rotten_apple",
                        passed=False),
         '{"type":"line_crossed","line":"end","direction":"down","track":2,"label":"apple",'
         f'"frame":62,"time":3.6,"stream":"belt",{TAIL},"grade":"rotten_apple",'
         '"passed":false}'),
        (ev.LineCrossed(line="door", direction="in", track=4, label="person", frame=9,
                        time=0.6, stream="hall", stamp=STAMP),
         '{"type":"line_crossed","line":"door","direction":"in","track":4,"label":"person",'
         f'"frame":9,"time":0.6,"stream":"hall",{TAIL}}}'),
        (ev.PresenceMissing(check="shelf", label="bottle", expected=3, seen=2, frame=90,
                            time=6.0, stream="shelf_cam", stamp=STAMP),
         '{"type":"presence_missing","check":"shelf","label":"bottle","expected":3,"seen":2,'
         f'"frame":90,"time":6.0,"stream":"shelf_cam",{TAIL}}}'),
        (ev.PresenceRestored(check="shelf", label="bottle", expected=3, seen=3, frame=130,
                             time=8.6, stream="shelf_cam", stamp=STAMP),
         '{"type":"presence_restored","check":"shelf","label":"bottle","expected":3,'
         f'"seen":3,"frame":130,"time":8.6,"stream":"shelf_cam",{TAIL}}}'),
        (ev.CameraBlind(stream="press", reason="NO SIGNAL: no frame for 10 s", time=30.0,
                        stamp=STAMP),
         '{"type":"camera_blind","stream":"press","reason":"NO SIGNAL: no frame for 10 s",'
         f'"time":30.0,{TAIL}}}'),
        (ev.CameraRestored(stream="press", blind_s=12.5, time=42.5, stamp=STAMP),
         f'{{"type":"camera_restored","stream":"press","blind_s":12.5,"time":42.5,{TAIL}}}'),
    ],
    ids=lambda v: v.type if hasattr(v, "type") else "",
)
def test_every_event_has_its_documented_json_form(event: ev.Event, expected: str) -> None:
    assert json.dumps(event_json(event), separators=(",", ":")) == expected


def test_the_docs_show_the_same_forms() -> None:
    """Each event the docs show has exactly the keys, in the order, made here."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    found = re.findall(r'(\{"type":"(?:keepout_enter|graded)",[^\n`]*\})', text)
    # shortened in the docs with ",...}": the keys shown must be the first ones, in order
    shown = [json.loads(m.replace(",...}", "}")) for m in found]
    assert shown
    made = {"keepout_enter": event_json(ev.KeepoutEnter(
        zone="z", track=1, frame=1, time=1.0, stream="s", stamp=STAMP, snapshot="x")),
        "graded": event_json(ev.Graded(
            label="a", track=1, grade="g", passed=True, grade_score=1.0, frames=1,
            graded_frames=1, frame=1, time=1.0, stream="s", stamp=STAMP))}
    for record in shown:
        keys = list(made[record["type"]])
        assert list(record) == keys[:len(record)]


@pytest.mark.parametrize("kind", typing.get_args(ev.Event), ids=lambda k: k.type)
def test_every_event_carries_the_run_time(kind: type) -> None:
    """As docs/events.md says: every event has ``time``, seconds since the run started."""
    assert "time" in {f.name for f in dataclasses.fields(kind)}
