"""mlrun's engine: recipes -> resolver -> plan -> runner -> cache.

Vocabulary (used the same way everywhere):
  recipe   a folder recipes/<name>/ with recipe.yaml: tags, variations, inputs, deps, what to run
  tag      a plain word a query matches against a recipe's tags
  variation a `_word` in a query choosing a named change to a recipe (groups, defaults, `_name.VALUE`)
  query    tags and variations, e.g. "app mlperf bert _onnxruntime _cpu"
  plan     the concrete dependency graph of a query: every node's variations, inputs, deps and key fixed
  key      sha256 of everything that affects a node's output; names its cache entry
  entry    an immutable folder cache/<recipe>-<key prefix>/ holding an artifact and its .mlrun/ metadata
  digest   a sha256 of file contents (recipe files, an entry's files)
"""
import importlib

# Lazy exports (PEP 562): `bin/mlrun` imports only the modules a verb needs, keeping start-up short.
_EXPORTS = {
    "Cache": "cache", "MlrunError": "errors", "RecipeError": "errors", "ResolutionError": "errors",
    "StepError": "errors", "UsageError": "errors", "MemoryIndex": "index", "RecipeIndex": "index",
    "Plan": "resolver", "Reporter": "resolver", "resolve": "resolver", "Runner": "runner",
    "RunReporter": "runner", "run_plan": "runner", "Settings": "settings",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
