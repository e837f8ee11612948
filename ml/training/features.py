"""Cached outputs of the frozen lower network, one row per (image, augmented view).

Computed with onnxruntime on the exported lower blocks and stored as float16 memory maps
in the work folder, so training epochs only run the upper blocks. Resumable: progress is
written after every chunk, and a finished cache is reused when its settings match.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from ml.data import Record
from ml.preprocessing import PreprocessConfig, preprocess, read_image
from ml.training.augment import augment

CHUNK = 256  # images per progress checkpoint


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    """The same random view for the same (seed, image, view), on any machine and after a resume."""
    return np.random.default_rng([seed, index, view])


def prepared_views(
    record_index: int, image: np.ndarray, config: PreprocessConfig, views: int, augmented: bool, seed: int
) -> list[np.ndarray]:
    if not augmented:
        return [preprocess(image, config)]
    return [preprocess(augment(image, view_rng(seed, record_index, v)), config) for v in range(views)]


def cache_features(
    session,
    records: Sequence[Record],
    config: PreprocessConfig,
    *,
    path: str,
    views: int,
    augmented: bool,
    seed: int,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """(N, views, ...) float16 features for ``records``; reuses or resumes ``path``."""
    views = views if augmented else 1
    input_name = session.get_inputs()[0].name
    probe = session.run(None, {input_name: np.zeros((1, config.size, config.size, 3), np.float32)})[0]
    shape = (len(records), views, *probe.shape[1:])
    meta_path = path + ".json"
    settings = {
        "shape": list(shape),
        "ids": _digest([r.image_id for r in records]),
        "preprocessing": config.to_dict(),
        "augmented": augmented,
        "seed": seed,
    }
    done = 0
    if os.path.exists(meta_path) and os.path.exists(path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        if meta.get("settings") == settings:
            done = int(meta.get("done", 0))
    mode = "r+" if done else "w+"
    features = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=shape)
    if done >= len(records):
        return features
    if done:
        log(f"  resuming {os.path.basename(path)} at image {done}/{len(records)}")
    started = time.time()
    pending: list[np.ndarray] = []
    slots: list[tuple[int, int]] = []

    def flush() -> None:
        out = session.run(None, {input_name: np.stack(pending)})[0]
        for (i, v), row in zip(slots, out):
            features[i, v] = row.astype(np.float16)
        pending.clear()
        slots.clear()

    for i in range(done, len(records)):
        image = read_image(records[i].path)
        for v, x in enumerate(prepared_views(i, image, config, views, augmented, seed)):
            pending.append(x)
            slots.append((i, v))
            if len(pending) >= batch_size:
                flush()
        if (i + 1) % CHUNK == 0 or i + 1 == len(records):
            if pending:
                flush()
            features.flush()
            with open(meta_path, "w") as fh:
                json.dump({"settings": settings, "done": i + 1}, fh)
            rate = (i + 1 - done) * views / max(1e-9, time.time() - started)
            log(f"  {os.path.basename(path)}: {i + 1}/{len(records)} images, {rate:.0f} views/s")
    return features


def _digest(ids: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
