"""Turn a query into a concrete plan: the whole dependency graph, fixed before anything runs.

The resolver knows nothing about files. It asks an index for recipes (any object
with a `recipes` list of normal-form recipe dicts, each with a `digest`) and tells
a reporter what it decided. Every node of the plan has its variations (defaults
filled in), its inputs, its dependencies and its cache key fixed.
"""
import os
import re

from . import envs, keys, secrets
from .errors import RecipeError, ResolutionError
from .recipe import (CONDITION_INPUT, FLAG_ALONE, PASSED_INPUT, convert_input, not_a_multiple, out_of_bounds,
                     PatternTooSlow, pattern_matches)

SPECIAL_OVERRIDES = {"tags", "version"}
# A path input may also name a model elsewhere (zoo:STUB, hf:ORG/NAME): kept as given, not a local file.
REFERENCE = re.compile(r"^[a-z][a-z0-9+.-]+:")


class Reporter:
    """Does nothing; tests record with a subclass, -v prints with one."""

    def resolved(self, node, path):
        pass


class Node:
    """One concrete step of a plan.

    name, version, tags; variations: chosen ones, defaults included, in recipe order ("batch_size.8"
    for parametric ones); inputs: every declared input with its value; env, exports, download, run
    (str for bash, list for argv, or None) after variations; cache; deps: [(dep name, Node)];
    key and material: the cache key and what it hashes (kept for `explain`); hash_env: host
    variables the recipe declares as affecting it; input_vars: input name -> env variable;
    secret_env: the real values of secrets that env and hash_env hold masked (never recorded);
    probes: {name: output} of the recipe's probes (part of the key); contents: {input name: digest of
    its file's or folder's content} for `content: true` path inputs (the key holds it instead of the path);
    groups: {chosen variation: its group}, for records that show a run's choices by group name.
    """

    FIELDS = ("name", "version", "tags", "variations", "inputs", "env", "exports", "download", "run", "cache",
              "deps", "key", "material", "recipe_path", "hash_env", "pass_env", "input_vars", "sources", "record",
              "secret_env", "probes", "contents", "groups", "interactive", "recipe_files", "mirror_files", "alone",
              "timeout")

    def __init__(self, **values):
        for f in self.FIELDS:
            setattr(self, f, values.get(f))

    @property
    def label(self):
        return " ".join([self.name] + ["_" + v for v in self.variations])

    @property
    def entry_name(self):
        return f"{self.name}-{self.key[:16]}"

    def to_dict(self):
        return {"name": self.name, "version": self.version, "tags": self.tags, "variations": self.variations,
                "inputs": self.inputs, "env": self.env, "exports": self.exports, "download": self.download,
                "run": self.run, "cache": self.cache, "key": self.key, "recipe_path": self.recipe_path,
                "hash_env": self.hash_env, "pass_env": self.pass_env, "input_vars": self.input_vars, "sources": self.sources,
                "record": self.record, "probes": self.probes, "material": self.material, "deps": [[n, d.key] for n, d in self.deps]}


class Plan:
    """The nodes in dependency order: every node after all of its deps; the root is last.

    request: what was asked (query, inputs, dep and env overrides), so a run can be replayed.
    """

    def __init__(self, query, nodes, request=None):
        self.query, self.nodes = query, nodes
        self.request = request or {"query": query, "inputs": {}, "dep_overrides": {}, "env_overrides": {}}

    @property
    def root(self):
        return self.nodes[-1]


def has_tags(tags, recipe_tags, name, aliases=()):
    """A query's plain words all match: each is one of the recipe's tags, its name or an alias it declares."""
    return all(t in recipe_tags or t == name or t in aliases for t in tags)


def parse_query(query):
    """Split a query into plain tags and variation words (without their leading _)."""
    words = query.split() if isinstance(query, str) else list(query)
    tags = [w for w in words if not w.startswith("_")]
    variations = [w[1:] for w in words if w.startswith("_")]
    for v in variations:
        if not v:
            raise ResolutionError(f"'_' alone is not a variation in query '{query}'")
    return tags, variations


class Resolver:
    def __init__(self, index, reporter=None, host_env=None, dep_overrides=None, env_overrides=None, prober=None):
        self.index = index
        self.reporter = reporter or Reporter()
        self.host_env = host_env or {}
        # {dep name: {"tags": "...", "version": "...", input: value}} from --dep.NAME.KEY=VALUE; a NAME of
        # the form A/B reaches only a dep B of a dep A (--dep.backend/python.packages), a plain one every dep so named.
        self.dep_overrides = dep_overrides or {}
        self.by_path = any("/" in name for name in self.dep_overrides)
        # --env.KEY=VALUE: every step's env, after the recipe's own; part of each key, as it changes the build.
        # A secret is hashed and recorded as the mask: the key says one was given, never which.
        self.env_overrides, self.secret_env = {}, {}
        missing = self._secrets_not_here(env_overrides or {})
        if missing:   # all of them at once: a replay asked for one at a time, three failures for three
            raise ResolutionError("; ".join(missing), hint="e.g. " + "; ".join(
                f"export {m.split()[0].removeprefix('--env.')}=..." for m in missing))
        for name, value in (env_overrides or {}).items():
            # a masked value is a secret whatever its name: a record made when the name counted as one (HF_TOKEN_PATH)
            if secrets.is_secret(name) or value == secrets.MASK:
                if value == secrets.MASK:  # a replayed record: the secret comes from the host again (said above
                    value = self.host_env[name]   # when it is not set: never the mask itself, as if the secret)
                secrets.remember(value)
                self.secret_env[name], value = value, secrets.MASK
            else:   # a URL with a password or token: the node holds it masked, as it is recorded
                value = self._url_secrets(name, value, self.secret_env)
            self.env_overrides[name] = value
        if prober is None:
            from .probes import Prober
            prober = Prober()
        self.prober = prober
        self.nodes = {}            # identity -> Node, so a shared dep is one node
        self.versions = {}         # recipe name -> (version, who needs it)
        self.used_overrides = set()
        self.memo = {}             # (recipe, version, variations, inputs) -> Node

    # -- public ---------------------------------------------------------------

    def resolve(self, query, inputs=None):
        try:
            root = self._node(query, None, inputs or {}, path=[], needed_by="the command line", dep_path=())
        except RecursionError:   # a chain of 1,200 recipes ended "unexpected RecursionError ... a bug in mlrun"
            raise ResolutionError(f"'{query}': its dependencies are nested too deep for mlrun to resolve (hundreds "
                                  "of levels)", hint="a chain that long is most likely generated by mistake; "
                                  "flatten it into fewer recipes") from None
        unused = set(self.dep_overrides) - self.used_overrides
        if unused:
            from .words import did_you_mean
            first = sorted(unused)[0]
            names = sorted({name for node in self.nodes.values() for name, _ in node.deps})
            raise ResolutionError(f"--dep.{first}.* names no dependency in the plan of '{query}'"
                                  + ("" if "/" in first else did_you_mean(first, names)),
                                  hint="`mlrun plan QUERY` shows the dependency names")
        order = []
        self._order(root, order, set())
        text = query if isinstance(query, str) else " ".join(query)
        return Plan(query=text, nodes=order, request={"query": text, "inputs": dict(inputs or {}),
                                                      "dep_overrides": self.dep_overrides,
                                                      "env_overrides": self.env_overrides})

    # -- selection ------------------------------------------------------------

    def _named(self, tags):
        """The recipes answering to every word of tags (has_tags), in the index's order: looked up by word, not by
        trying each recipe (a plan of a chain of 1,000 recipes took 1.4 s, as did checking their deps)."""
        recipes = self.index.recipes
        if getattr(self, "_words", (None,))[0] is not recipes:
            words = {}
            for i, r in enumerate(recipes):
                for word in {*r["tags"], r["name"], *r.get("aliases", ())}:
                    words.setdefault(word, []).append(i)
            self._words = (recipes, words)
        found = [self._words[1].get(t, []) for t in tags]
        if not found:   # variations only: any recipe
            return list(recipes)
        fewest = min(found, key=len)
        others = [set(f) for f in found if f is not fewest]
        return [recipes[i] for i in fewest if all(i in other for other in others)]

    def select(self, query, version=None):
        """The one recipe a query names (raises ResolutionError with the reason otherwise)."""
        tags, variations = parse_query(query)
        if not tags and not variations:   # it matched every recipe, listed as "matches 26 recipes"
            raise ResolutionError("an empty query names no recipe", hint="tags and _variations, e.g. "
                                  "'get dataset squad _validation'; `mlrun find` lists the recipes")
        matches = self._named(tags)
        if not matches:
            from .index import layout_hint, shipped_hint
            dirs = getattr(self.index, "dirs", None)   # folders (a RecipeIndex), not recipes held in memory
            closest = self._closest(tags)   # a near tag first; else what in the folders hides recipes, if anything
            raise ResolutionError(f"no recipe matches '{query}'", hint=dirs and (shipped_hint(dirs, query) or (
                "did you mean" not in closest and layout_hint(dirs))) or closest)
        if variations and len(matches) > 1:
            with_all = [r for r in matches if all(_var_base(v) in r["variations"] for v in variations)]
            unknown = [v for v in variations if not any(_var_base(v) in r["variations"] for r in matches)]
            if unknown:   # a misspelt variation: it said "matches 3 recipes: add a tag or a variation"
                from .words import did_you_mean
                known = sorted({"_" + k for r in matches for k in r["variations"]})
                raise ResolutionError(
                    (f"none of the {len(matches)} recipes '{' '.join(tags)}' matches" if tags else "no recipe")
                    + f" has a variation '_{unknown[0]}'" + did_you_mean("_" + _var_base(unknown[0]), known),
                    hint=f"their variations: {', '.join(known) or 'none'}")
            matches = with_all or matches
        if version:
            fitting = [r for r in matches if _version_ok(r["version"], version)]
            if not fitting:
                found = ", ".join(f"{r['name']} {r['version']}" for r in matches)
                raise ResolutionError(f"no recipe for '{query}' satisfies version {version} (found: {found})")
            matches = fitting
        names = {r["name"] for r in matches}
        if len(names) > 1:
            # "get dataset squad" names the recipe tagged exactly so, not "get dataset squad features".
            exact = [r for r in matches if set(r["tags"]) <= set(tags) | set(r.get("aliases", ()))]
            if exact and len({r["name"] for r in exact}) == 1:
                matches, names = exact, {exact[0]["name"]}
        if len(names) > 1:
            listing = "; ".join(f"{r['name']} (tags: {' '.join(r['tags'])})" for r in matches)
            raise ResolutionError(f"'{query}' matches {len(matches)} recipes: {listing}",
                                  hint="add a tag or a variation that only one of them has")
        if len(matches) == 1:
            return matches[0], variations
        # Several versions of one recipe: the newest that fits, by PEP 440 (recipes are checked to be such): split
        # on dots, 1.0 against 1.0rc1 was "unexpected TypeError", and 2.0.dev1 was taken over 2.0.
        from packaging.version import Version
        return max(matches, key=lambda r: Version(r["version"])), variations

    def _with_tags(self, query, version, words):
        """A dep's query with --dep.NAME.tags added: a variation there replaces the query's one of the same group
        (the person's word over the recipe's: --dep.model.tags=_int8 where the app asks for _fp32)."""
        try:
            recipe = self.select(" ".join([query] + words), version)[0]
        except ResolutionError:
            return " ".join([query] + words)   # the resolution says what is wrong
        spec = recipe["variations"]
        groups = {spec[_var_base(w[1:])]["group"] for w in words
                  if w.startswith("_") and _var_base(w[1:]) in spec and spec[_var_base(w[1:])]["group"]}
        kept = [w for w in query.split() if not (w.startswith("_") and _var_base(w[1:]) in spec
                                                  and spec[_var_base(w[1:])]["group"] in groups)]
        return " ".join(kept + words)

    def _closest(self, tags):
        from .words import did_you_mean  # only errors need it
        recipes = self.index.recipes
        known = {t for r in recipes for t in r["tags"] + r.get("aliases", [])} | {r["name"] for r in recipes}
        hints = []
        others = [r for r in recipes if has_tags([t for t in tags if t in known], r["tags"], r["name"],
                                                 r.get("aliases", ()))]
        for t in tags:
            if t not in known and any(_var_base(t) in r["variations"] for r in others):   # the _ forgotten
                hints.append(f"unknown tag '{t}' (did you mean the variation _{t}?)")
            elif t not in known:
                hints.append(f"unknown tag '{t}'" + did_you_mean(t, known))
        if not hints:
            as_variation = [t for t in tags if any(
                _var_base(t) in r["variations"] for r in recipes
                if has_tags([o for o in tags if o != t], r["tags"], r["name"], r.get("aliases", ())))]
            hints.append("no single recipe has all of these tags together" + (
                f" (did you mean the variation _{as_variation[0]}?)" if as_variation else ""))
        return "; ".join(hints) + "; `mlrun find TAG` lists recipes"

    # -- variations and inputs -------------------------------------------------

    def check_dep(self, dep, query):
        """That a dep's query (dep["query"], or what a parametric variation made of it) names one recipe and only
        variations and inputs it has; a ResolutionError says what is wrong."""
        found, requested = self.select(query, dep["version"])
        self.choose_variations(found, requested)
        for name, value in dep["inputs"].items():
            if not (isinstance(value, str) and "{input." in value):  # else known only when resolving
                input_value(found, name, value)
            text = dep.get("written", {}).get(name)
            if text is not None and found["inputs"].get(name, {}).get("type", "str") in ("str", "path"):
                raise ResolutionError(f"input {name} is written {text} without quotes, which YAML reads as "
                                      f"{value!r}", hint=f'quote it: {name}: "{text}"')

    def choose_variations(self, recipe, requested):
        """Requested words plus their bases plus group defaults, checked for conflicts."""
        chosen = {}        # variation name -> param value (None for plain ones)
        why = {}           # variation name -> who asked for it, for conflict messages
        todo = [(v, "the query") for v in requested]
        while True:
            while todo:
                self._take(recipe, chosen, why, *todo.pop(0), todo)
            # A group nobody chose gets its default, one group at a time in the recipe's order, each with its
            # bases before the next: a default's base may choose in another group (all at once, that group's
            # default was added too and the recipe's plain query was refused as a clash)
            taken = {recipe["variations"][v]["group"] for v in chosen}
            todo = [(v, "default") for v, s in recipe["variations"].items() if s["default"] and s["group"] not in taken]
            if not todo:
                break
            del todo[1:]
        for v in chosen:
            clash = next((c for c in recipe["variations"][v].get("conflicts", []) if c in chosen), None)
            if clash:
                raise ResolutionError(f"{recipe['name']}: _{v} ({why[v]}) cannot go with _{clash} ({why[clash]})",
                                      hint=recipe["variations"][v]["description"] or None)
        # Recipe order, so env overlays apply the same way whatever the query order.
        return [(v, chosen[v]) for v in recipe["variations"] if v in chosen]

    @staticmethod
    def _take(recipe, chosen, why, word, asked_by, todo):
        base, param = _split_param(word)
        spec = recipe["variations"].get(base)
        if spec is None:
            known = ", ".join("_" + k + (".#" if s["param"] else "") for k, s in recipe["variations"].items())
            from .words import did_you_mean
            raise ResolutionError(f"recipe {recipe['name']} has no variation '_{word}'"
                                  + did_you_mean("_" + base, ["_" + k for k in recipe["variations"]]),
                                  hint=f"its variations: {known or 'none'}")
        if spec["param"] and not param:   # `_n.` too: an empty value
            raise ResolutionError(f"variation '_{base}' of {recipe['name']} needs a value, like _{base}.8")
        if not spec["param"] and param is not None:
            raise ResolutionError(f"variation '_{base}' of {recipe['name']} takes no value (got _{word})")
        if base in chosen:
            if chosen[base] != param:
                raise ResolutionError(f"{recipe['name']}: _{base}.{chosen[base]} ({why[base]}) and _{word} "
                                      f"({asked_by}) both chosen")
            return
        group = spec["group"]
        other = group and next((o for o in chosen if recipe["variations"][o]["group"] == group), None)
        if other:
            raise ResolutionError(
                f"{recipe['name']}: variations _{other} ({why[other]}) and _{base} ({asked_by}) "
                f"are both in group '{group}'; choose one",
                hint=f"group '{group}' holds: " + ", ".join(
                    "_" + k for k, s in recipe["variations"].items() if s["group"] == group))
        chosen[base], why[base] = param, asked_by
        todo += [(b, f"base of _{base}") for b in spec["base"]]

    def fix_inputs(self, recipe, given):
        declared = recipe["inputs"]
        for name in given:
            if name not in declared:
                raise _no_such_input(recipe, name)
        values = {}
        for name, spec in declared.items():
            value = given.get(name, spec["default"])
            value = input_value(recipe, name, value, is_default=name not in given)
            if value in (None, "") and spec.get("required"):   # `--who=` planned an empty value
                raise ResolutionError(f"{recipe['name']} needs --{name}" + ("" if value is None else ", not empty"),
                                      hint=spec["help"] or None)
            if spec["type"] == "path" and value == "" and name in given:   # `--model=` fell back to the official
                raise ResolutionError(f"{recipe['name']}: --{name}= is empty",   # model and its download
                                      hint=f"give --{name}=PATH, or leave --{name} out"
                                      + (f" ({spec['help']})" if spec["help"] else ""))
            if spec["type"] == "path" and value and (not REFERENCE.match(value) or os.path.lexists(value)):
                # a file here named model:v2.onnx is that file, not a reference (it was kept as text, unhashed)
                value = os.path.abspath(os.path.expanduser(value))
                if not os.path.exists(value):
                    raise ResolutionError(f"{recipe['name']}: --{name}" + ("" if name in given else " (its default)")
                                          + f": no such file or folder: {value}",
                                          hint=(f"--{name}: {spec['help']}" if spec["help"] else None)
                                          or "a relative path is taken from the current folder")
                if (spec.get("file") or spec.get("content")) and \
                        os.path.realpath(value).split(os.sep)[1:2] in (["proc"], ["sys"]):
                    # /proc/self/pagemap (size 0, 256 GiB read): a replay of a bundle naming it hung hashing it
                    raise ResolutionError(f"{recipe['name']}: --{name}: {value} is a file of the kernel's (/proc, "
                                          "/sys): its size is not its content, and reading it may never end",
                                          hint=spec["help"] or None)
                if spec.get("file") and not os.path.isfile(value):   # a folder would be hashed whole first
                    raise ResolutionError(f"{recipe['name']}: --{name}: {value} is "
                                          + ("a folder, not a file" if os.path.isdir(value) else
                                             "not a regular file (a device, a pipe or a socket)"),
                                          hint=spec["help"] or None)
            values[name] = value
        return values

    # -- graph ------------------------------------------------------------------

    def _secrets_not_here(self, env_overrides):
        """What a replayed record's masked --env values need from this shell and do not find, one line each."""
        out = []
        for name, value in env_overrides.items():
            if value == secrets.MASK and not self.host_env.get(name):
                out.append(f"--env.{name} was given a secret, which the record does not keep; set {name} here to "
                           "run it again")
            elif not secrets.is_secret(name) and isinstance(value, str) and value != secrets.MASK \
                    and secrets.MASK in value \
                    and secrets.mask_urls(self.host_env.get(name, ""))[0] != value:
                out.append(f"--env.{name} held a URL with a password or token, which the record does not keep; set "
                           f"{name} here to that URL with it to run it again (the record has {name}={value})")
        return out

    def _url_secrets(self, name, value, secret_env):
        """value with the secrets of its URLs masked (secrets.mask_urls), the real one put in secret_env[name]. A
        replayed record holds it masked: the host's NAME gives it again, if it is the same URL but for them."""
        if not isinstance(value, str):
            return value
        masked, found = secrets.mask_urls(value)
        if secrets.MASK in value:
            real = self.host_env.get(name, "")
            if secrets.mask_urls(real)[0] != value:
                raise ResolutionError(f"--env.{name} held a URL with a password or token, which the record does "
                                      f"not keep; set {name} here to that URL with it to run it again",
                                      hint=f"the record has {name}={value}")
            masked, found, value = value, secrets.mask_urls(real)[1], real
        for secret in found:
            secrets.remember(secret)
        if found:
            secret_env[name] = value
        return masked

    def _taken_name(self, dep):
        """The name a dep is taken under: its own, else its recipe's (None if its query names none now)."""
        try:
            return dep["name"] or self.select(dep["query"], dep["version"])[0]["name"]
        except ResolutionError:
            return None

    def _deeper(self, error, recipe, requested, given, applied):
        """A --dep.NAME.KEY whose dep has no input KEY: name its own deps that have one (--dep.model.layers with
        _int8-dynamic, whose model is the quantiser's: its source has --layers), of those this plan would take."""
        for key, name in applied.items():
            if not error.message.startswith(f"{recipe['name']} has no input --{key} "):
                continue
            try:
                chosen = self.choose_variations(recipe, requested)
            except ResolutionError:
                return error
            inputs = {n: given.get(n, spec["default"]) for n, spec in recipe["inputs"].items()}
            spec = _apply_variations(recipe, chosen)
            have = []
            for dep in spec["deps"]:
                if "{" in dep["query"]:
                    continue
                try:
                    if dep["when"] and not _condition_holds(dep["when"], chosen, inputs):
                        continue   # not a dep of this plan: its input would not be reached
                    found = self.select(dep["query"], dep["version"])[0]
                except ResolutionError:
                    continue
                label = dep["name"] or found["name"]
                if key in found["inputs"] and label not in have:
                    have.append(label)
            if have:
                return ResolutionError(error.message, hint=f"{recipe['name']}'s dep "
                                       + " or ".join(f"'{d}'" for d in have) + f" takes --{key}: "
                                       + " or ".join(f"--dep.{d}.{key}" for d in have)
                                       + (f"; {error.hint}" if error.hint else ""))
        return error

    def _overrides_of(self, dep_path):
        """The overrides that reach the dep at dep_path (its dep names from the root), plain names first so
        that a longer path wins over a shorter one."""
        found = [name for name in self.dep_overrides
                 if tuple(name.split("/")) == dep_path[-len(name.split("/")):]]
        return sorted(found, key=lambda name: name.count("/"))

    def _node(self, query, version, given_inputs, path, needed_by, dep_path):
        recipe, requested = self.select(query, version)
        names = [p for p in path]
        if recipe["name"] in names:
            cycle = names[names.index(recipe["name"]):] + [recipe["name"]]
            raise ResolutionError("dependency cycle: " + " -> ".join(cycle),
                                  hint="a recipe cannot depend on itself, directly or through others")
        seen = self.versions.get(recipe["name"])
        if seen and seen[0] != recipe["version"]:
            raise ResolutionError(
                f"{recipe['name']} is needed at two versions in one graph: {seen[0]} (by {seen[1]}) "
                f"and {recipe['version']} (by {needed_by})",
                hint="align the version constraints of those deps")
        self.versions[recipe["name"]] = (recipe["version"], needed_by)
        chosen = self.choose_variations(recipe, requested)
        inputs = self.fix_inputs(recipe, given_inputs)
        for name, spec in recipe["inputs"].items():   # an input that applies only with some choices
            if spec.get("when") and inputs[name] not in (None, spec["default"]) \
                    and not _condition_holds(spec["when"], chosen, inputs):
                unmet = _unmet(spec["when"], chosen, inputs)
                needs = _value_rule(unmet, name)
                said = f"--{name} applies only with {_readable(unmet)}"
                if all(word.startswith("!_") and "|" not in word for word in unmet.split()):   # not 'no _x'
                    said = f"--{name} cannot go with {' and '.join(word[1:] for word in unmet.split())}"
                elif needs and all(t.startswith("!_") for t in needs.split("|")):   # not read as 'no _a or no _b'
                    said = f"--{name}={_typed(inputs[name])} cannot go with {' and '.join(needs.split('|')).replace('!', '')}"
                elif needs:
                    said = f"--{name}={_typed(inputs[name])} applies only with {_readable(needs)}"
                raise ResolutionError(f"{recipe['name']}: {said}", hint=spec["help"] or None)
            if not_a_multiple(name, inputs, spec):   # a rule between two inputs: known once both are
                raise ResolutionError(f"{recipe['name']}: {not_a_multiple(name, inputs, spec)}",
                                      hint=spec["help"] or None)
        # The same recipe with the same choices is resolved once, however many paths lead to it.
        memo_key = (recipe["name"], recipe["version"], tuple(chosen), keys.canonical(inputs)) \
            + ((dep_path,) if self.by_path else ())   # overrides by path: what is below depends on the way here
        if memo_key in self.memo:
            return self.memo[memo_key]
        spec = _apply_variations(recipe, chosen)
        deps = []
        for dep in spec["deps"]:
            if dep["when"] and not _condition_holds(dep["when"], chosen, inputs):
                continue
            if dep.get("template"):   # a parametric variation's: its mistakes named no file or line (at load it is
                try:                  # not checked: its value is known only now)
                    self.check_dep(dep, dep["query"])
                except ResolutionError as e:
                    raise RecipeError(f"dep '{dep['template']}' (here '{dep['query']}'): {e.message}",
                                      recipe["path"], dep.get("line"), e.hint) from None
            dquery, dversion, dinputs = dep["query"], dep["version"], _dep_inputs(dep["inputs"], inputs)
            # An unnamed dep answers to the name of the recipe it selects, as `mlrun plan` shows it.
            dep_name = dep["name"] or self.select(dep["query"], dep["version"])[0]["name"]
            applied, tagged = {}, {}   # input -> the --dep NAME that set it; likewise a variation its tags added
            # the dep's inputs the person's own flags fill (--model=FILE: the model dep's path): an override of them,
            # or tags that replace the variation those flags chose, ran another model than the one asked for
            passed = {k: m.group(1) for k, v in dep["inputs"].items() if isinstance(v, str)
                      and (m := PASSED_INPUT.fullmatch(v)) and given_inputs.get(m.group(1)) is not None}
            own = min(passed.values(), default=None)   # the flag named when tags would replace its choice
            for name in self._overrides_of(dep_path + (dep_name,)):
                override = self.dep_overrides[name]
                self.used_overrides.add(name)
                clash = sorted(k for k in override if k in passed)
                if clash:
                    raise ResolutionError(f"--dep.{name}.{clash[0]} cannot go with --{passed[clash[0]]}: "
                                          f"{recipe['name']} passes --{passed[clash[0]]} as that input",
                                          hint=f"give --{passed[clash[0]]} alone")
                tagged.update({_var_base(w[1:]): name for w in override.get("tags", "").split() if w.startswith("_")})
                before = dquery
                dquery = self._with_tags(dquery, dversion, override.get("tags", "").split())
                dropped = [w for w in before.split() if w.startswith("_") and w not in dquery.split()]
                if own and dropped:
                    raise ResolutionError(f"--dep.{name}.tags={override['tags']} cannot go with --{own}: it would "
                                          f"replace {' '.join(dropped)}, which --{own} chose",
                                          hint=f"give --{own} alone, or leave it out and choose the model by tags")
                dversion = override.get("version", dversion)
                dinputs = {**dinputs, **{k: v for k, v in override.items() if k not in SPECIAL_OVERRIDES}}
                applied.update({k: name for k in override if k not in SPECIAL_OVERRIDES})
            try:
                child = self._node(dquery, dversion, dinputs, path + [recipe["name"]],
                                   needed_by=f"{recipe['name']} dep '{dep['name'] or dep['query']}'",
                                   dep_path=dep_path + (dep_name,))
            except ResolutionError as error:
                selected, requested = self.select(dquery, dversion)
                error = _as_typed(error, selected["name"], applied)
                for key, template in (dep.get("inputs") or {}).items():   # it named neither the parent nor its line
                    if isinstance(template, str) and "{input." in template and key not in applied and \
                            re.match(rf"{re.escape(selected['name'])}: (input '{re.escape(key)}'|--{re.escape(key)}\b)",
                                     error.message):
                        error = ResolutionError(f"{error.message} (passed by {recipe['name']}'s dep '{dep_name}' as "
                                                f"{template}: {recipe.get('path')}:{dep.get('line')})", hint=error.hint)
                if tagged and error.message.startswith(f"{selected['name']}: _"):   # a conflict: who asked for each
                    said = re.sub(r"_([\w.+-]+) \(the query\)", lambda m: f"_{m.group(1)} (--dep.{tagged[m.group(1)]}"
                                  ".tags)" if m.group(1) in tagged else f"_{m.group(1)} ({recipe['name']}'s query "
                                  f"of its dep '{dep_name}')", error.message)
                    error = ResolutionError(said, hint=error.hint)
                raise self._deeper(error, selected, requested, dinputs, applied) from None
            taken = dep["name"] or child.name
            if any(name == taken for name, _ in deps):
                raise ResolutionError(f"{recipe['name']}: two deps named '{taken}' are both taken "
                                      f"(the second: '{dep['query']}' when '{dep['when']}')",
                                      hint="make their `when:` conditions exclude each other")
            deps.append((taken, child))
        variations = [v if p is None else f"{v}.{p}" for v, p in chosen]
        for k in spec["hash_env"] + spec["pass_env"]:  # keys and env.sh hold text; a value may be secret: not shown
            if not _is_utf8(self.host_env.get(k, "")):
                raise ResolutionError(f"{recipe['name']}: the host variable {k} holds bytes that are not UTF-8 text",
                                      hint=f"set {k} to UTF-8 text (or unset it) and run again")
        hash_env = {k: self.host_env.get(k) for k in spec["hash_env"]}  # None: unset on the host
        secret_env = dict(self.secret_env)
        for k, value in hash_env.items():
            if secrets.is_secret(k) and value is not None:
                secrets.remember(value)
                secret_env.setdefault(k, value)
                hash_env[k] = secrets.MASK
            elif value is not None:   # a URL's secrets: as for a secret's name, an --env override of it wins
                found = {}
                hash_env[k] = self._url_secrets(k, value, found)
                if k not in self.env_overrides:   # else the step gets the override (node.env), never the host's
                    secret_env.update(found)
        env = {**spec["env"], **self.env_overrides}
        for what, values in (("env", env), ("exports", spec["exports"])):
            try:   # its variables expand as a whole (envs.expand_own): one that refers back to itself has no value
                envs.expand_own({k: v for k, v in values.items() if isinstance(v, str)}, {}, literal=self.secret_env)
            except ValueError as cycle:
                raise ResolutionError(f"{recipe['name']}: its {what} variables refer to each other in a circle: "
                                      f"{cycle}", hint="a variable may name itself (PATH: \"${PATH}:/x\": the value "
                                      "before), not another that names it back") from None
        for dep_name, child in deps:
            if recipe["cache"] and not child.cache and child.exports:
                # its exports name a run's folder: the entry would keep the first run's output for good
                line = next((d.get("line") for d in spec["deps"] if self._taken_name(d) == dep_name), None)
                where = f"{recipe.get('path')}:{line}: " if recipe.get("path") and line else ""
                raise ResolutionError(
                    f"{where}{recipe['name']} is cached but its dep '{dep_name}' ({child.name}) is not (cache: false): that "
                    "dep runs again in every run, and an entry built from its output would be reused after the "
                    "output changed", hint=f"give {recipe['name']} 'cache: false' too, or make {child.name} a "
                                           "cached recipe")
        node = Node(name=recipe["name"], version=recipe["version"], tags=recipe["tags"], variations=variations,
                    inputs=inputs, env=env, exports=spec["exports"],
                    download=spec["download"],
                    run=spec["run"], cache=recipe["cache"], deps=deps, recipe_path=recipe.get("path", ""),
                    recipe_files=recipe.get("files"),
                    hash_env=hash_env, input_vars={n: s["env"] for n, s in recipe["inputs"].items()},
                    sources=recipe["sources"], record=recipe.get("record", {}), pass_env=spec["pass_env"],
                    secret_env=secret_env, interactive=recipe.get("interactive", False),
                    alone=recipe.get("alone", False), mirror_files=recipe.get("mirror_files", []),
                    timeout=recipe.get("timeout"),
                    groups={v: recipe["variations"][v]["group"] for v, _ in chosen if recipe["variations"][v]["group"]})
        node.probes = self.prober(node, recipe["probe"], self.host_env, self.env_overrides) \
            if recipe.get("probe") else {}
        node.contents = _contents(recipe, inputs, self.prober)
        node.material = keys.material(recipe["digest"], node)
        node.key = keys.key(node.material)
        # One node per distinct key: a dep shared by several recipes is built once.
        node = self.nodes.setdefault(node.key, node)
        self.memo[memo_key] = node
        self.reporter.resolved(node, path)
        return node

    def _order(self, node, order, done):
        if node.key in done:
            return
        done.add(node.key)
        for _, dep in node.deps:
            self._order(dep, order, done)
        order.append(node)


def _contents(recipe, inputs, prober):
    """{input: digest} of the local files or folders named by `content: true` path inputs: the key holds
    the content, not where it lies (a path string alone would let an edited copy reuse the old entry, and
    the same bytes elsewhere rebuild). A file's digest is remembered by its stat; a folder is re-read."""
    out = {}
    for name, spec in recipe["inputs"].items():
        value = inputs.get(name)
        if spec.get("content") and value and not REFERENCE.match(value):
            from .digests import content_digest
            from .errors import MlrunError
            try:
                out[name] = content_digest(value) if os.path.isdir(value) else prober.file_digest(value)
            except (OSError, MlrunError) as e:
                where = getattr(e, "filename", None)   # the part of the folder that could not be read
                raise ResolutionError(f"{recipe['name']}: --{name}: cannot read {value}"
                                      + (f" ({where})" if where and where != value else "") + ": "
                                      f"{getattr(e, 'strerror', None) or getattr(e, 'message', e)}") from None
    return out


def resolve(index, query, inputs=None, reporter=None, host_env=None, dep_overrides=None, env_overrides=None,
            prober=None):
    """Resolve `query` against `index` into a Plan (raises ResolutionError)."""
    return Resolver(index, reporter, host_env, dep_overrides, env_overrides, prober).resolve(query, inputs)


def input_value(recipe, name, value, is_default=False):
    """A value given for one of recipe's inputs, converted to its type and checked against its choices.

    A default met its pattern when the recipe was read: not matched again (the regex module's import is a fifth
    of a warm mlrun start)."""
    spec = recipe["inputs"].get(name)
    if spec is None:
        raise _no_such_input(recipe, name)

    def fail(msg, hint=None):
        raise ResolutionError(f"{recipe['name']}: {msg}", hint=hint)
    if value is FLAG_ALONE and spec["type"] != "bool":
        kind = {"int": "a whole number", "float": "a number", "path": "a path"}.get(spec["type"], "text")
        raise ResolutionError(f"{recipe['name']}: input '{name}' needs a value ({kind}; a flag alone is only a "
                              "boolean input's true)", hint=f"--{name}=VALUE" + (
                                  f": one of {', '.join(map(str, spec['choices']))}" if spec["choices"] else ""))
    value = convert_input(name, spec["type"], value, fail)
    if spec["choices"] is not None and value is not None and value not in spec["choices"]:
        # Choices are matched whatever their case (--scenario=offline is Offline) when that names one.
        same = [c for c in spec["choices"] if isinstance(value, str) and str(c).lower() == value.lower()]
        if len(same) == 1:
            return same[0]
        from .words import did_you_mean
        fail(f"--{name}={value} is not one of {', '.join(map(str, spec['choices']))}"
             + did_you_mean(str(value), [str(c) for c in spec["choices"]]))
    if value is not None and out_of_bounds(name, value, spec):
        fail(out_of_bounds(name, value, spec))
    try:
        unmatched = (spec.get("pattern") and value is not None and not is_default
                     and not pattern_matches(spec["pattern"], value))
    except PatternTooSlow as e:   # the recipe's fault (exit 2), said of the flag that met it
        fail(f"--{name}: {e.message}", hint=e.hint)
    if unmatched:
        # the pattern's plain words (auto|exact|...) are names a typo may be near: --buckets=exat
        from .words import did_you_mean
        words = [w for w in spec["pattern"].split("|") if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", w)]
        fail(f"--{name}={value} is not of the form the input takes" + did_you_mean(str(value), words),
             hint=spec["help"] or f"the pattern {spec['pattern']}")
    return value


def _is_utf8(text):
    try:
        text.encode()
    except UnicodeEncodeError:  # os.environ holds such bytes as surrogate escapes
        return False
    return True


def _no_such_input(recipe, name):
    from .words import did_you_mean
    accepted = ", ".join("--" + n for n in recipe["inputs"]) or "none"
    return ResolutionError(f"{recipe['name']} has no input --{name}"
                           + did_you_mean("--" + name, ["--" + n for n in recipe["inputs"]]),
                           hint=f"it accepts: {accepted}")


def _split_param(word):
    base, _, param = word.partition(".")
    return base, (param if _ else None)


def _var_base(word):
    return _split_param(word)[0]


def _apply_variations(recipe, chosen):
    """The recipe's env, deps, download, run and exports after the chosen variations."""
    env, exports = dict(recipe["env"]), dict(recipe["exports"])
    deps, download, run = list(recipe["deps"]), recipe["download"], recipe["run"]
    hash_env, pass_env = list(recipe["hash_env"]), list(recipe.get("pass_env", []))
    for vname, param in chosen:
        v = recipe["variations"][vname]
        sub = (lambda s, p=param: s.replace("{value}", p)) if param is not None else (lambda s: s)
        env.update({k: sub(val) for k, val in v["env"].items()})
        exports.update({k: {side: [sub(t) for t in texts] for side, texts in val.items()} if isinstance(val, dict)
                        else sub(val) for k, val in v["exports"].items()})
        for dep in v["deps"]:
            dep = {**dep, "query": sub(dep["query"]),   # a template's mistakes are said with its line (_node)
                   **({"template": dep["query"]} if param is not None and "{value}" in dep["query"] else {})}
            # A variation's dep with the same name replaces the recipe's one.
            deps = [d for d in deps if not (dep["name"] and d["name"] == dep["name"])] + [dep]
        if v["download"] is not None:
            download = v["download"]
        if v["run"] is not None:
            run = sub(v["run"]) if isinstance(v["run"], str) else [sub(word) for word in v["run"]]
        hash_env += [k for k in v.get("hash_env", []) if k not in hash_env]
        pass_env += [k for k in v.get("pass_env", []) if k not in pass_env]
    return {"env": env, "exports": exports, "deps": deps, "download": download, "run": run,
            "hash_env": hash_env, "pass_env": pass_env}


def _condition_holds(condition, chosen, inputs):
    """`when:` words must all hold: _var, !_var, input=value, input!=value (empty value = unset);
    a word of alternatives joined by | holds when any of them does (_tensorrt|_tensorrt-ep)."""
    names = {v for v, _ in chosen} | {f"{v}.{p}" for v, p in chosen if p is not None}
    return all(any(_term_holds(t, condition, names, inputs) for t in word.split("|"))
               for word in condition.split())


def _unmet(condition, chosen, inputs):
    """The words of a `when:` condition that do not hold, with those about the same inputs (read together: 'other
    than SingleStream or MultiStream'): what the message says is missing (the words that hold read as circular:
    '--precision=tf32 applies only with ... or --precision=tf32')."""
    def about(word):
        return {m.group(1) for t in word.split("|") if (m := CONDITION_INPUT.match(t.lstrip("!")))}
    def plain(word):   # only input terms: a word that also names variations holds apart ('fp16 needs _trt')
        return all(CONDITION_INPUT.match(t.lstrip("!")) for t in word.split("|"))
    words = condition.split()
    failing = [w for w in words if not _condition_holds(w, chosen, inputs)]
    named = set().union(*map(about, failing)) if failing else set()
    return " ".join(w for w in words if w in failing or plain(w) and about(w) & named) or condition


def _term_holds(term, condition, names, inputs):
    negate = term.startswith("!")
    bare = term[1:] if negate else term
    if bare.startswith("_"):
        return (bare[1:] in names) != negate
    m = CONDITION_INPUT.match(bare)
    if not m:
        raise ResolutionError(f"cannot read condition '{condition}'")
    value = inputs.get(m.group(1))
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    want = m.group(3)
    # A trailing * matches a prefix: `model=zoo:*` holds for any SparseZoo stub.
    same = text.startswith(want[:-1]) if want.endswith("*") else text == want
    return (same == (m.group(2) == "=")) != negate


def _as_typed(error, recipe_name, applied):
    """An error about a dep's input that a --dep.NAME.KEY override set names the flag as it was typed
    (--dep.model.layers=0, not get-ml-model-bert's --layers=0)."""
    message = error.message
    for key, name in applied.items():
        if message.startswith(f"{recipe_name} has no input --{key}"):   # did-you-mean and hint kept
            return ResolutionError(message.replace(f"--{key}", f"--{key} (--dep.{name}.{key})", 1), hint=error.hint)
        if message.startswith(f"{recipe_name}: "):   # every input the message names (a multiple of another, the
            # inputs of a when: rule: '--dep.bench.streams applies only with --dep.bench.scenario=Server')
            message = re.sub(rf"(?<![\w./-])--{re.escape(key)}(?![\w-])", f"--dep.{name}.{key}", message)
            message = re.sub(rf"(?<![\w./-])input '{re.escape(key)}'", f"input '{key}' (--dep.{name}.{key})",
                             message, count=1)
    return error if message == error.message else ResolutionError(message, hint=error.hint)


def _typed(value):
    """An input's value as a flag gives it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value_rule(condition, name):
    """The variations (or other inputs' values) a rule of the input's own value needs (`name!=fp16|_x|_y`,
    `name=tf32|_x`, `name=0|other!=1`), when such a rule
    is among the words that fail and the others fail only for want of one of them: said as '--precision=fp16
    applies only with _x or _y' (the rule read as 'other than fp16 or _x' or '--precision=tf32 or _x' was circular);
    else None."""
    words = condition.split()
    for word in words:
        terms = word.split("|")
        own = [t for t in terms if (m := CONDITION_INPUT.match(t)) and m.group(1) == name]
        # the rest: variations, or another input's value (batch_pad=0|batch_size!=1: '--batch_pad=8 applies only
        # with --batch_size other than 1', not '... only with --batch_pad=0 or ...')
        rest = [t for t in terms if t.startswith(("_", "!_"))
                or (m := CONDITION_INPUT.match(t)) and m.group(1) != name]
        if len(own) == 1 and rest and len(own) + len(rest) == len(terms) and \
                all(set(other.split("|")) & set(rest) for other in words if other != word):
            return "|".join(rest)
    return None


def _readable(condition):
    """A `when` condition as a person reads it: _x, no _x, --a=b, --a other than b or c, no --a,
    _x or _y (a word of alternatives)."""
    parts, others = [], {}   # others: input -> the values it must differ from, said once
    for word in condition.split():
        if "|" in word:
            either = " or ".join(_readable(t) for t in word.split("|"))
            parts.append(f"({either})" if len(condition.split()) > 1 else either)  # "(a or b) and c"
            continue
        if word.startswith(("_", "!_")):
            parts.append(f"no {word[1:]}" if word.startswith("!") else word)
            continue
        name, op, value = CONDITION_INPUT.match(word.lstrip("!")).groups()
        if word.startswith("!"):
            op = "!=" if op == "=" else "="
        if op == "!=" and value:
            if name not in others:
                parts.append(name)
            others.setdefault(name, []).append(value)
        else:
            parts.append(f"--{name}={value}" if value and op == "=" else f"no --{name}" if op == "=" else f"--{name}")
    return " and ".join(f"--{p} other than {' or '.join(others[p])}" if p in others else p for p in parts)


def _dep_inputs(spec, parent_inputs):
    """Dep inputs may pass the parent's inputs on: `{input.NAME}`."""
    out = {}
    for k, v in spec.items():
        if isinstance(v, str):
            m = PASSED_INPUT.fullmatch(v)
            if m:
                v = parent_inputs.get(m.group(1))
                if v is None:
                    continue
        out[k] = v
    return out


def _version_ok(version, constraint):
    from packaging.specifiers import SpecifierSet  # only constrained deps pay for the import
    from packaging.version import InvalidVersion
    try:
        return SpecifierSet(constraint).contains(version, prereleases=True)
    except InvalidVersion:
        return False
    except ValueError as e:
        raise ResolutionError(f"cannot read version constraint '{constraint}': {e}")
