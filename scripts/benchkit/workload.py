"""What a benchmark asks of the portal through its API, and how long until the answer is stored: a lesion
to upload to, one upload, a ZIP batch, several clients uploading at once, and a batch classified again by
the worker alone."""

from __future__ import annotations

import io
import threading
import time
import zipfile

from benchkit.api import Api, multipart
from benchkit.stack import manage


def new_lesion(api: Api, patient_id: int, label: str) -> int:
    """A fresh lesion: the portal refuses a file already on a lesion (409 duplicate_image), so
    each phase that uploads the same images again gets its own."""
    lesion = api.json(
        "POST", "/api/v1/lesions/", {"patient": patient_id, "body_site": "back", "label": label}, expect=201
    )
    return lesion["id"]


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
    """`requests` uploads by `clients` threads at once, each waited for: (their latencies, uploads/s)."""
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
