"""The report's facts as Markdown (plots linked) and self-contained HTML (plots embedded as base64 PNGs)."""

from __future__ import annotations

import base64
import html as _html
import json

from zerotune.environment import summary_rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _tables(facts: dict) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """(section, header, rows, text before the table) in report order; both renderers walk this."""
    metric, out = facts["metric"], []
    d, c, s = facts["data"], facts["cost"], facts["states"]
    summary = [
        ["sweep", facts["name"]],
        ["task", facts["task"]],
        ["objective", f"{metric} ({facts['mode']})"],
        [
            "data",
            f"{d['path']}: {d['n_rows']} rows, {d['n_test']} held out for test, "
            f"{d['folds']['k']}-fold {d['folds']['strategy']}",
        ],
        [
            "trials",
            f"{s['completed']} completed, {s['pruned']} pruned, {s['failed']} failed, {s['unfinished']} unfinished",
        ],
        [
            "compute",
            f"{_fmt(c['worker_seconds'])} worker-seconds, {_fmt(c['gpu_hours'])} GPU-hours"
            + ("" if c["use_gpu"] else " (CPU only)"),
        ],
        ["wall time", f"{_fmt(c['wall_s'])} s (orchestration share {_fmt(c['orchestration_share'])})"],
        ["storage", facts["storage"]],
    ]
    for b in (facts.get("baseline"), facts.get("tfidf_baseline")):
        if b:
            summary.append(["baseline", f"{b['name']} on the same folds: {metric} {_fmt(b.get(metric))}"])
    out.append(("Summary", ["", ""], summary, None))
    best = facts["best"]
    if best is None:
        out.append(("Best trial", [], [], "No trial completed every fold."))
    else:
        names = list(best["metrics"])
        rows = [
            [str(f["fold"]), str(f["n_train"]), str(f["n_val"]), *[_fmt(f["metrics"].get(k)) for k in names]]
            for f in best["folds"]
        ]
        rows.append(["mean", "", "", *[_fmt(best["metrics"][k]["mean"]) for k in names]])
        rows.append(["std", "", "", *[_fmt(best["metrics"][k]["std"]) for k in names]])
        intro = (
            f"Trial {best['trial_id']}: {metric} {_fmt(best['mean'])} ± {_fmt(best['std'])} "
            f"over {len(best['folds'])} folds; "
            f"params: {_fmt(best['params'])}; {_fmt(best['trainable_params'])} trainable parameters."
        ) + (f" Note: {best['selection_note']}." if best.get("selection_note") else "")
        out.append(("Best trial", ["fold", "train rows", "val rows", *names], rows, intro))
        if best.get("per_class"):
            out.append(_per_class(best["per_class"]))
        if best.get("worst_rows"):
            out.append(_worst_rows(best["worst_rows"], facts["task"]))
        cfg_rows = [[group, _fmt(values)] for group, values in best["config"].items()]
        out.append(("Best trial: effective config", ["group", "values"], cfg_rows, None))
        if best.get("generations"):
            out.append(_generations(best["generations"]))
    refit = facts.get("refit")
    if refit:
        rows = [[r["metric"], _fmt(r["cv_mean"]), _fmt(r["cv_std"]), _fmt(r["test"])] for r in refit["compare"]]
        intro = (
            f"The best config retrained on all {refit['n_train']} non-test rows "
            f"and scored on the {refit['n_test']} held-out rows; "
            f"model: {refit['model_dir']}"
        )
        out.append(
            (
                "Refit: test split beside the cross-validation estimate",
                ["metric", "CV mean", "CV std", "test"],
                rows,
                intro,
            )
        )
    trial_rows = [
        [
            t["trial_id"],
            t["state"] + (f" ({t['reason']})" if t["reason"] else ""),
            f"{t['folds_done']}/{d['folds']['k']}",
            _fmt(t["mean"]),
            _fmt(t["std"]),
            _fmt(t["duration_s"]),
            _fmt(t["worker_seconds"]),
            _fmt(t["gpu_hours"]),
            _fmt(t["params"]),
        ]
        for t in facts["trials"]
    ]
    out.append(
        (
            "All trials",
            ["trial", "state", "folds", f"mean {metric}", "std", "duration s", "worker-s", "GPU-h", "params"],
            trial_rows,
            "In start order.",
        )
    )
    methods = facts.get("methods") or []
    if len(methods) > 1 or any(m["method"] != "full" for m in methods):
        rows = [
            [
                m["method"],
                str(m["trials"]),
                str(m["completed"]),
                _fmt(m["best_mean"]),
                _fmt(m["best_std"]),
                _fmt(m["median_mean"]),
                _params_range(m),
                _fmt(m["trainable_share"]),
                _fmt(m["best_trial"]),
            ]
            for m in methods
        ]
        out.append(
            (
                "Fine-tuning methods",
                [
                    "method",
                    "trials",
                    "completed",
                    f"best mean {metric}",
                    "std",
                    f"median {metric}",
                    "trainable params",
                    "trainable share",
                    "best trial",
                ],
                rows,
                "Cross-validated scores of trials that finished every fold, by method.",
            )
        )
    imp = facts["importances"]
    if imp["values"]:
        rows = [[k, _fmt(v)] for k, v in imp["values"].items()]
        out.append(("Parameter importances", ["parameter", f"importance ({imp['method']})"], rows, imp["note"]))
    else:
        out.append(("Parameter importances", [], [], imp["note"]))
    for what, rec in (facts.get("environment") or {}).items():
        out.append((f"Environment ({what})", ["", ""], [list(row) for row in summary_rows(rec)], None))
    return out


def _generations(samples: list[dict]) -> tuple[str, list[str], list[list[str]], str]:
    """The best trial's sample generations (train.generate_eval), long texts cut short: a prompt keeps its end (a
    long system prompt opens it, and the question it asks comes last), the answers their start."""

    def cut(text: str, most: int = 160) -> str:
        return text if len(text) <= most else text[: most - 1] + "…"

    def cut_start(text: str, most: int = 160) -> str:
        return text if len(text) <= most else "…" + text[len(text) - most + 1 :]

    rows = [
        [str(g["fold"]), str(g["row"]), cut_start(g["prompt"]), cut(g["reference"]), cut(g["generated"])]
        for g in samples
    ]
    intro = "Greedy generations from validation rows' prompts, against their reference responses (first rows per fold)."
    return ("Best trial: sample generations", ["fold", "row", "prompt", "reference", "generated"], rows, intro)


def _per_class(rows: list[dict]) -> tuple[str, list[str], list[list[str]], str]:
    table = [
        [r["label"], _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"]), _fmt(r["f1_std"]), str(r["support"])]
        for r in rows
    ]
    intro = "Means over the validation folds (the macro scores average these); support: validation rows, all folds."
    return ("Best trial: per class", ["class", "precision", "recall", "F1", "F1 std", "support"], table, intro)


def _worst_rows(rows: list[dict], task: str) -> tuple[str, list[str], list[list[str]], str]:
    """The best trial's worst out-of-fold predictions: where to look for label noise or what the model misses."""

    def cut(text, most: int = 200) -> str:
        return "–" if text is None else text if len(text) <= most else text[: most - 1] + "…"

    if task == "regression":
        header = ["fold", "row", "text", "target", "prediction", "error"]
        table = [
            [str(r["fold"]), str(r["row"]), cut(r["text"]), _fmt(r["target"]), _fmt(r["prediction"]), _fmt(r["error"])]
            for r in rows
        ]
        intro = "Validation rows of the best trial with the largest absolute error, each from the fold holding it out."
    else:
        header = ["fold", "row", "text", "true", "predicted", "confidence", "P(true)"]
        table = [
            [
                str(r["fold"]),
                str(r["row"]),
                cut(r["text"]),
                r["label"],
                r["predicted"],
                _fmt(r["confidence"]),
                _fmt(r["true_prob"]),
            ]
            for r in rows
        ]
        intro = (
            "Validation rows of the best trial the model got most wrong (misclassified first, then the lowest "
            "probability on the true class), each predicted by the fold that held it out; confidence: the predicted "
            "class's probability."
        )
    return ("Best trial: worst-predicted validation rows", header, table, intro)


def _params_range(m: dict) -> str:
    low, high = m["trainable_params_min"], m["trainable_params_max"]
    if low is None:
        return "–"
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(facts: dict) -> str:
    lines = [f"# Sweep report: {facts['name']}", ""]
    for title, header, rows, text in _tables(facts):
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        if header:
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
            lines.append("")
    lines += ["## Plots", ""]
    for plot in facts["plots"].values():
        lines += [f"### {plot['title']}", "", f"![{plot['title']}]({plot['file']})", ""]
    for note in facts.get("notes", []):
        lines.append(f"- note: {note}")
    best = facts["best"]
    if best and best.get("deepspeed"):
        lines += [
            "",
            "## Best trial: effective DeepSpeed config",
            "",
            "```json",
            json.dumps(best["deepspeed"], indent=2),
            "```",
        ]
    return "\n".join(lines) + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}\n"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}\n"
    "th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
    "pre{background:#f6f6f6;padding:1em;font-size:12px}\n"
    ".state-completed{color:#1f77b4}.state-pruned{color:#ff7f0e}.state-failed{color:#d62728;font-weight:bold}"
)


def html(facts: dict, images: dict[str, bytes]) -> str:
    e = _html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep report: {e(facts['name'])}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>Sweep report: {e(facts['name'])}</h1>",
    ]
    for title, header, rows, text in _tables(facts):
        parts.append(f"<h2>{e(title)}</h2>")
        if text:
            parts.append(f"<p>{e(text)}</p>")
        if header:
            parts.append(
                "<table>" + ("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>" if any(header) else "")
            )
            for row in rows:
                cls = f" class='state-{e(row[1].split()[0])}'" if title == "All trials" else ""
                parts.append(f"<tr{cls}>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
            parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for name, plot in facts["plots"].items():
        data = base64.b64encode(images[name]).decode("ascii")
        parts.append(f"<h3>{e(plot['title'])}</h3><img alt='{e(plot['title'])}' src='data:image/png;base64,{data}'>")
    if facts.get("notes"):
        parts.append("<ul>" + "".join(f"<li>note: {e(n)}</li>" for n in facts["notes"]) + "</ul>")
    best = facts["best"]
    if best and best.get("deepspeed"):
        parts.append(
            f"<h2>Best trial: effective DeepSpeed config</h2><pre>{e(json.dumps(best['deepspeed'], indent=2))}</pre>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
