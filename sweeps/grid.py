"""The grid of a sweep: `--grid NAME=V1,V2` (repeatable) over inputs, dependency inputs and variation groups.

NAME is one of the queried recipe's inputs (batch_size=1,4,16), a dependency input or override
(dep.model.layers=2,4; dep.NAME.tags=_x,_y), an environment override (env.OMP_NUM_THREADS=1,2), or a
variation group of the recipe with `_`-values (backend=_onnxruntime,_deepsparse): each point's query then
holds that variation instead of the query's own one of that group. The value `-` is "not given": that point runs
without the flag (the input's default, no override, the variable unset; for a group, the recipe's default). Everything is checked against the recipe
before anything runs. The points are the Cartesian product, in the order the --grid flags are given
(the last varies fastest); their ids (p000, p001, ...) follow that order, so the same grid gives the same ids.
"""
import difflib
import itertools

from engine.errors import UsageError

KINDS = ("input", "dep", "env", "variation")
# A point with this value runs without the flag: a grid can hold "as the recipe has it" beside other values
# (--grid dep.backend/python.packages=-,onnxruntime==1.22.1 builds no second venv of the set's own pin).
NOT_GIVEN = "-"


def parse(texts):
    """{name: [values]} from NAME=V1,V2 words, in the order given."""
    grid = {}
    for text in texts or ():
        name, eq, values = text.partition("=")
        name = name.strip().lstrip("-")
        if not name.startswith(("dep.", "env.")):
            name = name.replace("-", "_")
        items = [v.strip() for v in values.split(",")]
        if not eq or not name or not any(items):
            raise UsageError(f"--grid {text!r}: write --grid NAME=VALUE1,VALUE2",
                             hint="e.g. --grid batch_size=1,4,16 --grid backend=_onnxruntime,_deepsparse")
        if "" in items:
            raise UsageError(f"--grid {text!r}: an empty value", hint="values are separated by single commas")
        if len(set(items)) != len(items):
            raise UsageError(f"--grid {text!r}: a value is given twice")
        if name in grid:
            raise UsageError(f"--grid {name} is given twice", hint=f"give its values once: --grid {name}=V1,V2,...")
        grid[name] = items
    if not grid:
        raise UsageError("a sweep needs at least one --grid NAME=V1,V2",
                         hint="e.g. mlrun sweep QUERY --grid batch_size=1,4 --name bs")
    return grid


def classify(grid, recipe, inputs, deps, env):
    """{name: kind}, checking each name and value against the recipe and the fixed flags (usage errors)."""
    kinds = {}
    groups = {}
    for vname, spec in recipe["variations"].items():
        if spec.get("group"):
            groups.setdefault(spec["group"], []).append(vname)
    for name, values in grid.items():
        variation_like = [v.startswith("_") for v in values if v != NOT_GIVEN]
        if name.startswith("dep."):
            parts = name.split(".", 2)
            if len(parts) != 3 or not all(parts[1].split("/")) or not parts[2]:
                raise UsageError(f"--grid {name}: write dep.NAME.KEY=V1,V2 (KEY: tags, version or an input; NAME "
                                 "a dependency's name, or A/B for dependency B of dependency A)")
            if parts[2] in deps.get(parts[1], {}):
                raise _fixed_too(name)
            kinds[name] = "dep"
        elif name.startswith("env."):
            from engine import secrets
            from engine.recipe import ENV_RE
            if not ENV_RE.match(name[4:]):   # as --env.NAME says it, before the record: not in every point
                raise UsageError(f"--grid {name}: '{name[4:]}' is not a valid environment variable name",
                                 hint="NAME of letters, digits and _ (not first a digit)")
            from engine.envs import set_by_mlrun
            if set_by_mlrun(name[4:]):   # every point ran and failed on it (exit 1), after the sweep's record was made
                raise UsageError(f"--grid {name}: mlrun sets {name[4:]} itself for each step",
                                 hint="an input is a grid axis by its name: --grid INPUT=V1,V2")
            if secrets.is_secret(name[4:]):   # its values would be printed, and it changes no key: one value it is
                raise UsageError(f"--grid {name}: a secret is no grid axis (it changes nothing built, and a sweep "
                                 "prints its points' values)", hint=f"give it once: --{name}=VALUE")
            if name[4:] in env:
                raise _fixed_too(name)
            kinds[name] = "env"
        elif any(variation_like):
            if not all(variation_like):
                raise UsageError(f"--grid {name}: mixes variations (_x) and plain values",
                                 hint="a grid over a variation group gives only _variations")
            if name not in groups:
                near = difflib.get_close_matches(name, list(groups), n=1)
                raise UsageError(f"{recipe['name']} has no variation group '{name}'"
                                 + (f" (did you mean {near[0]}?)" if near else ""),
                                 hint=f"its groups: {', '.join(sorted(groups)) or 'none'}; `mlrun find QUERY` shows them")
            for value in (v for v in values if v != NOT_GIVEN):
                base = value[1:].split(".")[0]
                spec = recipe["variations"].get(base)
                if spec is None or spec.get("group") != name:
                    where = f"it is in group {spec['group']}" if spec and spec.get("group") else \
                        "it belongs to no group" if spec else "there is no such variation"
                    raise UsageError(f"--grid {name}: {value} is not a variation of the group {name} of "
                                     f"{recipe['name']} ({where})",
                                     hint=f"group {name}: " + ", ".join("_" + v for v in groups[name]))
            kinds[name] = "variation"
        elif name in recipe["inputs"]:
            if name in inputs:
                raise _fixed_too(name)
            kinds[name] = "input"
        elif name in groups:   # plain values for a group: its variations are written with _
            raise UsageError(f"--grid {name}: {name} is a variation group; its values are variations, written "
                             f"with _ ({', '.join('_' + v for v in groups[name])})",
                             hint=f"--grid {name}=" + ",".join(v if v == NOT_GIVEN else "_" + v for v in values))
        else:
            near = difflib.get_close_matches(name, list(recipe["inputs"]) + list(groups), n=1)
            raise UsageError(f"--grid {name}: {recipe['name']} has no input or variation group '{name}'"
                             + (f" (did you mean {near[0]}?)" if near else ""),
                             hint=f"its inputs: {', '.join(recipe['inputs']) or 'none'}; groups: "
                                  f"{', '.join(sorted(groups)) or 'none'}; a dependency's input: dep.NAME.INPUT")
    return kinds


def _fixed_too(name):
    return UsageError(f"--{name} is given both as a fixed flag and in --grid", hint="give it in one of them")


def points(grid):
    """[(point id, {name: value})] over the Cartesian product, the last --grid varying fastest."""
    combos = list(itertools.product(*grid.values()))
    width = max(3, len(str(len(combos) - 1)))
    return [(f"p{i:0{width}d}", dict(zip(grid, combo))) for i, combo in enumerate(combos)]


def point_request(query, recipe, settings, kinds, inputs, deps, env):
    """(query, inputs, dep_overrides, env_overrides) of one point: the fixed flags plus its settings."""
    words = query.split()
    inputs, env = dict(inputs), dict(env)
    deps = {name: dict(values) for name, values in deps.items()}
    for name, value in settings.items():
        kind = kinds[name]
        if kind == "variation":
            group = [w for w in words if w.startswith("_")
                     and (recipe["variations"].get(w[1:].split(".")[0]) or {}).get("group") == name]
            if value == NOT_GIVEN:
                words = [w for w in words if w not in group]
            elif group:
                words[words.index(group[0])] = value
                words = [w for w in words if w not in group[1:]]
            else:
                words.append(value)
        elif value == NOT_GIVEN:
            continue
        elif kind == "input":
            inputs[name] = value
        elif kind == "env":
            env[name[4:]] = value
        else:
            _, dep, key = name.split(".", 2)
            deps.setdefault(dep, {})[key] = value
    return " ".join(words), inputs, deps, env


def argv(query, inputs, deps, env):
    """mlrun's arguments for a point: `run QUERY --INPUT=V --dep.N.K=V --env.K=V --json`."""
    out = ["run", query]
    out += [f"--{k}={v}" for k, v in inputs.items()]
    out += [f"--dep.{d}.{k}={v}" for d, values in deps.items() for k, v in values.items()]
    out += [f"--env.{k}={v}" for k, v in env.items()]
    return out + ["--json"]
