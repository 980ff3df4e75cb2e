"""Hyperparameter importances: optuna's evaluators over an in-memory study rebuilt from recorded trials."""

from __future__ import annotations

import math

from sweeps.layout import TrialState
from sweeps.search.space import dimension, optuna_distributions


def param_importances(trials: list[dict], *, space, mode: str, cfg=None) -> dict:
    """{"method", "values" {param: share}, "trials_used", "note"}; values is empty when it cannot be computed.

    `space` is the sweep's SpaceConfig: every searched dimension counts (its distribution comes from the one
    dimension table, as Tune's domains do). Completed trials are used; with fewer than two, pruned trials join
    with their partial fold means (the note says so). Failed trials carry no score and are left out.

    Conditional dimensions: a value counts only in a trial whose condition held (a full fine-tuning trial draws
    no lora_rank; one recorded before the space was define-by-run carries an unused one), and optuna's evaluators
    need one set of parameters across the trials,
    so a dimension used by only some of the scored trials is left out (the note names it). `cfg` (the
    SweepConfig) gives the fixed value of an unsearched condition path, e.g. model.method; without it such
    conditions count as holding.
    """
    import optuna

    dists = optuna_distributions(space)
    completed = [t for t in trials if t["state"] == TrialState.COMPLETED and _finite(t["mean"])]
    used, note = completed, None
    if len(completed) < 2:
        pruned = [t for t in trials if t["state"] == TrialState.PRUNED and _finite(t["mean"])]
        used = completed + pruned
        if pruned:
            note = (
                f"only {len(completed)} completed trial(s): pruned trials are included with the mean over the "
                "folds they reached"
            )
    result = {"method": None, "values": {}, "trials_used": len(used), "note": note}
    if len(used) < 2:
        result["note"] = f"parameter importances need at least 2 scored trials; this sweep has {len(used)}"
        return result
    # the values each trial used: a conditional dimension's value only where its condition held
    active = [
        {k: t["params"][k] for k in dists if k in t["params"] and dimension(k).applies(t["params"], cfg)} for t in used
    ]
    everywhere = [k for k in dists if all(k in a for a in active)]
    partly = [k for k in dists if k not in everywhere and any(k in a for a in active)]
    if partly:
        left = f"{', '.join(partly)} left out: used by only some of the scored trials"
        note = f"{note}; {left}" if note else left
        result["note"] = note
    varied = {k: dists[k] for k in everywhere if len({_key(a[k]) for a in active}) > 1}
    if not varied:
        none = "no searched parameter took more than one value among the scored trials"
        result["note"] = f"{note}; {none}" if note else none
        return result
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for a, t in zip(active, used, strict=True):
        params = {k: _plain(a[k], d) for k, d in varied.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=varied, value=float(t["mean"])))
    evaluators = [
        ("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)),
        ("mean decrease impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)),
    ]
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
