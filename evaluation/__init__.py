"""Pass@1 scoring, with no Django: data sets and their tasks (`datasets`), the prompt each data
set asks (`prompts`), code extraction from a completion (`code_extraction`), the sandbox that runs
a candidate against its tests (`sandbox`: `checks`, `containment`, `outcomes`) and the pass@k
estimator (`passk`).

The studies app (`annotations`) stores tasks as its problem library and calls these from its
worker; `python -m evaluation` scores reference solutions or a file of completions on its own.
"""
