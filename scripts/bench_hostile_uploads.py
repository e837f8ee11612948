#!/usr/bin/env python
"""Hostile uploads against a live server: what each costs the serving process (issue 13).

    .venv/bin/python scripts/bench_hostile_uploads.py [--eager] [--only NAME,...]

Starts gunicorn (one sync worker, as deployed) on loopback over a fresh SQLite database and media
folder, signs in an API client, and sends each payload through the real upload routes
(POST /api/v1/batches/ for ZIPs and several files, POST /api/v1/images/ for one image). For each
it prints the outcome (stored, or refused with the message), the seconds until the answer, and
the serving process's peak RSS increase: its VmHWM (reset before each request through
/proc/PID/clear_refs) minus its RSS before the request.

By default classification is queued (an in-process memory broker that nothing consumes): the
serving process does what it does in production, where a Celery worker classifies. --eager
classifies in the request, as the embedded default (`make run`) does.

The speed and memory goals of issue 13 live here, not in timed tests: every upload answered
within 5 s and under 300 MB of peak RSS increase on the 2-core machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchkit.api import OCTET_STREAM, Api, decode, free_port, multipart
from benchkit.procs import PeakRss, children
from benchkit.report import table
from benchkit.stack import PASSWORD, REPO_ROOT, Stack, gunicorn_command, log, manage, service_env

TARGET_SECONDS, TARGET_MB = 5.0, 300.0

sys.path.insert(0, str(REPO_ROOT))  # ml.bench and tests.portal.hostile_corpus build the payloads


# --- Payloads: built in code, with the hostile corpus's builders ------------------------------


@dataclass
class Payload:
    name: str
    route: str  # "batch-zip", "batch-files" or "image"
    files: list[tuple[str, bytes]]  # (file name, bytes); one ZIP for "batch-zip"

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)


def _normal_jpegs(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Dermatoscopy-sized JPEGs: 600x450, the size of the original HAM10000 images."""
    from ml.bench import synthetic_jpegs

    return synthetic_jpegs(n, seed=seed)


def _phone_jpeg(seed: int) -> bytes:
    """A smooth 12 MP photograph (4000x3000), as a phone saves it: a few MB."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    big = cv2.resize(small, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big.astype(np.int16) + rng.integers(-6, 7, big.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _noisy_progressive_jpeg() -> bytes:
    """Noise, progressive, quality 95: about 8 MB for 7.7 MP, the slowest JPEG to decode per byte."""
    import cv2
    import numpy as np

    noise = np.random.default_rng(5).integers(0, 256, (2400, 3200, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return data.tobytes()


def payloads() -> list[Payload]:
    from tests.portal.hostile_corpus import jpeg_exif_rotated, jpeg_scan_bomb, png_of_zeros, zip_of, zip_overlapping

    log("building the payloads")
    png_6000 = png_of_zeros(6000, 6000, level=9)  # the issue's: about 105 KB each
    png_5000 = png_of_zeros(5000, 5000, level=9)  # 25 MP: at the per-image cap
    png_5000_deep = png_of_zeros(5000, 5000, depth=16, colour_type=6, level=9)  # 200 MB of image data
    phone = [_phone_jpeg(seed) for seed in range(2)]
    noisy = _noisy_progressive_jpeg()
    return [
        Payload(
            "ZIP of 60 zero-filled 6000x6000 PNGs (deflated)",
            "batch-zip",
            [("bombs.zip", zip_of([(f"{i:02d}.png", png_6000) for i in range(60)], deflated=True))],
        ),
        Payload(
            "ZIP of 60 zero-filled 6000x6000 PNGs (stored)",
            "batch-zip",
            [("bombs.zip", zip_of([(f"{i:02d}.png", png_6000) for i in range(60)], deflated=False))],
        ),
        Payload(
            "ZIP of 60 zero-filled 5000x5000 PNGs (stored, at the pixel cap)",
            "batch-zip",
            [("bombs.zip", zip_of([(f"{i:02d}.png", png_5000) for i in range(60)], deflated=False))],
        ),
        Payload(
            "ZIP of 20 zero-filled 5000x5000 16-bit RGBA PNGs (stored)",
            "batch-zip",
            [("deep.zip", zip_of([(f"{i:02d}.png", png_5000_deep) for i in range(20)], deflated=False))],
        ),
        Payload(
            "20 zero-filled 5000x5000 PNGs as files", "batch-files", [(f"{i:02d}.png", png_5000) for i in range(20)]
        ),
        Payload(
            "ZIP of 500 overlapping entries -> one 10 MiB member",
            "batch-zip",
            [("overlap.zip", zip_overlapping(500, 10 * 1024 * 1024))],
        ),
        Payload(
            "ZIP of 5 noisy progressive 8 MB JPEGs (the file budget's slowest)",
            "batch-zip",
            [("noise.zip", zip_of([(f"{i}.jpg", noisy) for i in range(5)], deflated=False))],
        ),
        Payload(  # each budget nearly spent: only the clock stops the sum
            "ZIP mixing the slowest of each budget: 4 noisy JPEGs, 2 PNGs at the cap, 150 small JPEGs",
            "batch-zip",
            [
                (
                    "mixed.zip",
                    zip_of(
                        [(f"noise-{i}.jpg", noisy) for i in range(4)]
                        + [(f"zeros-{i}.png", png_5000) for i in range(2)]
                        + _normal_jpegs(150),
                        deflated=False,
                    ),
                )
            ],
        ),
        Payload(
            "progressive JPEG 5000x5000 with 100,000 scans",
            "image",
            [("scans.jpg", jpeg_scan_bomb(5000, 5000, 100_000))],
        ),
        Payload("JPEG 3000x2000, EXIF orientation 6", "image", [("phone.jpg", jpeg_exif_rotated(3000, 2000))]),
        Payload(
            "normal ZIP of 20 dermatoscopy JPEGs",
            "batch-zip",
            [("visit.zip", zip_of(_normal_jpegs(20), deflated=True))],
        ),
        Payload(
            "normal ZIP of 16 phone photos (12 MP JPEGs)",
            "batch-zip",
            [("phone.zip", zip_of([(f"IMG_{i:04d}.jpg", phone[i % 2]) for i in range(16)], deflated=True))],
        ),
    ]


# --- The server -------------------------------------------------------------------------------


SETUP = f"PASSWORD = {PASSWORD!r}\n" + (
    """
from django.contrib.auth.models import User
from diagnosis import services
from diagnosis.models import Organisation, Role
org = Organisation.objects.create(name="Bench clinic")
user = User.objects.create_user(username="bench", password=PASSWORD)
services.accounts.membership_set(user=user, organisation=org, role=Role.ADMIN)
patient = services.patients.patient_create(user=user, organisation=org, external_id="B-1", name="Bench")
lesion = services.patients.lesion_create(user=user, patient=patient, body_site="back", label="Back")
token = services.accounts.api_token_create(user=user)
print("BENCH", token.key, lesion.pk)
"""
)


# A Celery worker's share: one micro-batch (SKINPORTAL_MICRO_BATCH images) of the phone photos
# stored above, classified as the task does, in a process that loaded the model first.
WORKER = """
import time
from pathlib import Path
from django.conf import settings
from diagnosis import inference
from diagnosis.models import LesionImage
from diagnosis.services.classification import classification_run

def kb(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])

inference.warm_up()
ids = list(LesionImage.objects.filter(width=4000).order_by("id").values_list("id", flat=True))
ids = ids[: settings.SKINPORTAL_MICRO_BATCH]
Path("/proc/self/clear_refs").write_text("5")
before = kb("VmRSS")
started = time.perf_counter()
rows = classification_run(image_ids=ids)
seconds = time.perf_counter() - started
print("WORKER", len(ids), sum(row.status == "succeeded" for row in rows), seconds, (kb("VmHWM") - before) / 1024)
"""


def worker_row(env: dict[str, str]) -> str:
    line = next(
        (l for l in manage(env, "shell", stdin=WORKER, error=SystemExit).splitlines() if l.startswith("WORKER ")), ""
    )
    if not line:
        return "worker: no line from the micro-batch run"
    _, n, succeeded, seconds, peak = line.split()
    return (
        f"| worker: one micro-batch of {n} stored 12 MP phone photos ({succeeded} classified) | | "
        f"{float(seconds):.2f} s | {float(peak):.0f} MB |"
    )


@dataclass
class Result:
    payload: Payload
    status: int
    outcome: str
    seconds: float
    peak_mb: float


def _outcome(status: int, body: dict) -> str:
    if status in (200, 201):
        if "images" in body:
            refused = len(body.get("rejected") or [])
            return f"stored {len(body['images'])}" + (f", {refused} refused" if refused else "")
        size = f"{body.get('width')}x{body.get('height')} {body.get('source_format', '')}"
        return f"stored ({size}, {body.get('size_bytes', '?')} bytes)"
    error = body.get("error", {})
    message = error.get("message") or str(body)[:200]
    fields = error.get("fields") or {}
    details = next(iter(fields.values()), [])
    if isinstance(details, list) and details:
        message = details[0] if len(details) == 1 else f"{details[0]} (+{len(details) - 1} more)"
    return f"refused {status}: {message}"


def send(port: int, token: str, lesion_id: int, payload: Payload) -> tuple[int, dict, float]:
    if payload.route == "image":
        path, field, files = "/api/v1/images/", "image", payload.files[:1]
    elif payload.route == "batch-zip":
        path, field, files = "/api/v1/batches/", "archive", payload.files[:1]
    else:
        path, field, files = "/api/v1/batches/", "images", payload.files
    body, content_type = multipart(
        {"lesion": str(lesion_id)}, [(field, name, data, OCTET_STREAM) for name, data in files]
    )
    # A connection of its own, and no retry: a refused or killed upload must not be sent twice.
    api = Api(port, token, retry=False)
    started = time.perf_counter()
    status, raw = api.send("POST", path, body, content_type)
    seconds = time.perf_counter() - started
    api.close()
    return status, decode(raw), seconds


def run(eager: bool, only: list[str], timeout: int) -> tuple[list[Result], str]:
    todo = [p for p in payloads() if not only or any(o.lower() in p.name.lower() for o in only)]
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        env = service_env(
            database_url=f"sqlite:///{tmp}/db.sqlite3", media_root=f"{tmp}/media", throttle_uploads="1000/minute"
        )
        if eager:
            env.pop("CELERY_BROKER_URL", None)
            env["CELERY_TASK_ALWAYS_EAGER"] = "true"
        else:  # queued in the web process's memory, never consumed: the worker's work is not measured here
            env["CELERY_BROKER_URL"] = "memory://localhost/"
            env["CELERY_TASK_ALWAYS_EAGER"] = "false"
        log("migrating a fresh database")
        manage(env, "migrate", "--noinput", error=SystemExit)
        line = next(
            l for l in manage(env, "shell", stdin=SETUP, error=SystemExit).splitlines() if l.startswith("BENCH ")
        )
        _, token, lesion_id = line.split()
        port = free_port()
        log(f"starting gunicorn on port {port}")
        stack = Stack(env=env, workdir=Path(tmp))
        server = stack.start("gunicorn", gunicorn_command(port, workers=1, threads=1, timeout=timeout))
        results: list[Result] = []
        try:
            worker = _wait_for_worker(server.pid, port)
            warm_ups = 0
            _warm_up(port, token, int(lesion_id), round_=warm_ups)
            for payload in todo:
                results.append(_measure(worker, port, token, int(lesion_id), payload))
                log(
                    f"{payload.name}: {results[-1].outcome[:100]} in {results[-1].seconds:.2f} s, "
                    f"+{results[-1].peak_mb:.0f} MB"
                )
                if server.poll() is not None:
                    log("the server stopped: see its log")
                    break
                if worker not in children(server.pid):  # killed (timeout): gunicorn starts another
                    log("the server worker was killed; waiting for its replacement")
                    time.sleep(1)
                    worker = _wait_for_worker(server.pid, port)
                    warm_ups += 1
                    _warm_up(port, token, int(lesion_id), round_=warm_ups)
        finally:
            stack.stop(grace=20)
            log_tail = stack.tail()
            if "Traceback" in log_tail or "WORKER TIMEOUT" in log_tail:
                log("gunicorn log:\n" + log_tail)
        log("classifying one micro-batch as a worker does")
        return results, worker_row(env)


def _wait_for_worker(master: int, port: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = children(master)
        if workers:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return workers[0]
            except OSError:
                pass
        time.sleep(0.2)
    raise SystemExit("gunicorn did not start (see its log)")


def _warm_up(port: int, token: str, lesion_id: int, *, round_: int) -> None:
    """One small upload first, so the imports (OpenCV, NumPy) are in the baseline. Each round
    sends new images: the portal refuses a file already stored on the lesion (409)."""
    from tests.portal.hostile_corpus import zip_of

    small = _normal_jpegs(2, seed=1000 + round_)  # none of them among the payloads' images (seed 0)
    for payload in (
        Payload("warm-up", "image", small[:1]),
        Payload("warm-up", "batch-zip", [("w.zip", zip_of(small, deflated=True))]),
    ):
        status, body, _ = send(port, token, lesion_id, payload)
        if status not in (200, 201):
            raise SystemExit(f"warm-up upload failed: {status} {body}")


def _measure(worker: int, port: int, token: str, lesion_id: int, payload: Payload) -> Result:
    with PeakRss(worker) as peak:
        started = time.perf_counter()
        try:
            status, body, seconds = send(port, token, lesion_id, payload)
            outcome = _outcome(status, body)
        except (http.client.HTTPException, ConnectionError) as exc:
            status, seconds = 0, time.perf_counter() - started
            outcome = f"no answer ({type(exc).__name__}): the server worker was killed"
    return Result(payload, status, outcome, seconds, peak.mib)


def _size(n: int) -> str:
    return f"{n / 1024:,.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


def results_table(results: list[Result], eager: bool) -> str:
    rows = []
    for r in results:
        outcome = r.outcome.replace("|", "\\|").replace("\n", " ")
        if len(outcome) > 160:
            outcome = outcome[:157] + "..."
        rows.append([r.payload.name, _size(r.payload.size), outcome, f"{r.seconds:.2f}", f"{r.peak_mb:.0f}"])
    headers = ["payload", "bytes", "outcome", "seconds", "peak RSS increase (MB)"]
    intro = (
        f"Serving process: gunicorn, 1 sync worker; classification "
        f"{'in the request (eager)' if eager else 'queued'}; {os.cpu_count()} cores. "
        f"Goal: under {TARGET_SECONDS:.0f} s and {TARGET_MB:.0f} MB each."
    )
    return "\n".join([intro, "", table(headers, rows, markdown=True, align="lrlrr")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eager", action="store_true", help="classify in the request (the embedded default)")
    parser.add_argument("--only", default="", help="comma-separated fragments of payload names to run")
    parser.add_argument("--timeout", type=int, default=60, help="gunicorn's worker timeout (deployed: 60 s)")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux /proc (clear_refs) to measure peak RSS")
    results, worker = run(args.eager, [o for o in args.only.split(",") if o], args.timeout)
    print(results_table(results, args.eager))
    print()
    print("| classification (worker process) | | seconds | peak RSS increase |")
    print("|---|---|---:|---:|")
    print(worker)
    missed = [r for r in results if r.seconds > TARGET_SECONDS or r.peak_mb > TARGET_MB]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
