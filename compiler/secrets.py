"""Keep API keys out of everything pipec writes: errors, traces, logs, caches, the terminal.

The redaction itself (which variables hold secrets, masking values whole and in pieces, key shapes,
URL passwords) is `pipec.dsl.redaction`, shared with the .pipe front end's diagnostics. Here are the
runtime's points of use: output streams for the command line, a filter for pipec's loggers.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import traceback

from .dsl.redaction import (contains_secret, declare_secret_env, mask_url, redact, redact_data,  # noqa: F401
                             secret_values)


class RedactingStream:
    """A text stream that redacts what is written to it before passing it on.

    Each write is redacted on its own: a key split across two writes is masked in each piece of
    `redaction.FRAGMENT` or more characters (print writes a line's text in one call).

    >>> import io; out = io.StringIO(); RedactingStream(out).write("key sk-abcdefghijklmnop"); out.getvalue()
    23
    'key ***'
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):          # fileno, isatty, flush, encoding, buffer, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output():
    """Redact everything written to sys.stdout and sys.stderr inside the block, tracebacks included.

    An exception escaping the block is printed (redacted) here and becomes exit status 1, as the
    interpreter would report it, since its own report would come after the streams are restored.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
    try:
        yield
    except (SystemExit, KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        sys.stdout, sys.stderr = out, err


class RedactingFilter(logging.Filter):
    """Redacts a log record's message and exception text (attach it with `logger`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean is not message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with pipec's redacting filter on it (a logger's filters do not
    reach its children, so each pipec logger is made here).

    >>> logger("pipec.example").filters[-1] is logger("pipec.example").filters[-1]
    True
    """
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
