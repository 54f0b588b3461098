"""The examples in public docstrings are run: a docstring that lies about its function fails here."""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import pipec
import pipec.dsl
import pipec.optimizers

# pipec, pipec.dsl and pipec.optimizers live in separate folders (compiler/, dsl/, optimizers/).
PACKAGES = [pipec, pipec.dsl, pipec.optimizers]
MODULES = sorted({p.__name__ for p in PACKAGES} | {
    m.name for p in PACKAGES for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")
    if not m.name.endswith("__main__")})


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"


BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("name", ["harness", "run_all"])
def test_benchmark_docstring_examples(name, monkeypatch):
    """The benchmark's table arithmetic (medians, spreads, crash lines) is checked by its examples."""
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} failed in {name}"
    sys.modules.pop(name, None)


def test_docstring_examples_exist():
    """The suite above would pass vacuously if nothing were found."""
    found = sum(len(t.examples) for name in MODULES
                for t in doctest.DocTestFinder().find(importlib.import_module(name), name))
    assert found >= 60
