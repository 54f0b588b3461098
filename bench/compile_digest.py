"""What every optimizer chooses on examples/intent.pipe, with a deterministic scripted LM: a digest to
diff before and after a refactoring that must not change compile results.

    python bench/compile_digest.py > before.txt      # on the old commit
    python bench/compile_digest.py > after.txt       # on the new one
    diff before.txt after.txt && echo unchanged

The scripted LM answers from a hash of the whole request (instruction, demos and input), so any change
in the prompts a compile builds, the candidates it scores, their order or the seeds it draws shows up
as a different choice, score or call count. No model, no network: a few seconds per optimizer.
Optimizers are taken from the registry, so a new one is covered without editing this file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INTENTS = ("book_restaurant", "get_weather", "add_to_playlist", "play_music", "rate_book",
           "search_creative_work", "search_screening_event")


def scripted_rule(request):
    """A reply that depends on every byte of the request: right about two times in three when the
    input names the intent's last word, otherwise an intent picked by the hash."""
    text = json.dumps(request.messages, sort_keys=True)
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    last = request.messages[-1]["content"].lower()
    if "instruction" in text and "proposed_instruction" in text:
        return {"proposed_instruction": f"Classify the utterance carefully (variant {h % 7}).",
                "instruction": f"Classify carefully v{h % 7}."}
    for intent in INTENTS:
        if intent.rsplit("_", 1)[-1] in last and h % 3:
            return {"intent": intent}
    return {"intent": INTENTS[h % len(INTENTS)]}


def digest(names: list[str], seed: int, budget: int) -> list[str]:
    import pipec
    if not names:
        from pipec.optimizers import optimizers
        names = sorted(optimizers())
    data = REPO / "examples" / "data"
    lines = []
    for name in names:
        lm = pipec.ScriptedLM(rule=scripted_rule)
        prog = pipec.load(REPO / "examples" / "intent.pipe", lm=lm, cache=False)
        try:
            art = prog.compile(str(data / "intent_train.jsonl"), str(data / "intent_dev.jsonl"),
                               "exact_match(intent)", optimizer=name, seed=seed, budget=budget).artifact
        except Exception as err:                     # a digest line, not a crash: the diff shows it
            lines.append(f"{name}: error {type(err).__name__}: {err}")
            continue
        chosen = json.dumps({k: v.model_dump() for k, v in sorted(art.predictors.items())}, sort_keys=True,
                            default=str)
        report = art.report.model_dump()
        lines.append(f"{name}: baseline {report['baseline_score']} compiled {report['compiled_score']} "
                     f"calls {len(lm.requests)} trials {len(report.get('trials') or [])} "
                     f"chosen {hashlib.sha256(chosen.encode()).hexdigest()[:16]}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", action="append", default=[], help="only these (repeatable)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--budget", type=int, default=400, help="LM calls per compile")
    args = ap.parse_args(argv)
    os.environ["PIPEC_CACHE_DIR"] = tempfile.mkdtemp(prefix="pipec-digest-")
    print("\n".join(digest(args.optimizer, args.seed, args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
