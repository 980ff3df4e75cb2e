"""A rank's context (trainer.worker): where each rank runs, as the fold records show it."""

from __future__ import annotations

import os

from trainer.worker import memory_by_rank, where_by_rank


def test_outside_ray_a_rank_is_its_process_on_no_node():
    assert where_by_rank(1) == {"pid": [os.getpid()], "node_id": [None]}


def test_the_memory_record_names_the_process_it_measured():
    record = memory_by_rank(100.0, 1)
    assert record["pid"] == [os.getpid()] and record["node_id"] == [None]
    assert record["rss_start_mb"] == [100.0] and record["peak_rss_mb"][0] > 0


def test_deepspeed_imports_without_mlflow_and_mlflow_still_imports_after():
    """The worker's DeepSpeed import skips the MLflow its autotuner would pull in (seconds per worker start), and
    leaves mlflow importable: in a fresh interpreter, as a worker starts."""
    import subprocess
    import sys
    from importlib.util import find_spec

    import pytest

    if find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed (the tracking or dev extra)")
    probe = (
        "import sys\n"
        "from trainer.worker import import_deepspeed\n"
        "ds = import_deepspeed()\n"
        "from deepspeed.autotuning import autotuner\n"
        "print('mlflow' in sys.modules, autotuner.has_mlflow, hasattr(ds, 'initialize'))\n"
        "import mlflow\n"
        "print(hasattr(mlflow, 'start_run'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    # The last two lines: DeepSpeed logs its accelerator choice to stdout before them.
    assert done.stdout.splitlines()[-2:] == ["False False True", "True"], done.stdout + done.stderr
