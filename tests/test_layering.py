"""The layering of pipec's packages, read from the source (nothing is imported):

- `pipec.dsl` (dsl/) imports nothing else of pipec;
- a module kind (compiler/modules/) imports no optimizer;
- an optimizer (optimizers/) imports nothing of the core but the session interface, `pipec.session`;
- the core imports the optimizers only through their registry (the `pipec.optimizers` package), and
  never tests an optimizer's name;
- no import circle anywhere.

Every import counts: module-level, inside functions, under `if` — whatever can run. Module names
are resolved through pyproject.toml's `package-dir` mapping (pipec -> compiler/, pipec.dsl -> dsl/,
pipec.optimizers -> optimizers/, pipec.modules -> compiler/modules/, pipec.lm -> compiler/lm/).
"""
from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SESSION_INTERFACE = {"pipec.session"}
OPTIMIZER_REGISTRY = "pipec.optimizers"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name, from pyproject's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out: dict[str, Path] = {}
    for package in config["packages"]:
        folder = ROOT / config["package-dir"][package]
        for path in sorted(folder.glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def packages() -> set[str]:
    return {name for name, path in modules().items() if path.stem == "__init__"}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative levels resolved against `importer`)."""
    if node.level == 0:
        return node.module or ""
    base = importer if importer in packages() else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


@lru_cache(maxsize=1)
def edges() -> tuple[Edge, ...]:
    """Every import of a pipec module by a pipec module, wherever in the file it is written."""
    known = modules()
    out: list[Edge] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            for target in targets:
                while target and target not in known:       # `import pipec.lm.base as b` names a module
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == "pipec" and target != name:
                    out.append(Edge(name, target, node.lineno))
    return tuple(dict.fromkeys(out))


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def cycles() -> list[list[str]]:
    """The strongly connected sets of modules (Tarjan), those of more than one module."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges():
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:                  # iterative: no recursion limit to meet
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
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def cycle_edges(group: list[str]) -> list[str]:
    members = set(group)
    return [str(e) for e in edges() if e.source in members and e.target in members]


def _explain(problems: list) -> str:
    return "\n".join(str(p) for p in problems)


# ---------------------------------------------------------------------- the rules
def test_dsl_imports_nothing_else_of_pipec():
    bad = [e for e in edges() if under(e.source, "pipec.dsl") and not under(e.target, "pipec.dsl")]
    assert not bad, _explain(bad)


def test_module_kinds_import_no_optimizer():
    bad = [e for e in edges() if under(e.source, "pipec.modules") and under(e.target, "pipec.optimizers")]
    assert not bad, _explain(bad)


def test_optimizers_import_only_the_session_interface():
    bad = [e for e in edges() if under(e.source, "pipec.optimizers")
           and not under(e.target, "pipec.optimizers") and e.target not in SESSION_INTERFACE]
    assert not bad, _explain(bad)


def test_the_core_reaches_optimizers_only_through_their_registry():
    bad = [e for e in edges() if not under(e.source, "pipec.optimizers") and under(e.target, "pipec.optimizers")
           and e.target != OPTIMIZER_REGISTRY]
    assert not bad, _explain(bad)


def optimizer_names() -> set[str]:
    """Every optimizer's compile-block name, read from the `name = "..."` of the classes in optimizers/."""
    names = set()
    for mod, path in modules().items():
        if not under(mod, "pipec.optimizers"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "name" for t in stmt.targets)
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                        names.add(stmt.value.value)
    names.discard("")
    return names


# The one place the core may spell an optimizer's name: the default when a compile block names none.
NAMED_ON_PURPOSE = {("pipec.settings", "auto")}
# Optimizer names that are also ordinary words of the core ("auto" structured output, "auto" budgets):
# for these only a comparison with something called an optimizer counts.
ORDINARY_WORDS = {"auto"}


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_the_core_never_names_an_optimizer():
    """`if optimizer == "mipro"`, `{"random_search": ...}`, `optimizers()["mipro"]` or `MIPRO = "mipro"`
    in the core would make an optimizer more than one file: what differs between optimizers is declared
    on their classes. Any string constant equal to an optimizer's name counts (docstrings aside).
    (A name spelled out at run time, e.g. through `importlib.import_module`, is beyond a static check.)"""
    names = optimizer_names()
    assert {"mipro", "bootstrap_fewshot", "random_search"} <= names
    bad = []
    for mod, path in modules().items():
        if under(mod, "pipec.optimizers"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in names - ORDINARY_WORDS and id(node) not in skip
                    and (mod, node.value) not in NAMED_ON_PURPOSE):
                bad.append(f"{mod}:{node.lineno}: names the optimizer {node.value!r}")
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                words = [o for o in operands if isinstance(o, ast.Constant) and o.value in ORDINARY_WORDS]
                if words and any("optimizer" in ast.unparse(o) for o in operands if o not in words):
                    bad.append(f"{mod}:{node.lineno}: compares an optimizer with {words[0].value!r}")
    assert not bad, _explain(bad)


def test_a_kind_reaches_the_program_only_through_its_env():
    """A module kind gets tools, other modules and LM settings from `KindEnv`; reaching into the env's
    private program (`env._program`, as ReAct once did) or any other private attribute of it ties the
    kind to the runtime's internals."""
    bad = []
    for mod, path in modules().items():
        if not under(mod, "pipec.modules") or mod == "pipec.modules.base":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "env"):
                bad.append(f"{mod}:{node.lineno}: reaches env.{node.attr}")
            if isinstance(node, ast.Attribute) and node.attr == "_program":
                bad.append(f"{mod}:{node.lineno}: reaches ._program")
    assert not bad, _explain(bad)


def test_an_optimizer_uses_no_private_name_of_another():
    """`LabeledFewShot._labeled` called from mipro made two files one: an optimizer shares with another
    only public methods (and the helpers of optimizers/base.py)."""
    bad = []
    for mod, path in modules().items():
        if not under(mod, "pipec.optimizers"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id not in own | {"self", "cls"}
                    and node.value.id[:1].isupper()):
                bad.append(f"{mod}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert not bad, _explain(bad)


def test_no_import_circles():
    groups = cycles()
    assert not groups, "\n\n".join(", ".join(g) + ":\n  " + "\n  ".join(cycle_edges(g)) for g in groups)


# ---------------------------------------------------------------------- the checker checks itself
def test_the_resolver_sees_function_level_and_relative_imports():
    """A sanity check of the reading above on known imports (so a broken resolver cannot pass everything)."""
    found = {(e.source, e.target) for e in edges()}
    assert ("pipec.modules", "pipec.modules.base") in found           # `from .base import ...` in a package
    assert any(s == "pipec.cli" for s, _ in found)                    # cli imports only inside functions
    assert all(m.startswith("pipec") for m in modules()) and "pipec.dsl.checker" in modules()
