"""Accepted means runnable: a configuration that pre-flight accepts trains, and a value just outside a field's
bounds is refused.

Hypothesis samples configurations inside the accepted bounds (the task, search-space ranges, initial points
written as YAML or a script may write them, fixed train/model/deepspeed settings, tiny BERT or GPT-2, a tiny
CSV), runs each through `preflight` and then ONE training step of a trial of it: the recipe's own start_fold
and train_step (trainer.loop) in this process, as rank 0 of a gloo world of one (no Ray: DeepSpeed only needs
the process group).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeps.config import SweepConfig, load_config
from zerotune.errors import ConfigError

ROWS = 30  # 3 classes x 10: k <= 3 stratified folds with a test split, batches up to 8 on one worker
BLOCKS, POSITIONS = 2, 128  # tiny BERT and tiny GPT-2 (tests/tiny_models.py)
METHODS = ["full", "partial", "lora", "prompt-tuning"]
TARGETS = {"bert": [["query", "value"], ["dense"]], "gpt2": [["c_attn"], ["c_attn", "c_proj"]]}  # LoRA targets


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    from tiny_models import keyword_rows

    path = tmp_path_factory.mktemp("runnable") / "rows.csv"
    keyword_rows(ROWS).to_csv(path, index=False)
    return path


# -- what a sweep file may say, inside the accepted bounds --------------------------------------------------


def _float_range(low: float, high: float, *, log: bool = False):
    ends = st.tuples(st.floats(low, high), st.floats(low, high)).filter(lambda e: e[0] < e[1])
    return ends.map(lambda e: {"low": e[0], "high": e[1], **({"log": True} if log else {})})


def _int_range(low: int, high: int):
    return st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda e: {"low": min(e), "high": max(e)})


def _choices(values):
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True)


SPACE = {
    "learning_rate": _float_range(1e-6, 1.0, log=True),
    "epochs": _int_range(1, 3),
    "weight_decay": _float_range(0.0, 0.99),
    "warmup_ratio": _float_range(0.0, 0.99),
    "dropout": _float_range(0.0, 0.9),
    "zero_stage": _choices([0, 1, 2, 3]),
    "optimizer": _choices(["adamw", "sgd"]),
    "method": _choices(METHODS),
    "lora_rank": _choices([1, 2, 4, 16]),
    "top_layers": _int_range(0, BLOCKS),
    "prompt_tokens": _choices([1, 4, 32]),
}

spaces = st.fixed_dictionaries({"batch_size": _choices([1, 2, 4, 8])}, optional=SPACE)

fixed = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "train": st.fixed_dictionaries(
            {
                "learning_rate": st.floats(1e-8, 10.0),
                "grad_accum": st.integers(1, 4),
                "epochs": st.integers(1, 3),
                "weight_decay": st.floats(0.0, 0.99),
                "warmup_ratio": st.floats(0.0, 0.99),
                "schedule": st.sampled_from(["linear", "cosine", "constant"]),
                "optimizer": st.sampled_from(["adamw", "sgd"]),
                "momentum": st.floats(0.0, 0.99),
                "max_grad_norm": st.floats(0.0, 10.0),
                "max_steps_per_epoch": st.none() | st.integers(1, 3),
                "eval_batch_size": st.integers(1, 64),
            }
        ),
        "model": st.fixed_dictionaries(
            {
                "max_length": st.integers(8, POSITIONS - 32),  # room for the most prompt tokens sampled
                "dropout": st.none() | st.floats(0.0, 0.9),
                "classifier_dropout": st.none() | st.floats(0.0, 0.9),
                "method": st.sampled_from(METHODS),
                "top_layers": st.integers(0, BLOCKS),
                "prompt_tokens": st.integers(1, 32),
                "lora": st.fixed_dictionaries(
                    {
                        "rank": st.integers(1, 16),
                        "alpha": st.floats(0.5, 64.0),
                        "dropout": st.floats(0.0, 0.5),
                        "target_modules": st.none(),  # set per architecture in `sweeps`
                    }
                ),
            }
        ),
        "deepspeed": st.fixed_dictionaries({"zero_stage": st.sampled_from([0, 1, 2, 3])}),
        "folds": st.fixed_dictionaries({"k": st.integers(2, 3), "test_fraction": st.sampled_from([0.0, 0.1, 0.3])}),
    }
)


def _value_in(setting, key: str):
    """A strategy for one value this search-space setting can draw, as the sampler hands it to a trial."""
    if isinstance(setting, list):
        return st.sampled_from(setting)
    if "log" in setting or key in {"weight_decay", "warmup_ratio", "dropout"}:
        return st.floats(setting["low"], setting["high"])
    return st.integers(setting["low"], setting["high"])


def _written(value):
    """The same value as a config file or script may write it: an int as 16.0, a float as the string YAML makes
    of 1e-3 (YAML reads a float without a dot as a string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return st.sampled_from([value, float(value)])
    if isinstance(value, float):
        return st.sampled_from([value, repr(value)])
    return st.just(value)


@st.composite
def sweeps(draw, models: dict, data):
    """(a sweep config tree, the params of the trial to train: an initial point of it or a draw from its space)."""
    space, raw = draw(spaces), draw(fixed)
    task = draw(st.sampled_from(sorted(models)))
    targets = TARGETS["gpt2" if task == "causal-lm" else "bert"]
    raw["model"]["lora"]["target_modules"] = draw(st.sampled_from([None, *targets]))
    point = st.fixed_dictionaries({key: _value_in(setting, key) for key, setting in space.items()})
    written = point.flatmap(lambda p: st.fixed_dictionaries({key: _written(value) for key, value in p.items()}))
    points = draw(st.lists(written, max_size=2))
    raw["model"]["path"] = str(models[task])
    raw.update(
        name="runnable",
        task=task,
        data={"path": str(data), "label_column": "score" if task == "regression" else "label"},
        scaling={"num_workers": 1, "cpus_per_worker": 1},
        search={"num_trials": 2, "space": space, "initial_points": points or None},
    )
    # the trial: the first initial point (Tune hands it on as the loaded config holds it), else a sampler's draw
    return raw, None if points else draw(point)


# -- the properties -----------------------------------------------------------------------------------------


def _one_step(cfg: SweepConfig, params: dict | None) -> float:
    """Pre-flight, then the first training step of the trial with `params` (None: the first initial point), as
    its worker would run it."""
    import numpy as np
    import torch

    from sweeps.preflight.data import encode, fit_spec
    from sweeps.preflight.validate import preflight
    from sweeps.search.space import apply_params
    from trainer.checkpoint import ResumeState
    from trainer.loop import start_fold, train_step
    from trainer.worker import Worker, rss_mb

    checked = preflight(cfg, resources=lambda: None)
    train, deepspeed, model = apply_params(cfg, cfg.search.initial_points[0] if params is None else params)
    spec = fit_spec(cfg, train=train, deepspeed=deepspeed, model=model)
    worker = Worker(
        fit=0,
        spec=spec,
        encoded=encode(cfg, checked.examples),
        folds=checked.folds.folds,
        rank=0,
        world=1,
        device=torch.device("cpu"),
        bf16=False,
        records=None,
        hook=None,
        rss_start_mb=rss_mb(),
    )
    fold = start_fold(worker, 0, ResumeState())
    rows = np.asarray(checked.folds.folds[0][0][: spec.train.batch_size])
    loss, _ = train_step(worker, fold, rows, at=(0, 0, 0))
    return float(loss)


@pytest.mark.usefixtures("world_of_one")
def test_every_accepted_configuration_trains(tiny_bert_dir, tiny_gpt2_dir, tiny_csv):
    models = {"classification": tiny_bert_dir, "regression": tiny_bert_dir, "causal-lm": tiny_gpt2_dir}

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(sweeps(models, tiny_csv))
    def accepted_trains(case):
        raw, params = case
        cfg = load_config(raw=raw)  # inside every bound: loads (a refusal here fails the test)
        assert math.isfinite(_one_step(cfg, params))

    accepted_trains()


# -- just outside the bounds --------------------------------------------------------------------------------


def _bounded_fields(model=SweepConfig, prefix=""):
    """(dotted key, bound kind, bound, int field?) of every numeric bound in the config tree."""
    import annotated_types as at

    from sweeps.search.fields import base_type

    for name, field in model.model_fields.items():
        base = base_type(field.annotation)
        if hasattr(base, "model_fields"):
            yield from _bounded_fields(base, f"{prefix}{name}.")
            continue
        for m in field.metadata:
            for kind in ("gt", "ge", "lt", "le"):
                if isinstance(m, getattr(at, kind.capitalize())):
                    yield f"{prefix}{name}", kind, getattr(m, kind), base is int


def _outside(kind: str, bound, is_int: bool) -> list:
    """Values just past a bound: the bound itself where it is exclusive, and the next value beyond it."""
    if is_int:
        return [bound] if kind in ("gt", "lt") else [bound - 1 if kind == "ge" else bound + 1]
    beyond = math.nextafter(bound, -math.inf if kind in ("gt", "ge") else math.inf)
    return [beyond, *([bound] if kind in ("gt", "lt") else [])]


OUTSIDE = [
    (key, value) for key, kind, bound, is_int in sorted(_bounded_fields()) for value in _outside(kind, bound, is_int)
]


def test_the_bounds_downstream_libraries_need_are_declared():
    """numpy/sklearn seeds are 32-bit; Ray reserves CPUs in steps of 0.0001; the rest as before."""
    bounds = {(key, kind): bound for key, kind, bound, _ in _bounded_fields()}
    assert bounds[("seed", "le")] == 2**32 - 1 and bounds[("scaling.cpus_per_worker", "ge")] == 0.0001
    assert {("train.learning_rate", "gt"), ("train.batch_size", "ge"), ("folds.k", "ge")} <= set(bounds)


@pytest.mark.parametrize(("key", "value"), OUTSIDE, ids=[f"{k}={v!r}" for k, v in OUTSIDE])
def test_a_value_just_outside_a_bound_is_refused_naming_its_field(key, value):
    raw: dict = {"data": {"path": "x.csv"}}
    *groups, leaf = key.split(".")
    node = raw
    for group in groups:
        node = node.setdefault(group, {})
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        load_config(raw=raw)
    assert key in [field for field, _, _ in err.value.problems], err.value.problems


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    st.sampled_from(
        ["train.learning_rate", "train.weight_decay", "train.max_grad_norm", "model.dropout", "scaling.cpus_per_worker"]
    ),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_a_float_that_is_not_finite_is_refused(key, value):
    group, leaf = key.split(".")
    with pytest.raises(ConfigError) as err:
        load_config(raw={"data": {"path": "x.csv"}, group: {leaf: value}})
    assert [field for field, _, _ in err.value.problems] == [key]
