"""pipec: a declarative prompt-pipeline compiler.

>>> import pipec
>>> prog = pipec.load("examples/intent.pipe")                      # doctest: +SKIP
>>> prog(utterance="Table for two at 8 tonight").intent            # doctest: +SKIP
'book_restaurant'

Everything here is imported on first use, so `import pipec` costs almost nothing.
"""
from __future__ import annotations

from .version import __version__

_LAZY = {
    "load": ("pipec.program", "load"),
    "load_compiled": ("pipec.program", "load_compiled"),
    "export_prompts": ("pipec.prompt_export", "export_prompts"),
    "ArtifactError": ("pipec.artifact", "ArtifactError"),
    "ApprovalRequired": ("pipec.trust", "ApprovalRequired"),
    "DatasetError": ("pipec.dataset", "DatasetError"),
    "Program": ("pipec.program", "Program"),
    "Prediction": ("pipec.prediction", "Prediction"),
    "Partial": ("pipec.streaming", "Partial"),
    "ScriptedLM": ("pipec.lm.scripted", "ScriptedLM"),
    "LMBackend": ("pipec.lm.base", "LMBackend"),
    "LMRequest": ("pipec.lm.base", "LMRequest"),
    "LMReply": ("pipec.lm.base", "LMReply"),
    "LMError": ("pipec.lm.base", "LMError"),
    "Price": ("pipec.lm.base", "Price"),
    "PipeError": ("pipec.dsl.diagnostics", "PipeError"),
    "Diagnostic": ("pipec.dsl.diagnostics", "Diagnostic"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipec' has no attribute '{name}'")


def __dir__():
    return sorted(__all__)
