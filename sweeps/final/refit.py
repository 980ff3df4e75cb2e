"""Refit: the best trial's config trained on every non-test row, scored on the held-out test split, exported.

Each refit is a fresh run directory (sweeps.layout: `SweepDir.new_refit`) holding its metrics.json, records,
model (Hugging Face directory with its card) and Ray Train checkpoints, so a refit never resumes, nor reads the
records of, an earlier one. `refit/latest.json` is pointed at it last, once it has completed: readers
(`SweepDir.latest_refit`) get weights, card and metrics of the same fit.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from sweeps.config import SweepConfig
from sweeps.layout import FitDir, SweepDir
from zerotune.errors import ConfigError, ZerotuneError

log = logging.getLogger(__name__)
PROBE_LIMIT = 256  # test rows whose engine logits are saved with the model, for reload checks


def refit(
    sweep: SweepConfig | str,
    *,
    storage: str = "./results",
    address: str | None = None,
    worker_logs: bool = True,
    data: tuple | None = None,
) -> dict:
    """Refit the best trial of `sweep`: its config, or its directory/URI, or its name under `storage`.

    `data`: (examples, encoded) of the sweep that just ran (its own, already checked and tokenised); without it
    the data is read, checked against the sweep's fingerprint and tokenised. Returns what it writes to the
    refit's metrics.json."""
    from sweeps import lease

    started = time.time()
    cfg, sd = _locate(sweep, storage)
    # One writer per sweep: a refit inside `sweep run` shares that run's lease; a standalone one takes it.
    with lease.hold(sd.uri, timeout_s=cfg.storage.lease_timeout_s):
        return _refit(cfg, sd, started=started, address=address, worker_logs=worker_logs, data=data)


def _refit(
    cfg: SweepConfig, sd: SweepDir, *, started: float, address: str | None, worker_logs: bool, data: tuple | None
) -> dict:
    from cluster.local import connect
    from sweeps.final.train import fit_split
    from sweeps.preflight.data import encode
    from sweeps.results.environment import write_fit_record
    from sweeps.search.space import config_json
    from trainer.export import write_model_card
    from trainer.metrics import scalar_metrics
    from trainer.storage import read_json, write_json

    saved = read_json(sd.folds)
    test_rows = _test_rows(cfg, saved)
    best = _best_trial(sd, cfg)
    examples, encoded = data or (_same_data(cfg, saved, sd), None)
    train_rows = np.unique(np.concatenate([np.asarray(f["train"] + f["val"], dtype=np.int64) for f in saved["folds"]]))
    run = sd.new_refit()
    spec = _refit_spec(cfg, run, best, n_train=len(train_rows), test_rows=test_rows)
    if encoded is None:
        encoded = encode(cfg, examples)
    connect(address=address, worker_logs=worker_logs)
    log.warning(
        "refit of trial %s on %d rows, scored on %d test rows -> %s",
        best["trial_id"], len(train_rows), len(test_rows), run.uri,
    )  # fmt: skip
    storage_path, name = run.ray_run()
    record, _ = fit_split(
        spec, encoded=encoded, train_rows=train_rows, val_rows=test_rows, scaling=cfg.scaling,
        name=name, storage_path=storage_path,
    )  # fmt: skip
    test = scalar_metrics(record.metrics)
    tested = ", ".join(f"{k}={v:.4g}" for k, v in test.items())
    config = config_json(spec.train, spec.deepspeed, spec.model)
    env = write_fit_record(run, kind="refit", config=config, model_uri=spec.export_uri)
    cv = {"metric": cfg.metric, "mean": best["mean"], "std": best["std"], "fold_scores": best["fold_scores"]}
    write_model_card(
        dataclasses.replace(spec, card={**spec.card, "test metrics": tested}), encoded,
        results={"cv": {**cv, "k": cfg.folds.k}, "test": test}, environment=env,
    )  # fmt: skip
    summary = {
        "trial_id": best["trial_id"],
        "params": best["params"],
        "config": config,
        "n_train": int(len(train_rows)),
        "n_test": int(len(test_rows)),
        "metrics": record.metrics,
        "history": record.history,
        "cv": cv,
        "model_dir": spec.export_uri,
        "probe_rows": int(min(len(test_rows), PROBE_LIMIT)),
        "wall_s": round(time.time() - started, 1),
    }
    write_json(run.metrics, summary)
    sd.mark_refit_complete(run)  # last: only a refit whose weights, card and metrics are all written is the latest
    return summary


def _locate(sweep: SweepConfig | str, storage: str) -> tuple[SweepConfig, SweepDir]:
    from sweeps.results.status import locate_sweep, saved_config

    if isinstance(sweep, SweepConfig):
        return sweep, SweepDir.of(sweep)
    sd = SweepDir(locate_sweep(sweep, storage=storage))
    return saved_config(sd), sd


def _test_rows(cfg: SweepConfig, saved: dict) -> np.ndarray:
    """The held-out test rows the sweep set aside (its saved folds)."""
    test_rows = np.asarray(saved["test"], dtype=np.int64)
    if cfg.folds.test_fraction <= 0 or len(test_rows) == 0:
        why = "this sweep has no held-out test split to score a refit on"
        raise ConfigError(
            [("folds.test_fraction", why, "run the sweep with folds.test_fraction (e.g. 0.2) under a new name")]
        )
    return test_rows


def _same_data(cfg: SweepConfig, saved: dict, sd: SweepDir):
    """The examples, checked to be those the sweep ran on."""
    from sweeps.preflight.data import fingerprint, sweep_examples

    examples = sweep_examples(cfg)  # the sweep's own loader: the same rare classes dropped
    if fingerprint(examples) != saved["fingerprint"]:
        why = f"the data differ from those the sweep at {sd.uri} was run on"
        raise ConfigError([("data.path", why, "restore the original data file")])
    return examples


def _refit_spec(cfg: SweepConfig, run: FitDir, best: dict, *, n_train: int, test_rows: np.ndarray):
    """The best trial's config as one fit that exports, probing (and carding) with the test split."""
    from sweeps.preflight.data import fit_spec
    from sweeps.search.space import apply_params

    train, deepspeed, model = apply_params(cfg, best["params"])
    # The test split must not choose the epoch: no early stopping, the last epoch is scored and exported.
    train = train.model_copy(update={"early_stopping_patience": None})
    card = model_card_facts(cfg, best, n_train=n_train, n_test=len(test_rows), train=train, deepspeed=deepspeed)
    return fit_spec(
        cfg, train=train, deepspeed=deepspeed, model=model, records_uri=run.records, export_uri=run.model,
        probe_rows=tuple(int(i) for i in test_rows[:PROBE_LIMIT]), card=card,
    )  # fmt: skip


def _best_trial(sd: SweepDir, cfg: SweepConfig) -> dict:
    from sweeps.results.collect import collect

    best = (sd.read(sd.summary) or collect(sd.uri, cfg=cfg)).get("best")
    if best is None:
        raise ZerotuneError(
            f"no trial of the sweep at {sd.uri} completed every fold",
            field="search",
            fix="run (or resume) the sweep until a trial completes, then refit",
        )
    return best


def model_card_facts(cfg: SweepConfig, best: dict, *, n_train: int, n_test: int, train, deepspeed) -> dict:
    """Lines of the exported model card: data, config and the cross-validation estimate."""
    label = f", label column `{cfg.data.label_column}`" if cfg.task != "causal-lm" else ""
    return {
        "data": (
            f"`{cfg.data.path}`, text column `{cfg.data.text_column}`{label}; "
            f"{n_train} training rows, {n_test} held-out test rows"
        ),
        "config": (
            f"sweep `{cfg.name}` trial {best['trial_id']}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(best["params"].items()))
            + f"; schedule={train.schedule}, warmup_ratio={train.warmup_ratio:g}, max_length={cfg.model.max_length}, "
            f"precision={deepspeed.precision}, workers={cfg.scaling.num_workers}"
        ),
        "cross-validation": f"{cfg.folds.k}-fold {cfg.metric} {best['mean']:.4f} ± {best['std']:.4f}",
    }
