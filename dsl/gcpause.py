"""Pausing the cyclic garbage collector around the front end's passes (standard library only)."""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a front-end pass builds its objects.

    Parsing or checking a big file allocates millions of small objects that all stay alive, and each
    time enough of them pile up the collector walks every one of them again, for nothing: that was
    half the time of checking a 1 MiB file. The passes make no reference cycles that matter (reference
    counting still frees everything at once); the collector runs again when the outermost pass ends.

    >>> with gc_paused():
    ...     gc.isenabled()
    False
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
