"""Prometheus metrics: latencies observed as frames pass, the rest read from the run on scrape.

Counts the run already keeps (frames, drops, errors, zone entries, grades) are
read when Prometheus asks, never copied, so they cannot drift; only the
latency histograms are fed frame by frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from coral_mfg.core.results import FrameResult
from coral_mfg.core.status import ENDED, NO_SIGNAL, RunStatus
from coral_mfg.runtime.status import StatusBoard

LATENCY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """One registry per run, so tests and several runs in a process never share series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "coral_mfg_latency_seconds", "From capture to result, per stream",
            ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram(
            "coral_mfg_inference_seconds",
            "One model's call, per model (with the trip to its process)",
            ["model"], buckets=INFERENCE_BUCKETS, registry=self.registry)

    def observe(self, result: FrameResult, now: float) -> None:
        self.latency.labels(result.stream).observe(max(0.0, now - result.frame.captured))
        self.inference.labels("detector").observe(result.times.detect / 1000.0)
        if result.times.classify > 0:
            self.inference.labels("classifier").observe(result.times.classify / 1000.0)

    def watch(self, board: StatusBoard) -> None:
        """Read the run's status at each scrape."""
        self.registry.register(_RunCollector(board))


class _RunCollector:
    """Counts and gauges made from the run's newest status when Prometheus asks."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        s = self.board.current
        yield from _streams(s)
        people = GaugeMetricFamily("coral_mfg_zone_people", "People in a keep-out zone now",
                                   labels=["stream", "zone"])
        entries = CounterMetricFamily("coral_mfg_keepout_entries", "Entries into a zone",
                                      labels=["stream", "zone"])
        graded = CounterMetricFamily("coral_mfg_inspected", "Inspected objects by grade",
                                     labels=["stream", "grade"])
        for stream in s.streams:
            violations = dict(stream.entries)
            for zone in stream.zones:
                known = stream.occupancy(zone.name)
                people.add_metric([stream.name, zone.name],
                                  math.nan if known is None else known)  # blind: unknown
                entries.add_metric([stream.name, zone.name], violations.get(zone.name, 0))
            for grade, n in stream.inspected:
                graded.add_metric([stream.name, grade], n)
        yield from _checks(s)
        a = s.accelerator
        accel = GaugeMetricFamily("coral_mfg_accelerator_up",
                                  "1 while inference answers on this device", labels=["device"])
        accel.add_metric([a.device], 0 if a.down else 1)
        yield from _devices(s)
        fallback = GaugeMetricFamily("coral_mfg_accelerator_fallback",
                                     "1 while running on the CPU after the Edge TPU failed")
        fallback.add_metric([], 1 if a.fallback else 0)
        uptime = GaugeMetricFamily("coral_mfg_uptime_seconds", "Seconds since the process began")
        uptime.add_metric([], s.uptime)
        lost = CounterMetricFamily("coral_mfg_output_lost", "Items an output could not write",
                                   labels=["output"])
        for output in s.outputs:
            if output.get("lost") is not None:
                lost.add_metric([output.name], output.get("lost"))
        yield from (people, entries, graded, accel, fallback, uptime, lost)
        yield from _outputs(s)


def _streams(s: RunStatus) -> Iterator[Metric]:
    frames = CounterMetricFamily("coral_mfg_frames", "Frames processed", labels=["stream"])
    dropped = CounterMetricFamily("coral_mfg_dropped_frames",
                                  "Frames dropped at capture (a newer one replaced them)",
                                  labels=["stream"])
    errors = CounterMetricFamily("coral_mfg_errors", "Frames whose processing failed",
                                 labels=["stream"])
    lost = CounterMetricFamily("coral_mfg_source_lost", "Times the source was lost",
                               labels=["stream"])
    up = GaugeMetricFamily("coral_mfg_source_up", "1 while the source delivers",
                           labels=["stream"])
    fps = GaugeMetricFamily("coral_mfg_fps", "Frames per second over the recent frames",
                            labels=["stream"])
    skipped = CounterMetricFamily(
        "coral_mfg_skipped_frames",
        "Frames not detected on: held by the motion gate or the detect_fps cap",
        labels=["stream"])
    for stream in s.streams:
        frames.add_metric([stream.name], stream.frames)
        dropped.add_metric([stream.name], stream.dropped)
        errors.add_metric([stream.name], stream.errors)
        lost.add_metric([stream.name], stream.source_lost)
        up.add_metric([stream.name], 0 if stream.state in (NO_SIGNAL, ENDED) else 1)
        fps.add_metric([stream.name], stream.fps)
        skipped.add_metric([stream.name], stream.skipped)
    yield from (frames, dropped, errors, lost, up, fps, skipped)


def _devices(s: RunStatus) -> Iterator[Metric]:
    """Each inference process's load, labelled by process and the device it drives."""
    labels = ["process", "device"]
    up = GaugeMetricFamily("coral_mfg_process_up", "1 while the inference process answers",
                           labels=labels)
    ms = GaugeMetricFamily("coral_mfg_process_inference_ms",
                           "Median detection time in the process, recent frames",
                           labels=labels)
    busy = GaugeMetricFamily("coral_mfg_process_busy_ratio",
                             "Share of recent time the process spent working (0 to 1)",
                             labels=labels)
    capacity = GaugeMetricFamily(
        "coral_mfg_process_capacity_fps",
        "Frames per second the process could take at this station's recent work",
        labels=labels)
    for d in s.accelerator.devices:
        key = [d.process, d.device]
        up.add_metric(key, 1 if d.state == "up" else 0)
        ms.add_metric(key, d.median_ms)
        busy.add_metric(key, d.busy_share)
        capacity.add_metric(key, d.capacity_fps)
    yield from (up, ms, busy, capacity)


def _checks(s: RunStatus) -> Iterator[Metric]:
    """Per camera: blind, dwell alarms, line crossings and presence checks."""
    blind = GaugeMetricFamily("coral_mfg_camera_blind",
                              "1 while the camera cannot see: its checks are unknown",
                              labels=["stream"])
    dwell = GaugeMetricFamily("coral_mfg_zone_dwell_alarm",
                              "People in a zone longer than its max_seconds now",
                              labels=["stream", "zone"])
    crossings = CounterMetricFamily("coral_mfg_line_crossings", "Crossings of a counting line",
                                    labels=["stream", "line", "direction", "grade"])
    seen = GaugeMetricFamily("coral_mfg_presence_seen",
                             "Objects seen in a presence region now (NaN while blind)",
                             labels=["stream", "check"])
    missing = GaugeMetricFamily("coral_mfg_presence_missing",
                                "1 while a presence check reports a shortfall (NaN while blind)",
                                labels=["stream", "check"])
    for stream in s.streams:
        blind.add_metric([stream.name], 1 if stream.blind else 0)
        for zone in stream.zones:
            if zone.enabled:
                dwell.add_metric([stream.name, zone.name],
                                 sum(1 for o in stream.dwelling if o.zone == zone.name))
        for line in stream.lines:
            for direction, grade, n in line.counts:
                crossings.add_metric([stream.name, line.name, direction, grade or ""], n)
        for check in stream.presence:
            key = [stream.name, check.name]
            seen.add_metric(key, math.nan if stream.blind else check.seen)
            missing.add_metric(key, math.nan if stream.blind else int(check.missing))
    yield from (blind, dwell, crossings, seen, missing)


def _outputs(s: RunStatus) -> Iterator[Metric]:
    """Per output: whether it is failing now (a PLC server that cannot listen, a full disk),
    and the PLC servers' capture-to-reject latency."""
    failing = GaugeMetricFamily("coral_mfg_output_failing",
                                "1 while an output cannot write (or a server cannot listen)",
                                labels=["output"])
    latency = HistogramMetricFamily(
        "coral_mfg_reject_latency_seconds",
        "From a frame's capture to the reject signal it decided being set, per PLC server "
        "and camera", labels=["output", "stream"])
    faults = CounterMetricFamily("coral_mfg_output_client_errors",
                                 "Client requests a PLC server could not take (malformed, "
                                 "refused)", labels=["output"])
    for output in s.outputs:
        failing.add_metric([output.name], 0 if output.get("error") is None else 1)
        if output.get("client_errors") is not None:
            faults.add_metric([output.name], output.get("client_errors"))
        for stream, h in (output.get("reject_latency") or {}).items():
            buckets = [("+Inf" if math.isinf(le) else repr(float(le)), n)
                       for le, n in h["buckets"]]
            latency.add_metric([output.name, stream], buckets, h["sum_s"])
    yield from (failing, faults, latency)
