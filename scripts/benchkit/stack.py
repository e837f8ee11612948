"""The portal's processes for a benchmark: their environment, manage.py, gunicorn and a Celery worker in
a work folder, and the PostgreSQL database and Redis queue of one run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench-password-not-secret-1"  # the bench login's, in a database made for the run


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def service_env(*, database_url: str, media_root: str, throttle_uploads: str, **extra: str) -> dict[str, str]:
    """The environment of the portal's processes (and of manage.py): this one's, with the run's own database
    and media folder, development settings with DEBUG off, the per-user upload throttle at
    `throttle_uploads` (the default would measure the throttle, not the pipeline), and `extra`."""
    return {
        **os.environ,
        "SKINPORTAL_ENV": "development",
        "DEBUG": "false",
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": media_root,
        "SKINPORTAL_THROTTLE_UPLOADS": throttle_uploads,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def manage(env: dict[str, str], *args: str, stdin: str | None = None, error: type[BaseException] = RuntimeError) -> str:
    """The standard output of `manage.py ARGS`; `error` (with both outputs) when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise error(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def gunicorn_command(port: int, *, workers: int, threads: int, timeout: int, worker_class: str = "") -> list[str]:
    """gunicorn serving the portal on 127.0.0.1:PORT (its default worker class, sync, unless named)."""
    command = [sys.executable, "-m", "gunicorn", "skinportal.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads)]
    if worker_class:
        command += ["--worker-class", worker_class]
    return [*command, "--timeout", str(timeout)]


def celery_worker_command(queue: str, concurrency: int) -> list[str]:
    """One Celery worker on the run's own queue, quiet, without the cluster chatter."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "skinportal",
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "warning",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


@dataclass
class Stack:
    """Long-running processes of one run, each in its own session (stopped with all it started) and
    logging to NAME.log in `workdir`."""

    env: dict[str, str]
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

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to each process group, up to `grace` seconds for all to exit, then SIGKILL to what is left."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self, chars: int = 2000) -> str:
        """The end of each log, under its name."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.exists())


def recreate_database(url: str, *, drop_only: bool = False) -> None:
    """Drop the PostgreSQL database named in `url` (closing its connections) and create it empty."""
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
