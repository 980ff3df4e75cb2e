"""The embedded local Ray (cluster.local): the environment its workers get."""

from cluster.local import PREEMPTION_WATCHER, _local_env


def test_the_embedded_ray_turns_the_preemption_watcher_off_unless_the_user_set_it(monkeypatch):
    monkeypatch.delenv(PREEMPTION_WATCHER, raising=False)
    env = _local_env(8265)
    assert env[PREEMPTION_WATCHER] == "0" and env["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:8265"
    monkeypatch.setenv(PREEMPTION_WATCHER, "1")
    assert _local_env(8265)[PREEMPTION_WATCHER] == "1"
