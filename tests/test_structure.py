"""The shape of the code, checked from its source (AST: imports inside functions count as much as top-level ones).

- layering: trainer/ imports neither sweeps/ nor cluster/; cluster/ imports neither trainer/ nor sweeps/;
  zerotune/ (what all three share) imports none of them;
- no import cycles among the project's modules;
- every project import names something that exists (a rename cannot hide in a function body), and every module
  of benchmarks/ imports (so `make bench` cannot break silently);
- no module over MAX_LINES lines;
- nothing in the product, the tests or the examples reads ../shared (outside the repository: a clone lacks it).

The module graph: one node per module (a package is its __init__); `import a.b.c` is an arrow to a.b.c,
`from a.b import c` to the submodule a.b.c when there is one, else to a.b; relative imports are resolved against
the importing module's package. Only modules of PACKAGES count; `if TYPE_CHECKING:` imports count too.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "sweeps", "cluster", "zerotune", "benchmarks")
MAX_LINES = 400
# Who may not import whom: the trainer knows nothing of sweeps or clusters, the cluster code nothing of training
# (neither the trainer nor the training libraries: talking to Ray and Kubernetes must not load torch), and the
# shared base (errors) nothing of any of them.
FORBIDDEN = {
    "trainer": {"sweeps", "cluster"},
    "cluster": {"trainer", "sweeps", "torch", "deepspeed", "transformers", "peft"},
    "zerotune": {"trainer", "sweeps", "cluster"},
}
# The Python API (zerotune.api, re-exported lazily by the zerotune package) is the top layer, not the shared base:
# it wraps the library functions of sweeps/ and may import every package; none of them imports it.
API_MODULES = ("zerotune", "zerotune.api")


@dataclass(frozen=True)
class Import:
    src: str  # importing module
    file: str  # its path, relative to the root
    target: str  # the module the statement names (absolute, before resolution)
    names: tuple[str, ...]  # `from target import names`; () for `import target`
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def find_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under each package directory."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def find_imports(modules: dict[str, Path], root: Path) -> list[Import]:
    """Every import statement of every module, at any nesting depth."""
    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        file = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [Import(module, file, alias.name, (), node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names)
                out.append(Import(module, file, _absolute(module, is_package, node), names, node.lineno))
    return out


def _longest_module(name: str, modules) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def resolve(imp: Import, modules) -> set[str]:
    """The project modules one statement imports (empty for third-party ones)."""
    if imp.target.split(".")[0] not in {m.split(".")[0] for m in modules}:
        return set()
    if not imp.names:
        found = _longest_module(imp.target, modules)
        return {found} if found else set()
    out = set()
    for name in imp.names:
        sub = f"{imp.target}.{name}"
        found = sub if sub in modules else _longest_module(imp.target, modules)
        if found:
            out.add(found)
    return out


def import_graph(modules, imports) -> dict[str, dict[str, Import]]:
    """module -> {imported module: the first statement that imports it}; no self-arrows (`from . import x` in x)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        for dst in resolve(imp, modules):
            if dst != imp.src:
                graph[imp.src].setdefault(dst, imp)
    return graph


def find_components(graph) -> list[set[str]]:
    """The strongly connected components of more than one module: each holds at least one cycle (Tarjan, iterative)."""
    index, low, on_stack, stack, sccs, counter = {}, {}, set(), [], [], [0]

    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    scc.append(top)
                    if top == node:
                        break
                if len(scc) > 1:
                    sccs.append(set(scc))
    return sccs


def shortest_cycle(graph, component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (BFS inside the component), closed: [a, b, ..., a]."""
    first = min(component)
    parent, queue, end = {first: None}, deque([first]), None
    while queue and end is None:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == first:
                end = node
                break
            if child in component and child not in parent:
                parent[child] = node
                queue.append(child)
    path = []
    while end is not None:
        path.append(end)
        end = parent[end]
    return path[::-1] + [first]


def find_cycles(graph) -> list[list[str]]:
    """One shortest cycle per strongly connected component."""
    return [shortest_cycle(graph, component) for component in find_components(graph)]


def describe(component, graph) -> str:
    cycle = shortest_cycle(graph, component)
    steps = [f"{a} -> {b} ({graph[a][b].where})" for a, b in pairwise(cycle)]
    more = f" (and more among {sorted(component)})" if len(component) > len(cycle) - 1 else ""
    return "cycle: " + "; ".join(steps) + more


@pytest.fixture(scope="module")
def project():
    modules = find_modules(REPO)
    imports = find_imports(modules, REPO)
    return modules, imports, import_graph(modules, imports)


# --- the checker itself sees what it must (a cycle and a layering arrow hidden in function bodies) ---


def test_the_checker_sees_function_level_imports_and_relative_ones(tmp_path):
    files = {
        "trainer/__init__.py": "",
        "trainer/a.py": "def f():\n    from sweeps import b\n",
        "sweeps/__init__.py": "",
        "sweeps/b.py": "import os\n\ndef g():\n    from .c import thing\n",
        "sweeps/c.py": "class K:\n    def m(self):\n        import sweeps.b as b\n",
        "sweeps/d.py": "from . import c\nfrom sweeps.c import K\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = find_modules(tmp_path, ("trainer", "sweeps"))
    graph = import_graph(modules, find_imports(modules, tmp_path))
    assert graph["trainer.a"].keys() == {"sweeps.b"}
    assert graph["sweeps.d"].keys() == {"sweeps.c"}
    assert graph["sweeps.b"].keys() == {"sweeps.c"}
    assert find_cycles(graph) == [["sweeps.b", "sweeps.c", "sweeps.b"]]
    assert "sweeps.b -> sweeps.c (sweeps/b.py:4)" in describe(find_components(graph)[0], graph)


# --- the project ---


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(project, package):
    _, imports, _ = project
    banned = FORBIDDEN[package]
    wrong = sorted(
        f"{imp.where}: imports {imp.target}"
        for imp in imports
        if imp.src.split(".")[0] == package and imp.src not in API_MODULES and imp.target.split(".")[0] in banned
    )
    assert not wrong, f"{package}/ may not import {sorted(banned)}:\n" + "\n".join(wrong)


def test_nothing_in_the_packages_imports_the_python_api(project):
    _, imports, _ = project
    wrong = [
        f"{imp.where}: imports {imp.target}"
        for imp in imports
        if imp.src not in API_MODULES
        and imp.src.split(".")[0] in PACKAGES
        and (imp.target in API_MODULES[1:] or (imp.target == "zerotune" and set(imp.names) & {"api"}))
    ]
    assert not wrong, "the API is the top layer:\n" + "\n".join(wrong)


def test_no_import_cycles(project):
    _, _, graph = project
    components = find_components(graph)
    assert not components, "import cycles (arrows include imports inside functions):\n" + "\n".join(
        describe(c, graph) for c in components
    )


def test_every_project_import_names_something_that_exists(project):
    """`from sweeps.x import y` inside a function fails only when that function runs: check every one now."""
    modules, imports, _ = project
    tops = {m.split(".")[0] for m in modules}
    wrong = []
    for imp in imports:
        if imp.target.split(".")[0] not in tops:
            continue
        if imp.target not in modules:
            wrong.append(f"{imp.where}: no module {imp.target}")
            continue
        attrs = [n for n in imp.names if n != "*" and f"{imp.target}.{n}" not in modules]
        if not attrs:
            continue
        try:
            module = importlib.import_module(imp.target)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: list every broken import at once
            wrong.append(f"{imp.where}: importing {imp.target} fails: {type(exc).__name__}: {exc}")
            continue
        wrong += [f"{imp.where}: {imp.target} has no {n!r}" for n in attrs if not hasattr(module, n)]
    assert not wrong, "imports that would fail when they run:\n" + "\n".join(sorted(set(wrong)))


BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_module_imports(name):
    importlib.import_module(f"benchmarks.{name}")


def test_no_module_is_over_the_line_limit(project):
    modules, _, _ = project
    long = {
        str(path.relative_to(REPO)): n
        for path in modules.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


# A path outside the repository, however spelled: "../shared/...", REPO.parent / "shared", parents[2].parent / "shared".
OUTSIDE = re.compile(r"""\.\./shared\b|\.parent\s*/\s*["']shared["']|/work/shared\b""")
SCANNED = ("trainer", "sweeps", "cluster", "zerotune", "tests", "examples")
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".toml", ".json", ".cfg", ".ini", ".txt"}
MAY_READ_OUTSIDE = {
    "tests/k8s/test_k8s_manifests.py",  # compares the vendored CRD schemas with ../shared's copies; skips without them
    "tests/test_structure.py",  # this file, which spells the pattern
}


def test_nothing_reads_outside_the_repository():
    hits = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            rel = path.relative_to(REPO).as_posix()
            if (
                not path.is_file()
                or path.suffix not in CODE_SUFFIXES
                or rel in MAY_READ_OUTSIDE
                or "__pycache__" in rel
            ):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    hits.append(f"{rel}:{number}: {line.strip()}")
    assert not hits, (
        "reads outside the repository (a clone has no ../shared; put the data under examples/data/):\n"
        + "\n".join(hits)
    )
