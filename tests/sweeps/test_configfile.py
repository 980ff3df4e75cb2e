"""Reading a config file and overrides: YAML aliases cannot expand into a huge document; the errors name the file."""

import pytest

from sweeps.configfile import MAX_NODES, load_yaml, parse_overrides, read_yaml
from zerotune.errors import ConfigError


def _laughs(levels: int) -> str:
    """The "billion laughs" document: each level lists the previous one 9 times (9**levels strings)."""
    lines = ["l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"data: {{path: x.csv, text_column: *l{levels - 1}}}"]) + "\n"


def _refused(path) -> tuple[str, str, str]:
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    [problem] = err.value.problems
    return problem


def test_a_billion_laughs_is_refused_while_loading_naming_the_file(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9))
    field, message, fix = _refused(path)  # before any Python object is built: nothing expands
    assert field == "config" and str(path) in message and f"more than {MAX_NODES}" in message and "alias" in fix


def test_recursive_aliases_and_deep_nesting_are_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("data: &d {path: x.csv, again: *d}\n")
    field, message, _ = _refused(path)
    assert field == "config" and "alias inside the node it refers to" in message
    path.write_text("data: " + "[" * 5000 + "]" * 5000 + "\n")
    field, message, _ = _refused(path)
    assert field == "config" and "nested too deep" in message


def test_small_anchors_still_load():
    text = "search:\n  initial_points: [&p {learning_rate: 1.0e-4}, *p, *p]\n" + _laughs(3)
    tree = load_yaml(text, source="x")
    assert tree["search"]["initial_points"] == [{"learning_rate": 1e-4}] * 3 and len(tree["data"]["text_column"]) == 9


def test_overrides_are_bounded_too():
    assert parse_overrides(["train.epochs=2"]) == {"train": {"epochs": 2}}
    many = "[&b [" + ", ".join(["x"] * 400) + "], " + ", ".join(["*b"] * 300) + "]"  # 120,000 nodes
    with pytest.raises(ConfigError, match="the override data.text_column expands to more than"):
        parse_overrides([f"data.text_column={many}"])
