"""Long polling: `?wait=N` on an image or a batch answers as soon as it has settled, instead of
the client polling the whole API."""

from __future__ import annotations

import time
from collections.abc import Callable

# The longest a request may wait for a result (GET /api/v1/images/{id}/?wait=): it holds a web
# thread meanwhile, so it stays short of proxies' usual 60 s read timeout.
MAX_WAIT_SECONDS = 30


def wait_for(settled: Callable[[], bool], *, timeout: float) -> bool:
    """Pause, then call `settled`, until it is true (True) or `timeout` seconds (at most
    MAX_WAIT_SECONDS) pass (False). The caller has just found it false. Pauses are 10 ms at
    first and at most 50 ms: a waiting request sees a result within a few ms of its commit, for
    a few indexed queries per check, far less than a client polling the whole API."""
    deadline = time.monotonic() + min(timeout, MAX_WAIT_SECONDS)
    pause = 0.01
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(pause, left))
        if settled():
            return True
        pause = min(pause * 1.5, 0.05)
    return False
