"""The run command: open the models, then drive capture, scheduling and outputs."""

from __future__ import annotations

import logging
from typing import Any

from coral_mfg import __version__
from coral_mfg.inference.engine import InferenceEngine, plan_models
from coral_mfg.inference.runtime import Device, Runtime

log = logging.getLogger(__name__)


def open_engine(settings: dict[str, Any]) -> InferenceEngine:
    plan = plan_models(settings)
    runtime = Runtime(
        requested=Device(settings["device"]),
        device_string=settings.get("edgetpu_device"),
        cpu_threads=settings["cpu_threads"],
    )
    engine = InferenceEngine(plan, runtime)
    log.info("coral-mfg %s; detector %s", __version__, plan.note)
    for line in engine.describe():
        log.info("%s", line)
    return engine


def run(settings: dict[str, Any]) -> int:
    open_engine(settings)
    return 0
