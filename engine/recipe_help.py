"""`mlrun "QUERY" --help`: what can be typed for THAT recipe.

Its inputs (flags, types, defaults, choices), its variations by group (the defaults and what this query
chooses marked), the names of its dependencies for --dep.NAME.* (which alternative this query takes, and
that dependency's inputs), then run's own options. Nothing is resolved beyond the recipe itself: no probe
runs, nothing is hashed, so help is instant and works offline.
"""
import os
import textwrap

from .errors import ResolutionError
from .resolver import Resolver, _apply_variations, _condition_holds, _readable
from .recipe import show_number
from .words import plural

WIDTH = 100


def _flag(name, spec):
    kind = spec["type"]
    if spec["choices"]:
        value = "|".join(map(str, spec["choices"]))
    elif kind == "bool":
        return f"--{name}[=true|false]"
    else:
        value = {"str": "TEXT", "path": "PATH"}.get(kind, kind.upper())
    bounds = [f">={show_number(spec['min'])}" if spec.get("min") is not None else "",
              f"<={show_number(spec['max'])}" if spec.get("max") is not None else "",
              f">{show_number(spec['above'])}" if spec.get("above") is not None else "",
              f"a multiple of {'--' * isinstance(spec.get('multiple_of'), str)}{spec['multiple_of']}"
              if spec.get("multiple_of") else ""]
    return f"--{name}={value}" + "".join(f" ({b})" for b in bounds if b)


def _two_columns(rows, indent=2, gap=2):
    """'  left   right' rows, the right column wrapped under itself."""
    width = min(max((len(a) for a, _ in rows), default=0), 34)
    out = []
    for left, right in rows:
        pad = " " * (indent + width + gap)
        if not right:
            out.append(" " * indent + left)
            continue
        if len(left) > width:
            out.append(" " * indent + left)
            out += textwrap.wrap(right, WIDTH, initial_indent=pad, subsequent_indent=pad)
        else:
            lines = textwrap.wrap(right, WIDTH - len(pad))
            out.append(" " * indent + left.ljust(width + gap) + lines[0])
            out += [pad + line for line in lines[1:]]
    return out


def _inputs(recipe):
    rows = []
    for name, spec in recipe["inputs"].items():
        notes = [spec["help"]] if spec["help"] else []
        if spec["default"] is not None and spec["default"] != "":
            notes.append(f"default: {str(spec['default']).lower() if spec['type'] == 'bool' else spec['default']}")
        if spec.get("required"):
            notes.append("required")
        if spec.get("when"):
            notes.append(f"only with {_readable(spec['when'])}")
        rows.append((_flag(name, spec), "; ".join(notes)))
    return rows


def _variations(recipe, chosen):
    groups = {}
    for vname, v in recipe["variations"].items():
        word = "_" + vname + (".VALUE" if v["param"] else "")
        marks = [m for m, on in (("default", v["default"]), ("chosen", vname in chosen and not v["default"])) if on]
        groups.setdefault(v["group"], []).append(word + (f" ({', '.join(marks)})" if marks else ""))
    rows = []
    for group, words in groups.items():
        rows.append((f"{group} (one of):" if group else "any of:", ", ".join(words)))
    described = [(f"_{k}", v["description"]) for k, v in recipe["variations"].items() if v["description"]]
    return rows, described


def _deps(resolver, recipe, chosen, inputs):
    """(name, query of the alternative this query takes or '-', note) per dependency name, in recipe order."""
    spec = _apply_variations(recipe, [(v, p) for v, p in chosen.items()])
    by_name = {}
    for dep in spec["deps"]:
        name = dep["name"] or _dep_recipe(resolver, dep)
        by_name.setdefault(name, []).append(dep)
    rows = []
    for name, alternatives in by_name.items():
        taken = [d for d in alternatives if not d["when"] or _condition_holds(d["when"], list(chosen.items()), inputs)]
        dep = taken[0] if taken else None
        notes = []
        if dep is None:
            notes.append("not taken by this query")
        if len(alternatives) > 1:
            notes.append(f"{plural(len(alternatives), 'alternative')}, chosen by variations and inputs "
                         f"(`mlrun find {recipe['name']}` lists them)")
        target = _dep_recipe_spec(resolver, dep) if dep else None
        if target and target["inputs"]:
            notes.append("its inputs: " + " ".join(target["inputs"]))
        rows.append((name, (dep["query"] if dep else "-") + ("  [" + "; ".join(notes) + "]" if notes else "")))
    return rows


def _dep_recipe_spec(resolver, dep):
    if "{" in dep["query"]:
        return None
    try:
        return resolver.select(dep["query"], dep["version"])[0]
    except Exception:   # a dep that cannot be found is reported by a real run, not by help
        return None


def _dep_recipe(resolver, dep):
    found = _dep_recipe_spec(resolver, dep)
    return found["name"] if found else dep["query"]


def _run_options(run_parser):
    formatter = run_parser._get_formatter()
    for group in run_parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings]
        if actions:
            formatter.start_section(f"run {group.title}" if group.title == "options" else group.title)
            formatter.add_arguments(actions)
            formatter.end_section()
    return formatter.format_help().rstrip()


def render(index, query, extras, run_parser):
    """The help text of the recipe `query` selects (ResolutionError when none or several)."""
    from .cli import split_extras
    given, _, _ = split_extras(extras)
    resolver = Resolver(index)
    recipe, requested = resolver.select(query)
    chosen = dict(resolver.choose_variations(recipe, requested))
    try:
        inputs = resolver.fix_inputs(recipe, given)
    except ResolutionError:   # help is asked before the inputs are right (a required one not given yet)
        inputs = {name: spec["default"] for name, spec in recipe["inputs"].items()}
    path = recipe.get("path", "")
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    out = [f'usage: mlrun "{query}" [--INPUT=VALUE ...] [--dep.NAME.KEY=VALUE ...] [--env.KEY=VALUE ...] [options]',
           "", f"{recipe['name']} {recipe['version']}  ({shown})"]
    if recipe["description"]:
        out += textwrap.wrap(recipe["description"], WIDTH, initial_indent="  ", subsequent_indent="  ")
    out.append(f"  tags: {' '.join(recipe['tags'])}" + (f"   also found as: {' '.join(recipe['aliases'])}"
                                                         if recipe.get("aliases") else ""))
    if recipe["inputs"]:
        out += ["", "inputs (--NAME=VALUE; choices are matched whatever their case):"] + _two_columns(_inputs(recipe))
    rows, described = _variations(recipe, chosen)
    if rows:
        out += ["", "variations (add _NAME to the query):"] + _two_columns(rows)
        if described:
            out += _two_columns(described, indent=4)
    deps = _deps(resolver, recipe, chosen, inputs)
    if deps:
        out += ["", "dependencies (change one by NAME: --dep.NAME.tags=_x, --dep.NAME.version=SPEC, "
                    "--dep.NAME.INPUT=VALUE):"] + _two_columns(deps)
    out += ["", "environment: --env.KEY=VALUE sets KEY for every step (part of every key)", "",
            _run_options(run_parser)]
    return "\n".join(out)
