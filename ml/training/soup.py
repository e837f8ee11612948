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
of other recipes or of one run twice is refused before any training starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

import keras
import numpy as np

from ml.training.endtoend import EndToEndConfig, checkpoint_config, load_arrays, run_finished

METHOD = "uniform mean of the members' best-epoch weights (a model soup)"


def checkpoint_folder(path: str) -> str:
    """The folder holding a run's state.json: a --work-dir's end_to_end/, or the path itself."""
    nested = os.path.join(path, "end_to_end")
    return nested if os.path.isfile(os.path.join(nested, "state.json")) else path


def member_state(path: str, cfg: EndToEndConfig, preprocessing: dict) -> dict:
    """A member's loop state, once it is shown to be a finished run of `cfg`'s recipe."""
    folder = checkpoint_folder(path)
    state_path, best_path = os.path.join(folder, "state.json"), os.path.join(folder, "best.npz")
    if not (os.path.isfile(state_path) and os.path.isfile(best_path)):
        raise ValueError(f"{path}: no end-to-end run there (it needs state.json and best.npz)")
    with open(state_path) as fh:
        state = json.load(fh)
    theirs = checkpoint_config(state)
    ours = asdict(cfg)
    differs = sorted(key for key in ours if key != "seed" and theirs.get(key) != ours[key])
    if state.get("preprocessing") != preprocessing:
        differs.append("preprocessing")
    if differs:
        raise ValueError(f"{path} was trained with other settings ({', '.join(differs)}): a soup averages runs of "
                         "one recipe that differ only in their seed")
    if not run_finished(state, EndToEndConfig(**theirs)):
        raise ValueError(f"{path}: its run stopped after epoch {state['next_epoch']} of {theirs['epochs']}; "
                         "finish it (re-run its command) before averaging it")
    return state | {"config": theirs}


def check_members(paths: Sequence[str], cfg: EndToEndConfig, preprocessing: dict) -> list[dict]:
    """The members' states, in order; raises before any training when one cannot join the soup."""
    states = [member_state(path, cfg, preprocessing) for path in paths]
    seeds = [cfg.seed, *(state["config"]["seed"] for state in states)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the soup's runs have seeds {seeds}: each member needs a seed of its own")
    return states


def _record(state: dict, source: str) -> dict:
    best = state["best"]
    return {"seed": state["config"]["seed"], "checkpoint": source, "best_epoch": best["epoch"],
            "best_weights": best["weights"], "val_balanced_accuracy": best["balanced_accuracy"],
            "val_malignant_auc": best.get("malignant_auc")}


def soup_into(model: keras.Model, *, state: dict, paths: Sequence[str], cfg: EndToEndConfig, preprocessing: dict,
              log: Callable[[str], None] = print) -> dict:
    """Replace `model`'s weights (this run's best epoch) by the mean of theirs and the members'
    best epochs; return this run's state with a `soup` record of every member."""
    states = check_members(paths, cfg, preprocessing)
    weights = [[np.asarray(keras.ops.convert_to_numpy(v.value)) for v in model.variables]]
    for path in paths:
        arrays = load_arrays(os.path.join(checkpoint_folder(path), "best.npz"))
        if len(arrays) != len(model.variables):
            raise ValueError(f"{path}: best.npz holds {len(arrays)} arrays, this model has {len(model.variables)}")
        weights.append(arrays)
    for i, variable in enumerate(model.variables):
        values = [w[i] for w in weights]
        if np.issubdtype(values[0].dtype, np.floating):
            variable.assign(np.mean(values, axis=0).astype(values[0].dtype))
        # Integer state (the dropout generator's seed) stays this run's: it plays no part at inference.
    members = [_record(state, "this run"), *(_record(s, os.path.abspath(p)) for s, p in zip(states, paths))]
    log(f"soup: the mean of {len(members)} runs' best-epoch weights, seeds "
        + ", ".join(str(m["seed"]) for m in members))
    return state | {"soup": {"method": METHOD, "members": members}}
