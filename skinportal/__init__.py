import os

# Every portal process (web, worker, manage.py) imports this package before numpy. They classify
# one image, or a small batch, at a time beside each other on a few cores, and their threads
# are set explicitly (onnxruntime: SKINPORTAL_ORT_THREADS; OpenCV: one). OpenBLAS's own threads
# (numpy's matrix products in the screening) busy-wait after every call: on 2 cores they burned
# about 60 ms of CPU per classified image (71 against 11 CPU-ms, scripts/bench_portal.py numbers
# in docs/deployment.md). Set before numpy loads OpenBLAS; an operator's own value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from skinportal.celery import app as celery_app  # after the environment above

__all__ = ("celery_app",)
