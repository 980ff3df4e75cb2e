"""Refit: the best trial's config trained on every non-test row, scored on the held-out test split, exported.

Writes `<sweep>/refit/metrics.json` and the Hugging Face model directory `<sweep>/refit/model/`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from zerotune.errors import ConfigError, ZerotuneError
from trainer.storage import exists, join, read_json, write_bytes, write_json

from sweeps.config import SweepConfig, load_config

log = logging.getLogger(__name__)
PROBE_LIMIT = 256  # test rows whose engine logits are saved with the model, for reload checks


def refit(sweep: SweepConfig | str, *, storage: str = "./results", address: str | None = None, worker_logs: bool = True) -> dict:
    """`sweep`: the sweep's config, or its directory/URI, or its name under `storage`. Returns metrics.json's content."""
    from cluster.local import connect
    from sweeps.final.train import fit_split
    from sweeps.preflight.data import encode, fit_spec, load_examples
    from sweeps.search.run import fingerprint, sweep_uri
    from sweeps.search.space import apply_params
    from sweeps.results.status import locate_sweep

    started = time.time()
    if isinstance(sweep, SweepConfig):
        cfg, uri = sweep, sweep_uri(sweep)
    else:
        uri = locate_sweep(sweep, storage=storage)
        cfg = load_config(raw=read_json(join(uri, "config.json")))
    saved = read_json(join(uri, "folds.json"))
    test_rows = np.asarray(saved["test"], dtype=np.int64)
    if cfg.folds.test_fraction <= 0 or len(test_rows) == 0:
        raise ConfigError([("folds.test_fraction", "this sweep has no held-out test split to score a refit on", "run the sweep with folds.test_fraction (e.g. 0.2) under a new name")])
    best = _best_trial(uri, cfg)
    examples = load_examples(cfg, min_per_class=2)
    if fingerprint(examples) != saved["fingerprint"]:
        raise ConfigError([("data.path", f"the data differ from those the sweep at {uri} was run on", "restore the original data file")])
    train_rows = np.unique(np.concatenate([np.asarray(f["train"] + f["val"], dtype=np.int64) for f in saved["folds"]]))
    train, deepspeed, model = apply_params(cfg, best["params"])
    # The test split must not choose the epoch: no early stopping, the last epoch is scored and exported.
    train = train.model_copy(update={"early_stopping_patience": None})
    refit_uri = join(uri, "refit")
    spec = fit_spec(cfg, train=train, deepspeed=deepspeed, model=model, records_uri=join(refit_uri, "records"), export_uri=join(refit_uri, "model"))
    card = model_card_facts(cfg, best, n_train=len(train_rows), n_test=len(test_rows), train=train, deepspeed=deepspeed)
    spec = dataclasses.replace(spec, tags={"probe_rows": test_rows[:PROBE_LIMIT].tolist(), "card": card})
    encoded = encode(cfg, examples)
    connect(address=address, worker_logs=worker_logs)
    log.warning("refit of trial %s on %d rows, scored on %d test rows -> %s", best["trial_id"], len(train_rows), len(test_rows), refit_uri)
    record, _ = fit_split(spec, encoded=encoded, train_rows=train_rows, val_rows=test_rows, scaling=cfg.scaling, name="refit-fit", storage_path=refit_uri)
    from trainer.export import model_card
    from trainer.metrics import scalar_metrics

    card["test metrics"] = ", ".join(f"{k}={v:.4g}" for k, v in scalar_metrics(record["metrics"]).items())
    write_bytes(join(spec.export_uri, "README.md"), model_card(spec, encoded, card).encode("utf-8"))
    summary = {
        "trial_id": best["trial_id"], "params": best["params"],
        "config": {"train": train.model_dump(mode="json"), "deepspeed": deepspeed.model_dump(mode="json"), "model": model.model_dump(mode="json")},
        "n_train": int(len(train_rows)), "n_test": int(len(test_rows)),
        "metrics": record["metrics"], "history": record["history"],
        "cv": {"metric": cfg.metric, "mean": best["mean"], "std": best["std"], "fold_scores": best["fold_scores"]},
        "model_dir": spec.export_uri, "probe_rows": int(min(len(test_rows), PROBE_LIMIT)),
        "wall_s": round(time.time() - started, 1),
    }
    write_json(join(refit_uri, "metrics.json"), summary)
    return summary


def _best_trial(uri: str, cfg: SweepConfig) -> dict:
    from sweeps.results.collect import collect

    path = join(uri, "summary.json")
    best = (read_json(path) if exists(path) else collect(uri, cfg=cfg)).get("best")
    if best is None:
        raise ZerotuneError(f"no trial of the sweep at {uri} completed every fold", field="search", fix="run (or resume) the sweep until a trial completes, then refit")
    return best


def model_card_facts(cfg: SweepConfig, best: dict, *, n_train: int, n_test: int, train, deepspeed) -> dict:
    """Lines of the exported model card: data, config and the cross-validation estimate."""
    label = f", label column `{cfg.data.label_column}`" if cfg.task != "causal-lm" else ""
    return {
        "data": f"`{cfg.data.path}`, text column `{cfg.data.text_column}`{label}; {n_train} training rows, {n_test} held-out test rows",
        "config": (f"sweep `{cfg.name}` trial {best['trial_id']}: " + ", ".join(f"{k}={v}" for k, v in sorted(best["params"].items()))
                   + f"; schedule={train.schedule}, warmup_ratio={train.warmup_ratio:g}, max_length={cfg.model.max_length}, "
                   f"precision={deepspeed.precision}, workers={cfg.scaling.num_workers}"),
        "cross-validation": f"{cfg.folds.k}-fold {cfg.metric} {best['mean']:.4f} ± {best['std']:.4f}",
    }
