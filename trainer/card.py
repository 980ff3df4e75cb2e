"""The exported model's card (README.md), built with huggingface_hub's ModelCard/ModelCardData so the hub reads its
metadata: base model, pipeline tag, license, the training data, and a model-index with the cross-validated mean and
std and the test metrics. The body shows the fit's config, preprocessing and environment record.
"""

from __future__ import annotations

from pathlib import Path

from zerotune.environment import summary_rows

# The hub's pipeline tag per task: a regression head is a one-logit text-classification model on the hub.
PIPELINE_TAGS = {
    "classification": "text-classification",
    "regression": "text-classification",
    "causal-lm": "text-generation",
}
CV_SPLIT, TEST_SPLIT = "cross-validation", "test"

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Fine-tuned with zerotune ({{ task }}, method {{ method }}, export {{ export_format }}) from
{{ base }}; hyperparameters chosen by a cross-validated sweep.

{% for line in lines %}- {{ line }}
{% endfor %}
{% if results %}## Evaluation

| metric | split | value |
|---|---|---|
{% for name, split, value in results %}| {{ name }} | {{ split }} | {{ value }} |
{% endfor %}{% endif %}
{% if preprocessing %}## Preprocessing

What `zerotune predict` applies to new rows (recorded in `zerotune.json`):

{% for k, v in preprocessing %}- {{ k }}: {{ v }}
{% endfor %}{% endif %}
{% if environment %}## Environment

| | |
|---|---|
{% for k, v in environment %}| {{ k }} | {{ v }} |
{% endfor %}{% endif %}
## Usage

{{ usage }}
"""

_SHOWN_PREPROCESSING = ("normalize", "paired", "text_column", "text_pair_column", "max_length", "prompt_format")


def build_card(spec, label_names, *, fmt: str, results: dict | None = None, environment: dict | None = None):
    """The card of a fit of `spec` (trainer.spec.FitSpec) exported as `fmt` (full, merged, adapter). `results`:
    {"cv": {metric, mean, std, k}, "test": {metric: value}} once known (a refit); `environment`: its environment record
    (zerotune.environment)."""
    from huggingface_hub import ModelCard, ModelCardData

    from trainer.tables import is_hub_name

    pre = spec.preprocessing or {}
    base = spec.model.path if is_hub_name(spec.model.path) else None
    dataset = dataset_name(pre.get("dataset"))
    evals = eval_results(results, task=spec.task, dataset=dataset, subset=pre.get("dataset_subset"))
    data = ModelCardData(
        model_name=f"{short_name(spec.model.path)}-zerotune-{spec.task}",
        base_model=base,
        pipeline_tag=PIPELINE_TAGS[spec.task],
        library_name="peft" if fmt == "adapter" else "transformers",
        license=base_license(spec.model),
        datasets=[dataset] if dataset else None,
        tags=["zerotune", spec.task, spec.model.method],
        eval_results=evals or None,
    )
    return ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=f"Fine-tuned with zerotune ({spec.task})",
        task=spec.task,
        method=spec.model.method,
        export_format=fmt,
        base=f"`{spec.model.path}`",
        lines=_lines(spec, label_names, fmt),
        results=[(r.metric_name or r.metric_type, r.dataset_split, f"{r.metric_value:.4f}") for r in evals],
        preprocessing=[(k, pre[k]) for k in _SHOWN_PREPROCESSING if pre.get(k) is not None],
        environment=[(k, v.replace("|", "\\|")) for k, v in summary_rows(environment)] if environment else [],
        usage=_usage(spec.task, fmt),
    )


def eval_results(results: dict | None, *, task: str, dataset: str | None, subset: str | None) -> list:
    """The model-index entries: the cross-validated mean and std of the objective, and each test metric."""
    from huggingface_hub import EvalResult

    if not results:
        return []
    common = {
        "task_type": PIPELINE_TAGS[task],
        "dataset_type": dataset or "custom",
        "dataset_name": dataset or "custom",
        "dataset_config": subset,
    }
    out = []
    cv = results.get("cv")
    if cv and cv.get("mean") is not None:
        metric, k = cv["metric"], cv.get("k")
        folds = f"{k}-fold " if k else ""
        out.append(
            EvalResult(
                **common, dataset_split=CV_SPLIT, metric_type=metric, metric_value=round(float(cv["mean"]), 6),
                metric_name=f"{metric} ({folds}cross-validated mean)",
            )
        )  # fmt: skip
        if cv.get("std") is not None:
            out.append(
                EvalResult(
                    **common, dataset_split=CV_SPLIT, metric_type=f"{metric}_std",
                    metric_value=round(float(cv["std"]), 6), metric_name=f"{metric} ({folds}cross-validated std)",
                )
            )  # fmt: skip
    for metric, value in (results.get("test") or {}).items():
        out.append(
            EvalResult(
                **common, dataset_split=TEST_SPLIT, metric_type=metric, metric_value=round(float(value), 6),
                metric_name=f"{metric} (held-out test)",
            )
        )  # fmt: skip
    return out


def dataset_name(path: str | None) -> str | None:
    """The training data's name for the card: a hub data set's id, else `short_name`."""
    from trainer.tables import is_hub_name

    if not path:
        return None
    return path if is_hub_name(path) else short_name(path)


def short_name(path: str) -> str:
    """A package's name (pkg:PACKAGE/...), else the file's or directory's name: a local path in a card would leak the
    training machine's layout."""
    if path.startswith("pkg:"):
        return path[4:].split("/")[0]
    return Path(path.rstrip("/")).name or path


def base_license(model) -> str | None:
    """The base model's license, as its own card (README.md metadata) in its local directory states it; None when the
    model is not local or its card says none (a hub model is not asked: no network is assumed)."""
    from huggingface_hub import ModelCard

    from trainer.model import locate

    try:
        where, _ = locate(model)
    except Exception:  # a missing base model must not sink an export that already trained
        return None
    readme = Path(where) / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.to_dict().get("license")
    except Exception:  # a malformed card is the base model's problem, not the export's
        return None


def _lines(spec, label_names, fmt: str) -> list[str]:
    t = spec.train
    lines = [
        f"base model: `{spec.model.path}`",
        f"hyperparameters: learning_rate={t.learning_rate:g}, batch_size={t.batch_size}, epochs={t.epochs}, "
        f"weight_decay={t.weight_decay:g}, optimizer={t.optimizer}, zero_stage={spec.deepspeed.zero_stage}",
        f"method: {spec.model.method} (export: {fmt})",
    ]
    if label_names:
        lines.append(f"labels: {', '.join(label_names)}")
    lines += [f"{key}: {value}" for key, value in (spec.card or {}).items()]
    return lines


def _usage(task: str, fmt: str) -> str:
    load = (
        "A PEFT adapter over the base model above: reload with `trainer.export.load_exported(dir)` "
        "(or `PeftModel.from_pretrained(base, dir)`)."
        if fmt == "adapter"
        else "Reload with `AutoModelForSequenceClassification.from_pretrained(dir)` (or `AutoModelForCausalLM`)."
    )
    run = (
        "`zerotune predict DIR --input prompts.csv` generates with the recorded prompt format."
        if task == "causal-lm"
        else "`zerotune predict DIR --input rows.csv` applies the recorded preprocessing."
    )
    return f"{load} {run}"
