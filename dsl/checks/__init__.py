"""The checker's passes, one module each, and the state they share (`state.CheckState`).

`pipec.dsl.checker.PASSES` runs them in order. Besides the passes: `state` (the program being
checked, its diagnostics, type resolution), `options` (option values against their specs) and
`calls` (arguments against parameters), which several passes use.
"""
