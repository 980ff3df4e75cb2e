"""`zerotune push` up to the requests it sends: a real local HTTP server (tests/hub_server.py) stands in for the hub
and records what huggingface_hub sent: the repository's creation, the branch, the commit's files and their bytes;
offline mode, a missing token and a refusal each end in one error with its fix."""

import json

import pytest

from hub_server import hub_server
from sweeps.cli import main
from sweeps.final.push import upload_plan
from sweeps.layout import SweepDir


@pytest.fixture
def sweep(tmp_path):
    """A sweep directory with a completed refit (model files, metrics, environment) and a built report."""
    sd = SweepDir(str(tmp_path / "results" / "tiny"))
    sd.write(sd.config, {"name": "tiny"})
    sd.write(sd.folds, {"folds": [], "test": [0]})
    run = sd.new_refit()
    model = tmp_path / "results" / "tiny" / "refit" / run.uri.rsplit("/", 1)[1] / "model"
    (model / "sub").mkdir(parents=True)
    (model / "README.md").write_text("---\npipeline_tag: text-classification\n---\n# card\n")
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00\x01weights")
    (model / "sub" / "extra.txt").write_text("nested")
    sd.write(run.metrics, {"metrics": {"f1_macro": 0.5}})
    sd.write(run.environment, {"kind": "refit"})
    sd.mark_refit_complete(run)
    report = tmp_path / "results" / "tiny" / "report"
    (report / "plots").mkdir(parents=True)
    for name in ("report.html", "report.md", "plots/a.png"):
        (report / name).write_text(name)
    return sd


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The hub reachable as far as huggingface_hub is concerned (the Makefile sets HF_HUB_OFFLINE=1, read at its
    import), a token in HF_TOKEN and no token file of this machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")


EXPECTED = [
    "README.md",
    "config.json",
    "model.safetensors",
    "report/plots/a.png",
    "report/report.html",
    "report/report.md",
    "sub/extra.txt",
    "zerotune/environment.json",
    "zerotune/metrics.json",
]


def test_the_upload_plan_puts_the_model_at_the_root_the_report_and_records_beside_it(sweep):
    run = sweep.latest_refit()
    plan = upload_plan(run.model, report_dir=sweep.report, records={"metrics.json": run.metrics})
    assert [u.path_in_repo for u in plan] == [p for p in EXPECTED if p != "zerotune/environment.json"]
    assert dict((u.path_in_repo, u.local) for u in plan)["report/report.md"].endswith("report/report.md")


def test_push_creates_the_repo_and_commits_model_report_and_records(sweep, online, monkeypatch, capsys):
    with hub_server() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code = main(["push", sweep.uri, "--repo", "acme/tiny-clf", "--private", "--revision", "v1", "--format", "json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["files"] == EXPECTED and result["revision"] == "v1" and result["url"] == f"{hub.url}/acme/tiny-clf"

    (create,) = hub.posts(r"^/api/repos/create$")
    assert create["json"]["name"] == "tiny-clf" and create["json"]["organization"] == "acme"
    assert create["json"]["visibility"] == "private" and create["json"]["type"] == "model"
    assert create["headers"]["authorization"] == "Bearer hf_test_token"
    assert len(hub.posts(r"^/api/models/acme/tiny-clf/branch/v1$")) == 1
    (commit,) = hub.posts(r"^/api/models/acme/tiny-clf/commit/v1$")
    header = commit["ndjson"][0]
    assert header["key"] == "header" and "refit" in header["value"]["summary"]
    files = hub.committed_files()
    assert sorted(files) == EXPECTED
    assert files["model.safetensors"] == b"\x00\x01weights" and files["sub/extra.txt"] == b"nested"
    assert files["README.md"].startswith(b"---\npipeline_tag: text-classification")
    assert json.loads(files["zerotune/metrics.json"]) == {"metrics": {"f1_macro": 0.5}}
    (validated,) = hub.posts(r"^/api/validate-yaml$")  # the hub checks the card's metadata before the commit
    assert validated["json"]["content"] == files["README.md"].decode()
    known = ("/api/repos/create", "/api/models/", "/api/validate-yaml")
    assert [r["path"] for r in hub.requests if not r["path"].startswith(known)] == []


def test_push_offline_says_how_to_go_online(sweep, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 (the Makefile's) sets
    assert main(["push", sweep.uri, "--repo", "acme/tiny-clf"]) == 1
    err = capsys.readouterr().err
    assert "error: HF_HUB_OFFLINE: HF_HUB_OFFLINE is set" in err and "fix: run where the hub is reachable" in err


def test_push_without_a_token_or_with_a_refused_one_says_how_to_log_in(sweep, online, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push", sweep.uri, "--repo", "acme/tiny-clf"]) == 1
    assert "error: HF_TOKEN: no Hugging Face token found" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with hub_server() as hub:
        hub.refuse_with = 401
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(["push", sweep.uri, "--repo", "acme/tiny-clf"]) == 1
    err = capsys.readouterr().err
    assert "refused the push (HTTP 401)" in err and "hf auth login" in err
    assert main(["push", sweep.uri, "--repo", "no-org"]) == 2
    assert "error: --repo: 'no-org' is not ORG/MODEL" in capsys.readouterr().err


def test_an_unreachable_hub_is_named_with_its_endpoint(sweep, online, monkeypatch, capsys):
    with hub_server() as hub:
        closed = hub.url  # nothing listens there once the server has stopped
    monkeypatch.setenv("HF_ENDPOINT", closed)
    assert main(["push", sweep.uri, "--repo", "acme/tiny-clf"]) == 1
    err = capsys.readouterr().err
    assert f"error: HF_ENDPOINT: cannot reach the hub at {closed}: ConnectError" in err and "fix:" in err
