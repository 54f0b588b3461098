"""Python targets (`python("package.module:function")` tools and metrics): described without running
them, imported only when a program runs.

Reading a program (`pipec check`, `graph`, `inspect`, `report`, loading an artifact) must execute
nothing of the user's or of whoever wrote the file, so everything a check or a prompt needs to know
about a target comes from `describe_target`, which finds the module's file the way `import` would
(the same finders, the .pipe file's folder and its parents as a fallback) without executing it, and
reads the function from the file's syntax tree: whether it exists, its parameters, whether it is
`async`, the first line of its docstring. Modules that are already imported and modules of the
standard library are described from the live object, since describing them runs nothing new.
`import_target` is the one place a target is imported, and only the runtime calls it.
"""
from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .dsl.diagnostics import Diagnostic

MAX_SOURCE_BYTES = 4 * 1024 * 1024      # a module larger than this is not parsed (its target stays undescribed)


class ToolImportError(Exception):
    """The target of a tool declaration cannot be imported or is not callable."""


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What is known about a Python target without running it.

    `found` is False when the module or the attribute certainly does not exist (`problem` says why).
    `signature` is None when the parameters cannot be known statically (a builtin of a third-party
    extension, a name bound by assignment or `import *`); `is_async` is None when that is unknown.

    >>> info = describe_target("json:dumps")
    >>> info.found, info.is_async, str(info.signature).startswith("(obj, *, skipkeys=False")
    (True, False, True)
    """

    target: str
    found: bool
    problem: str = ""
    origin: str | None = None                   # the module's file, when it has one
    signature: inspect.Signature | None = None
    is_async: bool | None = None
    doc: str = ""                               # first line of the docstring

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


def describe_target(target: str, near: Path | None = None) -> TargetInfo:
    """Describe `package.module:function` without executing the module (see the module docstring).

    >>> describe_target("no_such_module_xyz:fn").problem
    "cannot import 'no_such_module_xyz': No module named 'no_such_module_xyz'"
    >>> describe_target("json:no_such_function").problem
    "'json' has no attribute 'no_such_function'"
    """
    if not well_formed(target):
        return TargetInfo(target, False, f"'{target}' is not a target of the form 'package.module:function'")
    module_name, _, attr = target.partition(":")
    live = sys.modules.get(module_name)
    if live is not None:
        return _describe_live(target, live, attr)
    spec = _find_spec(module_name, near)
    if spec is None:
        return TargetInfo(target, False, f"cannot import '{module_name}': No module named '{module_name}'")
    if _is_stdlib(module_name, spec):
        try:
            return _describe_live(target, importlib.import_module(module_name), attr)
        except Exception as err:        # a stdlib module missing on this build (e.g. no _curses)
            return TargetInfo(target, False, f"importing '{module_name}' failed: {type(err).__name__}: {err}")
    origin = spec.origin if spec.has_location else None
    source = _source_path(spec)
    if source is None:
        return TargetInfo(target, True, origin=origin)       # an extension or bytecode only: no syntax to read
    return _describe_source(target, source, attr)


def well_formed(target: str) -> bool:
    """Whether `target` reads `package.module:function` (dotted names of identifiers on both sides).

    >>> well_formed("examples.corpus:search"), well_formed("examples.corpus.search"), well_formed("a:b c")
    (True, False, False)
    """
    module_name, colon, attr = target.partition(":")
    return bool(colon) and all(p.isidentifier() for p in module_name.split(".")) \
        and all(p.isidentifier() for p in attr.split("."))


def _find_spec(name: str, near: Path | None):
    """The module's spec as `import` would find it (sys.path first, then `near` and its two parents),
    without executing the module or any of its parent packages."""
    spec = _find_in(name, None)
    if spec is None and near is not None:
        for base in [near, *near.parents][:3]:
            spec = _find_in(name, [str(base)])
            if spec is not None:
                break
    return spec


def _find_in(name: str, top_path: list[str] | None):
    parts = name.split(".")
    path = top_path
    spec = None
    for i in range(len(parts)):
        here = ".".join(parts[: i + 1])
        parent = sys.modules.get(".".join(parts[:i])) if i else None
        if parent is not None and getattr(parent, "__path__", None) is not None:
            path = list(parent.__path__)      # an imported package: its real search path
        spec = _find_one(here, path, use_meta=top_path is None or i > 0)
        if spec is None:
            return None
        path = spec.submodule_search_locations
        if i < len(parts) - 1 and path is None:
            return None                       # not a package: it has no submodules
    return spec


def _find_one(name: str, path: list[str] | None, use_meta: bool):
    try:
        if not use_meta:
            return importlib.machinery.PathFinder.find_spec(name, path)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path)
            if spec is not None:
                return spec
    except (ImportError, ValueError, OSError, AttributeError, TypeError):
        return None
    return None


_STDLIB_DIRS = {os.path.realpath(p) for p in (sysconfig.get_paths().get("stdlib"),
                                              sysconfig.get_paths().get("platstdlib")) if p}


def _is_stdlib(name: str, spec) -> bool:
    """A module of the standard library, found where this interpreter keeps it (not a same-named
    file planted beside a .pipe file)."""
    if name.partition(".")[0] not in getattr(sys, "stdlib_module_names", ()):
        return False
    if spec.origin in ("built-in", "frozen") or not spec.has_location:
        return True
    real = os.path.realpath(spec.origin)
    return any(real.startswith(d + os.sep) and os.sep + "site-packages" + os.sep not in real[len(d):]
               for d in _STDLIB_DIRS)


def _source_path(spec) -> str | None:
    origin = spec.origin if spec.has_location else None
    if origin and origin.endswith(".py") and os.path.isfile(origin):
        return origin
    return None


def _describe_live(target: str, module: Any, attr: str) -> TargetInfo:
    origin = getattr(module, "__file__", None)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            return TargetInfo(target, False, f"'{target.partition(':')[0]}' has no attribute '{attr}'", origin)
    if not callable(obj):
        return TargetInfo(target, False, f"'{target}' is not callable", origin)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    doc = (inspect.getdoc(obj) or "").strip().splitlines()
    return TargetInfo(target, True, origin=origin, signature=sig, is_async=inspect.iscoroutinefunction(obj),
                      doc=doc[0] if doc else "")


def _describe_source(target: str, source: str, attr: str) -> TargetInfo:
    module_name = target.partition(":")[0]
    try:
        with open(source, "rb") as fh:
            data = fh.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            return TargetInfo(target, True, origin=source)
        tree = ast.parse(data, source)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return TargetInfo(target, True, origin=source)    # importing it will say what is wrong
    scope: list[ast.stmt] = tree.body
    parts = attr.split(".")
    for i, part in enumerate(parts):
        node, open_ended = _binding(scope, part)
        if node is None:
            if open_ended:
                return TargetInfo(target, True, origin=source)
            return TargetInfo(target, False, f"'{module_name}' has no attribute '{attr}'", source)
        if i < len(parts) - 1:
            if not isinstance(node, ast.ClassDef):
                return TargetInfo(target, True, origin=source)
            scope = node.body
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = (ast.get_docstring(node) or "").strip().splitlines()
        return TargetInfo(target, True, origin=source, signature=_signature(node),
                          is_async=isinstance(node, ast.AsyncFunctionDef), doc=doc[0] if doc else "")
    return TargetInfo(target, True, origin=source)


def _binding(body: list[ast.stmt], name: str) -> tuple[ast.AST | None, bool]:
    """The last top-level statement of `body` that binds `name`, and whether the scope may bind
    names this reading cannot see (`import *`, a module `__getattr__`, conditional code)."""
    found = None
    open_ended = False
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if stmt.name == name:
                found = stmt
            elif stmt.name == "__getattr__":
                open_ended = True
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    open_ended = True
                elif (alias.asname or alias.name.partition(".")[0]) == name:
                    found = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                found = stmt
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While, getattr(ast, "TryStar", ast.Try))):
            if any(_binds(n, name) for n in ast.walk(stmt)):
                open_ended = True
    return found, open_ended


def _binds(node: ast.AST, name: str) -> bool:
    """Whether `node` (inside a compound statement) may bind `name`."""
    if isinstance(node, ast.Name):
        return node.id == name and isinstance(node.ctx, ast.Store)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.alias):
        return node.name == "*" or (node.asname or node.name.partition(".")[0]) == name
    return False


class _Source(str):
    """An annotation or default as written in the source: shown bare in a signature, as inspect
    shows the live object's."""

    def __repr__(self) -> str:
        return str(self)


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> inspect.Signature | None:
    P = inspect.Parameter
    args = fn.args
    params: list[inspect.Parameter] = []
    positional = list(args.posonlyargs) + list(args.args)
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)

    def make(a: ast.arg, kind, default) -> inspect.Parameter:
        return P(a.arg, kind, default=P.empty if default is None else _Source(ast.unparse(default)),
                 annotation=P.empty if a.annotation is None else _Source(ast.unparse(a.annotation)))

    try:
        for i, a in enumerate(positional):
            params.append(make(a, P.POSITIONAL_ONLY if i < len(args.posonlyargs) else P.POSITIONAL_OR_KEYWORD,
                               defaults[i]))
        if args.vararg is not None:
            params.append(make(args.vararg, P.VAR_POSITIONAL, None))
        for a, d in zip(args.kwonlyargs, args.kw_defaults):
            params.append(make(a, P.KEYWORD_ONLY, d))
        if args.kwarg is not None:
            params.append(make(args.kwarg, P.VAR_KEYWORD, None))
        returns = inspect.Signature.empty if fn.returns is None else _Source(ast.unparse(fn.returns))
        return inspect.Signature(params, return_annotation=returns)
    except (ValueError, TypeError):
        return None


def import_target(target: str, near: Path | None = None) -> Callable[..., Any]:
    """Import `package.module:function`; also look beside the .pipe file (and its parent folders).
    This runs the module: only the runtime calls it, once the program may run (see `pipec.trust`).

    >>> import_target("json:dumps")([1])
    '[1]'
    """
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as first:
        if near is None or first.name is None or not module_name.startswith(first.name.split(".")[0]):
            raise ToolImportError(f"cannot import '{module_name}': {first}") from None
        module = None
        for base in [near, *near.parents][:3]:
            sys.path.insert(0, str(base))
            try:
                module = importlib.import_module(module_name)
                break
            except ModuleNotFoundError:
                continue
            finally:
                sys.path.remove(str(base))
        if module is None:
            raise ToolImportError(f"cannot import '{module_name}': {first}") from None
    except Exception as err:
        raise ToolImportError(f"importing '{module_name}' failed: {type(err).__name__}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ToolImportError(f"'{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ToolImportError(f"'{target}' is not callable")
    return obj


def signature_problem(sig: inspect.Signature | None, params: list[str]) -> str | None:
    """Why a function with signature `sig` cannot be called with the declared parameter names, or
    None (also when the signature is unknown).

    >>> signature_problem(describe_target("shlex:quote").signature, ["text"])
    "missing a required argument: 's'"
    """
    if sig is None:
        return None
    try:
        sig.bind(**{p: None for p in params})
    except TypeError as err:
        return str(err)
    return None


def describe_tools(prog, path: Path) -> dict[str, TargetInfo]:
    """Every declared tool's target, described without importing it (see `pipec.tools`)."""
    near = path.parent.resolve()
    return {name: describe_target(tool.target, near) for name, tool in prog.tools.items()}


def tool_diagnostics(prog, targets: dict[str, TargetInfo]) -> list[Diagnostic]:
    """Tools whose targets do not exist, or whose declared parameters do not fit the function. Found
    without importing anything, so they are reported with every other diagnostic, in the same run."""
    out = []
    for tool in prog.tools.values():
        info = targets[tool.name]
        if not well_formed(tool.target):
            continue                    # the checker already says how a target is written
        if not info.found:
            out.append(Diagnostic("error", f"tool {tool.name}: {info.problem}", tool.span,
                                  "the target is found like a Python module path, from the current directory "
                                  "or the .pipe file's folder", "bad-tool"))
            continue
        if tool.params is not None:
            problem = signature_problem(info.signature, [p.name for p in tool.params])
            if problem:
                out.append(Diagnostic("error", f"tool {tool.name}: declared parameters do not fit {tool.target}: {problem}",
                                      tool.span, "make the declared names match the function's parameters", "bad-tool"))
    return out
