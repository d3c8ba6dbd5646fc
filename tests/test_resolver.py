"""The resolver, driven by data: every tests/resolver_cases/*.yaml is one case.

A case holds `recipes:` ({name: recipe as in recipe.yaml}, loaded with MemoryIndex),
`query:`, optional `inputs:`, `dep_overrides:` and `host_env:`, and either
`expect:` (`order`: node labels in dependency order, root last; `nodes`: for some
labels, Node fields to compare, with `deps` as {dep name: dep label}) or `error:`
(a substring, or a list of them, of the error's text, hint included).
"""
import glob
import os

import pytest
import yaml

from engine import MemoryIndex, MlrunError, Reporter, resolve

CASES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "resolver_cases", "*.yaml")))
FIELDS = {"name", "version", "tags", "variations", "inputs", "env", "exports", "run", "cache", "deps",
          "hash_env", "download"}


def _load(path):
    with open(path) as f:
        case = yaml.safe_load(f)
    unknown = set(case) - {"description", "recipes", "query", "inputs", "dep_overrides", "host_env", "expect",
                           "error", "slow"}
    assert not unknown, f"{path}: unknown case keys {unknown}"
    assert ("expect" in case) != ("error" in case), f"{path}: give exactly one of expect: and error:"
    return case


def _resolve(case):
    index = MemoryIndex(case["recipes"])
    return resolve(index, case["query"], inputs=case.get("inputs"), host_env=case.get("host_env"),
                   dep_overrides=case.get("dep_overrides"))


def test_there_are_enough_cases():
    assert len(CASES) >= 20


def _param(path):   # slow: true, a case that takes its time by design (out of the quick loop)
    with open(path) as f:
        slow = yaml.safe_load(f).get("slow") is True
    return pytest.param(path, id=os.path.basename(path)[:-5], marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("path", [_param(p) for p in CASES])
def test_case(path):
    case = _load(path)
    if "error" in case:
        with pytest.raises(MlrunError) as info:
            _resolve(case)
        text = str(info.value)
        fragments = case["error"] if isinstance(case["error"], list) else [case["error"]]
        for fragment in fragments:
            assert fragment in text, f"{fragment!r} not in {text!r}"
        assert info.value.exit_code == 2
        return
    plan = _resolve(case)
    expect = case["expect"]
    labels = [n.label for n in plan.nodes]
    assert labels == expect["order"]
    assert plan.root is plan.nodes[-1]
    # Every node comes after all of its deps, and each distinct node appears once.
    seen = set()
    for node in plan.nodes:
        assert all(dep.key in seen for _, dep in node.deps), node.label
        assert node.key not in seen
        seen.add(node.key)
    by_label = {n.label: n for n in plan.nodes}
    for label, fields in (expect.get("nodes") or {}).items():
        assert label in by_label, f"no node {label!r} in {labels}"
        node = by_label[label]
        for field, want in fields.items():
            assert field in FIELDS, f"{path}: unknown node field {field}"
            if field == "deps":
                got = {name: dep.label for name, dep in node.deps}
            elif field == "env" and isinstance(want, dict):
                got = {k: node.env.get(k) for k in want}   # the listed variables only
            else:
                got = getattr(node, field)
            assert got == want, f"{label}.{field}: {got!r} != {want!r}"


# -- what the case format cannot say ----------------------------------------------------


SHARED = {
    "app": {"tags": "app", "deps": [{"name": "model", "query": "get model"}, {"name": "data", "query": "get data"}]},
    "model": {"tags": "get model", "deps": ["get python"]},
    "data": {"tags": "get data", "deps": ["get python"]},
    "python": {"tags": "get python"},
}


def test_shared_dep_is_one_node_object():
    plan = resolve(MemoryIndex(SHARED), "app")
    model, data = (dict(plan.root.deps)[n] for n in ("model", "data"))
    assert dict(model.deps)["python"] is dict(data.deps)["python"]
    assert len(plan.nodes) == 4


def test_same_recipe_with_different_variations_is_two_nodes():
    recipes = {
        "app": {"tags": "app", "deps": [{"name": "a", "query": "get model _fp32"},
                                        {"name": "b", "query": "get model _int8"}]},
        "model": {"tags": "get model", "variations": {"fp32": {"group": "p"}, "int8": {"group": "p"}}},
    }
    plan = resolve(MemoryIndex(recipes), "app")
    assert [n.label for n in plan.nodes] == ["model _fp32", "model _int8", "app"]
    assert plan.nodes[0].key != plan.nodes[1].key


def test_reporter_hears_every_node_with_its_path():
    heard = []

    class Recording(Reporter):
        def resolved(self, node, path):
            heard.append((node.label, tuple(path)))

    resolve(MemoryIndex(SHARED), "app", reporter=Recording())
    assert ("python", ("app", "model")) in heard
    assert ("model", ("app",)) in heard and ("data", ("app",)) in heard
    assert heard[-1] == ("app", ())


def test_query_may_be_a_word_list():
    plan = resolve(MemoryIndex(SHARED), ["get", "model"])
    assert plan.query == "get model"
    assert plan.root.name == "model"


def test_resolving_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    recipes = {"app": {"tags": "app", "run": f"touch {marker}", "deps": ["get python"]},
               "python": {"tags": "get python", "run": ["touch", str(marker)]}}
    resolve(MemoryIndex(recipes), "app")
    assert not marker.exists()


def test_a_dependency_chain_too_deep_is_a_resolution_error_not_a_bug():
    """1,200 recipes in a chain ended "unexpected RecursionError ... this is a bug in mlrun"."""
    import sys
    from engine import MemoryIndex, resolve
    from engine.errors import ResolutionError
    index = MemoryIndex({f"r{i}": {"tags": f"r{i}", "deps": [f"r{i + 1}"]} for i in range(1000)} | {"r1000": {"tags": "r1000"}})
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)   # the same error at a smaller depth, quickly
    try:
        with pytest.raises(ResolutionError, match="nested too deep"):
            resolve(index, "r0")
    finally:
        sys.setrecursionlimit(limit)
