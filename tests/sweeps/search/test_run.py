"""sweeps/search/run.py: when a sweep that Tune returned from counts as interrupted."""

from sweeps.layout import SweepDir
from sweeps.search.run import ended_early


def test_fewer_trials_are_an_interruption_unless_the_time_budget_was_spent(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))  # no Tune state saved: no trial left running
    one_trial = [object()]
    assert ended_early(sweep, one_trial, 3)  # stopped before it created every trial
    assert not ended_early(sweep, one_trial, 3, budget_spent=True)  # search.time_budget_s ended the proposals
    assert not ended_early(sweep, [object()] * 3, 3)
