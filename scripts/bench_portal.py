#!/usr/bin/env python
"""End-to-end benchmark: gunicorn + one Celery worker on loopback, PostgreSQL and Redis.

    .venv/bin/python scripts/bench_portal.py [--markdown] [--images DIR] [--n 200]
        [--database-url postgres://postgres@127.0.0.1:5432/skinportal_bench]
        [--redis-url redis://127.0.0.1:6379/13] [--threads 2] [--worker-processes 2] [--clients 1,4,16]

What it measures, in one run and with the model of ml/models/CURRENT (or SKINPORTAL_MODEL_DIR):

0. raw inference: `python -m ml bench --threads T` (its onnxruntime fp32 batch-32 images/s);
1. batch: N images in one ZIP through POST /api/v1/batches/, timed from the request until
   GET /api/v1/batches/{id}/?wait=30 says finished: end-to-end images/s and its ratio to (0);
   then the same images classified again by the worker alone (`manage.py reclassify`, timed by
   the worker's claim and finish times). Repeated --batch-repeats times (3); the median run is
   reported, with every run's rate, because two shared cores make single runs vary by +-10 %;
2. single uploads: POST /api/v1/images/ then GET /api/v1/images/{id}/?wait=30 (answered when
   the classification is stored), at 1, 4 and 16 concurrent clients: latency p50 / p95;
3. where the CPU went: seconds of each part of the stack (web, worker, PostgreSQL, Redis, this
   client) during (1) and per upload in (2), read from /proc.

It creates (and afterwards drops) the database named in --database-url, uses its own Redis
queue, starts gunicorn (--web-workers processes x --web-threads threads) and one worker
(`celery -A skinportal worker --concurrency P`, SKINPORTAL_ORT_THREADS=T/P), and kills them at
the end. Run it on a quiet machine: it warns when `ml train` is running or the load is high.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "ham10000" / "images"
PASSWORD = "bench-password-not-secret-1"


# ------------------------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def load_images(folder: Path | None, n: int) -> tuple[list[tuple[str, bytes]], str]:
    if folder and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if len(files) >= n:
            return [(p.name, p.read_bytes()) for p in files], f"{n} files of {folder}"
    sys.path.insert(0, str(REPO_ROOT))
    from ml.bench import synthetic_jpegs

    return synthetic_jpegs(n), f"{n} synthetic 600x450 JPEGs (no image folder found)"


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data, content_type in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class Api:
    """A keep-alive HTTP client for one thread."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict]:
        headers = {"Accept": "application/json", "Host": "127.0.0.1"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return response.status, {"raw": raw[:500].decode(errors="replace")}

    def json(self, method: str, path: str, data: dict | None = None, expect: int = 200) -> dict:
        body = json.dumps(data).encode() if data is not None else None
        status, payload = self.request(method, path, body, "application/json" if body else "")
        if status != expect:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {payload}")
        return payload


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return [int(x) for x in out.split()]


def _process_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) of one process, plus its waited-for children when `reaped`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False).stdout
    return [int(x) for x in out.split()]


def cpu_snapshot(web_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of each part of the stack. A process tree counts its exited children
    (PostgreSQL backends that closed, gunicorn workers that were replaced) through its root."""
    postgres = pids_named("postgres")
    postmaster = min(postgres, default=0)
    times = os.times()
    return {
        "gunicorn (web)": sum(_process_cpu(p, reaped=p == web_pid) for p in [web_pid, *descendants(web_pid)]),
        "celery worker": sum(_process_cpu(p, reaped=p == worker_pid) for p in [worker_pid, *descendants(worker_pid)]),
        "PostgreSQL": sum(_process_cpu(p, reaped=p == postmaster) for p in postgres),
        "Redis": sum(_process_cpu(p) for p in pids_named("redis-server")),
        "this client": times.user + times.system,
    }


def machine_quiet() -> tuple[bool, str]:
    load1 = os.getloadavg()[0]
    training = subprocess.run(["pgrep", "-f", "ml train"], capture_output=True, text=True, check=False).stdout.split()
    training = [pid for pid in training if int(pid) != os.getpid()]
    quiet = load1 < 0.7 and not training
    return quiet, f"1-minute load {load1:.2f}" + (
        f", `ml train` running (pid {', '.join(training)})" if training else ""
    )


# ------------------------------------------------------------------------------------ services


@dataclass
class Stack:
    env: dict[str, str]
    port: int
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        path = self.workdir / f"{name}.log"
        handle = path.open("wb")
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        self.logs.append(path)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in self.logs if p.exists())


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def recreate_database(url: str, *, drop_only: bool = False) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"database name {name!r}: use letters, digits and _ only")
    admin = urlunsplit(
        (
            parts.scheme.replace("postgres", "postgresql", 1) if parts.scheme == "postgres" else parts.scheme,
            parts.netloc,
            "/postgres",
            "",
            "",
        )
    )
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def forget_queue(redis_url: str, queue: str) -> None:
    """Remove this run's queue and kombu's bindings for it from Redis."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()
    except Exception as exc:  # noqa: BLE001 - cleanup only
        log(f"could not clean up queue {queue}: {exc}")


def raw_throughput(threads: int, images: Path | None) -> tuple[float, str]:
    """onnxruntime fp32 batch-32 images/s from `python -m ml bench`, and its full table."""
    args = [sys.executable, "-m", "ml", "bench", "--threads", str(threads), "--n", "64", "--repeats", "30"]
    if images and images.is_dir():
        args += ["--images", str(images)]
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"python -m ml bench failed:\n{result.stdout}\n{result.stderr}")
    for line in result.stdout.splitlines():
        if line.startswith("onnxruntime fp32"):
            cells = re.split(r"\s{2,}", line.strip())
            return float(cells[3]), result.stdout
    raise RuntimeError(f"no onnxruntime fp32 row in:\n{result.stdout}")


# ------------------------------------------------------------------------------------ measurements


def wait_ready(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = Api(port).request("GET", "/readyz")
            if status == 200:
                return
            last = str(body)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"/readyz never answered 200: {last}")


def upload_and_wait(api: Api, lesion_id: int, name: str, data: bytes) -> float:
    """Seconds from the upload until its classification is stored, the way an integrator waits:
    one GET /api/v1/images/{id}/?wait=30 instead of a polling loop."""
    body, content_type = multipart({"lesion": str(lesion_id)}, [("image", name, data, "image/jpeg")])
    started = time.perf_counter()
    status, payload = api.request("POST", "/api/v1/images/", body, content_type)
    if status != 201:
        raise RuntimeError(f"upload: HTTP {status}: {payload}")
    while payload.get("classification") is None or payload["classification"]["status"] in ("pending", "running"):
        status, payload = api.request("GET", f"/api/v1/images/{payload['id']}/?wait=30")
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"image {payload.get('id')} not classified within 120 s")
    if payload["classification"]["status"] != "succeeded":
        raise RuntimeError(f"classification failed: {payload['classification']['error_message']}")
    return time.perf_counter() - started


def batch_run(api: Api, lesion_id: int, images: list[tuple[str, bytes]]) -> tuple[float, float, int]:
    """(seconds from POST to finished, seconds the POST itself took, the batch's id)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in images:
            zf.writestr(name, data)
    body, content_type = multipart(
        {"lesion": str(lesion_id)}, [("archive", "batch.zip", buffer.getvalue(), "application/zip")]
    )
    started = time.perf_counter()
    status, payload = api.request("POST", "/api/v1/batches/", body, content_type)
    posted = time.perf_counter() - started
    if status != 201:
        raise RuntimeError(f"batch: HTTP {status}: {str(payload)[:500]}")
    if payload["rejected"]:
        raise RuntimeError(f"batch: files refused: {payload['rejected'][:3]}")
    batch_id = payload["id"]
    while payload["status"] != "finished":
        status, payload = api.request("GET", f"/api/v1/batches/{batch_id}/?wait=30")
        if time.perf_counter() - started > 600:
            raise RuntimeError("batch not finished within 600 s")
    elapsed = time.perf_counter() - started
    if payload["progress"]["failed"]:
        raise RuntimeError(f"batch: {payload['progress']['failed']} classifications failed")
    return elapsed, posted, batch_id


def reclassify_run(env: dict[str, str], database_url: str, batch_id: int) -> tuple[float, int]:
    """The batch's images classified again with nothing else running: their results are deleted
    and `manage.py reclassify` queues them. Returns (seconds from the first claim to the last
    result, by the worker's own timestamps, images): the worker node's own rate, as when web
    nodes and the database run on other machines."""
    import psycopg

    url = database_url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM diagnosis_lesionimage WHERE batch_id = %s", [batch_id])]
        conn.execute("DELETE FROM diagnosis_classification WHERE image_id = ANY(%s)", [ids])
        manage(env, "reclassify")
        deadline = time.monotonic() + 300
        while True:
            (done,) = conn.execute(
                "SELECT count(*) FROM diagnosis_classification WHERE image_id = ANY(%s) AND status = 'succeeded'",
                [ids],
            ).fetchone()
            if done == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"reclassify: {done} of {len(ids)} images classified within 300 s")
            time.sleep(0.1)
        (span,) = conn.execute(
            "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) FROM diagnosis_classification "
            "WHERE image_id = ANY(%s)",
            [ids],
        ).fetchone()
    return float(span), len(ids)


def latency_level(
    port: int, token: str, lesion_id: int, images: list[tuple[str, bytes]], clients: int, requests: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        api = Api(port, token)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            name, data = images[i % len(images)]
            try:
                seconds = upload_and_wait(api, lesion_id, name, data)
            except Exception as exc:  # noqa: BLE001 - reported after the threads end
                with lock:
                    errors.append(exc)
                return
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed; first: {errors[0]}")
    return latencies, len(latencies) / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------ report


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


# ------------------------------------------------------------------------------------ phases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/skinportal_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEG/PNG test images")
    parser.add_argument("--n", type=int, default=200, help="images in the batch (default 200)")
    parser.add_argument("--batch-repeats", type=int, default=3, help="batch runs; the median is reported (default 3)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients for the latency test")
    parser.add_argument(
        "--requests", type=int, default=40, help="single uploads per client level (at least 4 per client)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="cores for onnxruntime: ml bench's threads; the worker's processes x threads",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="celery --concurrency (default: the cores, as in production); each gets threads / processes",
    )
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--skip-raw", action="store_true", help="do not run python -m ml bench (no ratio)")
    parser.add_argument("--require-quiet", action="store_true", help="refuse to run on a busy machine")
    parser.add_argument("--keep", action="store_true", help="keep the database and the work folder")
    parser.add_argument("--markdown", action="store_true")
    return parser.parse_args(argv)


def stack_env(args: argparse.Namespace, *, queue: str, worker_threads: int, workdir: Path) -> dict[str, str]:
    """The environment of every process of the stack (and of manage.py)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skinportal.settings",
        "SKINPORTAL_ENV": "development",
        "DEBUG": "false",
        "DATABASE_URL": args.database_url,
        "DB_CONN_MAX_AGE": "60",
        "CELERY_BROKER_URL": args.redis_url,
        "CELERY_QUEUE": queue,
        "CELERY_WORKER_CONCURRENCY": str(args.worker_processes),
        "SKINPORTAL_ORT_THREADS": str(worker_threads),
        "MEDIA_ROOT": str(workdir / "media"),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # One benchmark user uploads far faster than a clinic: the per-user upload throttle
        # (60/minute by default) would measure the throttle, not the pipeline.
        "SKINPORTAL_THROTTLE_UPLOADS": "1000000/minute",
        "SKINPORTAL_THROTTLE_TOKEN": "1000/minute",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    return env


def start_services(stack: Stack, args: argparse.Namespace, *, queue: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Migrate, create the bench login, start gunicorn and one worker; (web, worker) once ready."""
    manage(stack.env, "migrate", "--noinput")
    manage(stack.env, "createclinician", "--org", "Bench Clinic", "--username", "bench", "--password", PASSWORD)
    web = stack.start(
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "skinportal.wsgi",
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            str(args.web_workers),
            "--threads",
            str(args.web_threads),
            "--worker-class",
            "gthread",
            "--timeout",
            "300",
        ],
    )
    worker = stack.start(
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "skinportal",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            str(args.worker_processes),
            "--loglevel",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
    )
    wait_ready(args.port)
    return web, worker


def seed_lesion(port: int) -> tuple[str, Api, int]:
    """A token for the bench login, its client, and a lesion to upload to."""
    token = Api(port).json("POST", "/api/v1/auth/token/", {"username": "bench", "password": PASSWORD})["token"]
    api = Api(port, token)
    patient = api.json("POST", "/api/v1/patients/", {"external_id": "B-1", "name": "Bench Patient"}, expect=201)
    return token, api, new_lesion(api, patient["id"], "bench")


def new_lesion(api: Api, patient_id: int, label: str) -> int:
    """A fresh lesion: the portal refuses a file already on a lesion (409 duplicate_image), so
    each phase that uploads the same images again gets its own."""
    lesion = api.json("POST", "/api/v1/lesions/", {"patient": patient_id, "body_site": "back", "label": label},
                      expect=201)
    return lesion["id"]


@dataclass(frozen=True)
class BatchFigures:
    seconds: float  # the median run, POST to last result
    post_seconds: float  # its POST alone
    cpu: dict[str, float]  # its CPU seconds by part of the stack
    rates: list[float]  # every run's end-to-end images/s
    reclassify_rate: float  # the median worker-alone images/s


def measure_batches(
    api: Api, lesion_id: int, images: list[tuple[str, bytes]], *, env: dict[str, str], args, web, worker
) -> BatchFigures:
    runs = []  # one per repeat: (seconds, POST seconds, CPU by part, worker-alone images/s)
    for repeat in range(1, args.batch_repeats + 1):
        log(f"batch of {len(images)} images ({repeat}/{args.batch_repeats}) ...")
        cpu_before = cpu_snapshot(web.pid, worker.pid)
        seconds, posted, batch_id = batch_run(api, lesion_id, images)
        cpu_after = cpu_snapshot(web.pid, worker.pid)
        log("  the same images again, worker only (manage.py reclassify) ...")
        reclassify_seconds, reclassified = reclassify_run(env, args.database_url, batch_id)
        runs.append(
            (
                seconds,
                posted,
                {part: cpu_after[part] - cpu_before[part] for part in cpu_after},
                reclassified / reclassify_seconds,
            )
        )
    # The median run by end-to-end time is reported in full; every run's rate is listed.
    seconds, post_seconds, cpu, _ = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return BatchFigures(
        seconds=seconds,
        post_seconds=post_seconds,
        cpu=cpu,
        rates=[len(images) / run[0] for run in runs],
        reclassify_rate=sorted(run[3] for run in runs)[len(runs) // 2],
    )


def measure_latency(
    args, token: str, lesion_id: int, images: list[tuple[str, bytes]], clients: list[int], *, web, worker
) -> list[tuple]:
    """Per client level: (clients, uploads, p50 s, p95 s, uploads/s, CPU ms per upload by part)."""
    levels = []
    api = Api(args.port, token)
    patient_id = api.json("GET", f"/api/v1/lesions/{lesion_id}/")["patient"]
    for n_clients in clients:
        requests = max(args.requests, 4 * n_clients)
        if requests > len(images):
            raise SystemExit(f"{requests} single uploads need as many distinct images; --n is {len(images)}")
        log(f"single uploads: {n_clients} client(s), {requests} uploads ...")
        level_lesion = new_lesion(api, patient_id, f"bench, {n_clients} client(s)")
        before = cpu_snapshot(web.pid, worker.pid)
        latencies, rate = latency_level(args.port, token, level_lesion, images, n_clients, requests)
        after = cpu_snapshot(web.pid, worker.pid)
        per_upload = {part: 1e3 * (after[part] - before[part]) / len(latencies) for part in after}
        levels.append(
            (n_clients, len(latencies), percentile(latencies, 50), percentile(latencies, 95), rate, per_upload)
        )
    return levels


def measure_memory(web, worker) -> tuple[float, float, list[float]]:
    """(worker RSS in all, its largest pool process, each gunicorn worker), MiB."""
    worker_rss = rss_mib(worker.pid) + sum(rss_mib(c) for c in children(worker.pid))
    worker_child_rss = max((rss_mib(c) for c in children(worker.pid)), default=0.0)
    return worker_rss, worker_child_rss, [rss_mib(c) for c in children(web.pid)]


def batch_rows(args, *, n_images: int, raw: float | None, batch: BatchFigures) -> list[list[str]]:
    batch_rate = n_images / batch.seconds
    return [
        ["images in one ZIP", str(n_images)],
        ["POST /api/v1/batches/ (store + queue), s", f"{batch.post_seconds:.2f}"],
        ["POST to last result, s", f"{batch.seconds:.2f}"],
        ["end-to-end images/s (median run)", f"{batch_rate:.1f}"],
        ["end-to-end images/s, every run", ", ".join(f"{rate:.1f}" for rate in batch.rates)],
        [
            f"raw `python -m ml bench` fp32 batch-32 images/s ({args.threads} threads)",
            f"{raw:.1f}" if raw else "skipped",
        ],
        ["end-to-end / raw (target >= 70%)", f"{100 * batch_rate / raw:.0f}%" if raw else "n/a"],
        ["worker alone (the same images, manage.py reclassify), images/s (median)", f"{batch.reclassify_rate:.1f}"],
        ["worker alone / raw", f"{100 * batch.reclassify_rate / raw:.0f}%" if raw else "n/a"],
    ]


def cpu_rows(*, n_images: int, batch: BatchFigures, cores: int) -> list[list[str]]:
    capacity = batch.seconds * cores
    rows = [
        [part, f"{seconds:.2f}", f"{1e3 * seconds / n_images:.2f}", f"{100 * seconds / capacity:.0f}%"]
        for part, seconds in batch.cpu.items()
    ]
    idle = capacity - sum(batch.cpu.values())
    rows.append(["idle", f"{idle:.2f}", f"{1e3 * idle / n_images:.2f}", f"{100 * idle / capacity:.0f}%"])
    return rows


def latency_rows(levels: list[tuple]) -> list[list[str]]:
    return [
        [
            str(c),
            str(n),
            f"{p50 * 1e3:.0f}",
            f"{p95 * 1e3:.0f}",
            f"{rate:.1f}",
            f"{cpu['gunicorn (web)']:.1f}",
            f"{cpu['celery worker']:.1f}",
            f"{cpu['PostgreSQL']:.1f}",
        ]
        for c, n, p50, p95, rate, cpu in levels
    ]


def memory_rows(args, memory: tuple[float, float, list[float]]) -> list[list[str]]:
    worker_rss, worker_child_rss, web_rss = memory
    return [
        [f"Celery worker: main + {args.worker_processes} pool process(es), model loaded", f"{worker_rss:.0f}"],
        ["  of which each pool process (its onnxruntime session), at most", f"{worker_child_rss:.0f}"],
        ["gunicorn worker (each; never loads the model)", f"{max(web_rss, default=0):.0f}"],
    ]


def report(
    args,
    argv: list[str] | None,
    *,
    n_images: int,
    raw: float | None,
    batch: BatchFigures,
    levels: list[tuple],
    memory: tuple[float, float, list[float]],
    model_version: str,
    worker_threads: int,
    source: str,
    load_text: str,
) -> str:
    cores = len(os.sched_getaffinity(0))
    latency_headers = [
        "clients",
        "uploads",
        "p50 (ms)",
        "p95 (ms)",
        "uploads/s",
        "web CPU ms/upload",
        "worker CPU ms/upload",
        "PostgreSQL CPU ms/upload",
    ]
    out = [
        "(a) batch through the API",
        table(["measurement", "value"], batch_rows(args, n_images=n_images, raw=raw, batch=batch), args.markdown),
        "",
        f"Where the CPU went during the median run of (a): {cores} cores x {batch.seconds:.2f} s",
        table(
            ["part", "CPU s", "CPU ms per image", "share"],
            cpu_rows(n_images=n_images, batch=batch, cores=cores),
            args.markdown,
        ),
        "",
        "(b) single upload -> stored classification, through the API (target p50 <= 100 ms at 1 client)",
        table(latency_headers, latency_rows(levels), args.markdown),
        "",
        "Memory (RSS, MiB)",
        table(["process", "MiB"], memory_rows(args, memory), args.markdown),
        "",
        (
            f"Model {model_version}; gunicorn {args.web_workers} x {args.web_threads} gthread, one Celery worker "
            f"(concurrency {args.worker_processes}, prefetch 1, acks_late, {worker_threads} onnxruntime thread(s) "
            "each); PostgreSQL and Redis on "
            f"loopback; {source}; {cores} cores, {platform.processor() or platform.machine()}; before the run: "
            f"{load_text}; command: {' '.join(['scripts/bench_portal.py', *(argv if argv is not None else sys.argv[1:])])}"
        ),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet, load_text = machine_quiet()
    if not quiet:
        log(f"WARNING: the machine is busy ({load_text}); figures will be low")
        if args.require_quiet:
            return 2
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    images, source = load_images(args.images, max(args.n, 64))
    batch_images = images[: args.n]

    sys.path.insert(0, str(REPO_ROOT))
    from ml.manifest import default_model_dir, load_manifest

    model_version = load_manifest(default_model_dir())["version"]
    raw = None
    if not args.skip_raw:
        log(f"raw inference: python -m ml bench --threads {args.threads} ...")
        raw, _ = raw_throughput(args.threads, args.images)

    worker_threads = max(1, args.threads // args.worker_processes)
    workdir = Path(tempfile.mkdtemp(prefix="skinportal-bench-"))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = stack_env(args, queue=queue, worker_threads=worker_threads, workdir=workdir)
    stack = Stack(env=env, port=args.port, workdir=workdir)
    log(f"database {args.database_url}, queue {queue} on {args.redis_url}, work folder {workdir}")
    recreate_database(args.database_url)
    try:
        web, worker = start_services(stack, args, queue=queue)
        token, api, lesion_id = seed_lesion(args.port)
        log("warm-up: 5 single uploads and a 32-image batch")
        for name, data in images[:5]:
            upload_and_wait(api, lesion_id, name, data)
        batch_run(api, lesion_id, images[:32])
        batch = measure_batches(api, lesion_id, batch_images, env=env, args=args, web=web, worker=worker)
        levels = measure_latency(args, token, lesion_id, images, clients, web=web, worker=worker)
        memory = measure_memory(web, worker)
    except BaseException:
        log("failed; service logs:\n" + stack.tail())
        raise
    finally:
        stack.stop()
        forget_queue(args.redis_url, queue)
        if not args.keep:
            recreate_database(args.database_url, drop_only=True)
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        report(
            args,
            argv,
            n_images=len(batch_images),
            raw=raw,
            batch=batch,
            levels=levels,
            memory=memory,
            model_version=model_version,
            worker_threads=worker_threads,
            source=source,
            load_text=load_text,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
