"""The shared tiny sweep's refit export, end to end: its environment records (sweep and refit), its model card (hub
metadata with the cross-validated estimate and the test metrics in the model-index), `zerotune predict` applying the
preprocessing the export recorded, and `zerotune push` up to the requests it sends (a real local HTTP server as
HF_ENDPOINT; offline, as the Makefile runs it, one error with its fix). No fit of its own: it reads the fixture's."""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from hub_server import hub_server
from sweeps.cli import main
from sweeps.layout import SweepDir

pytestmark = pytest.mark.integration


def _fullwidth(text: str) -> str:
    """The text as NFKC folds back: ASCII letters and digits fullwidth, spaces doubled."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text).replace(" ", "  ")


def test_the_refit_export_records_its_environment_card_and_preprocessing_and_pushes(
    tiny_sweep, keyword_csv, tmp_path, monkeypatch, capsys
):
    from huggingface_hub import ModelCard, constants
    from huggingface_hub.repocard_data import model_index_to_eval_results

    cfg, summary, root, _ = tiny_sweep
    run = SweepDir(str(root)).latest_refit()
    model = Path(run.model)

    sweep_env = json.loads((root / "environment.json").read_text())
    assert sweep_env["kind"] == "sweep" and "sweep run sweep.yaml" in sweep_env["command"]
    assert sweep_env["config"]["name"] == cfg.name and sweep_env["packages"]["torch"] == metadata.version("torch")
    refit_env = json.loads(Path(run.environment).read_text())
    assert refit_env["kind"] == "refit" and refit_env["config"] == summary["refit"]["config"]
    assert refit_env["worker"]["packages"]["deepspeed"] == metadata.version("deepspeed")  # the training worker's
    assert main(["env", str(root), "--format", "json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"sweep", "refit"}

    card = ModelCard.load(model / "README.md")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] == [Path(keyword_csv).name]
    _, results = model_index_to_eval_results(meta["model-index"])
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert values[("cross-validation", cfg.metric)] == round(summary["best"]["mean"], 6)
    assert values[("cross-validation", f"{cfg.metric}_std")] == round(summary["best"]["std"], 6)
    assert values[("test", "f1_macro")] == round(summary["refit"]["metrics"]["f1_macro"], 6)
    assert "## Environment" in card.text and "| worker host |" in card.text and "- test metrics:" in card.text

    recorded = json.loads((model / "zerotune.json").read_text())["preprocessing"]
    assert recorded["normalize"] is True and recorded["max_length"] == cfg.model.max_length
    assert recorded["text_column"] == "text" and recorded["paired"] is False
    texts = list(pd.read_csv(keyword_csv)["text"].head(4))
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"text": texts + [_fullwidth(t) for t in texts]}).to_csv(rows, index=False)
    assert main(["predict", str(root), "--input", str(rows), "--device", "auto", "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["predictions"]
    probs = [[v for k, v in p.items() if k.startswith("p_")] for p in predicted]
    assert probs[:4] == probs[4:]  # the mangled rows are the same rows once normalised as training did

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with hub_server() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(["push", str(root), "--repo", "acme/tiny-keywords", "--format", "json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    files = hub.committed_files()
    assert sorted(files) == pushed["files"] == sorted(pushed["files"])
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "zerotune.json", "report/report.html",
            "report/report.md", "zerotune/metrics.json", "zerotune/environment.json"} <= set(files)  # fmt: skip
    assert files["README.md"] == (model / "README.md").read_bytes()
    assert b"## Environment (sweep)" in files["report/report.md"]  # the report shows the records too
    assert files["model.safetensors"] == (model / "model.safetensors").read_bytes()
    assert len(hub.posts(r"^/api/repos/create$")) == 1 and len(hub.posts(r"/commit/main$")) == 1

    # As `make test` runs it (HF_HUB_OFFLINE=1): one error with its fix, before any request.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    offline = subprocess.run([sys.executable, "-m", "sweeps", "push", str(root), "--repo", "acme/tiny-keywords"],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert offline.returncode == 1 and "error: HF_HUB_OFFLINE:" in offline.stderr and "fix:" in offline.stderr
