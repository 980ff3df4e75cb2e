"""Hyperparameter importances: optuna's evaluators over an in-memory study rebuilt from recorded trials."""

from __future__ import annotations

import math

from sweeps.config import SpaceConfig


def distributions(space: SpaceConfig) -> dict:
    """The search space as optuna distributions (the same ranges Tune sampled from)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key in ("learning_rate", "weight_decay", "warmup_ratio", "dropout"):
        r = getattr(space, key)
        if r is not None:
            out[key] = FloatDistribution(r.low, r.high, log=r.log)
    if space.epochs:
        out["epochs"] = IntDistribution(space.epochs.low, space.epochs.high)
    for key in ("batch_size", "zero_stage", "optimizer"):
        choices = getattr(space, key)
        if choices:
            out[key] = CategoricalDistribution(list(choices))
    return out


def param_importances(trials: list[dict], *, space: SpaceConfig, mode: str) -> dict:
    """{"method", "values" {param: share}, "trials_used", "note"}; values is empty when it cannot be computed.

    Completed trials are used; with fewer than two, pruned trials join with their partial fold
    means (the note says so). Failed trials carry no score and are left out.
    """
    import optuna

    dists = distributions(space)
    completed = [t for t in trials if t["state"] == "completed" and _finite(t["mean"])]
    used, note = completed, None
    if len(completed) < 2:
        pruned = [t for t in trials if t["state"] == "pruned" and _finite(t["mean"])]
        used = completed + pruned
        if pruned:
            note = f"only {len(completed)} completed trial(s): pruned trials are included with the mean over the folds they reached"
    result = {"method": None, "values": {}, "trials_used": len(used), "note": note}
    if len(used) < 2:
        result["note"] = f"parameter importances need at least 2 scored trials; this sweep has {len(used)}"
        return result
    varied = {k: d for k, d in dists.items() if len({_key(t["params"].get(k)) for t in used}) > 1}
    if not varied:
        result["note"] = "no searched parameter took more than one value among the scored trials"
        return result
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in used:
        params = {k: _plain(t["params"][k], d) for k, d in varied.items() if k in t["params"]}
        if len(params) != len(varied):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: varied[k] for k in params}, value=float(t["mean"])))
    evaluators = [("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)), ("mean decrease impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0))]
    for name, evaluator in evaluators:
        try:
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError, ZeroDivisionError):
            continue
        values = {k: float(v) for k, v in values.items()}
        if values and all(math.isfinite(v) for v in values.values()):
            result.update(method=name, values=values)
            return result
    result["note"] = (note + "; " if note else "") + "optuna could not compute importances (all scores equal?)"
    return result


def _plain(value, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if _key(c) == _key(value)), value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def _key(value):
    return repr(value.item() if hasattr(value, "item") else value)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
