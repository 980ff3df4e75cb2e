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
