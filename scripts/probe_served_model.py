#!/usr/bin/env python
"""Three cheap post-training probes of a trained bundle, judged on the validation split.

    .venv/bin/python scripts/probe_served_model.py [--model ml/models/<version>] [--views 4]
        [--sizes 150x200,165x220,180x240] [--report-test] [--markdown]

Each asks whether something other than a new training run could lift the served answers
(issue 10), without touching the network's weights:

1. head: the trained linear classifier against a re-fitted one on the frozen pooled features
   (the last block, the `features` output's columns the manifest names): tau-normalised weights
   (each class's weight vector divided by its norm ** tau) and a class-balanced logistic
   regression on the training split's features, of the images as they are and of `--views`
   augmented views each (Kang et al. 2020, "decoupling representation and classifier");
2. context: the clinical-context table (ml.context: age, sex and site as independent fields)
   against joint tables of two fields and other per-field weights, as served (with the bundle's
   operating point);
3. input size: the same graph run at other input sizes (its spatial dimensions made free; the
   network is fully convolutional up to its global pooling), as FixRes would suggest for a model
   trained on random-resized crops; with each size's batch-1 latency on this machine.

Every row gives validation balanced accuracy, malignant AUC and melanoma recall, and the fraction
of paired lesion resamples in which its balanced accuracy beats the first row's (`ml compare`'s
bootstrap). The test split is printed only with --report-test, for the record after a decision.
Needs the 'train' extra (scikit-learn, onnx) and ../shared/data; not TensorFlow.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ml.classes import CLASSES
from ml.compare import DEFAULT_IMAGES, DEFAULT_METADATA, figures, paired_bootstrap, share_of_resamples, split_records
from ml.context import ClinicalContext, fit_context_prior, shifted, smoothed_log_ratio
from ml.data import Record
from ml.inference import Classifier
from ml.manifest import default_model_dir
from ml.metrics import fit_temperature
from ml.preprocessing import PreprocessConfig, preprocess, read_image
from ml.scores import softmax
from ml.training.augment import augment_end_to_end

SPLITS = ("val", "test")


class Judge:
    """Figures of candidate probabilities on validation (and test), paired against a baseline."""

    def __init__(self, records: dict[str, list[Record]], *, bootstrap: int, seed: int, report_test: bool,
                 markdown: bool) -> None:
        self.labels = {s: np.array([r.label for r in records[s]]) for s in SPLITS}
        self.groups = [r.lesion_id for r in records["val"]]
        self.bootstrap, self.seed, self.report_test, self.markdown = bootstrap, seed, report_test, markdown
        self.baseline: tuple[np.ndarray, np.ndarray | None] | None = None

    def header(self, title: str) -> None:
        columns = ["val bal. acc.", "val AUC", "val mel recall", "bal. acc. higher in"]
        if self.report_test:
            columns += ["test bal. acc.", "test AUC", "test mel recall"]
        print(f"\n{title}\n")
        print("| variant | " + " | ".join(columns) + " |" if self.markdown else "variant".ljust(36) + "  ".join(columns))
        if self.markdown:
            print("|---" * (len(columns) + 1) + "|")
        self.baseline = None

    def row(self, name: str, probs: dict[str, np.ndarray], class_bias: np.ndarray | None = None) -> None:
        """The first row after a header is the baseline the later rows are paired against."""
        val = figures(self.labels["val"], probs["val"], class_bias)
        if self.baseline is None:
            self.baseline = (probs["val"], class_bias)
            wins = "baseline"
        else:
            share = paired_bootstrap(self.labels["val"], self.groups, self.baseline[0], probs["val"],
                                     n_resamples=self.bootstrap, seed=self.seed, base_bias=self.baseline[1],
                                     other_bias=class_bias)["balanced_accuracy"]
            wins = share_of_resamples(share)
        cells = [f"{val[k]:.3f}" for k in ("balanced_accuracy", "malignant_auc", "melanoma_recall")] + [wins]
        if self.report_test:
            test = figures(self.labels["test"], probs["test"], class_bias)
            cells += [f"{test[k]:.3f}" for k in ("balanced_accuracy", "malignant_auc", "melanoma_recall")]
        print(f"| {name} | " + " | ".join(cells) + " |" if self.markdown else name.ljust(36) + "  ".join(cells),
              flush=True)


def free_spatial_session(model_path: str, threads: int) -> ort.InferenceSession:
    """The bundle's graph with its input height and width left free."""
    graph = onnx.load(model_path)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_graph(session: ort.InferenceSession, inputs: Sequence[np.ndarray], columns: slice,
              batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(logits, the last block's pooled features) of preprocessed inputs."""
    logits, features = [], []
    for start in range(0, len(inputs), batch):
        out_logits, out_features = session.run(["logits", "features"],
                                               {"input": np.stack(inputs[start : start + batch])})[:2]
        logits.append(out_logits)
        features.append(out_features[:, columns])
    return np.concatenate(logits), np.concatenate(features)


def prepared(images: Sequence[np.ndarray], config: PreprocessConfig,
             view: Callable[[np.ndarray, int], np.ndarray] | None = None) -> list[np.ndarray]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda i: preprocess(view(images[i], i) if view else images[i], config),
                             range(len(images))))


def probe_head(judge: Judge, session: ort.InferenceSession, clf: Classifier, images: dict[str, list[np.ndarray]],
               train_y: np.ndarray, columns: slice, views: int, seed: int) -> dict[str, np.ndarray]:
    """Prints the table; returns the served layer's (image-only) validation and test probabilities."""
    judge.header("1. the classifier layer on frozen features (image alone, plain argmax)")
    outputs = {s: run_graph(session, prepared(images[s], clf.config), columns) for s in (*SPLITS, "train")}
    train_views = [outputs["train"][1]] + [
        run_graph(session, prepared(images["train"], clf.config,
                                    lambda img, i, v=v: augment_end_to_end(img, np.random.default_rng([seed, v, i]))),
                  columns)[1]
        for v in range(1, views + 1)]
    # The trained layer, recovered exactly from features and logits (the layer is linear).
    design = np.hstack([outputs["train"][1], np.ones((len(train_y), 1))])
    solution = np.linalg.lstsq(design, outputs["train"][0], rcond=None)[0]
    weights, bias = solution[:-1], solution[-1]

    def scored(w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        logits = {s: outputs[s][1] @ w + b for s in SPLITS}
        temperature = fit_temperature(logits["val"], judge.labels["val"])  # each variant's own, on validation
        return {s: softmax(logits[s], temperature) for s in SPLITS}

    served = {s: softmax(outputs[s][0], clf.temperature) for s in SPLITS}
    judge.row("trained layer (as served)", served)
    for tau in (0.5, 1.0):
        judge.row(f"tau-normalised weights, tau {tau:g}", scored(weights / np.linalg.norm(weights, axis=0) ** tau,
                                                                  np.zeros_like(bias)))
    for label, chosen in (("as they are", train_views[:1]), (f"+ {views} augmented views", train_views)):
        x = np.concatenate(chosen)
        y = np.concatenate([train_y] * len(chosen))
        for c in (0.001, 0.01):
            refit = LogisticRegression(C=c, class_weight="balanced", max_iter=500).fit(x, y)
            judge.row(f"class-balanced re-fit, training images {label}, C {c:g}", scored(refit.coef_.T, refit.intercept_))
    return served


def joint_offsets(train: Sequence[Record], contexts: Sequence[ClinicalContext], fields: tuple[str, str]) -> np.ndarray:
    """log p(class | both fields' values) - log p(class), counted on training like ml.context's tables."""
    labels = np.array([r.label for r in train])
    prior = np.bincount(labels, minlength=len(CLASSES)) / len(labels)
    counts: dict[tuple[str, ...], np.ndarray] = {}
    for record, label in zip(train, labels):
        known = record.context.known()
        if all(f in known for f in fields):
            counts.setdefault(tuple(known[f] for f in fields), np.zeros(len(CLASSES)))[label] += 1
    out = np.zeros((len(contexts), len(CLASSES)))
    for i, context in enumerate(contexts):
        key = tuple(context.known().get(f) for f in fields)
        if key in counts:
            out[i] = smoothed_log_ratio(counts[key], prior)
    return out


def probe_context(judge: Judge, clf: Classifier, image_probs: dict[str, np.ndarray], train: Sequence[Record],
                  records: dict[str, list[Record]]) -> None:
    judge.header("2. the clinical context (as served: the bundle's operating point)")
    contexts = {s: [r.context for r in records[s]] for s in SPLITS}
    table = fit_context_prior([r.context for r in train], np.array([r.label for r in train]))
    single = {field: {s: np.stack([replace(table, log_ratios={field: table.log_ratios.get(field, {})}).offsets(c)
                                   for c in contexts[s]]) for s in SPLITS} for field in ("age", "sex", "site")}
    joint = {pair: {s: joint_offsets(train, contexts[s], pair) for s in SPLITS}
             for pair in itertools.combinations(("age", "sex", "site"), 2)}

    def moved(offsets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s: shifted(image_probs[s], offsets[s]) for s in SPLITS}

    def weighted(**weights: float) -> dict[str, np.ndarray]:
        return {s: sum(w * single[f][s] for f, w in weights.items()) for s in SPLITS}

    served = clf.context_prior.weight if clf.context_prior else 0.0
    judge.row(f"served: age, sex, site, weight {served:g}",
              {s: clf.probabilities_with_context(image_probs[s], contexts[s]) for s in SPLITS}, clf.class_bias)
    judge.row("the image alone", image_probs, clf.class_bias)
    for weights in ({"age": 0.75, "site": 0.75}, {"age": 1.0, "sex": 0.5, "site": 0.75},
                    {"age": 0.5, "sex": 0.5, "site": 1.0}, {"age": 1.0, "sex": 1.0, "site": 1.0}):
        name = ", ".join(f"{f} {w:g}" for f, w in weights.items())
        judge.row(name, moved(weighted(**weights)), clf.class_bias)
    for (first, second), offsets in joint.items():
        other = ({"age", "sex", "site"} - {first, second}).pop()
        for w in (0.5, 0.75):
            judge.row(f"{first} x {second} jointly + {other}, weight {w:g}",
                      moved({s: w * (offsets[s] + single[other][s]) for s in SPLITS}), clf.class_bias)


def probe_size(judge: Judge, session: ort.InferenceSession, clf: Classifier, images: dict[str, list[np.ndarray]],
               sizes: Sequence[tuple[int, int]]) -> None:
    judge.header("3. the input size at inference (image alone, plain argmax; trained at "
                 f"{clf.config.describe()}; batch-1 median latency in the name)")
    for height, width in [clf.config.height_width, *[s for s in sizes if s != clf.config.height_width]]:
        config = replace(clf.config, size=height, width=width)
        inputs = {s: prepared(images[s], config) for s in SPLITS}
        logits = {s: run_graph(session, inputs[s], slice(0, 1))[0] for s in SPLITS}
        one = inputs["val"][0][None]
        for _ in range(5):
            session.run(["logits"], {"input": one})
        timings = []
        for _ in range(50):
            started = time.perf_counter()
            session.run(["logits"], {"input": one})
            timings.append(time.perf_counter() - started)
        judge.row(f"{height}x{width} ({np.median(timings) * 1000:.2f} ms)",
                  {s: softmax(logits[s], clf.temperature) for s in SPLITS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundle folder (default: ml/models/CURRENT)")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--views", type=int, default=4, help="augmented views per training image for the re-fit")
    parser.add_argument("--sizes", default="150x200,135x180,165x220,180x240,195x260")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report-test", action="store_true", help="also print the test split's figures")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    model_dir = args.model or default_model_dir()
    clf = Classifier(model_dir, variant="fp32", threads=args.threads)
    blocks = clf.manifest.get("screening", {}).get("ood", {}).get("blocks")
    columns = slice(*blocks[-1]["columns"]) if blocks else slice(None)  # the last block's pooled features
    records = {s: split_records(model_dir, args.metadata, args.images, s) for s in (*SPLITS, "train")}
    images = {s: [read_image(r.path) for r in rs] for s, rs in records.items()}
    session = free_spatial_session(clf.path, args.threads)
    judge = Judge(records, bootstrap=args.bootstrap, seed=args.seed, report_test=args.report_test,
                  markdown=args.markdown)
    train_y = np.array([r.label for r in records["train"]])
    print(f"model {clf.model_version}; validation {len(records['val'])} images; "
          f"{args.bootstrap} paired lesion resamples")
    image_probs = probe_head(judge, session, clf, images, train_y, columns, args.views, args.seed)
    probe_context(judge, clf, image_probs, records["train"], records)
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    probe_size(judge, session, clf, images, sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
