"""Encoding runs below forwarding: the worker threads that decode and encode lower their own priority.

Linux gives each thread its own nice value, and threads inherit it from the thread that starts them,
so x264's and FFmpeg's threads, created when a worker opens its codecs, run at the worker's. When
the cores are busy the scheduler then serves the event loop (forwarding packets every few
milliseconds) first, and the ladder or the recording transcode takes what is left.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10


def run_in_background(increment: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's priority by `increment` (nice, up to 19); nothing where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at the usual priority
        log.debug("could not lower a worker thread's priority: %s", exc)
