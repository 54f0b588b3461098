"""Passes over lm declarations: ids, options, keys kept out of files, and which lm is the default."""
from __future__ import annotations

import re

from .. import ast as A
from ..catalogue import LM_OPTIONS
from ..redaction import SECRET_FIELD, declare_secret_env, mask_url, url_has_credentials
from .options import check_options
from .state import CheckState

# Option names that hold credentials are `redaction.SECRET_FIELD`; these are the prefixes of common
# provider keys (OpenAI, Anthropic, Slack, GitHub, Google, Hugging Face, Groq, AWS). `api_key_env`
# only names a variable, so it is fine.
_SECRET_VALUE = re.compile(r"^(sk-|sk_|xox[abp]-|ghp_|github_pat_|AIza|hf_|gsk_|AKIA)[A-Za-z0-9_\-]{6,}")


def check_lm(state: CheckState, lm: A.LMDecl) -> None:
    """`provider/model`, no key written in the file (or in `api_base`'s URL), known options."""
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
