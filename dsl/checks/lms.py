"""Passes over lm declarations: ids, options, keys kept out of files, and which lm is the default."""
from __future__ import annotations

import re

from .. import ast as A
from ..catalogue import FALLBACK_OPTIONS, LM_OPTIONS
from ..redaction import SECRET_FIELD, declare_secret_env, mask_url, url_has_credentials
from .options import check_options
from .state import CheckState, where

# Option names that hold credentials are `redaction.SECRET_FIELD`; these are the prefixes of common
# provider keys (OpenAI, Anthropic, Slack, GitHub, Google, Hugging Face, Groq, AWS). `api_key_env`
# only names a variable, so it is fine.
_SECRET_VALUE = re.compile(r"^(sk-|sk_|xox[abp]-|ghp_|github_pat_|AIza|hf_|gsk_|AKIA)[A-Za-z0-9_\-]{6,}")


def check_lm(state: CheckState, lm: A.LMDecl) -> None:
    """`provider/model`, no key written in the file (or in `api_base`'s URL), known options; for a
    fallback, what `check_fallback` checks."""
    if lm.fallbacks:
        check_fallback(state, lm)
        return
    provider, slash, model = lm.model.partition("/")
    problem = "needs a provider prefix" if not slash or not provider else "names no model" if not model else ""
    if problem:
        state.error(lm.model_span or lm.span, f"LM id '{lm.model}' {problem}",
                    "write `provider/model`, e.g. \"openai/gpt-4o-mini\" or \"local/smollm2\"", "bad-lm")
    secrets = [o for o in lm.options if _is_secret(o)]
    variable = f"{provider.upper() if slash and provider.isidentifier() else 'OPENAI'}_API_KEY"
    for opt in secrets:
        hint = (f"api_key_env names the variable that holds the key, like \"{variable}\""
                if opt.name == "api_key_env" else
                f"put the key in an environment variable and name it with `api_key_env: \"{variable}\"`")
        state.error(opt.span, "API keys do not belong in .pipe files", hint, "secret")
    for opt in lm.options:
        if opt.name == "api_key_env" and isinstance(opt.value, str) and opt not in secrets:
            declare_secret_env(opt.value)     # from now on its value is masked in everything printed
        elif opt.name == "api_base" and isinstance(opt.value, str) and url_has_credentials(opt.value):
            # A URL is printed and logged (errors, traces, proxies' access logs): no place for a key.
            secrets.append(opt)
            state.error(opt.span, f"api_base carries credentials in its URL ({mask_url(opt.value)})",
                        f"put the key in an environment variable and name it with `api_key_env: \"{variable}\"`; "
                        "the URL keeps only the server's address", "secret")
    check_options(state, f"lm {lm.name}", [o for o in lm.options if o not in secrets], LM_OPTIONS)
    _price_pair(state, lm)


def check_fallback(state: CheckState, lm: A.LMDecl) -> None:
    """`lm robust = fallback(a, b, ...)`: at least two lms, each declared and named once, no chain of
    fallbacks that comes back to this one, and only the options a fallback takes (sampling, over each
    lm's own: where to send requests, with which key, how often to retry belong to the lms it names)."""
    prog = state.program
    if len(lm.fallbacks) < 2:
        state.error(lm.model_span or lm.span, f"fallback {lm.name} names one lm; it needs at least two",
                    f"a fallback tries lms in order until one answers: `lm {lm.name} = fallback({lm.fallbacks[0]}, "
                    f"other)`; to use one lm, name it where the lm is wanted", "bad-lm")
    seen: dict[str, A.Span] = {}
    for name, span in zip(lm.fallbacks, lm.fallback_spans):
        if name in seen:
            state.error(span, f"fallback {lm.name} names lm '{name}' twice",
                        f"first named at {where(seen[name], span)}; each lm is tried once", "duplicate")
            continue
        seen[name] = span
        if name not in prog.lms:
            state.unknown(span, "lm", name, [n for n in state.names("lm") if n != lm.name])
            continue
        loop = _loop(prog.lms, name, lm.name)
        if loop is None:
            continue
        if len(loop) == 1:
            state.error(span, f"fallback {lm.name} names itself",
                        "a fallback names the other lms it tries when one fails", "cycle")
        elif min(loop, key=list(prog.lms).index) == lm.name:      # a cycle is reported once, at its first lm
            state.error(span, "fallback cycle: " + " -> ".join([lm.name, *loop]),
                        "a fallback cannot try itself, directly or through other fallbacks", "cycle")
    _tried_twice(state, lm)
    secrets = [o for o in lm.options if _is_secret(o)]
    for opt in secrets:
        state.error(opt.span, "API keys do not belong in .pipe files",
                    "a fallback takes no key: each lm it names reads its own from the variable its `api_key_env` names",
                    "secret")
    theirs = [o for o in lm.options if o not in secrets and o.name in LM_OPTIONS and o.name not in FALLBACK_OPTIONS]
    for opt in theirs:
        state.error(opt.span, f"option '{opt.name}' of fallback {lm.name} belongs on the lms it tries",
                    f"each of {', '.join(lm.fallbacks)} is tried with its own {opt.name}; a fallback takes only "
                    f"sampling options ({', '.join(FALLBACK_OPTIONS)}), over theirs", "bad-option")
    check_options(state, f"fallback lm {lm.name}", [o for o in lm.options if o not in secrets and o not in theirs],
                  FALLBACK_OPTIONS)


def _loop(lms: dict[str, A.LMDecl], start: str, target: str, seen: set[str] | None = None) -> list[str] | None:
    """The chain of fallbacks from lm `start` that comes back to `target` (ending with it), or None.

    >>> S = None
    >>> lms = {"a": A.LMDecl(S, "a", "", [], S, fallbacks=["b", "x"]), "b": A.LMDecl(S, "b", "", [], S, fallbacks=["a"])}
    >>> _loop(lms, "b", "a"), _loop(lms, "x", "a")
    (['b', 'a'], None)
    """
    if start == target:
        return [start]
    seen = set() if seen is None else seen
    decl = lms.get(start)
    if decl is None or start in seen:
        return None
    seen.add(start)
    for name in decl.fallbacks:
        rest = _loop(lms, name, target, seen)
        if rest is not None:
            return [start, *rest]
    return None


def _tried_twice(state: CheckState, lm: A.LMDecl) -> None:
    """A warning for an lm a fallback reaches twice through the fallbacks it names (it is tried once,
    at its first place): `fallback(a, gpt)` where `a = fallback(gpt, local)`."""
    lms = state.program.lms
    first: dict[str, str] = {}
    for name, span in zip(lm.fallbacks, lm.fallback_spans):
        if name not in lms or name == lm.name or _loop(lms, name, lm.name) is not None:
            continue        # reported above
        for model_lm, _ in state.program.lms_tried(name):
            via = first.setdefault(model_lm, name)
            if via != name:
                message = (f"fallback {lm.name} already tries lm '{model_lm}' through {via}" if model_lm == name else
                           f"fallback {lm.name} reaches lm '{model_lm}' through both {via} and {name}")
                state.warn(span, message, f"it is tried once, at its first place (through {via})", "duplicate")
                break


def _price_pair(state: CheckState, lm: A.LMDecl) -> None:
    """A declared price has both halves: a model billed per token bills prompts and replies."""
    given = {o.name: o for o in lm.options if o.name in ("input_price", "output_price")}
    if len(given) == 1:
        (name, opt), = given.items()
        other = "output_price" if name == "input_price" else "input_price"
        state.error(opt.span, f"lm {lm.name} declares {name} without {other}",
                    f"add `{other}: N` (dollars per million tokens; 0 if free)", "bad-option")


def choose_default_lm(state: CheckState, default: A.DefaultLM) -> None:
    """`default lm = NAME` names a declared lm; the first such line wins (a second is an error already)."""
    prog = state.program
    if default.name in prog.lms:
        prog.default_lm = prog.default_lm or default.name
    else:
        state.unknown(default.name_span, "lm", default.name, state.names("lm"))


def default_to_the_only_lm(state: CheckState) -> None:
    """A program with one lm and no `default lm` runs its modules on that lm."""
    prog = state.program
    if prog.default_lm is None and len(prog.lms) == 1:
        prog.default_lm = next(iter(prog.lms))


def _is_secret(opt: A.Option) -> bool:
    """Whether an option looks like it carries a credential rather than naming where one lives.

    >>> _is_secret(A.Option(None, "api_key_env", "OPENAI_API_KEY")), _is_secret(A.Option(None, "api_key", "x"))
    (False, True)
    """
    values = opt.value if isinstance(opt.value, list) else [opt.value]
    if any(isinstance(v, str) and _SECRET_VALUE.match(v.strip()) for v in values):
        return True
    return bool(SECRET_FIELD.search(opt.name))
