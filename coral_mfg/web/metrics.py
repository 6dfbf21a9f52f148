"""Prometheus metrics: latencies observed as frames pass, the rest read from the run on scrape.

Counts the run already keeps (frames, drops, errors, zone entries, grades) are
read when Prometheus asks, never copied, so they cannot drift; only the
latency histograms are fed frame by frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from coral_mfg.core.results import FrameResult

if TYPE_CHECKING:
    from coral_mfg.runtime.pipeline import Pipeline

LATENCY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
STARTED = time.monotonic()  # the wall clock may be set back or forward


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

    def watch(self, pipeline: Pipeline, fps: Callable[[str], float]) -> None:
        """Read the run's own counts at each scrape."""
        self.registry.register(_RunCollector(pipeline, fps))


class _RunCollector:
    def __init__(self, pipeline: Pipeline, fps: Callable[[str], float]) -> None:
        self.pipeline = pipeline
        self.fps = fps

    def collect(self) -> Iterator[Metric]:
        p = self.pipeline
        yield from self._streams(p)
        people = GaugeMetricFamily("coral_mfg_zone_people", "People in a keep-out zone now",
                                   labels=["zone"])
        entries = CounterMetricFamily("coral_mfg_keepout_entries", "Entries into a zone",
                                      labels=["zone"])
        inside: dict[str, int] = {}
        for name, _track, _since in p.safety.debounce.occupancy():
            inside[name] = inside.get(name, 0) + 1
        violations = dict(p.safety.debounce.violations)
        for zone in p.zone_store.zones:
            people.add_metric([zone.name], inside.get(zone.name, 0))
            entries.add_metric([zone.name], violations.get(zone.name, 0))
        graded = CounterMetricFamily("coral_mfg_inspected", "Inspected objects by grade",
                                     labels=["grade"])
        for grade, n in p.inspection.counts().items():
            graded.add_metric([grade], n)
        accel = GaugeMetricFamily("coral_mfg_accelerator_up",
                                  "1 while inference answers on this device", labels=["device"])
        accel.add_metric([p.device], 0 if p.inference.pool.status() else 1)
        fallback = GaugeMetricFamily("coral_mfg_accelerator_fallback",
                                     "1 while running on the CPU after the Edge TPU failed")
        fallback.add_metric([], 1 if p.inference.pool.fallen_back else 0)
        uptime = GaugeMetricFamily("coral_mfg_uptime_seconds", "Seconds since the process began")
        uptime.add_metric([], time.monotonic() - STARTED)
        yield from (people, entries, graded, accel, fallback, uptime, *_outputs(p))

    def _streams(self, p: Pipeline) -> Iterator[Metric]:
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
        fps = GaugeMetricFamily("coral_mfg_fps", "Frames per second over the last 2 s",
                                labels=["stream"])
        for name, unit in p.units.items():
            frames.add_metric([name], unit.state.processor.processed)
            dropped.add_metric([name], unit.source.dropped)
            errors.add_metric([name], unit.state.errors)
            lost.add_metric([name], unit.source.lost_count)
            up.add_metric([name], 0 if unit.source.lost_reason else 1)
            fps.add_metric([name], self.fps(name))
        yield from (frames, dropped, errors, lost, up, fps)


def _outputs(p: Pipeline) -> Iterator[Metric]:
    lost = CounterMetricFamily("coral_mfg_output_lost", "Items an output could not write",
                               labels=["output"])
    for name, counts in p.output_counts().items():
        if isinstance(counts, dict) and "lost" in counts:
            lost.add_metric([name], counts["lost"])
    yield lost

