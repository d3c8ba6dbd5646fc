"""The recipe schema: check a parsed recipe.yaml and return it in normal form.

A recipe is data. Loading one runs nothing; every mistake is reported with the
file and line it stands on. The normal form is plain dicts and lists (JSON-able)
so the index can store it and the resolver can work on in-memory recipes.
Schema reference: docs/recipes.md.
"""
import math
import re

from .errors import RecipeError
from .words import did_you_mean, duration_seconds

SCHEMA_VERSION = 1

TOP_KEYS = {"name", "description", "tags", "aliases", "version", "cache", "inputs", "env", "hash_env", "pass_env",
            "exports", "variations", "deps", "download", "run", "sources", "record", "probe", "interactive",
            "mirror_files", "alone", "timeout"}
VARIATION_KEYS = {"description", "group", "default", "base", "conflicts", "env", "deps", "download", "run", "exports",
                  "hash_env", "pass_env"}
DEP_KEYS = {"name", "query", "version", "when", "inputs"}
INPUT_KEYS = {"type", "default", "choices", "pattern", "min", "max", "above", "multiple_of", "when", "env", "help",
              "required", "content", "file"}
# Bounds of a number input: `min` the least value it takes, `max` the most, `above` a value it must exceed.
BOUND_KEYS = ("min", "max", "above")
DOWNLOAD_KEYS = {"url", "file", "sha256", "md5", "size"}
MIRROR_FILE_KEYS = {"url", "path", "sha256", "also"}
INPUT_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "path": str}

# mlrun run's own options (engine/cli.py) and the prefixes of its --dep./--env. flags: an input of one of these
# names took its default whatever was given (--cache=X moved the cache instead)
STEP_OWN_ENV = ("MLRUN_ENTRY", "MLRUN_RECIPE_DIR")   # set by mlrun for every step, after all else
# the options of the verbs that take a query's inputs (run, plan, explain; tests/test_recipe_validation.py checks it):
# `--jobs=7` went to run's option, the step ran with its default while `plan` showed 7
RESERVED_INPUTS = ("cache", "runs", "recipes", "mirror", "verbose", "json", "help", "version", "tags", "dep", "env",
                   "jobs", "timeout")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A parametric variation is declared as "name.#" and chosen as "_name.VALUE".
PARAM_SUFFIX = ".#"
PASSED_INPUT = re.compile(r"\{input\.([A-Za-z_][A-Za-z0-9_]*)\}")   # a dep input that passes an input on
# An input word of a `when:` condition: input=value or input!=value (the value holds no '=').
CONDITION_INPUT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(!?=)([^=]*)$")


class _FlagAlone(str):
    """The value of an input flag given alone (--fast): true for a boolean input; for any other, a value that was
    never typed (--name alone went on as the text 'true')."""


FLAG_ALONE = _FlagAlone("true")


class _Checker:
    """Carries the file and line map so every check can point at its line."""

    def __init__(self, path, lines):
        self.path, self.lines = path, lines

    def as_written(self, value, where, what):
        """value, unless YAML read it as another than what the recipe wrote (yamlfile.Lines) where text is
        meant: 0755 became 493 and 1.10 became 1.1 in a step's variable, and no became False, in silence."""
        text = getattr(self.lines, "written", {}).get(tuple(where))
        if text is not None:
            self.fail(where, f"{what} is written {text} without quotes, which YAML reads as {value!r}",
                      f'quote it: "{text}"')
        return value

    def not_octal(self, value, where, what):
        """Refuse a number written in YAML 1.1's octal (010 is 8, 0_10 too; 00 is 0 either way) or base 60 (1:30
        is 90): taken unsaid."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        text = getattr(self.lines, "written", {}).get(tuple(where))
        if text is not None and re.fullmatch(r"[+-]?0[0-7_]+", text) and int(text.replace("_", "")) != value:
            self.fail(where, f"{what} is written {text}, which YAML reads as octal {value}",
                      f"write {value} (or {int(text.replace('_', ''))})")
        if text is not None and ":" in text:   # YAML 1.1's base 60: 1:30 was 90, unsaid
            self.fail(where, f"{what} is written {text}, which YAML reads as {value} (base 60)",
                      f"write {value}, or quote it if it is text")

    def fail(self, where, message, hint=None):
        # Fall back to the nearest enclosing key that has a line.
        line = None
        while where and line is None:
            line = self.lines.get(tuple(where))
            where = where[:-1]
        raise RecipeError(message, self.path, line, hint)

    def expect(self, value, types, where, what):
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            self.fail(where, f"{what} must be {names}, not {type(value).__name__} ({value!r})")
        return value

    def matches(self, pattern, value, where):
        try:
            return pattern_matches(pattern, value)
        except PatternTooSlow as e:
            self.fail(where, e.message, e.hint)

    def keys(self, mapping, allowed, where, what):
        self.expect(mapping, dict, where, what)
        for key in mapping:
            if key not in allowed:
                close = ", ".join(sorted(allowed))
                self.fail(list(where) + [key], f"unknown key '{key}' in {what}" + did_you_mean(str(key), allowed),
                          f"allowed keys: {close}")
        return mapping

    def str_list(self, value, where, what):
        if isinstance(value, str):
            return value.split()
        self.expect(value, (str, list), where, what)
        for i, item in enumerate(value):
            self.expect(item, str, list(where) + [i], f"{what} item")
        return list(value)

    def env_names(self, value, where, what):
        names = self.str_list(value, where, what)
        for name in names:
            if not ENV_RE.match(name):
                self.fail(where, f"{what}: '{name}' is not a valid environment variable name")
        return names

    def text(self, value, where, what):
        """Free text (a description, a help line): a mapping or a list there is a mistake."""
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            self.fail(where, f"{what} must be text, not a {'mapping' if isinstance(value, dict) else 'list'}",
                      "quote it if it holds ': ' or starts with [ or {")
        return str(value)

    def env(self, value, where, what="env"):
        self.expect(value, dict, where, what)
        out = {}
        for key, val in value.items():
            if not ENV_RE.match(str(key)):
                self.fail(list(where) + [key], f"'{key}' is not a valid environment variable name")
            self.as_written(val, list(where) + [key], f"{what} value of {key}")
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                self.fail(list(where) + [key], f"{what} value of {key} must be a string or number")
            out[key] = str(val)
        return out

    def exports(self, value, where):
        self.expect(value, dict, where, "exports")
        out = {}
        for key, val in value.items():
            here = list(where) + [key]
            if not ENV_RE.match(str(key)):
                self.fail(here, f"'{key}' is not a valid environment variable name")
            if isinstance(val, dict):
                self.keys(val, {"prepend", "append"}, here, f"exports.{key}")
                out[key] = {k: self.str_list(v, here + [k], f"exports.{key}.{k}") for k, v in val.items()}
            elif isinstance(val, (str, int, float)) and not isinstance(val, bool):
                out[key] = str(self.as_written(val, here, f"exports.{key}"))
            else:
                self.fail(here, f"exports.{key} must be a string or a mapping with prepend/append lists")
        return out

    def env_like_files(self, value, where):
        """record: {field: file in the step's folder} copied into run records (JSON parsed, text as lines)."""
        self.expect(value, dict, where, "record")
        for field_, name in value.items():
            here = list(where) + [field_]
            self.expect(name, str, here, f"record.{field_}")
            if name.startswith("/") or ".." in name.split("/"):
                self.fail(here, f"record.{field_} must name a file inside the step's folder")
        return dict(value)

    def probes(self, value, where):
        """probe: {NAME: [argv]}: commands whose output is hashed into the key (argv, so the program is known);
        {NAME: {run: [argv], remember: false}}: one run at every resolution, never remembered (a GPU's answer can
        change with nothing on disk changing: another card, a dead driver)."""
        self.expect(value, dict, where, "probe")
        for name, spec in value.items():
            here = list(where) + [name]
            if not ENV_RE.match(str(name)):
                self.fail(here, f"probe name '{name}' may hold letters, digits and _ only")
            if isinstance(spec, dict):
                unknown = set(spec) - {"run", "remember"}
                if unknown or "run" not in spec:
                    self.fail(here, f"probe.{name} takes run: [program, args...] and remember: true|false"
                              + (f", not {', '.join(sorted(map(str, unknown)))}" if unknown else ""))
                self.expect(spec.get("remember", True), bool, here + ["remember"], "remember")
                argv = spec["run"]
            else:
                argv = spec
            if not self.str_list(argv, here, f"probe.{name}") or isinstance(argv, str):
                self.fail(here, f"probe.{name} must be a non-empty list: the program, then its arguments")
        return dict(value)

    def run(self, value, where):
        if isinstance(value, str):
            return value
        argv = self.str_list(value, where, "run")
        if not argv or not argv[0].strip():   # it failed at run time: "cannot start : Permission denied"
            self.fail(where, "run as a list needs the program first, not " + ("nothing" if not argv else "''"),
                      'run: [python3, "{recipe}/build.py"], or a bash script as text')
        return argv

    def items(self, value, where, allowed, required, what):
        """One item or a list of them (downloads, mirror_files): each with its place, its keys checked."""
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            here = list(where) + ([i] if isinstance(value, list) else [])
            self.keys(item, allowed, here, what)
            for req in required:
                if req not in item:
                    self.fail(here, f"{what} needs '{req}'")
            yield here, item

    def downloads(self, value, where):
        out = []
        for here, item in self.items(value, where, DOWNLOAD_KEYS, ("url", "file"), "download"):
            if "sha256" not in item and "md5" not in item:
                self.fail(here, "download needs a checksum (sha256, or md5 where only that is published)")
            for algo in ("sha256", "md5"):   # all digits: YAML made a number of it
                if isinstance(item.get(algo), int) and not isinstance(item.get(algo), bool):
                    self.fail(here + [algo], f"download.{algo} is written as a number, which YAML reads as "
                                             f"{item[algo]}", f'quote it: {algo}: "..."')
            for k in ("url", "file", "sha256", "md5"):
                if k in item:
                    self.expect(item[k], str, here + [k], f"download.{k}")
            if not re.match(r"https?://", item["url"], re.I):   # requests said "No connection adapters were found"
                self.fail(here + ["url"], f"download.url {item['url']!r} is not http:// or https://: mlrun downloads "
                                          "those only", "a file already on this machine is a `type: path` input "
                                          "(content: true keys it by its bytes), or goes in the mirror")
            for algo, length in (("sha256", 64), ("md5", 32)):
                if algo in item and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", item[algo]):
                    self.fail(here + [algo], f"download.{algo} must be {length} hex digits (quote it in YAML)")
            if "/" in item["file"] or item["file"].startswith("."):
                self.fail(here + ["file"], "download.file must be a plain file name")
            if "size" in item:
                self.expect(item["size"], int, here + ["size"], "download.size")
            if any(o["file"] == item["file"] for o in out):   # the second overwrote the first, in silence
                self.fail(here + ["file"], f"two downloads are saved as {item['file']}",
                          "give each its own file name")
            out.append(dict(item))
        return out

    def mirror_files(self, value, where):
        """mirror_files: [{url, path, sha256?, also?}]: files the step takes from a mirror by their path there (no
        checksum known, so not a declared download); `mlrun mirror fetch` puts each url's file at its path; also:
        other paths where the step takes it too. ${VAR} in url and sha256 are the step's variables (an input's
        MLRUN_INPUT_X), expanded when a plan is made."""
        out = []
        for here, item in self.items(value, where, MIRROR_FILE_KEYS, ("url", "path"), "mirror_files"):
            for k in MIRROR_FILE_KEYS & set(item) - {"also"}:
                self.expect(item[k], str, here + [k], f"mirror_files.{k}")
            if not re.match(r"(https?://|\$\{)", item["url"], re.I):
                self.fail(here + ["url"], f"mirror_files.url {item['url']!r} is not http:// or https:// (or an "
                                          "input's ${MLRUN_INPUT_X})")
            also = item.get("also", [])
            self.expect(also, list, here + ["also"], "mirror_files.also")
            for i, path in [(None, item["path"])] + list(enumerate(also)):
                at = here + (["path"] if i is None else ["also", i])
                name = "mirror_files." + ("path" if i is None else "also")
                self.expect(path, str, at, name)
                if path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):   # it would lie outside
                    self.fail(at, f"{name} {path!r} is not a relative path inside the mirror",
                              "e.g. path: calibration/list.txt")
            out.append(dict(item, also=list(also)))
        return out

    def deps(self, value, where):
        self.expect(value, list, where, "deps")
        out = []
        for i, dep in enumerate(value):
            here = list(where) + [i]
            if isinstance(dep, str):
                dep = {"query": dep}
            self.keys(dep, DEP_KEYS, here, "a dep")
            if "query" not in dep:
                self.fail(here, "a dep needs a 'query' (tags and variations, e.g. 'get python venv')")
            norm = {"name": None, "query": None, "version": None, "when": None, "inputs": {}}
            for k in ("name", "query", "version", "when"):
                if k in dep:   # `name: off` was "must be str, not bool (False)": quote it, as elsewhere
                    norm[k] = self.expect(self.as_written(dep[k], here + [k], f"dep {k}"), str, here + [k], f"dep {k}")
            if norm["name"] is not None and not NAME_RE.match(norm["name"]):
                self.fail(here + ["name"], f"dep name '{norm['name']}' must start with a letter or digit and may hold "
                                           "letters, digits, _ . + - only")
            if "inputs" in dep:
                self.expect(dep["inputs"], dict, here + ["inputs"], "dep inputs")
                norm["inputs"] = {k: v for k, v in dep["inputs"].items()}
                # what YAML retyped (1.10 read as 1.1): refused where the dep's input is text (index.check_dep_queries)
                written = {k: self.lines.written[tuple(here + ["inputs", k])] for k in norm["inputs"]
                           if tuple(here + ["inputs", k]) in getattr(self.lines, "written", {})}
                if written:
                    norm["written"] = written
            norm["line"] = self.lines.get(tuple(here))
            out.append(norm)
        # Deps of one name are alternatives: each needs its own `when` (the resolver checks they never overlap).
        for i, dep in enumerate(out):
            same = [j for j, d in enumerate(out[:i]) if dep["name"] is not None and d["name"] == dep["name"]]
            if same and (dep["when"] is None or any(out[j]["when"] in (None, dep["when"]) for j in same)):
                other = out[same[0]]["line"]
                where_else = f" (here and line {other})" if other else ""
                self.fail(list(where) + [i], f"two deps are named '{dep['name']}'{where_else} and could both be taken",
                          "give each a different name, or each a `when:` condition that excludes the others")
        return out

    def inputs(self, value, where):
        self.expect(value, dict, where, "inputs")
        out = {}
        for name, spec in value.items():
            here = list(where) + [name]
            if not ENV_RE.match(name):
                self.fail(here, f"input name '{name}' must be a valid identifier")
            if name in RESERVED_INPUTS:
                self.fail(here, f"input name '{name}' is mlrun's own option (--{name}): no command line could set it",
                          "give the input another name")
            if spec is None:
                spec = {}
            elif not isinstance(spec, dict):
                spec = {"default": spec}  # shorthand: `count: 10`
            self.keys(spec, INPUT_KEYS, here, f"input '{name}'")
            kind = self.expect(spec.get("type", "str"), str, here + ["type"], "type")   # [int] was "unhashable"
            if kind not in INPUT_TYPES:
                self.fail(here + ["type"], f"input type '{kind}' is not one of {', '.join(INPUT_TYPES)}")
            default = spec.get("default")
            if kind in ("str", "path"):   # text: a value YAML read as another is refused, as for env
                shorthand = not isinstance(value[name], dict)
                self.as_written(default, here + ([] if shorthand else ["default"]), f"the default of input '{name}'")
                for i, choice in enumerate(spec.get("choices") or []):
                    self.as_written(choice, here + ["choices", i], f"choice {choice!r} of input '{name}'")
            if kind in ("int", "float"):   # a number's default, choices and bounds, as written
                shorthand = not isinstance(value[name], dict)
                self.not_octal(default, here + ([] if shorthand else ["default"]), f"the default of input '{name}'")
                for key in ("min", "max", "above"):
                    self.not_octal(spec.get(key), here + [key], f"{key} of input '{name}'")
                for i, choice in enumerate(spec.get("choices") or [] if isinstance(spec.get("choices"), list) else []):
                    self.not_octal(choice, here + ["choices", i], f"choice {i + 1} of input '{name}'")
            if default is not None:
                default = convert_input(name, kind, default, lambda msg: self.fail(here + ["default"], msg))
            choices = spec.get("choices")
            if choices is not None:
                self.expect(choices, list, here + ["choices"], "choices")
                if not choices:   # no value could be given: "--a=1 is not one of " (nothing)
                    self.fail(here + ["choices"], f"input '{name}' has an empty list of choices",
                              "list the values it takes, or leave choices out")
                choices = [convert_input(name, kind, c, lambda msg: self.fail(here + ["choices"], msg))
                           for c in choices]
                if default is not None and default not in choices:
                    self.fail(here + ["default"], f"default {default!r} is not among the choices {choices}")
            pattern = spec.get("pattern")
            if pattern is not None:
                self.expect(pattern, str, here + ["pattern"], "pattern")
                import regex   # here and in pattern_matches: 20 ms of every mlrun start, needed once a recipe changed
                try:
                    regex.compile(pattern)
                except regex.error as error:
                    self.fail(here + ["pattern"], f"pattern is not a valid regular expression: {error}")
                if default is not None and not self.matches(pattern, default, here + ["default"]):
                    self.fail(here + ["default"], f"default {default!r} does not match the pattern {pattern!r}")
            bounds = {}
            for key in BOUND_KEYS:
                if spec.get(key) is None:
                    continue
                if kind not in ("int", "float"):
                    self.fail(here + [key], f"{key}: needs type int or float (input '{name}' is {kind})")
                bounds[key] = convert_input(name, kind, spec[key], lambda msg: self.fail(here + [key], msg))
            low = max((bounds[k] for k in ("min", "above") if k in bounds), default=None)
            if low is not None and "max" in bounds and (bounds["max"] < low or "above" in bounds and
                                                        bounds["max"] <= bounds["above"]):
                self.fail(here + ["max"], f"input '{name}': no value is within its bounds "
                          f"({', '.join(f'{k} {v}' for k, v in bounds.items())})")   # every value refused, unsaid
            if choices is not None and len(set(map(str, choices))) < len(choices):
                self.fail(here + ["choices"], f"input '{name}' lists a choice twice: {choices}")
            for choice in choices or []:   # a choice no value check lets through: offered, then refused
                if out_of_bounds(name, choice, bounds) or pattern is not None and not self.matches(
                        pattern, choice, here + ["choices"]):
                    self.fail(here + ["choices"], f"input '{name}': its choice {choice!r} "
                              + (out_of_bounds(name, choice, bounds) or f"does not match the pattern {pattern!r}"))
            if default is not None and out_of_bounds(name, default, bounds):
                self.fail(here + ["default"], f"default: {out_of_bounds(name, default, bounds)}")
            multiple = spec.get("multiple_of")
            if multiple is not None:   # a whole number, or another int input's name (hidden: {multiple_of: heads})
                if kind != "int":
                    self.fail(here + ["multiple_of"], f"multiple_of: needs type int (input '{name}' is {kind})")
                if isinstance(multiple, bool) or not (isinstance(multiple, str) or isinstance(multiple, int)
                                                      and multiple > 0):
                    self.fail(here + ["multiple_of"], "multiple_of: a whole number above 0, or another input's name")
                if isinstance(multiple, int):   # a number: its multiples meet the bounds and choices, or none is taken
                    floor = max((bounds[k] + (k == "above") for k in ("min", "above") if k in bounds), default=None)
                    if floor is not None and "max" in bounds and -(-floor // multiple) * multiple > bounds["max"]:
                        self.fail(here + ["multiple_of"], f"input '{name}': no multiple of {multiple} is within its "
                                  f"bounds ({', '.join(f'{k} {v}' for k, v in bounds.items())})")
                    for choice in choices or []:
                        if choice % multiple:
                            self.fail(here + ["choices"], f"input '{name}': its choice {choice!r} is not a multiple "
                                      f"of {multiple}")
                bounds["multiple_of"] = multiple
            env_name = self.expect(spec.get("env", "MLRUN_INPUT_" + name.upper()), str, here + ["env"], "env")
            if not ENV_RE.match(env_name):
                self.fail(here + ["env"], f"'{env_name}' is not a valid environment variable name")
            if env_name in STEP_OWN_ENV:   # mlrun's own, set after: the value went unsaid
                self.fail(here + ["env"], f"input '{name}' sets {env_name}, which mlrun sets itself for every step",
                          "name another variable (env: MY_NAME), or leave env: out")
            other = next((n for n in out if out[n]["env"] == env_name), None)
            if other is not None:   # both in the key, one value reached the step
                self.fail(here + ["env"] if "env" in spec else here, f"inputs '{other}' and '{name}' both set "
                          f"{env_name}: the step would see one of the two values", "give one of them env: ANOTHER_NAME")
            required = self.expect(spec.get("required", False), bool, here + ["required"], "required")
            # content: a path input whose file's or folder's content goes into the key, not only its name
            content = self.expect(spec.get("content", False), bool, here + ["content"], "content")
            if content and kind != "path":
                self.fail(here + ["content"], f"content: true needs type: path (input '{name}' is {kind})")
            # file: a path input that must be a regular file (refused while the plan is made, not hashed in full)
            file_only = self.expect(spec.get("file", False), bool, here + ["file"], "file")
            if file_only and kind != "path":
                self.fail(here + ["file"], f"file: true needs type: path (input '{name}' is {kind})")
            out[name] = {"type": kind, "default": default, "choices": choices, "env": env_name,
                         "help": self.text(spec.get("help"), here + ["help"], "help"), "required": required}
            if content:  # only then: other recipes' normal form, and so their digests, stay as they were
                out[name]["content"] = True
            if file_only:  # likewise (and cosmetic: it only refuses values)
                out[name]["file"] = True
            if pattern is not None:  # likewise
                out[name]["pattern"] = pattern
            out[name].update(bounds)  # likewise
            if spec.get("when") is not None:  # likewise; a value other than the default needs it to hold
                out[name]["when"] = self.text(spec["when"], here + ["when"], "when")
        for name, spec in out.items():   # what multiple_of names is known once every input is read
            of = spec.get("multiple_of")
            here = list(where) + [name, "multiple_of"]
            if isinstance(of, str) and (of not in out or out[of]["type"] != "int" or of == name):
                self.fail(here, f"multiple_of: '{of}' is not another int input of this recipe")
            defaults = {k: v["default"] for k, v in out.items()}
            if not_a_multiple(name, defaults, spec):
                self.fail(here, f"the defaults: {not_a_multiple(name, defaults, spec)}")
        return out


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def show_number(number):
    """0 and 0.5, not 0.0 (and 1e+40, not its 41 digits)."""
    return str(int(number)) if isinstance(number, float) and number.is_integer() and abs(number) < 1e16 \
        else str(number)


PATTERN_SECONDS = 1.0   # a value's match never takes this long unless the pattern backtracks without end


class PatternTooSlow(RecipeError):
    def __init__(self, pattern, value):
        super().__init__(f"the pattern {pattern!r} takes over {PATTERN_SECONDS:g} s to match {value!r}: it "
                         "backtracks without end (nested repeats such as (a|aa)+ over a long value)",
                         hint="the recipe's author can write it without repeats inside repeats; meanwhile give "
                              "a value that matches it early, or a shorter one")


def pattern_matches(pattern, value):
    """Whether str(value) matches pattern whole. Python's re has no time limit: a recipe's pattern that
    backtracks hung mlrun on a person's value; the regex module stops at a time-out."""
    import regex
    try:
        return regex.fullmatch(pattern, str(value), timeout=PATTERN_SECONDS) is not None
    except TimeoutError:
        raise PatternTooSlow(pattern, value) from None


def out_of_bounds(name, value, spec):
    """Why a number is outside its input's `min`/`max`/`above` bounds, or None."""
    if spec.get("min") is not None and value < spec["min"]:
        return f"--{name}={show_number(value)} is below {show_number(spec['min'])}, the least value it takes"
    if spec.get("above") is not None and value <= spec["above"]:
        return f"--{name}={show_number(value)} is not above {show_number(spec['above'])}"
    if spec.get("max") is not None and value > spec["max"]:
        return f"--{name}={show_number(value)} is above {show_number(spec['max'])}, the most it takes"
    return None


def not_a_multiple(name, values, spec):
    """Why values[name] is no multiple of its `multiple_of` (a number, or another input's value), or None.
    Not checked where either is unset or the base is 0 (an input's "0: derive it")."""
    of, value = spec.get("multiple_of"), values.get(name)
    base = values.get(of) if isinstance(of, str) else of
    if of is None or value is None or not base or value % base == 0:
        return None
    return f"--{name}={value} is not a multiple of " + (f"--{of}={base}" if isinstance(of, str) else str(base))


def convert_input(name, kind, value, fail):
    """Convert a YAML or command-line value to the input's declared type."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, dict)):  # never a value, whatever the type (str() would hide it)
            raise ValueError
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):  # nan and inf are no setting
                raise ValueError
            return float(value)
        return str(value)
    except ValueError:
        fail(f"input '{name}' expects {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")


def _env_set_once(c, env, inputs, where):
    """An env key that an input or mlrun itself sets: both in the key, one value reached the step, unsaid."""
    by_input = {spec["env"]: name for name, spec in inputs.items()}
    for key in env:
        if key in by_input:
            c.fail(where + [key], f"env {key} is set by input '{by_input[key]}' too: the step would see the input's "
                   "value", f"set it by --{by_input[key]}=VALUE (or the input's default), or name another variable")
        if key in STEP_OWN_ENV:
            c.fail(where + [key], f"env {key} is mlrun's own, set for every step: this value would never reach it",
                   "name another variable")


def _is_version(text):
    from packaging.version import InvalidVersion, Version   # only when recipes are read, not on the warm path
    try:
        Version(text)
        return True
    except InvalidVersion:
        return False


def normalize(data, path, lines, default_name):
    """Check one recipe's data and return its normal form (raises RecipeError)."""
    c = _Checker(path, lines)
    if not isinstance(data, dict):
        c.fail([], "a recipe must be a mapping of keys (tags, deps, run, ...)")
    c.keys(data, TOP_KEYS, [], "a recipe")
    name = c.expect(data.get("name", default_name), str, ["name"], "name")
    if not NAME_RE.match(name):
        c.fail(["name"], f"recipe name '{name}' must start with a letter or digit and may hold letters, digits, "
                         "_ . + - only")
    if "tags" not in data:
        c.fail([], "a recipe needs 'tags' (the words a query uses to find it)")
    version = data.get("version", "0")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        c.fail(["version"], "version must be a string like '6.0.17'")
    if isinstance(version, float):   # YAML made a number of it: 1.10 is 1.1 and would satisfy no '>=1.10'
        c.fail(["version"], f"version is written as a number, which YAML reads as {version!r} (1.10 becomes 1.1)",
               "quote it: version: \"1.10\"")
    if not _is_version(str(version)):   # deps compare it by PEP 440: 'banana' satisfied no constraint, unsaid
        c.fail(["version"], f"version {str(version)!r} is not a version deps can compare (PEP 440)",
               'like version: "1.0", "2.3.1" or "1.0+local"')
    recipe = {
        "name": name,
        "description": c.text(data.get("description"), ["description"], "description").strip(),
        "tags": c.str_list(data["tags"], ["tags"], "tags"),
        # Other words that find the recipe as its tags do (CM's words: `get dataset squad original`);
        # they only help a query find it, so they are not hashed (keys.COSMETIC).
        "aliases": c.str_list(data.get("aliases", []), ["aliases"], "aliases"),
        "version": str(version),
        "cache": c.expect(data.get("cache", True), bool, ["cache"], "cache"),
        "inputs": c.inputs(data.get("inputs", {}), ["inputs"]),
        "env": c.env(data.get("env", {}), ["env"]),
        "hash_env": c.env_names(data.get("hash_env", []), ["hash_env"], "hash_env"),
        "pass_env": c.env_names(data.get("pass_env", []), ["pass_env"], "pass_env"),
        "exports": c.exports(data.get("exports", {}), ["exports"]),
        "deps": c.deps(data.get("deps", []), ["deps"]),
        "download": c.downloads(data["download"], ["download"]) if "download" in data else [],
        "run": c.run(data["run"], ["run"]) if "run" in data else None,
        "sources": c.str_list(data.get("sources", []), ["sources"], "sources"),
        "record": c.env_like_files(data.get("record", {}), ["record"]),
        "probe": c.probes(data.get("probe", {}), ["probe"]),
        "variations": {},
    }
    _env_set_once(c, recipe["env"], recipe["inputs"], ["env"])
    if "mirror_files" in data:   # only when set (cosmetic in keys: it changes no artifact, only what a mirror holds)
        recipe["mirror_files"] = c.mirror_files(data["mirror_files"], ["mirror_files"])
        known = {spec["env"] for spec in recipe["inputs"].values()} | set(recipe["env"])
        for i, item in enumerate(recipe["mirror_files"]):
            for k in ("url", "sha256"):
                for var in re.findall(r"\$\{(\w+)\}", item.get(k, "")):
                    if var not in known:   # an empty url, planned; mirror fetch then "Invalid URL ''"
                        c.fail(["mirror_files"] + ([i] if isinstance(data["mirror_files"], list) else []) + [k],
                               f"mirror_files.{k} names ${{{var}}}, which is no input's variable nor in this "
                               "recipe's env", f"declare the input whose variable it is (inputs: {{url: {{}}}} "
                               "is MLRUN_INPUT_URL)")
    # A command a person talks to (app bert qa): it reads mlrun's stdin; exit 2 is their usage error.
    # Only when set: other recipes' normal form, and so their digests, stay as they were.
    if c.expect(data.get("interactive", False), bool, ["interactive"], "interactive"):
        if recipe["cache"]:
            c.fail(["interactive"], "an interactive step reads its input at run time: it needs 'cache: false'")
        recipe["interactive"] = True
    # A step that measures while it builds (TensorRT times its tactics) is built with nothing beside it (--jobs).
    # Only when set, and cosmetic in keys: saying so changes no artifact's key.
    if c.expect(data.get("alone", False), bool, ["alone"], "alone"):
        recipe["alone"] = True
    if "timeout" in data:   # seconds its command may run; not in the key (keys.COSMETIC): a build that ends is one
        recipe["timeout"] = duration_seconds(data["timeout"])
        if not recipe["timeout"]:
            c.fail(["timeout"], f"timeout {data['timeout']!r} is no duration", "seconds, or e.g. 90s, 30m, 2h")
    for key in ("tags", "aliases"):
        for tag in recipe[key]:
            what = f"{'alias' if key == 'aliases' else 'tag'} '{tag}'"
            if tag.startswith("_") or not tag[:1].isalnum():
                c.fail([key], f"{what} must start with a letter or digit (a leading _ marks a variation)")
            if not NAME_RE.match(tag):
                c.fail([key], f"{what} may hold ASCII letters, digits, _ . + - only"
                       + (" (a query splits words at spaces)" if " " in tag else ""))
    variations = c.expect(data.get("variations", {}), dict, ["variations"], "variations")
    defaults = {}
    for vname, spec in variations.items():
        here = ["variations", vname]
        base_name = vname[:-len(PARAM_SUFFIX)] if vname.endswith(PARAM_SUFFIX) else vname
        if not NAME_RE.match(base_name) or "." in base_name:
            c.fail(here, f"variation name '{vname}' may hold letters, digits, _ + - (and end in .# if parametric)")
        spec = spec or {}
        c.keys(spec, VARIATION_KEYS, here, f"variation '{vname}'")
        v = {
            "description": c.text(spec.get("description"), here + ["description"], "description"),
            "group": c.expect(spec["group"], str, here + ["group"], "group") if "group" in spec else None,
            "default": c.expect(spec.get("default", False), bool, here + ["default"], "default"),
            "base": c.str_list(spec.get("base", []), here + ["base"], "base"),
            "conflicts": c.str_list(spec.get("conflicts", []), here + ["conflicts"], "conflicts"),
            "env": c.env(spec.get("env", {}), here + ["env"]),
            "deps": c.deps(spec.get("deps", []), here + ["deps"]),
            "download": c.downloads(spec["download"], here + ["download"]) if "download" in spec else None,
            "run": c.run(spec["run"], here + ["run"]) if "run" in spec else None,
            "exports": c.exports(spec.get("exports", {}), here + ["exports"]),
            "hash_env": c.env_names(spec.get("hash_env", []), here + ["hash_env"], "hash_env"),
            "pass_env": c.env_names(spec.get("pass_env", []), here + ["pass_env"], "pass_env"),
            "param": vname.endswith(PARAM_SUFFIX),
        }
        _env_set_once(c, v["env"], recipe["inputs"], here + ["env"])
        if v["default"]:
            if v["group"] is None:
                c.fail(here + ["default"], f"variation '{vname}' is a default but has no group")
            if v["group"] in defaults:
                c.fail(here + ["default"], f"group '{v['group']}' has two defaults: "
                                           f"'{defaults[v['group']]}' and '{vname}'")
            if v["param"]:
                c.fail(here + ["default"], "a parametric variation cannot be a default")
            defaults[v["group"]] = vname
        if base_name in recipe["variations"]:
            c.fail(here, f"variations '{base_name}' and '{base_name}{PARAM_SUFFIX}' cannot both be declared "
                         f"(both are chosen as _{base_name})")
        recipe["variations"][base_name] = v
    for vname, v in recipe["variations"].items():
        for i, b in enumerate(v["base"]):
            name, dot, value = b.lstrip("_").partition(".")
            known = recipe["variations"].get(name if dot else b.lstrip("_"))
            here = ["variations", vname + (PARAM_SUFFIX if v["param"] else ""), "base", i]
            if known is None:
                c.fail(here, f"variation '{vname}' has an unknown base variation '{b}'",
                       f"known variations: {', '.join(sorted(recipe['variations']))}")
            if bool(dot) != bool(known["param"]) or (dot and not value):   # as a query takes it: _bs.8, _fp32
                c.fail(here, f"variation '{vname}': base '{b}' " + (f"needs a value, like {name}.8" if known["param"]
                                                                    else f"takes no value ({name})"))
        v["base"] = [b.lstrip("_") for b in v["base"]]
        for i, b in enumerate(v["conflicts"]):
            if b.lstrip("_") not in recipe["variations"]:
                c.fail(["variations", vname + (PARAM_SUFFIX if v["param"] else ""), "conflicts", i],
                       f"variation '{vname}' conflicts with an unknown variation '{b}'")
        v["conflicts"] = [b.lstrip("_") for b in v["conflicts"]]
    for vname, v in recipe["variations"].items():
        _check_choosable(c, recipe["variations"], vname, v)
    _check_placeholders(c, recipe)
    _check_conditions(c, recipe)
    recipe["path"] = path
    recipe["lines"] = {"/".join(map(str, k)): v for k, v in lines.items() if len(k) <= 3}
    return recipe


def _check_choosable(c, variations, vname, v):
    """A variation whose bases (followed through) hold two of one group, or one it or they conflict with, could
    never be chosen: every query of it failed at resolution, naming neither the file nor the line."""
    here = ["variations", vname + (PARAM_SUFFIX if v["param"] else "")]
    brings, todo = {vname: None}, [(b.partition(".")[0], vname) for b in v["base"]]
    while todo:
        name, by = todo.pop(0)
        if name not in brings:
            brings[name] = by
            todo += [(b.partition(".")[0], name) for b in variations[name]["base"]]
    said = {n: f"'{n}'" if n == vname else f"its base '{n}'" if by == vname else f"'{n}' (base of '{by}')"
            for n, by in brings.items()}
    groups = {}
    for name in brings:
        group = variations[name]["group"]
        if group is not None and groups.setdefault(group, name) != name:
            c.fail(here + ["base"], f"variation '{vname}' can never be chosen: {said[groups[group]]} and "
                                    f"{said[name]} are both in group '{group}'")
    for name in brings:
        clash = next((x for x in variations[name]["conflicts"] if x in brings), None)
        if clash is not None:
            c.fail(here + ["conflicts" if name == vname else "base"],
                   f"variation '{vname}' can never be chosen: {said[name]} conflicts with "
                   + ("itself" if clash == name else said[clash]))


def _texts(part, where):
    """(place, text) of each text of a recipe or variation the step gets: env, exports, run, deps' queries and
    inputs."""
    for key, value in part["env"].items():
        yield where + ["env", key], value
    for key, value in part["exports"].items():
        for i, text in enumerate(value.get("prepend", []) + value.get("append", []) if isinstance(value, dict)
                                 else [value]):
            yield where + ["exports", key] + ([i] if isinstance(value, dict) else []), text
    run = part["run"]
    for i, text in enumerate([run] if isinstance(run, str) else run or []):
        yield where + ["run"] + ([i] if isinstance(run, list) else []), text
    for i, dep in enumerate(part["deps"]):
        yield where + ["deps", i], dep["query"]
        for name, value in dep["inputs"].items():
            if isinstance(value, str):
                yield where + ["deps", i, "inputs", name], value


PLACEHOLDER = re.compile(r"(?<!\$)\{(value|recipe|input\.\w+)\}")


def _check_placeholders(c, recipe):
    """A placeholder where nothing replaces it reached the step as written ("v={value}", "TOOLS={recipe}/tools"):
    {value} is a parametric variation's (its env, exports, run and dep queries), {recipe} is the recipe's folder
    in env, run and probes (an export is read by other steps: it names {entry}, the entry's own files), and
    {input.NAME} passes an input to a dep alone."""
    parts = [(recipe, [], False)] + [(v, ["variations", name + (PARAM_SUFFIX if v["param"] else "")], v["param"])
                                     for name, v in recipe["variations"].items()]
    inputs = {spec["env"] for spec in recipe["inputs"].values()}
    for part, where, _ in parts:   # env is set before the inputs: "${MLRUN_INPUT_N}-x" was "-x", unsaid
        for key, value in part["env"].items():
            named = next((v for v in re.findall(r"\$\{(\w+)\}", value) if v in inputs), None)
            if named:
                c.fail(where + ["env", key], f"env {key} names ${{{named}}}, an input's variable, which is set after "
                                             "env: it would be empty here", "read it in run: (a step has it there)")
    for part, where, param in parts:
        for here, text in _texts(part, where):
            for m in PLACEHOLDER.finditer(text):
                kind = here[len(where)]
                dep_input = kind == "deps" and len(here) > len(where) + 2
                if m[1] == "value" and param and dep_input:
                    c.fail(here, "{value} is not replaced in a dep's inputs: here it would stay as written",
                           "pass it in the dep's query (a parametric variation of the dep: _NAME.{value})")
                if m[1] == "value" and not param:
                    c.fail(here, "{value} is replaced only in a parametric variation (NAME.#): its env, exports, "
                                 "run and dep queries; here it would stay as written",
                           "declare the variation as NAME.# and choose it as _NAME.VALUE")
                if m[1] == "recipe" and kind == "exports":
                    c.fail(here, "{recipe} is not replaced in exports: the steps that read them have their own "
                                 "folder", "copy what they need into the entry and export {entry}/...")
                if m[1].startswith("input.") and not dep_input:
                    c.fail(here, f"{{{m[1]}}} passes an input to a dep (a dep input of that value alone); here it "
                                 "would stay as written", f"a step reads its input as $MLRUN_INPUT_"
                                 f"{m[1][len('input.'):].upper()} (run:)")


def _check_conditions(c, recipe):
    """`when:` (of a dep, or of an input) may only name this recipe's own variations and inputs, and a dep's
    `{input.NAME}` only this recipe's inputs (else the dep would silently get its default)."""
    deps = [(["deps", i], d) for i, d in enumerate(recipe["deps"])]
    for vname, v in recipe["variations"].items():
        key = vname + (PARAM_SUFFIX if v["param"] else "")
        deps += [(["variations", key, "deps", i], d) for i, d in enumerate(v["deps"])]
    for where, dep in deps:
        for name, value in dep["inputs"].items():
            if not isinstance(value, str) or "{input." not in value:
                continue
            m = PASSED_INPUT.fullmatch(value)
            if not m:
                c.fail(where + ["inputs", name], f"dep input {name}: '{value}' mixes {{input.NAME}} with other text",
                       "a dep input is a value, or {input.NAME} alone to pass this recipe's input on")
            if m[1] not in recipe["inputs"]:
                c.fail(where + ["inputs", name], f"dep input {name}: {value} names no input of this recipe"
                       + did_you_mean(m[1], recipe["inputs"]),
                       "its inputs: " + (", ".join(recipe["inputs"]) or "none"))
    deps += [(["inputs", name], spec) for name, spec in recipe["inputs"].items() if spec.get("when")]
    for where, dep in deps:
        if dep["when"] is None:
            continue
        for word in (t for w in dep["when"].split() for t in w.split("|")):
            bare = word[1:] if word.startswith("!") else word
            if bare.startswith("_"):
                if bare[1:].split(".")[0] not in recipe["variations"]:
                    c.fail(where + ["when"], f"condition '{dep['when']}' names an unknown variation '{bare}'")
                continue
            m = CONDITION_INPUT.match(bare)
            if not m:
                c.fail(where + ["when"], f"condition '{dep['when']}': cannot read '{word}'",
                       "conditions use _variation, !_variation, input=value or input!=value; a|b for either")
            if m[1] not in recipe["inputs"]:
                c.fail(where + ["when"], f"condition '{dep['when']}' names an unknown input '{m[1]}'",
                       "conditions use _variation, !_variation, input=value or input!=value; a|b for either")
            problem = _condition_value_problem(m[1], recipe["inputs"][m[1]], m[3])
            if problem:
                c.fail(where + ["when"], f"condition '{dep['when']}': {problem}")


def _condition_value_problem(name, spec, want):
    """Why `name=want` could never hold (a value the input cannot take, or not written as it compares)."""
    if want == "":
        return None  # unset
    kind, choices = spec["type"], spec["choices"]
    if want.endswith("*"):  # a prefix
        if kind not in ("str", "path", "file"):
            return f"a prefix ({want}) only fits a text input; '{name}' is {kind}"
        if choices is not None and not any(str(ch).startswith(want[:-1]) for ch in choices):
            return f"no choice of input '{name}' starts with '{want[:-1]}' (choices: {choices})"
        return None
    errors = []
    value = convert_input(name, kind, want, errors.append)
    if errors:
        return errors[0]
    if choices is not None and value not in choices:
        return f"{want!r} is not among the choices of input '{name}': {choices}"
    text = str(value).lower() if kind == "bool" else str(value)
    if text != want:
        return f"input '{name}' is compared as written by mlrun: write {name}={text}"
    return None
