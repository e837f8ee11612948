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
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchkit.api import Api, wait_ready
from benchkit.procs import children, cpu_snapshot, machine_quiet, rss_mib
from benchkit.report import percentile, table
from benchkit.stack import (
    PASSWORD,
    REPO_ROOT,
    Stack,
    celery_worker_command,
    forget_queue,
    gunicorn_command,
    log,
    manage,
    recreate_database,
    service_env,
)
from benchkit.workload import batch_run, latency_level, new_lesion, reclassify_run, upload_and_wait

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "ham10000" / "images"


# ------------------------------------------------------------------------------------ inputs


def load_images(folder: Path | None, n: int) -> tuple[list[tuple[str, bytes]], str]:
    if folder and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if len(files) >= n:
            return [(p.name, p.read_bytes()) for p in files], f"{n} files of {folder}"
    sys.path.insert(0, str(REPO_ROOT))
    from ml.bench import synthetic_jpegs

    return synthetic_jpegs(n), f"{n} synthetic 600x450 JPEGs (no image folder found)"


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
    env = service_env(
        database_url=args.database_url,
        media_root=str(workdir / "media"),
        # One benchmark user uploads far faster than a clinic: the per-user upload throttle
        # (60/minute by default) would measure the throttle, not the pipeline.
        throttle_uploads="1000000/minute",
        DJANGO_SETTINGS_MODULE="skinportal.settings",
        DB_CONN_MAX_AGE="60",
        CELERY_BROKER_URL=args.redis_url,
        CELERY_QUEUE=queue,
        CELERY_WORKER_CONCURRENCY=str(args.worker_processes),
        SKINPORTAL_ORT_THREADS=str(worker_threads),
        LOG_LEVEL="WARNING",
        SKINPORTAL_THROTTLE_TOKEN="1000/minute",
    )
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    return env


def start_services(stack: Stack, args: argparse.Namespace, *, queue: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Migrate, create the bench login, start gunicorn and one worker; (web, worker) once ready."""
    manage(stack.env, "migrate", "--noinput")
    manage(stack.env, "createclinician", "--org", "Bench Clinic", "--username", "bench", "--password", PASSWORD)
    web = stack.start(
        "gunicorn",
        gunicorn_command(
            args.port, workers=args.web_workers, threads=args.web_threads, timeout=300, worker_class="gthread"
        ),
    )
    worker = stack.start("worker", celery_worker_command(queue, args.worker_processes))
    wait_ready(args.port)
    return web, worker


def seed_lesion(port: int) -> tuple[str, Api, int]:
    """A token for the bench login, its client, and a lesion to upload to."""
    token = Api(port).json("POST", "/api/v1/auth/token/", {"username": "bench", "password": PASSWORD})["token"]
    api = Api(port, token)
    patient = api.json("POST", "/api/v1/patients/", {"external_id": "B-1", "name": "Bench Patient"}, expect=201)
    return token, api, new_lesion(api, patient["id"], "bench")


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
    stack = Stack(env=env, workdir=workdir)
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
