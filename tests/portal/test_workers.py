"""Real Celery workers on a real Redis: nothing lost, nothing twice.

These tests start `celery -A skinportal worker` subprocesses against the test database (a file
for SQLite, the test database for PostgreSQL) and a Redis on loopback (SKINPORTAL_TEST_REDIS_URL,
default redis://127.0.0.1:6379/14), each run on its own queue. They skip, saying why, when Redis
cannot be reached. Every subprocess is killed at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from django.db import connection

from diagnosis import services
from diagnosis.models import Classification, ClassificationStatus, LesionImage
from ml.classes import CLASSES
from tests.portal.helpers import RED, REPO_ROOT, build_stand_in_bundle, image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = os.environ.get("SKINPORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
SLOW_VERSION = "slow-stand-in-1"


def _redis_or_skip() -> None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis to test with
        pytest.skip(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}); the real-worker tests need one "
            "(CI starts it; locally run redis-server or set SKINPORTAL_TEST_REDIS_URL)"
        )


def _database_url() -> str:
    """The test database as a URL a worker process can open."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            pytest.skip("the SQLite test database is in memory: a worker process cannot see it")
        return f"sqlite:///{name}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        credentials = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            credentials += ":" + quote(db["PASSWORD"], safe="")
        host = db.get("HOST") or "127.0.0.1"
        return f"postgres://{credentials}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"
    pytest.skip(f"no worker test for database engine {db['ENGINE']}")


def build_slow_bundle(folder: Path) -> Path:
    """Like the stand-in model (red -> melanoma), plus two convolutions whose result is multiplied
    by zero: the same answers, but ~50 ms per image, so a worker can be killed mid-batch."""
    return build_stand_in_bundle(folder, version=SLOW_VERSION, busy=True)


class WorkerProcess:
    """One `celery -A skinportal worker` in its own process group (killed as a whole)."""

    def __init__(self, *, env: dict[str, str], queue: str, log: Path) -> None:
        self.log = log
        self._log_handle = log.open("wb")
        self.proc = subprocess.Popen(
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
                "1",
                "--loglevel",
                "info",
                "--hostname",
                f"{queue}-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"the worker was not ready within {timeout} s:\n{self.output()[-3000:]}")

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once: no warm shutdown, no ack."""
        self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log_handle.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        else:
            self.signal_group(signal.SIGKILL)  # pool processes left behind, if any
        self._log_handle.close()


@pytest.fixture
def worker_queue(settings, monkeypatch) -> Iterator[str]:
    """A private queue on the test Redis; the portal's task sends go there (not eager)."""
    _redis_or_skip()
    from celery import Celery

    from diagnosis import tasks

    queue = f"skinportal-test-{uuid.uuid4().hex[:10]}"
    # Not the current app: the portal's shared tasks bind to the current app, and a later test in
    # this process would send its classifications to this broker instead of running them eagerly.
    sender = Celery("skinportal-test-sender", broker=REDIS_URL, set_as_current=False)
    sender.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=False)

    def sender_for(name: str) -> Callable[..., object]:
        return lambda *args, **kwargs: sender.send_task(name, args=args, kwargs=kwargs, queue=queue)

    monkeypatch.setattr(tasks.classify_image, "delay", sender_for("diagnosis.classify_image"))
    monkeypatch.setattr(tasks.classify_images, "delay", sender_for("diagnosis.classify_images"))
    yield queue
    sender.close()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    for tag, payload in client.hgetall("unacked").items():  # a killed worker's message, never redelivered
        try:
            routing_key = json.loads(payload)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.close()


@pytest.fixture
def start_worker(worker_queue, settings, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skinportal.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_QUEUE": worker_queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        # Short limits so a dead worker's message comes back within seconds, not minutes.
        "CELERY_TASK_TIME_LIMIT": "5",
        "CELERY_VISIBILITY_TIMEOUT": "6",
        "SKINPORTAL_RETRY_BACKOFF_MAX": "2",
        "SKINPORTAL_ORT_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)

    def _start(*, model_dir: Path | None = None) -> WorkerProcess:
        worker_env = dict(env)
        if model_dir is not None:
            worker_env["SKINPORTAL_MODEL_DIR"] = str(model_dir)
        worker = WorkerProcess(env=worker_env, queue=worker_queue, log=tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    try:
        yield _start
    finally:
        for worker in workers:
            worker.stop()


def _settled(batch_id: int) -> tuple[int, int]:
    """(images with a final result, images in the batch)."""
    images = LesionImage.objects.filter(batch_id=batch_id)
    final = images.filter(
        classifications__status__in=[ClassificationStatus.SUCCEEDED, ClassificationStatus.FAILED]
    ).distinct()
    return final.count(), images.count()


def _wait(predicate: Callable[[], bool], *, timeout: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{worker.output()[-3000:]}")


def _colour(i: int) -> tuple[int, int, int]:
    return (200 + i % 40, 20 + i % 17, 20 + i % 13)  # every image red (melanoma), every file different


def test_it_loses_nothing_and_classifies_nothing_twice_when_a_worker_is_killed(
    owner, lesion, settings, start_worker, tmp_path
):
    settings.SKINPORTAL_MICRO_BATCH = 10
    slow_model = build_slow_bundle(tmp_path / "slow-model")
    first = start_worker(model_dir=slow_model)
    first.wait_ready()

    files = [
        services.uploads.ImageUpload(f"mole-{i:02d}.png", image_bytes(_colour(i), size=(100, 100))) for i in range(50)
    ]
    batch = services.batches.batch_create(user=owner, lesion=lesion, files=files)  # commits: 5 tasks of 10 images sent
    assert batch.rejected == [] and LesionImage.objects.filter(batch=batch).count() == 50

    # Kill the worker (and its pool process) with no warning while it is classifying a micro-batch
    # (claimed, not stored): after some results, so the batch is really cut in the middle.
    def in_flight() -> list[int]:
        return list(
            Classification.objects.filter(image__batch=batch, status=ClassificationStatus.RUNNING).values_list(
                "image_id", flat=True
            )
        )

    _wait(
        lambda: _settled(batch.pk)[0] >= 1 and bool(in_flight()),
        timeout=40,
        what="a micro-batch in progress after the first results",
        worker=first,
    )
    first.kill()
    interrupted = in_flight()  # the process is dead: these rows stay "running" until redelivery
    assert interrupted, "the micro-batch finished before the worker could be killed"
    assert _settled(batch.pk)[0] < 50

    second = start_worker(model_dir=slow_model)
    second.wait_ready()
    _wait(lambda: _settled(batch.pk)[0] == 50, timeout=45, what="every image to be classified", worker=second)

    per_image = list(
        Classification.objects.filter(image__batch=batch).values_list("image_id", "model_version", "status")
    )
    assert len(per_image) == 50, "a result is duplicated"  # 0 duplicates
    assert {image_id for image_id, _, _ in per_image} == set(
        LesionImage.objects.filter(batch=batch).values_list("id", flat=True)
    )  # 0 lost
    assert {(version, status) for _, version, status in per_image} == {(SLOW_VERSION, ClassificationStatus.SUCCEEDED)}
    # The interrupted micro-batch came back (same message, redelivered by Redis after the
    # visibility timeout) and was classified on its second delivery; the others on their first.
    attempts = dict(Classification.objects.filter(image__batch=batch).values_list("image_id", "attempts"))
    assert {attempts[i] for i in interrupted} == {2}
    assert {a for i, a in attempts.items() if i not in interrupted} == {1}
    assert set(Classification.objects.filter(image__batch=batch).values_list("top_class", flat=True)) == {"mel"}


def test_it_classifies_a_single_upload_with_a_real_worker(owner, upload, start_worker, stand_in_model_dir):
    worker = start_worker(model_dir=stand_in_model_dir)
    worker.wait_ready()
    image = upload(image_bytes(RED))
    _wait(
        lambda: image.classifications.filter(status=ClassificationStatus.SUCCEEDED).exists(),
        timeout=30,
        what="the classification",
        worker=worker,
    )
    assert image.classifications.get().top_class == "mel"
