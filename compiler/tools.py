"""Python tools: `tool search = python("package.module:function")`, imported on first use."""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable


class ToolImportError(Exception):
    """The target of a tool declaration cannot be imported or is not callable."""


def import_target(target: str, near: Path | None = None) -> Callable[..., Any]:
    """Import `package.module:function`; also look beside the .pipe file (and its parent folders).

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


def signature_problem(fn: Callable, params: list[str]) -> str | None:
    """Why `fn` cannot be called with the declared parameter names, or None."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(**{p: None for p in params})
    except TypeError as err:
        return str(err)
    return None
