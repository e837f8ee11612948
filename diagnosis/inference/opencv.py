"""OpenCV for the portal: imported on first use, set to one thread once per process."""

from __future__ import annotations

import threading
from types import ModuleType

_opencv_lock = threading.Lock()


_opencv_ready = False


def use_one_opencv_thread() -> ModuleType:
    """OpenCV (cv2), imported on first use and set to one thread in every portal process (web
    and worker); every path to OpenCV in the portal comes through here first.

    The unit of parallelism here is the request or the worker process: OpenCV's own pool adds
    more hand-off cost than it saves on images this small (CLAHE of a 224x224 image takes twice
    as long on 2 threads as on 1), and it competes with onnxruntime's threads for the same cores.
    Results are identical whatever the thread count.
    """
    global _opencv_ready
    import cv2

    if not _opencv_ready:
        with _opencv_lock:
            if not _opencv_ready:
                cv2.setNumThreads(1)
                _opencv_ready = True
    return cv2
