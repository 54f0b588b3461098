"""Instruction proposal: an LM writes candidate instructions for a predictor, grounded in the data.

The proposer sees the predictor's signature (fields, types, descriptions), its current instruction,
a summary of the training data computed without any LM call (label distribution, typical lengths, a
few inputs), some bootstrapped demos and a tip that varies per candidate (so even a temperature-0
model writes different candidates). It must reply with `{"instruction": ...}`; the JSON schema travels
in the request, so grammar-constrained backends (the embedded llama.cpp model) cannot reply otherwise.
A reply that does not parse is skipped, never raised: a weak proposer costs candidates, not the compile.

Proposals go through the session (`Session.ask`), so the LM cache, retries, the compile's call
budget and its token counters all apply to them as to any module call.
"""
from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from typing import Any

from pipec.session import LMRequest, describe_type, render_value

SCHEMA = {"type": "object", "properties": {"instruction": {"type": "string"}}, "required": ["instruction"]}

# Styles a candidate may take; which one a proposal gets is drawn by seed (after DSPy's MIPRO tips).
TIPS = (
    "Be concise: one or two short sentences.",
    "Say exactly what each output should contain and which values are allowed.",
    "Mention the cases that are easy to confuse, as the examples show them.",
    "Start with a persona, such as 'You are an expert ...', then state the task.",
    "Describe the inputs briefly, then the decision to make.",
    "Be precise and plain; no greetings, no examples in the instruction.",
)

MIN_CHARS, MAX_CHARS = 12, 800
CATEGORICAL_MAX = 12          # a text field with at most this many distinct values is shown as a distribution

SYSTEM = ("You write instructions for a language model. An instruction is the short task description the "
          "model reads before every input. You reply with one JSON object and nothing else.")


def summarize_data(rows: list, fields: list[str] | None = None, examples: int = 3) -> str:
    """Describe training rows in a few lines, without an LM: value distributions, typical lengths, inputs.

    >>> from types import SimpleNamespace as Row
    >>> rows = [Row(values={"q": "hi there", "label": "a"}), Row(values={"q": "yo", "label": "b"}),
    ...         Row(values={"q": "hey you", "label": "a"})]
    >>> print(summarize_data(rows, examples=0))
    3 rows.
    - q: text, typically 2 words (1-2)
    - label: a 67%, b 33%
    """
    values = [r.values for r in rows]
    if fields is None:
        fields = list(dict.fromkeys(k for v in values for k in v))
    lines = [f"{len(rows)} rows."]
    for name in fields:
        present = [v[name] for v in values if v.get(name) is not None]
        if present:
            lines.append(f"- {name}: {describe_values(present, len(values))}")
    for v in values[:examples]:
        lines.append("Example: " + "; ".join(f"{k} = {_clip(render_value(v.get(k)), 120)}" for k in fields
                                              if k in v))
    return "\n".join(lines)


def describe_values(present: list[Any], total: int) -> str:
    """One field's statistics: a distribution for few distinct values, else a typical size.

    >>> describe_values([1, 5, 3], 3)
    'numbers from 1 to 5, median 3'
    """
    missing = f" ({total - len(present)} missing)" if total > len(present) else ""
    hashable = [json.dumps(p, sort_keys=True) if isinstance(p, (list, dict)) else p for p in present]
    distinct = Counter(hashable)
    if all(isinstance(p, bool) for p in present) or (
            all(isinstance(p, str) for p in present) and len(distinct) <= CATEGORICAL_MAX
            and len(distinct) <= max(2, len(present) // 2)):
        common = distinct.most_common(CATEGORICAL_MAX)
        return ", ".join(f"{render_value(k)} {round(100 * n / len(present))}%" for k, n in common) + missing
    if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in present):
        return f"numbers from {min(present)} to {max(present)}, median {statistics.median(present):g}" + missing
    if all(isinstance(p, list) for p in present):
        sizes = [len(p) for p in present]
        return f"lists, typically {statistics.median(sizes):g} items ({min(sizes)}-{max(sizes)})" + missing
    words = [len(render_value(p).split()) for p in present]
    return f"text, typically {statistics.median(words):g} words ({min(words)}-{max(words)})" + missing


def proposal_request(predictor, summary: str, demos: list[dict], tip: str, params: dict[str, Any],
                     schema: bool = True) -> LMRequest:
    """The chat request asking for one instruction for `predictor`.

    >>> from pipec.dsl.types import Type
    >>> from pipec.session import PredictorView
    >>> p = PredictorView("m", "Say hi.", (("q", Type("str"), ""),), (("a", Type("str"), ""),))
    >>> req = proposal_request(p, "2 rows.", [], "Be concise.", {})
    >>> req.schema["required"], "Say hi." in req.messages[1]["content"]
    (['instruction'], True)
    """
    parts = ["The task's signature:", signature_text(predictor), "",
             f"Current instruction: {json.dumps(predictor.instruction, ensure_ascii=False)}", "",
             "What the data looks like:", summary]
    if demos:
        parts += ["", "Worked examples (inputs and the correct outputs):"]
        for i, demo in enumerate(demos, 1):
            shown = "; ".join(f"{k} = {_clip(render_value(v), 200)}" for k, v in demo.items())
            parts.append(f"{i}. {shown}")
    parts += ["", f"Tip: {tip}", "",
              "Write a better instruction for this task, in plain words, telling the model exactly what to "
              'produce. Reply with a JSON object: {"instruction": "..."}']
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]
    return LMRequest(messages, SCHEMA if schema else None, dict(params))


def signature_text(predictor) -> str:
    """The predictor's fields as the proposer reads them."""
    lines = ["Inputs:"] + [f"- {n}: {d + ' ' if d else ''}({describe_type(t)})" for n, t, d in predictor.inputs]
    lines += ["Outputs:"] + [f"- {n}: {d + ' ' if d else ''}({describe_type(t)})" for n, t, d in predictor.outputs]
    return "\n".join(lines)


def parse_instruction(text: str, max_chars: int = MAX_CHARS, lines: bool = False) -> str | None:
    r"""The instruction in a proposer's reply, or None when the reply is unusable (not JSON, shorter
    than MIN_CHARS or longer than `max_chars`). Spacing is collapsed; with `lines`, line breaks are
    kept (a long instruction may be a list of rules), blank lines at most one at a time.

    >>> parse_instruction('{"instruction": "  Classify   the intent. "}')
    'Classify the intent.'
    >>> parse_instruction('{"instruction": "Rules:\\n\\n\\n-  one\\n- two"}', lines=True)
    'Rules:\n\n- one\n- two'
    >>> parse_instruction("Sure! Here it is") is None
    True
    """
    obj = _json_object(text)
    if not isinstance(obj, dict):
        return None
    value = obj.get("instruction")
    if not isinstance(value, str):
        return None
    if lines:
        value = re.sub(r"\n{3,}", "\n\n", "\n".join(" ".join(line.split()) for line in value.strip().splitlines()))
    else:
        value = " ".join(value.split())
    if not MIN_CHARS <= len(value) <= max_chars or not re.search(r"[A-Za-z]{3}", value):
        return None
    return value


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    # Some models wrap the object in prose or code fences: take the outermost braces.
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(text[start:end + 1])
    except ValueError:
        return None


def same_instruction(a: str, b: str) -> bool:
    """Instructions that differ only in case, spacing or punctuation are the same candidate.

    >>> same_instruction("Classify the intent.", "classify  the intent")
    True
    """
    return _norm(a) == _norm(b)


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


class Proposer:
    """Asks the proposer LM for instructions through the session (`Session.ask`: budgeted, cached).

    `calls` caps how many proposal requests it may still send (cache hits are free and not counted);
    `budget_spent` turns true once the compile's budget refused a call, after which it sends nothing.
    """

    def __init__(self, session, calls: int | None = None):
        self.session = session
        self.calls = calls
        self.budget_spent = False

    def ask(self, request: LMRequest) -> str | None:
        """The reply text, or None when the call failed or may not be made."""
        if self.budget_spent or (self.calls is not None and self.calls <= 0):
            return None
        answer = self.session.ask(request)
        if self.calls is not None:
            self.calls -= answer.calls
        self.budget_spent = answer.budget_spent
        return answer.text


def propose_instructions(predictor, base_instruction: str, count: int, demo_sets: list[list[dict]],
                         summary: str, rng, proposer: Proposer, params: dict[str, Any] | None = None) -> list[str]:
    """Up to `count` distinct instructions for `predictor`; the first is always `base_instruction`.

    Proposals that fail, do not parse, or repeat a candidate are skipped; a couple of extra attempts
    make up for them. Example (with a session from `pipec.optimize.open_session`)::

        propose_instructions(prog.predictors()["classify"], "Classify.", 4, sets, summary,
                             session.rng("p"), Proposer(session))
    """
    candidates = [base_instruction]
    tips = list(TIPS)
    rng.shuffle(tips)
    shown_sets = [s for s in demo_sets if s] or [[]]
    wanted = count - 1
    for attempt in range(wanted + min(2, wanted)):
        if len(candidates) >= count or proposer.budget_spent:
            break
        demos = shown_sets[attempt % len(shown_sets)][:3]
        sampling = {"temperature": 0.7, "max_tokens": 200, "seed": rng.randrange(2 ** 31), **(params or {})}
        request = proposal_request(predictor, summary, demos, tips[attempt % len(tips)], sampling)
        text = proposer.ask(request)
        found = parse_instruction(text) if text is not None else None
        if found is not None and not any(same_instruction(found, c) for c in candidates):
            candidates.append(found)
    return candidates


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


__all__ = ["summarize_data", "proposal_request", "parse_instruction", "propose_instructions", "Proposer",
           "same_instruction", "SCHEMA"]
