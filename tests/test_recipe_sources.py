"""Each recipe's `sources` must hold every project module its step imports: they are part of its key
(an edit must rebuild) and of a run's recipe copy (a replay must find them)."""
import ast
import os
import re

import pytest

from conftest import ROOT
from engine.index import RecipeIndex

LOCAL = ("mlperf_bert", "engine", "submission")


def local_imports(path):
    """Project modules a file imports, as paths relative to the checkout."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in LOCAL:
                for candidate in (name.replace(".", "/") + ".py", name.replace(".", "/") + "/__init__.py"):
                    if os.path.isfile(os.path.join(ROOT, candidate)):
                        out.add(candidate)
                        # importing a.b runs a/__init__.py first (engine/__init__.py was missing from 11 recipes)
                        parent = os.path.dirname(candidate)
                        while parent:
                            if os.path.isfile(os.path.join(ROOT, parent, "__init__.py")):
                                out.add(f"{parent}/__init__.py")
                            parent = os.path.dirname(parent)
    return out


def closure(start):
    seen, todo = set(), list(start)
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo += local_imports(os.path.join(ROOT, rel))
    return seen


RECIPES = [r for r in RecipeIndex([os.path.join(ROOT, "recipes")]).recipes if r["sources"]]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r["name"] for r in RECIPES])
def test_sources_cover_what_the_step_imports(recipe):
    folder = os.path.dirname(recipe["path"])
    listed = {os.path.relpath(os.path.normpath(os.path.join(folder, s)), ROOT) for s in recipe["sources"]}
    runs = " ".join(str(v["run"]) for v in recipe["variations"].values() if v["run"]) + " " + str(recipe["run"])
    for script in os.listdir(folder):
        if script.endswith(".sh"):
            runs += open(os.path.join(folder, script)).read()
    # a script of another recipe's folder (a shared step) is listed only where the step runs it
    scripts = {s for s in listed if not s.endswith(".py")}
    for script in scripts:
        assert os.path.basename(script) in runs, f"{recipe['name']} lists {script} but its step does not run it"
    entry_points = {m.replace(".", "/") + ".py"
                    for m in re.findall(r"-m ((?:mlperf_bert|submission)\.\w+)", runs)}
    if scripts == listed:
        return
    assert entry_points, f"{recipe['name']} lists sources but runs no mlperf_bert or submission module"
    needed = closure(entry_points | {f"{p.split('/')[0]}/__init__.py" for p in entry_points})
    assert needed <= listed, f"{recipe['name']}: add to sources: {sorted(needed - listed)}"
