"""Outputs: the event log, the H.264 recording, and the thread that feeds them."""

from coral_mfg.outputs.base import (
    OutputItem,
    OutputThread,
    RunEvent,
    Sink,
    SinkBase,
    StreamEnded,
)
from coral_mfg.outputs.encoder import RecordTarget
from coral_mfg.outputs.event_log import EventLog, Rotation
from coral_mfg.outputs.health import OutputHealth
from coral_mfg.outputs.recording import SideBySideRecorder

__all__ = [
    "EventLog",
    "OutputHealth",
    "OutputItem",
    "OutputThread",
    "RecordTarget",
    "Rotation",
    "RunEvent",
    "SideBySideRecorder",
    "Sink",
    "SinkBase",
    "StreamEnded",
]
