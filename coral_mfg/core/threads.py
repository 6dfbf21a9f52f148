"""The pipeline's threads as the operating system sees them: named, and scheduled as
batch work.

On a CPU station the inference processes keep every core busy. A pipeline thread
that wakes (a reply came, a frame was taken, a result is to be written) would
preempt an invoke half-way and evict its caches, and the station does less
inference for the same work. Scheduled as batch work (Linux ``SCHED_BATCH``) it
waits instead for the running task's time slice to end (at most a scheduler
tick, a few milliseconds: small against a frame's tens); where a core is idle,
as on an Edge TPU station, it runs at once. Its share of the CPU is unchanged.

The names (``infer-0``, ``capture-belt``, ``outputs``) show in ``top -H``,
``ps -L`` and profilers, where every thread would otherwise be ``python``.

The web view's threads go further back (a higher niceness): watching may slow the
web view, never the inspection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

log = logging.getLogger(__name__)

#: The longest thread name Linux keeps (16 bytes with the terminating zero).
NAME_MAX = 15
#: The web view's threads' niceness: on a busy CPU, inference and the recording come first.
NICE = 10


def name_native() -> None:
    """Give the calling thread its Python name in the operating system."""
    name = threading.current_thread().name[:NAME_MAX]
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(path, "w") as comm:  # OSError: not Linux
        comm.write(name)


def as_batch_work() -> None:
    """Name the calling thread and schedule it as batch work (see the module's docstring).

    Call it first thing in the thread. Threads and processes it starts inherit the
    policy: an inference process puts itself back (:func:`as_interactive`).
    """
    name_native()
    if not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # a restricted container: scheduled as before
        log.debug("%s: not scheduled as batch work: %s", threading.current_thread().name, exc)


def as_interactive() -> None:
    """Schedule the calling thread normally again, whatever it inherited."""
    if not hasattr(os, "sched_setscheduler"):
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def yield_to_inspection() -> None:
    """Lower this thread's scheduling priority (Linux schedules threads one by one), so
    watching can slow the web view, never the inspection or the recording."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
