"""``coral-mfg bench``: throughput of the real pipeline against the pure-inference bound.

Both sample videos loop (or, with ``--cameras N``, N cameras replicating them),
unpaced and headless, for a fixed time; then the same interpreters run a tight
invoke loop with the same process layout and the same share of classifier calls
per frame. The ratio says how much the pipeline (decode, resize, checks,
outputs, scheduling) costs on top of inference.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomli_w

from coral_mfg.config.cameras import MAX_CAMERAS
from coral_mfg.config.flags import Parser, typed
from coral_mfg.config.settings import Settings, load_settings
from coral_mfg.config.zones import ZoneSpec, csv_spec
from coral_mfg.core.results import FrameResult, InspectedObject, StageTimes
from coral_mfg.core.status import device_record
from coral_mfg.inference.client import Work
from coral_mfg.outputs.base import SinkBase
from coral_mfg.runtime.builder import build_pipeline
from coral_mfg.web.view import WebView

BOUND_MAX_S = 10.0
#: The pipeline runs in rounds of about this long, each followed by a slice of the bound:
#: short enough to follow a shared host's drift, long enough that the frames in flight
#: at each pause (finished, and counted, before the bound's slice) are a small part.
ROUND_S = 2.0
#: Frames still in flight when a round ends have this long to finish.
DRAIN_S = 30.0


class _Collector(SinkBase):
    """A sink that keeps every frame's stage times and how many objects were inspected,
    and sees each camera's file come round: its first frame again after later ones."""

    def __init__(self) -> None:
        self.times: dict[str, list[StageTimes]] = {}
        self.frames = 0
        self.inspected = 0
        self.looped: set[str] = set()
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self.times.setdefault(result.stream, []).append(result.times)
            self.frames += 1
            self.inspected += sum(isinstance(o, InspectedObject) for o in result.objects)
            index = result.frame.index
            if index < self._last.get(result.stream, -1):
                self.looped.add(result.stream)
            self._last[result.stream] = index

    def restart(self) -> dict[str, list[StageTimes]]:
        """Start counting afresh; the times kept so far."""
        with self._lock:
            kept, self.times = self.times, {}
            self.frames = self.inspected = 0
            return kept


def run_bench(settings: Settings, seconds: float, poll: list[str] | None = None
              ) -> dict[str, Any]:
    """The pipeline in rounds of about :data:`ROUND_S` seconds, each followed by a slice
    of the bound (the pipeline paused, nothing in flight), so that both are measured
    over the same stretch of time and a machine whose speed drifts (a shared host)
    moves them together.

    ``poll``: a PLC's polling client to run beside the pipeline (``coral-mfg plc-poll``
    arguments), started with the pipeline, counted from its first read (its start-up,
    mostly imports, is not what a polling PLC costs), stopped (SIGSTOP) while the
    bound is measured and ended before the pipeline is."""
    collector = _Collector()
    web = WebView(settings)
    pipeline = build_pipeline(settings, extra_sinks=[collector, *web.sinks])
    web.start(pipeline.board)
    pipeline.start()
    poller = _Poller(poll) if poll is not None else None
    pool = pipeline.inference.pool
    rounds = max(1, round(seconds / ROUND_S))
    bound_s = min(seconds, BOUND_MAX_S) / rounds
    started = time.monotonic()
    elapsed = cpu = 0.0
    counted: Counter[str] = Counter()
    slices: list[tuple[int, float, float]] = []  # (frames, seconds, bound fps) a round
    running: list[tuple[float, float]] = []  # when the pipeline ran (monotonic)
    polled: dict[str, Any] | None = None
    warmup: dict[str, list[StageTimes]] = {}
    devices: list[dict[str, Any]] = []
    try:
        ready = _ready(pipeline, collector, poller)
        warmup = collector.restart()
        for k in range(rounds):
            n0, t0, c0 = _processed(pipeline), time.monotonic(), time.process_time()
            pipeline.set_paused(False, operator=False)
            ended = _run_for(pipeline, seconds / rounds)
            pipeline.set_paused(True, operator=False)
            drained = _drained(pipeline)  # the frames in flight are the round's
            done, t = _processed(pipeline) - n0, time.monotonic() - t0
            running.append((t0, t0 + t))
            n = done.total()
            counted.update(done)
            elapsed, cpu = elapsed + t, cpu + time.process_time() - c0
            if ended or k == rounds - 1 or not drained:
                slices.append((n, t, 0.0))
                break
            share = collector.inspected / max(collector.frames, 1)
            with _stopped(poller):
                slices.append((n, t, pool.measure_bound(share, bound_s)))
        devices = [device_record(d) for d in pipeline.assemble_status().accelerator.devices]
    finally:
        polled = poller.stop() if poller is not None else None
        web.stop()
        summary = pipeline.close(keep_inference=True)
    stages = {
        stream: {
            f.name: round(statistics.median(getattr(t, f.name) for t in times), 3)
            for f in fields(StageTimes)
        }
        for stream, times in collector.times.items()
    }
    share = collector.inspected / max(collector.frames, 1)
    hop_median, hop_p99 = pool.hop_ms()
    busy = {c.name: _busy_share(c.work(), running, elapsed) for c in pool.clients()}
    devices = [{**d, "busy_share": busy.get(d["process"], d["busy_share"])} for d in devices]
    try:
        last = slices.pop()
        slices.append((*last[:2], pool.measure_bound(share, bound_s)))
    finally:
        pool.close()
    # the bound of the run: each slice's frames/s weighted by the pipeline's time beside it
    bound = sum(t * b for _n, t, b in slices) / max(elapsed, 1e-9)
    total = counted.total()
    achieved = total / max(elapsed, 1e-9)
    return {
        "device": pool.device.value,
        "detector": pipeline.inference.plan.detector_name,
        "processes": len(pool.clients()),
        "cpu_threads": pool.clients()[0].config.cpu_threads,
        "process_hop_ms": {"median": round(hop_median, 3), "p99": round(hop_p99, 3)},
        "seconds": round(elapsed, 2),
        "ready_s": round(ready - started, 2),
        "cameras": len(summary["frames"]),
        "fps": {name: round(counted[name] / max(elapsed, 1e-9), 2) for name in pipeline.units},
        "skipped": summary["skipped"],
        "total_fps": round(achieved, 2),
        "first_pass_decode_ms": {
            stream: round(statistics.median(decoded), 3)
            for stream, times in warmup.items()
            if (decoded := [t.decode for t in times if t.decode > 0])},
        "pipeline_cpu": {"cores": round(cpu / elapsed, 3),
                         "ms_per_frame": round(1000.0 * cpu / max(total, 1), 3)},
        "stage_median_ms": stages,
        "classify_per_frame": round(share, 3),
        "bound_fps": round(bound, 2),
        "ratio": round(achieved / bound, 3) if bound else None,
        "rounds": [{"fps": round(n / t, 2), "bound_fps": round(b, 2),
                    "ratio": round(n / t / b, 3) if b else None} for n, t, b in slices],
        "dropped": summary["dropped"],
        "errors": summary["errors"],
        "devices": devices,
        **_recording(summary, elapsed),
        **_plc(summary, polled),
    }


def _ready(pipeline: Any, collector: _Collector, poller: _Poller | None,
           most_s: float = 120.0) -> float:
    """When the measurement starts: in the steady state, at most ``most_s`` after the start.

    That is once every camera's file has come round (its first pass is decoded, later
    ones replay from memory: counting part of the first pass would make the figure
    depend on how long it runs; its decoding is reported on its own), every PLC
    server listens (an OPC UA server takes seconds to build its address space: a cost
    of the start, not of running) and the polling client reads."""
    cameras = len(pipeline.units)
    end = time.monotonic() + most_s
    while time.monotonic() < end and not pipeline.poll(0.1):
        outputs = pipeline.assemble_status().outputs
        if len(collector.looped) >= cameras and all(
                o.get("listening") is not False for o in outputs) and (
                poller is None or poller.reading.is_set()):
            break
    return time.monotonic()


def _processed(pipeline: Any) -> Counter[str]:
    """Frames finished so far by each camera (counted as each is finished, in order)."""
    return Counter({name: u.processor.processed for name, u in pipeline.units.items()})


def _busy_share(work: Sequence[Work], running: Sequence[tuple[float, float]],
                elapsed: float) -> float:
    """The share of the pipeline's rounds a process spent working (replies within them)."""
    busy = sum(w.busy_s for w in work if any(a <= w.end <= b for a, b in running))
    return round(busy / max(elapsed, 1e-9), 3)


def _run_for(pipeline: Any, seconds: float) -> bool:
    """Let the pipeline run ``seconds``; True when it ended meanwhile."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if pipeline.poll(min(0.2, left)):
            return True
    return False


def _drained(pipeline: Any) -> bool:
    """Wait, the pipeline paused, until no frame is in flight (at most :data:`DRAIN_S`)."""
    end = time.monotonic() + DRAIN_S
    while time.monotonic() < end:
        with pipeline.ctx.cond:
            if not any(u.state.in_flight for u in pipeline.units.values()):
                return True
        pipeline.poll(0.01)
    return False


@contextlib.contextmanager
def _stopped(poller: _Poller | None) -> Iterator[None]:
    """The polling client held (SIGSTOP) meanwhile: the bound is inference alone."""
    if poller is None or poller.proc.poll() is not None:
        yield
        return
    poller.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        poller.proc.send_signal(signal.SIGCONT)


class _Poller:
    """``coral-mfg plc-poll`` beside the run: ``reading`` once it has read everything once."""

    def __init__(self, args: list[str]) -> None:
        self.reading = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coral_mfg", "plc-poll", "--quiet", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines = threading.Thread(target=self._watch, name="plc-poll", daemon=True)
        self._lines.start()

    def _watch(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("reading"):
                self.reading.set()

    def stop(self) -> dict[str, Any]:
        """Stop the client; its totals: reads, errors, and its CPU seconds while reading
        (on this machine; on a line, a PLC's own)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            err = self.proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        self._lines.join(5)
        lines = [line for line in err.splitlines() if line.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else {"reads": 0, "errors": None}


def _plc(summary: dict[str, Any], polled: dict[str, Any] | None) -> dict[str, Any]:
    """What the PLC servers did, when there were any: per server its values written, its
    client faults, and the capture-to-reject latency per camera; and the polling client's
    reads and CPU seconds (on this machine: a PLC's own CPU elsewhere)."""
    servers = {name: out for name, out in summary["outputs"].items()
               if name in ("opcua", "modbus")}
    if not servers and polled is None:
        return {}
    latency = {f"{name}/{camera}": {k: h[k] for k in ("count", "p50_ms", "p99_ms", "max_ms")}
               for name, out in servers.items()
               for camera, h in (out.get("reject_latency") or {}).items()}
    return {"plc": {
        "servers": {name: {"written": out["written"], "rejects": out["rejects"],
                           "client_errors": out["client_errors"], "error": out["error"]}
                    for name, out in servers.items()},
        "reject_latency": latency,
        "client": polled,
    }}


def _recording(summary: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """What the recording cost, when there was one: its frames and the encoder's CPU."""
    rec = summary["outputs"].get("recording")
    if rec is None:
        return {}
    return {"recording": {"frames": rec["written"], "dropped": rec["dropped"],
                          "encoder_cpu_s": rec["encoder_cpu_s"],
                          "encoder_cores": round(rec["encoder_cpu_s"] / elapsed, 3)}}


class _Keep(SinkBase):
    """A sink that keeps every result, to replay them in the window."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def write(self, result: FrameResult) -> None:
        self.results.append(result)


def run_render_bench(settings: Settings, seconds: float) -> dict[str, Any]:
    """Frames/s of drawing every camera's pane with its overlays and HUD, nothing else."""
    import glfw
    from OpenGL import GL

    from coral_mfg.outputs.panel import DIM, OK, Panel, Segment
    from coral_mfg.render.window import DisplaySink, Window, scene_for

    keep = _Keep()
    settings = settings.with_flags(loop=False)
    pipeline = build_pipeline(settings, extra_sinks=[keep])
    pipeline.start()
    while not pipeline.poll(0.2):
        pass
    pipeline.close()
    cameras = tuple(c.name for c in settings.camera_list())
    results = {c: [r for r in keep.results if r.stream == c] for c in cameras}
    length = min(len(r) for r in results.values())
    window = Window(settings.out_size, cameras=len(cameras))
    try:
        glfw.swap_interval(0)
        display = DisplaySink()
        strip = Panel(((Segment("WORKER SAFETY  "), Segment("LIVE: 30.0 fps", OK)),
                       (Segment("entries 0  |  Fresh apple 3 PASS"),),
                       (Segment("inference 8 ms on CPU   dropped 0", DIM),)), OK, False, "live")
        panes = {cameras[i]: origin for i, origin in window.origins().items()}
        drawn = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for i, camera in enumerate(cameras):
                result = results[camera][drawn % length]
                display.write(result)
                window.set_pane(i, result.frame.image)
            layer = scene_for(display.snapshot(), window.atlas, window.pane_size, panes,
                              mask=None, panel=lambda _s: strip)
            window.draw(layer)
            window.swap()
            glfw.poll_events()
            drawn += 1
        GL.glFinish()
        elapsed = time.perf_counter() - start
        renderer = GL.glGetString(GL.GL_RENDERER).decode()
        errors = window.gl_errors
    finally:
        window.close()
    return {"render_fps": round(drawn / elapsed, 1), "frames": drawn,
            "seconds": round(elapsed, 2), "gl_renderer": renderer, "gl_errors": errors,
            "cameras": len(cameras), "size": list(window.content)}


def _rss_mb() -> float:
    """Resident memory of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20


def _os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def run_soak(settings: Settings, seconds: float) -> dict[str, Any]:
    """Loop both sample videos unpaced for ``seconds``: does memory or thread count grow?"""
    pipeline = build_pipeline(settings)
    pipeline.start()
    start = time.monotonic()
    warmup = min(30.0, seconds / 10)
    samples: list[tuple[float, float]] = []
    first: tuple[float, int, int] | None = None
    next_sample = start + warmup
    try:
        while time.monotonic() - start < seconds:
            pipeline.poll(0.5)
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - start, 1), round(_rss_mb(), 1)))
                if first is None:
                    first = (_rss_mb(), threading.active_count(), _os_threads())
                next_sample = now + max(seconds / 20, 1.0)
        end = (_rss_mb(), threading.active_count(), _os_threads())
    finally:
        summary = pipeline.close()
    assert first is not None
    return {
        "seconds": seconds,
        "warmup_s": warmup,
        "frames": summary["frames"],
        "fps": summary["fps"],
        "rss_start_mb": round(first[0], 1),
        "rss_end_mb": round(end[0], 1),
        "rss_growth_pct": round(100.0 * (end[0] - first[0]) / first[0], 2),
        "python_threads": [first[1], end[1]],
        "os_threads": [first[2], end[2]],
        "rss_samples": samples,
        "errors": summary["errors"],
    }


def replicated(settings: Settings, count: int, folder: Path, reject: bool = False) -> Path:
    """A config file of ``count`` cameras taking turns at the sample videos (each camera
    with the roles and zones of the original stream it replays); ``reject``: each
    inspection camera with a reject signal."""
    originals = settings.camera_list()
    tables: dict[str, Any] = {}
    for i in range(count):
        original = originals[i % len(originals)]
        table: dict[str, Any] = {"input": original.input, "roles": list(original.roles)}
        if original.safety:
            table["zones"] = [z.to_table() for z in _zones(settings, original.zones)]
        if reject and original.inspection:
            table["reject"] = True
        tables[f"{original.name}_{i // len(originals) + 1}"] = table
    path = folder / "bench-cameras.toml"
    path.write_text(tomli_w.dumps({"cameras": tables}), encoding="utf-8")
    return path


def _zones(settings: Settings, zones: tuple[ZoneSpec, ...]) -> tuple[ZoneSpec, ...]:
    return zones or (csv_spec(settings.safety.keepout_points_path),)


def main(argv: Sequence[str]) -> int:
    p = Parser(
        prog="coral-mfg bench",
        description="Run both sample videos looping, unpaced and headless, for --seconds, "
        f"in rounds of about {ROUND_S:g} s once every file has come round; after each round, "
        "a slice of the pure-inference bound of the same processes (in all as long as the "
        f"pipeline ran, at most {BOUND_MAX_S:g} s). Prints one JSON line with per-stream "
        "fps, per-stage median ms, the pipeline's own CPU, the bound and their ratio.",
    )
    p.add_argument("--seconds", type=float, default=20.0,
                   help="how long the pipeline runs (default 20); the bound takes as long "
                   f"again, at most {BOUND_MAX_S:g} s")
    p.add_argument("--processes", "--workers", dest="processes",
                   type=typed("cpu_processes", int),
                   help="inference processes on the CPU (as --cpu_processes)")
    p.add_argument("--cpu_threads", "--cpu-threads", type=typed("cpu_threads", int),
                   help="threads per interpreter")
    p.add_argument("--device", type=typed("device"), default=None,
                   help="auto, edgetpu or cpu")
    p.add_argument("--edgetpu_devices", "--edgetpu-devices", type=typed("edgetpu_devices"),
                   help="several Edge TPUs, as --edgetpu_devices of a run (usb:0,usb:1 or all)")
    p.add_argument("--cameras", type=int, metavar="N",
                   help=f"N cameras (1 to {MAX_CAMERAS}) taking turns at the two sample "
                   "videos, instead of the two streams")
    p.add_argument("--soak", type=float, metavar="SECONDS",
                   help="run this long and report memory (RSS) and threads at start and end")
    p.add_argument("--render", action="store_true",
                   help="measure the window instead: frames/s drawing two panes with overlays")
    p.add_argument("--output", metavar="FILE.mp4",
                   help="record while measuring, to see what encoding costs")
    p.add_argument("--http", type=typed("http"), metavar="HOST:PORT",
                   help="serve the web view while measuring, to see what viewers cost")
    p.add_argument("--encoder_preset", "--encoder-preset", type=typed("encoder_preset"),
                   help="x264 preset of the recording")
    p.add_argument("--anomaly", type=typed("anomaly"), metavar="DIR",
                   help="score the inspected objects with this anomaly model, to see what "
                   "anomaly scoring costs (run once with it and once without)")
    p.add_argument("--anomaly_every", "--anomaly-every", type=typed("anomaly_every", int),
                   metavar="N", help="the extractor on every N-th frame with objects (as a "
                   "run's --anomaly_every)")
    p.add_argument("--opcua", type=typed("opcua"), metavar="URL",
                   help="serve OPC UA while measuring (opc.tcp://127.0.0.1:PORT)")
    p.add_argument("--modbus", type=typed("modbus"), metavar="HOST:PORT",
                   help="serve Modbus TCP while measuring (127.0.0.1:PORT)")
    p.add_argument("--reject", action="store_true",
                   help="give each inspection camera a reject signal, and report its "
                   "capture-to-reject latency (with --opcua or --modbus)")
    p.add_argument("--plc_poll", "--plc-poll", type=float, metavar="S",
                   help="with --opcua/--modbus: a client (coral-mfg plc-poll) reading every "
                   "value every S seconds, as a PLC would, while measuring")
    args = p.parse_args(argv)
    if (args.reject or args.plc_poll) and not (args.opcua or args.modbus):
        p.error("--reject and --plc_poll need --opcua URL or --modbus HOST:PORT")
    if args.cameras is not None and not 1 <= args.cameras <= MAX_CAMERAS:
        p.error(f"--cameras takes 1 to {MAX_CAMERAS}, got {args.cameras}")
    flags = {
        "headless": True, "realtime": False, "loop": True, "events": os.devnull,
        "cpu_threads": args.cpu_threads, "cpu_processes": args.processes, "device": args.device,
        "edgetpu_devices": args.edgetpu_devices,
        "output": args.output, "encoder_preset": args.encoder_preset, "http": args.http,
        "anomaly": args.anomaly, "anomaly_every": args.anomaly_every,
        "opcua": args.opcua, "modbus": args.modbus,
    }
    settings = load_settings(flags)
    with tempfile.TemporaryDirectory(prefix="coral-mfg-bench-") as folder:
        config = None
        if args.cameras is not None or args.reject:
            count = args.cameras or len(settings.camera_list())
            config = replicated(settings, count, Path(folder), reject=args.reject)
            settings = load_settings(flags, config)
        poll = None
        if args.plc_poll:
            poll = ["--every", str(args.plc_poll), "--station", settings.station,
                    *(["--config", str(config)] if config is not None else []),
                    *(["--opcua", args.opcua] if args.opcua else []),
                    *(["--modbus", args.modbus] if args.modbus else [])]
        return _measure(args, settings, poll)


def _measure(args: Any, settings: Settings, poll: list[str] | None) -> int:
    if args.soak:
        print(json.dumps(run_soak(settings, args.soak)))
    elif args.render:
        print(json.dumps(run_render_bench(settings, args.seconds)))
    else:
        print(json.dumps(run_bench(settings, args.seconds, poll)))
    return 0
