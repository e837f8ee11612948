"""A uniform model soup (`ml train --average-with`): the packaged network's weights are the mean
of the best-epoch weights of several finished runs of one end-to-end recipe that differ only in
their seed.

Why it can work: runs that start from the same trained weights (`--init-from`) and train briefly
at a low rate stay in one basin of the loss, so the mean of their weights is itself a good
network (Wortsman et al., 2022, "Model soups"), one network at the latency of one. Runs from the
ImageNet start land in different basins and do not average (the GPU runs of 4 December: their
soup collapsed; docs/model.md).

The members are named by their checkpoint folders (a `--work-dir`, or its `end_to_end/`). Each
must have finished, with this run's settings apart from the seed, and a seed of its own: a soup
of other recipes or of one run twice is refused before any training starts. `--soup-across
augmentation` lets the members differ in their training views too (Wortsman et al. averaged runs
of one start across augmentations and learning rates): the views change what a run learns, not
the network or its inputs, so the mean is still one network behind one preprocessing. Each
member's record keeps its own views and whether it was trained through the crop to the field of
view, so the model card can print each member's own command.

A member may also be a bundle this recipe packaged (its model.keras): a soup of k runs counts k
times, so adding three new seeds to a three-seed soup bundle gives the six-run uniform mean
without the first three checkpoints (the mean is associative). Its split is checked by the
caller (`pipeline.refuse_foreign_split`), as for `--init-from`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

import keras
import numpy as np

from ml.training.endtoend import EndToEndConfig, checkpoint_config, load_arrays, prior_bias, run_finished

METHOD = "uniform mean of the members' best-epoch weights (a model soup)"


def is_bundle(path: str) -> bool:
    """A packaged model folder (manifest.json beside model.keras) rather than a checkpoint folder."""
    return os.path.isfile(os.path.join(path, "manifest.json"))


def checkpoint_folder(path: str) -> str:
    """The folder holding a run's state.json: a --work-dir's end_to_end/, or the path itself."""
    nested = os.path.join(path, "end_to_end")
    return nested if os.path.isfile(os.path.join(nested, "state.json")) else path


def _refuse_other_recipe(path: str, theirs: dict, their_preprocessing: dict, cfg: EndToEndConfig,
                         preprocessing: dict, may_differ: Sequence[str]) -> None:
    ours = asdict(cfg)
    differs = sorted(key for key in ours
                     if key != "seed" and key not in may_differ and theirs.get(key) != ours[key])
    if their_preprocessing != preprocessing:
        differs.append("preprocessing")
    if differs:
        raise ValueError(f"{path} was trained with other settings ({', '.join(differs)}): a soup averages runs of "
                         "one recipe that differ only in their seed"
                         + (f" (and, with --soup-across, {', '.join(may_differ)})" if may_differ else ""))


def member_state(path: str, cfg: EndToEndConfig, preprocessing: dict, may_differ: Sequence[str] = ()) -> dict:
    """A member's loop state, once it is shown to be a finished run of `cfg`'s recipe (apart from
    the settings in `may_differ`)."""
    if is_bundle(path):
        return bundle_member(path, cfg, preprocessing, may_differ)
    folder = checkpoint_folder(path)
    state_path, best_path = os.path.join(folder, "state.json"), os.path.join(folder, "best.npz")
    if not (os.path.isfile(state_path) and os.path.isfile(best_path)):
        raise ValueError(f"{path}: no end-to-end run there (it needs state.json and best.npz)")
    with open(state_path) as fh:
        state = json.load(fh)
    theirs = checkpoint_config(state)
    _refuse_other_recipe(path, theirs, state.get("preprocessing"), cfg, preprocessing, may_differ)
    if not run_finished(state, EndToEndConfig(**theirs)):
        raise ValueError(f"{path}: its run stopped after epoch {state['next_epoch']} of {theirs['epochs']}; "
                         "finish it (re-run its command) before averaging it")
    return state | {"config": theirs, "records": [_record(state, os.path.abspath(path))]}


def bundle_member(path: str, cfg: EndToEndConfig, preprocessing: dict, may_differ: Sequence[str] = ()) -> dict:
    """A packaged bundle as a member: its recipe from the manifest, its runs (one, or a soup's
    members) as the records, each counting once in the mean."""
    from ml.manifest import load_manifest, trained_through_crop
    from ml.preprocessing import PreprocessConfig

    manifest = load_manifest(path)
    fit = manifest.get("training", {}).get("fit", {})
    if fit.get("mode") != "end-to-end" or not os.path.isfile(os.path.join(path, "model.keras")):
        raise ValueError(f"{path}: not a bundle of an end-to-end run with its model.keras")
    defaults = asdict(EndToEndConfig())  # settings added after the bundle was made count as their defaults
    theirs = {key: fit.get(key, defaults[key]) for key in asdict(cfg)}
    their_preprocessing = PreprocessConfig.from_dict(manifest["preprocessing"]).to_dict()
    _refuse_other_recipe(path, theirs, their_preprocessing, cfg, preprocessing, may_differ)
    source = f"{manifest['version']} ({os.path.abspath(path)})"
    runs = fit.get("soup", {}).get("members") or [{
        "seed": fit["seed"], "best_epoch": fit.get("best_epoch"), "best_weights": fit.get("best_weights"),
        "val_balanced_accuracy": None, "val_malignant_auc": None}]
    records = [{"augmentation": theirs["augmentation"], "field_of_view": trained_through_crop(manifest)} | run
               | {"checkpoint": source if run.get("checkpoint") == "this run" else run.get("checkpoint"),
                  "via": manifest["version"]} for run in runs]
    prior_tau = float(manifest["training"].get("post_training", {}).get("prior_adjustment_tau", 0.0))
    return {"config": theirs, "records": records, "bundle": path, "prior_tau": prior_tau}


def check_members(paths: Sequence[str], cfg: EndToEndConfig, preprocessing: dict,
                  may_differ: Sequence[str] = ()) -> list[dict]:
    """The members' states, in order; raises before any training when one cannot join the soup."""
    states = [member_state(path, cfg, preprocessing, may_differ) for path in paths]
    seeds = [cfg.seed, *(record["seed"] for state in states for record in state["records"])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the soup's runs have seeds {seeds}: each member needs a seed of its own")
    return states


def _record(state: dict, source: str) -> dict:
    best = state["best"]
    return {"seed": state["config"]["seed"], "checkpoint": source, "best_epoch": best["epoch"],
            "best_weights": best["weights"], "val_balanced_accuracy": best["balanced_accuracy"],
            "val_malignant_auc": best.get("malignant_auc"), "augmentation": state["config"]["augmentation"],
            "field_of_view": bool((state.get("preprocessing") or {}).get("field_of_view"))}


def _member_weights(path: str, state: dict, model: keras.Model, train_labels: np.ndarray) -> list[np.ndarray]:
    if "bundle" in state:
        trained = keras.models.load_model(os.path.join(path, "model.keras"), compile=False)
        # Packaging baked its class-prior shift into the dense bias (ml/training/finalize.py);
        # the runs' own weights are those without it.
        dense = trained.get_layer("logits")
        dense.bias.assign(dense.bias.numpy() - prior_bias(train_labels, state["prior_tau"]))
        arrays = [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in trained.variables]
    else:
        arrays = load_arrays(os.path.join(checkpoint_folder(path), "best.npz"))
    shapes = [tuple(a.shape) for a in arrays]
    if shapes != [tuple(v.shape) for v in model.variables]:
        raise ValueError(f"{path}: its weights ({len(arrays)} arrays) do not match this model's "
                         f"({len(model.variables)}), or their shapes differ")
    return arrays


def soup_into(model: keras.Model, *, state: dict, paths: Sequence[str], cfg: EndToEndConfig, preprocessing: dict,
              train_labels: np.ndarray, may_differ: Sequence[str] = (), log: Callable[[str], None] = print) -> dict:
    """Replace `model`'s weights (this run's best epoch) by the mean of theirs and the members'
    best epochs, a bundle weighted by its number of runs (`train_labels`: the training split's, to
    take a bundle's class-prior shift back out); return this run's state with a `soup`
    record of every run."""
    states = check_members(paths, cfg, preprocessing, may_differ)
    weights = [[np.asarray(keras.ops.convert_to_numpy(v.value)) for v in model.variables]]
    counts = [1]
    for path, member in zip(paths, states):
        weights.append(_member_weights(path, member, model, train_labels))
        counts.append(len(member["records"]))
    for i, variable in enumerate(model.variables):
        values = [w[i] for w in weights]
        if np.issubdtype(values[0].dtype, np.floating):
            mean = np.average(np.stack(values).astype(np.float64), axis=0, weights=counts)
            variable.assign(mean.astype(values[0].dtype))
        # Integer state (the dropout generator's seed) stays this run's: it plays no part at inference.
    members = [_record(state, "this run"), *(record for member in states for record in member["records"])]
    log(f"soup: the mean of {len(members)} runs' best-epoch weights, seeds "
        + ", ".join(str(m["seed"]) for m in members))
    return state | {"soup": {"method": METHOD, "members": members} | ({"across": list(may_differ)} if may_differ else {})}
