"""Keep API keys out of everything pipec writes: errors, traces, logs, caches."""
from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.I)
_KEY_SHAPE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


_DECLARED: set[str] = set()


def declare_secret_env(name: str) -> None:
    """Treat environment variable `name` as holding a secret whatever it is called (an `api_key_env`)."""
    _DECLARED.add(name)


def secret_values() -> list[str]:
    """Values of environment variables whose names suggest a secret, or that an LM declared as its
    key variable (longest first)."""
    vals = {v for k, v in os.environ.items() if (_SECRET_NAME.search(k) or k in _DECLARED) and len(v) >= 8}
    return sorted(vals, key=len, reverse=True)


def redact(text: str) -> str:
    """Replace known secret values and key-shaped strings with `***`.

    >>> redact("bad key sk-abcdefghijklmnop for openai")
    'bad key *** for openai'
    """
    for v in secret_values():
        text = text.replace(v, "***")
    return _KEY_SHAPE.sub("***", text)
