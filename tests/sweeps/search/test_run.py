"""sweeps/search/run.py: when a sweep that Tune returned from counts as interrupted."""

from sweeps.layout import SweepDir
from sweeps.search.run import ended_early


def test_fewer_trials_are_an_interruption_unless_the_time_budget_was_spent(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))  # no Tune state saved: no trial left running
    one_trial = [object()]
    assert ended_early(sweep, one_trial, 3)  # stopped before it created every trial
    assert not ended_early(sweep, one_trial, 3, budget_spent=True)  # search.time_budget_s ended the proposals
    assert not ended_early(sweep, [object()] * 3, 3)


def test_a_resumed_sweep_counts_its_ended_trials_out_of_the_concurrency(tmp_path):
    from sweeps.layout import SweepDir
    from sweeps.search.run import trials_done

    sweep = SweepDir(str(tmp_path / "s"))
    assert trials_done(sweep) == 0  # a new sweep
    states = ["completed", "pruned", "failed", "unfinished", "pending"]
    sweep.write(sweep.summary, {"trials": [{"trial_id": str(i), "state": s} for i, s in enumerate(states)]})
    assert trials_done(sweep) == 3
    assert trials_done(sweep, retry_failed=True) == 2  # failed trials run again
