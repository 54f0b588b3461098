"""Keeping keys out of everything pipec prints or writes: redaction by value, by shape, and in URLs.

This is the lowest layer (standard library only) so the .pipe front end's diagnostics use the same
redaction as the runtime; `pipec.secrets` builds the runtime's helpers (output streams, logging,
the LM cache) on it.

What counts as a secret value: the value of every environment variable named by an `api_key_env`
the program declares (`declare_secret_env`, called as soon as a declaration is seen, at check time
too), of the usual provider variables (`PROVIDER_VARIABLES`), and of any variable whose name looks
secret (`..._KEY`, `..._TOKEN`, `..._SECRET`, `..._PASSWORD`, `..._CRED...`) unless it names a
file or a directory (`..._KEY_FILE`). Values shorter than `MIN_SECRET` characters are ignored
(masking every "1" or "true" would garble all output).

Redaction is by value, whole and in pieces: any run of `FRAGMENT` or more consecutive characters of
a secret value of `FRAGMENT_FROM` or more characters is masked, so a reply cut at 300 bytes, or a
proxy that echoes half a key, leaks nothing a shorter run could not. Key-shaped strings (`sk-...`,
`AIza...`, `ghp_...`) are masked too, set or not, and every URL's userinfo password.

Speed: a table of the secrets' 4-character pieces is built when the environment changes (checked by
one dict comparison per call), and the text is cut into aligned 4-character blocks (any run of 8
matching characters holds a whole one) that are looked up all in C: an ASCII text's bytes read as
32-bit ints through a memoryview, with `set.isdisjoint`. Only when a block hits is the text walked
in Python to find and grow the matches. With nothing secret in the environment the value pass is
skipped. About 1 ms per 100 KB with secrets set (tests/test_reliability_secrets.py measures it).
"""
from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any

MASK = "***"
MIN_SECRET = 8          # shorter values are not treated as secrets
FRAGMENT = 8            # a run of this many characters of a secret is masked ...
FRAGMENT_FROM = 12      # ... in values at least this long (shorter ones are masked whole)
_PROBE = 4              # the text is probed in aligned blocks of 4: a run of 7 or more holds a whole block

# The variables litellm and the providers' own SDKs read keys from (most also match SECRET_NAME;
# listing them keeps them covered whatever that pattern becomes).
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "PALM_API_KEY", "VERTEXAI_CREDENTIALS", "AZURE_API_KEY", "AZURE_OPENAI_API_KEY",
    "AZURE_AI_API_KEY", "AZURE_AD_TOKEN", "AZURE_CLIENT_SECRET", "MISTRAL_API_KEY", "CODESTRAL_API_KEY",
    "GROQ_API_KEY", "COHERE_API_KEY", "CO_API_KEY", "TOGETHER_API_KEY", "TOGETHERAI_API_KEY", "HF_TOKEN",
    "HUGGINGFACE_API_KEY", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK", "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "XAI_API_KEY", "PERPLEXITYAI_API_KEY",
    "PERPLEXITY_API_KEY", "FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "REPLICATE_API_KEY", "REPLICATE_API_TOKEN",
    "CEREBRAS_API_KEY", "DEEPINFRA_API_KEY", "NVIDIA_NIM_API_KEY", "DATABRICKS_TOKEN", "VOYAGE_API_KEY",
    "AI21_API_KEY", "ANYSCALE_API_KEY", "WATSONX_API_KEY", "LITELLM_API_KEY", "LITELLM_MASTER_KEY",
    "LITELLM_PROXY_API_KEY",
)

# Names that suggest a secret; names that say where one is kept (a file, a directory) do not.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CRED", re.I)
_LOCATION_NAME = re.compile(r"_(FILE|PATH|DIR|HOME)$", re.I)

# Option and field names that hold a credential (`api_key`, `aws_secret_access_key`, `OPENAI_API_KEY`),
# not ones that merely mention one (`max_tokens`, `api_key_env`).
SECRET_FIELD = re.compile(r"^(?!max_|min_|num_)(\w*_)?(api_?key|key|token|secret|password|passwd|credentials?)$", re.I)
# `NAME = value`, `NAME: "value"`, `"NAME": "value"`, `export NAME=value` in configuration files.
_ASSIGNMENT = re.compile(r"""(["']?)\b([A-Za-z_][\w\-]*)\1\s*[:=]\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"',;]+)""")

# Key shapes masked whether or not the key is set here (a key pasted into an input, a file, a reply).
KEY_SHAPE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
                       r"|github_pat_[A-Za-z0-9_]{30,}|hf_[A-Za-z0-9]{30,}|gsk_[A-Za-z0-9]{30,}"
                       r"|xox[abpr]-[A-Za-z0-9\-]{10,})")
_GITHUB = re.compile(r"gh(?:[pousr]|ithub_pat)_")      # a literal prefix: re scans for it at C speed


# scheme://userinfo@ : the userinfo runs to the last "@" before the end of the authority, as a URL
# parser reads it (`http://u:p@ss@host` has the password `p@ss`).
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#\"'<>]*)@")

_declared: set[str] = set()


def _may_have_key_shape(text: str) -> bool:
    """Whether KEY_SHAPE could match. Every shape holds "-", "_" or "AIza": the one-character tests
    run at memchr speed, about ten times faster than a test for a longer substring, and most text
    a pipeline writes lacks one of them."""
    if "-" in text and ("sk-" in text or "xox" in text):
        return True
    if "_" in text and ("hf_" in text or "gsk_" in text or _GITHUB.search(text) is not None):
        return True
    return "AIza" in text


def declare_secret_env(name: str) -> None:
    """Treat environment variable `name` as holding a secret whatever it is called (an `api_key_env`).

    >>> import os; os.environ["ACME_ENDPOINT_LOGIN"] = "acme-1234567890-live"
    >>> redact("echo acme-1234567890-live")
    'echo acme-1234567890-live'
    >>> declare_secret_env("ACME_ENDPOINT_LOGIN"); redact("echo acme-1234567890-live")
    'echo ***'
    >>> del os.environ["ACME_ENDPOINT_LOGIN"]
    """
    if name:
        _declared.add(name)


def is_secret_name(name: str) -> bool:
    """Whether the environment variable `name` is treated as holding a secret.

    >>> is_secret_name("OPENAI_API_KEY"), is_secret_name("HF_TOKEN"), is_secret_name("PATH"), is_secret_name("KEY_FILE")
    (True, True, False, False)
    """
    return (name in _declared or name in PROVIDER_VARIABLES
            or (bool(SECRET_NAME.search(name)) and not _LOCATION_NAME.search(name)))


def secret_values() -> list[str]:
    """Values of the environment variables treated as secrets (`is_secret_name`), longest first."""
    return list(current().values)


def mask_url(url: str) -> str:
    """`url` with the password of its userinfo masked (a bare `TOKEN@` is masked whole).

    >>> mask_url("http://user:hunter2@proxy:8080/v1"), mask_url("https://ghp_abc@host/"), mask_url("http://h/v1")
    ('http://user:***@proxy:8080/v1', 'https://***@host/', 'http://h/v1')
    """
    return Redactor(()).text(url) if "@" in url else url


def assignment_spans(line: str) -> list[tuple[int, int]]:
    """Spans of the values assigned to secret-named settings in a line of a configuration file
    (`.env`, INI, YAML, JSON): what to mask when such a line is quoted whatever the value is.

    >>> line = 'export OPENAI_API_KEY="abc" max_tokens=5 aws_secret_access_key = xyz'
    >>> [line[a:b] for a, b in assignment_spans(line)]
    ['abc', 'xyz']
    """
    spans = []
    for m in _ASSIGNMENT.finditer(line):
        if SECRET_FIELD.match(m.group(2)):
            start, end = m.span(3)
            if m.group(3)[:1] in "\"'" and end - start >= 2:
                start, end = start + 1, end - 1          # keep the quotes: `"***"`
            spans.append((start, end))
    return spans


def url_has_credentials(url: str) -> bool:
    """Whether a URL carries a user name or password before its host.

    >>> url_has_credentials("http://u:p@h/v1"), url_has_credentials("http://TOKEN@h"), url_has_credentials("http://h:80/a@b")
    (True, True, False)
    """
    return "@" in url and _URL_USERINFO.search(url) is not None


class Redactor:
    """A snapshot of the secret values, with the piece table that finds them in text.

    >>> r = Redactor(["Zq8-secret-value-77"])
    >>> r.text("401: key 'Zq8-secret-val' is invalid"), r.text("nothing here")
    ("401: key '***' is invalid", 'nothing here')
    >>> r.data({"error": ["x Zq8-secret-value-77"]}), r.contains("ue-77"), r.contains("secret-v")
    ({'error': ['x ***']}, False, True)
    """

    __slots__ = ("values", "_whole", "_pieces", "_probes", "_ints")

    def __init__(self, values):
        self.values = tuple(sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True))
        self._whole = [v for v in self.values if len(v) < FRAGMENT_FROM]
        self._pieces = [v for v in self.values if len(v) >= FRAGMENT_FROM]
        probes: dict[str, list[tuple[str, int]]] = {}
        for v in self._pieces:
            for i in range(len(v) - _PROBE + 1):
                probes.setdefault(v[i:i + _PROBE], []).append((v, i))
        self._probes = probes
        # The ASCII pieces as the 32-bit ints their bytes read as, for the scan over a text's bytes.
        self._ints = {int.from_bytes(p.encode("ascii"), sys.byteorder) for p in probes if p.isascii()}

    def text(self, text: str) -> str:
        """`text` with every secret value or piece of one, key shape and URL password replaced by `***`
        (the same object when nothing was masked)."""
        spans = self.spans(text)
        return mask_spans(text, spans) if spans else text

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted, merged (start, end) spans of `text` that `text()` masks."""
        spans = self._runs(text) if self._probes else []
        for v in self._whole:
            at = text.find(v)
            while at >= 0:
                spans.append((at, at + len(v)))
                at = text.find(v, at + len(v))
        if _may_have_key_shape(text):
            spans += [m.span() for m in KEY_SHAPE.finditer(text)]
        if "@" in text and "://" in text:
            for m in _URL_USERINFO.finditer(text):
                start, end = m.span(2)
                colon = m.group(2).find(":")
                spans.append((start + colon + 1 if colon >= 0 else start, end))
        return merge_spans(spans) if spans else spans

    def data(self, value: Any) -> Any:
        """A JSON-like value with every string in it redacted (tuples become lists)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def contains(self, text: str) -> bool:
        """Whether `text` holds a secret value or a run of `FRAGMENT` characters of one."""
        if not self.values:
            return False
        return bool(self._runs(text)) or any(v in text for v in self._whole)

    def _runs(self, text: str) -> list[tuple[int, int]]:
        """Sorted, merged (start, end) spans of `text` that are runs of >= FRAGMENT characters of a secret."""
        probes = self._probes
        n = len(text)
        if not probes or n < FRAGMENT:
            return []
        # The common case, all in C: no aligned 4-character block of the text is a piece of a secret.
        if text.isascii():           # (O(1): CPython records it) blocks are the text's bytes read as ints
            data = text.encode("ascii")
            blocks = memoryview(data + b"\0" * (-n % _PROBE)).cast("I")
            if self._ints.isdisjoint(blocks):
                return []
        elif probes.keys().isdisjoint(map(text.__getitem__, map(slice, range(0, n - _PROBE + 1, _PROBE),
                                                                range(_PROBE, n + 1, _PROBE)))):
            return []
        runs: list[tuple[int, int]] = []
        covered = 0
        for q in range(0, n - _PROBE + 1, _PROBE):
            hits = probes.get(text[q:q + _PROBE])
            if not hits or q + _PROBE <= covered:
                continue
            for value, i in hits:
                a, b = q, i                          # grow the match to the left ...
                while a > 0 and b > 0 and text[a - 1] == value[b - 1]:
                    a, b = a - 1, b - 1
                c, d = q + _PROBE, i + _PROBE        # ... and to the right
                while c < n and d < len(value) and text[c] == value[d]:
                    c, d = c + 1, d + 1
                if c - a >= FRAGMENT:
                    runs.append((a, c))
                    covered = max(covered, c)
        return merge_spans(runs)


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans sorted, with overlapping or touching ones joined.

    >>> merge_spans([(5, 9), (0, 2), (8, 12), (12, 13)])
    [(0, 2), (5, 13)]
    """
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def mask_spans(text: str, spans: list[tuple[int, int]], mask: str = MASK) -> str:
    """`text` with each of the sorted, disjoint `spans` replaced by `mask`.

    >>> mask_spans("key=abcdef here", [(4, 10)])
    'key=*** here'
    """
    parts, at = [], 0
    for start, end in spans:
        parts += [text[at:start], mask]
        at = end
    parts.append(text[at:])
    return "".join(parts)


_lock = threading.Lock()
_state: tuple[dict | None, frozenset, Redactor] = (None, frozenset(), Redactor(()))


def current() -> Redactor:
    """The redactor for the environment as it is now (rebuilt only when it or the declared names changed)."""
    env = getattr(os.environ, "_data", None)      # CPython's raw mapping: comparing it is one C call
    if env is None:
        env = dict(os.environ)
    seen, declared, redactor = _state
    if seen is not None and declared == _declared and seen == env:
        return redactor
    return _rebuild()


def _rebuild() -> Redactor:
    global _state
    with _lock:
        env = getattr(os.environ, "_data", None)
        snapshot = dict(env) if env is not None else dict(os.environ)
        declared = frozenset(_declared)
        values = [v for k, v in os.environ.items() if is_secret_name(k)]
        redactor = Redactor(values)
        _state = (snapshot, declared, redactor)
        return redactor


def redact(text: str) -> str:
    """`text` with secret values (whole or in pieces), key-shaped strings and URL passwords masked.

    >>> redact("bad key sk-abcdefghijklmnop for openai at http://me:hunter2@proxy/v1")
    'bad key *** for openai at http://me:***@proxy/v1'
    """
    return current().text(text)


def redact_data(value: Any) -> Any:
    """`redact` applied to every string (keys included) of a JSON-like value.

    >>> redact_data({"error": "sk-abcdefghijklmnop", "n": 3})
    {'error': '***', 'n': 3}
    """
    return current().data(value)


def contains_secret(text: str) -> bool:
    """Whether `text` holds the value of a secret variable, or a run of `FRAGMENT` characters of one."""
    return current().contains(text)
