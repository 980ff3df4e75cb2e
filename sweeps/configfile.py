"""A sweep config file and `key=value` overrides, read into one plain tree (sweeps.config validates it).

YAML is read with PyYAML's SafeLoader (no tags that run code) and bounded: aliases are allowed (an anchor is a
handy way to repeat a setting), but the document they expand to may hold at most MAX_NODES nodes, counted on
the composed node graph before any Python object is built. PyYAML shares an aliased node instead of copying it,
so a "billion laughs" file loads in microseconds and only explodes later, in whatever walks the tree
(validation, error messages, JSON): it is refused here, naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zerotune.errors import ConfigError

# A sweep config has a few hundred nodes; a long initial_points list a few thousand.
MAX_NODES = 100_000


def load_yaml(text: str, *, source: str):
    """`text` as Python objects; ConfigError (field "config", naming `source`) for a document that is too large
    once its aliases are expanded, recursive, or nested too deep. Syntax errors stay yaml.YAMLError."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise _refused(source, "is nested too deep", "flatten the document") from None
    finally:
        loader.dispose()


def _refused(source: str, why: str, fix: str) -> ConfigError:
    return ConfigError([("config", f"{source} {why}", fix)])


def _expanded_size(root, source: str) -> int:
    """Nodes of the document with every alias expanded (each shared node is counted once per use)."""
    from yaml.nodes import MappingNode, SequenceNode

    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise _refused(source, "has an alias inside the node it refers to", "remove the recursive alias")
        open_.add(key)
        if isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            children = node.value
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise _refused(
                    source,
                    f"expands to more than {MAX_NODES} YAML nodes (through its aliases)",
                    "write the config without nested aliases (*name): it must stay a small document",
                )
        open_.discard(key)
        sizes[key] = total
        return total

    return size(root)


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([("config", f"{path} does not exist", "pass the path of a sweep YAML file")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([("config", f"{path} is not UTF-8 text", "save the config as UTF-8 YAML")]) from None
    try:
        raw = load_yaml(text, source=str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([("config", f"{path}: {problem}{where}", "fix the YAML syntax there")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                (
                    "config",
                    f"{path} holds a {type(raw).__name__}, not a mapping",
                    "write `key: value` groups at the top level",
                )
            ]
        )
    return raw


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=value` pairs into a nested dict; values are parsed as YAML scalars."""
    import yaml

    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ConfigError([(item, "an override must look like group.field=value", "e.g. train.epochs=2")])
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "conflicting overrides", "set a group or its fields, not both")])
        try:
            node[leaf] = load_yaml(raw, source=f"the override {key}") if raw else ""
        except yaml.YAMLError:
            node[leaf] = raw
    return tree


def merge(base: dict, top: dict) -> dict:
    """`top` over `base`, group by group."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
