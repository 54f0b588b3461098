"""A module with alternatives: `module solve = one_of(Predict, ChainOfThought, Majority(n: 5))(Task)`.

Not a kind of its own (the registry lists no `one_of`): a `OneOf` holds one module of each
alternative kind, built from the module's common options with the alternative's own over them, and
runs one of them, the first until a compile (or an artifact) chooses another. Each alternative is
named `M.<label>` (`solve.ChainOfThought`; a kind listed again is `Majority_2`), so its predictors are
`M.<label>` or `M.<label>.<part>` (`solve.Majority.reason`): every alternative's instruction and demos
are tuned apart. `predictors()` and `max_calls()` are the running alternative's, which is what
`pipec inspect` bounds and an artifact stores; `every_predictor()` lists those of every alternative.
"""
from __future__ import annotations

from .base import ModuleKind, Predictor


class OneOf(ModuleKind):
    """Run one of several modules of the same signature, chosen by `choose(label)`.

    >>> from pipec.dsl.types import STR
    >>> from pipec.modules import kinds
    >>> from pipec.modules.base import ModuleSpec
    >>> def spec(name): return ModuleSpec(name, "Answer.", [("q", STR, "")], [("a", STR, "")], {}, "lm", {})
    >>> m = OneOf(spec("solve"), {"Predict": kinds()["Predict"](spec("solve.Predict")),
    ...                           "Majority": kinds()["Majority"](spec("solve.Majority"))})
    >>> m.chosen, m.max_calls(), [p.name for p in m.every_predictor()]
    ('Predict', 2, ['solve.Predict', 'solve.Majority.reason'])
    >>> m.choose("Majority"); m.describe(), m.max_calls(), [p.name for p in m.predictors()]
    ('Majority (one_of Predict, Majority)', 10, ['solve.Majority.reason'])
    """

    kind = ""           # not a kind: the registry (which lists classes with a kind) leaves it out

    def __init__(self, spec, alternatives: dict[str, ModuleKind]):
        super().__init__(spec)
        self.alternatives = alternatives
        self.chosen = next(iter(alternatives))

    @property
    def running(self) -> ModuleKind:
        """The alternative a call runs."""
        return self.alternatives[self.chosen]

    def choose(self, label: str) -> None:
        """Run the alternative called `label` from now on; a ValueError names the labels there are."""
        if label not in self.alternatives:
            raise ValueError(f"module {self.name} has no alternative '{label}'; its alternatives: "
                             f"{', '.join(self.alternatives)}")
        self.chosen = label

    def predictors(self) -> list[Predictor]:
        return self.running.predictors()

    def every_predictor(self) -> list[Predictor]:
        return [p for alt in self.alternatives.values() for p in alt.every_predictor()]

    def install_written(self) -> None:
        for alt in self.alternatives.values():      # each has the module's demos and pins in its options
            alt.install_written()

    def max_calls(self) -> int:
        return self.running.max_calls()

    def max_calls_prepared(self) -> int:
        return self.running.max_calls_prepared()

    def streamed(self):
        return self.running.streamed()

    async def prepare(self, examples, ctx) -> None:
        # Every alternative: the compile may choose any of them, and each must start prepared.
        for alt in self.alternatives.values():
            if alt.needs_preparing():
                await alt.prepare(examples, ctx)

    def needs_preparing(self) -> bool:
        return any(alt.needs_preparing() for alt in self.alternatives.values())

    def code(self) -> dict[str, str]:
        return self.running.code()

    def describe(self) -> str:
        return f"{self.running.describe()} (one_of {', '.join(self.alternatives)})"

    async def forward(self, values, ctx):
        return await self.running.forward(values, ctx)
