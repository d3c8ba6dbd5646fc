"""Recipe validation: every mistake is a RecipeError naming the file and the line; loading runs nothing."""
import os

import pytest
import yaml

from conftest import assert_user_error
from engine import RecipeError
from engine.index import RecipeIndex
from engine.recipe import normalize
from engine.yamlfile import load

# (id, recipe.yaml text, expected line or None for "file only", fragment of the message)
CASES = [
    ("yaml-syntax", "tags: a\nrun: [echo,\n", 3, "YAML syntax error"),
    ("yaml-tab", "tags: a\nenv:\n\tX: 1\n", 3, "YAML syntax error"),
    ("yaml-bad-indent", "tags: a\nenv:\n  X: 1\n Y: 2\n", 4, "YAML syntax error"),
    ("yaml-undefined-alias", "tags: a\nrun: *nothing\n", 2, "YAML syntax error"),
    ("duplicate-key", "tags: a\nrun: x\ntags: b\n", 3, "duplicate key 'tags'"),
    ("not-a-mapping", "- tags\n- run\n", None, "a recipe must be a mapping"),
    ("no-tags", "description: nothing\nrun: true\n", None, "a recipe needs 'tags'"),
    ("unknown-top-key", "tags: a\n\nrunn: echo\n", 3, "unknown key 'runn' in a recipe (did you mean run?)"),
    ("unknown-variation-key", "tags: a\nvariations:\n  x:\n    env: {A: '1'}\n    defualt: true\n", 5,
     "unknown key 'defualt' in variation 'x'"),
    ("unknown-dep-key", "tags: a\ndeps:\n  - query: a\n    tag: x\n", 4, "unknown key 'tag' in a dep"),
    ("unknown-input-key", "tags: a\ninputs:\n  n:\n    typ: int\n", 4, "unknown key 'typ' in input 'n'"),
    ("unknown-download-key", "tags: a\ndownload:\n  url: x\n  file: f\n  sha256: ab\n  sha: cd\n", 6,
     "unknown key 'sha' in download"),
    ("wrong-type-cache", "tags: a\ncache: 'no'\n", 2, "cache must be bool, not str"),
    ("wrong-type-tag-item", "tags: [get, 3]\n", 1, "tags item must be str, not int"),
    ("wrong-type-env-value", "tags: a\nenv:\n  A: '1'\n  B: [1, 2]\n", 4, "env value of B must be a string"),
    ("wrong-type-version", "tags: a\nversion: {major: 1}\n", 2, "version must be a string"),
    ("wrong-type-variations", "tags: a\nvariations: [x, y]\n", 2, "variations must be dict, not list"),
    ("wrong-type-variation", "tags: a\nvariations:\n  x: 3\n", 3, "variation 'x' must be dict, not int"),
    ("wrong-type-deps", "tags: a\ndeps: {query: a}\n", 2, "deps must be list"),
    ("wrong-type-dep-when", "tags: a\ndeps:\n  - query: a\n    when: 3\n", 4, "dep when must be str"),
    ("wrong-type-input-default", "tags: a\ninputs:\n  n: {type: int, default: ten}\n", 3,
     "input 'n' expects an int, got 'ten'"),
    ("input-default-list", "tags: a\ninputs:\n  s:\n    default: [a, b]\n", 4, "input 's' expects a str"),
    ("input-default-mapping", "tags: a\ninputs:\n  n:\n    type: int\n    default: {x: 1}\n", 5,
     "input 'n' expects an int"),
    ("input-default-not-a-choice", "tags: a\ninputs:\n  m:\n    default: fast\n    choices: [a, b]\n", 4,
     "default 'fast' is not among the choices"),
    ("unknown-input-type", "tags: a\ninputs:\n  n:\n    type: integer\n", 4, "input type 'integer' is not one of"),
    ("input-pattern-not-a-regex", "tags: a\ninputs:\n  p:\n    pattern: 'a('\n", 4,
     "pattern is not a valid regular expression"),
    ("input-pattern-not-text", "tags: a\ninputs:\n  p:\n    pattern: [a]\n", 4, "pattern must be str"),
    ("input-default-backtracks", "tags: a\ninputs:\n  p:\n    default: " + "a" * 58 + "b\n    pattern: '(a|aa)+c?'\n",
     4, "the pattern '(a|aa)+c?' takes over 1 s to match"),   # re hung loading the recipe
    ("input-default-not-of-the-pattern", "tags: a\ninputs:\n  p:\n    default: b1\n    pattern: '[a-z]+'\n", 4,
     "default 'b1' does not match the pattern '[a-z]+'"),
    ("input-min-on-text", "tags: a\ninputs:\n  p:\n    min: 1\n", 4, "min: needs type int or float (input 'p' is str)"),
    ("input-bound-not-a-number", "tags: a\ninputs:\n  n:\n    type: int\n    above: none\n", 5,
     "input 'n' expects an int, got 'none'"),
    ("input-default-below-min", "tags: a\ninputs:\n  n:\n    type: int\n    default: 0\n    min: 1\n", 5,
     "default: --n=0 is below 1, the least value it takes"),
    ("input-default-not-above", "tags: a\ninputs:\n  q:\n    type: float\n    default: 0\n    above: 0\n", 5,
     "default: --q=0 is not above 0"),
    ("input-type-list", "tags: a\ninputs:\n  n:\n    type: [int]\n", 4, "type must be str, not list"),   # "unhashable"
    ("input-env-number", "tags: a\ninputs:\n  n:\n    env: 5\n", 4, "env must be str, not int"),
    ("input-multiple-of-float", "tags: a\ninputs:\n  q:\n    type: float\n    multiple_of: 2\n", 5,
     "multiple_of: needs type int (input 'q' is float)"),
    ("input-multiple-of-zero", "tags: a\ninputs:\n  n:\n    type: int\n    multiple_of: 0\n", 5,
     "multiple_of: a whole number above 0, or another input's name"),
    ("input-multiple-of-unknown", "tags: a\ninputs:\n  n:\n    type: int\n    multiple_of: heads\n", 5,
     "multiple_of: 'heads' is not another int input of this recipe"),
    ("input-multiple-of-text-input", "tags: a\ninputs:\n  h: {default: x}\n  n:\n    type: int\n    multiple_of: h\n",
     6, "multiple_of: 'h' is not another int input of this recipe"),
    ("input-multiple-of-defaults", "tags: a\ninputs:\n  heads: {type: int, default: 5}\n  hidden:\n    type: int\n"
     "    default: 768\n    multiple_of: heads\n", 7, "the defaults: --hidden=768 is not a multiple of --heads=5"),
    ("input-float-default-nan", "tags: a\ninputs:\n  q:\n    type: float\n    default: .nan\n", 5,
     "input 'q' expects a float, got nan"),
    ("input-when-unknown-variation", "tags: a\ninputs:\n  n:\n    type: int\n    when: _fast\n", 5,
     "condition '_fast' names an unknown variation '_fast'"),
    ("input-when-unknown-input", "tags: a\ninputs:\n  n:\n    type: int\n    when: mode=x\n", 5,
     "condition 'mode=x' names an unknown input 'mode'"),
    ("input-when-alternative-unknown", "tags: a\nvariations:\n  x: {}\ninputs:\n  n:\n    type: int\n    when: _x|_y\n",
     7, "condition '_x|_y' names an unknown variation '_y'"),
    ("input-when-not-text", "tags: a\ninputs:\n  n:\n    when: [a]\n", 4, "when must be text, not a list"),
    ("bad-env-name", "tags: a\nenv:\n  1X: y\n", 3, "'1X' is not a valid environment variable name"),
    ("tag-with-underscore", "tags: [get, _x]\n", 1, "tag '_x' must start with a letter or digit"),
    ("bad-recipe-name", "name: a b\ntags: a\n", 1, "recipe name 'a b'"),
    ("unknown-base", "tags: a\nvariations:\n  x: {}\n  y:\n    base: [_x, _z]\n", 5,
     "variation 'y' has an unknown base variation '_z'"),
    ("default-without-group", "tags: a\nvariations:\n  x:\n    default: true\n", 4,
     "variation 'x' is a default but has no group"),
    ("two-defaults", "tags: a\nvariations:\n  x: {group: g, default: true}\n  y:\n    group: g\n    default: true\n",
     6, "group 'g' has two defaults: 'x' and 'y'"),
    ("parametric-default", "tags: a\nvariations:\n  bs.#:\n    group: g\n    default: true\n", 5,
     "a parametric variation cannot be a default"),
    ("download-without-checksum", "tags: a\ndownload:\n  url: https://example.org/f\n  file: f\n", 2,
     "download needs a checksum"),
    ("download-file-with-slash", "tags: a\ndownload:\n  url: https://x/f\n  file: ../f\n  sha256: \"" + "ab" * 32 + "\"\n", 4,
     "download.file must be a plain file name"),
    ("dep-without-query", "tags: a\ndeps:\n  - name: x\n", 3, "a dep needs a 'query'"),
    ("when-unknown-variation", "tags: a\ndeps:\n  - query: a\n    when: _int8\n", 4,
     "condition '_int8' names an unknown variation '_int8'"),
    ("when-unknown-input", "tags: a\nvariations:\n  v:\n    deps:\n      - query: a\n        when: mode=x\n", 6,
     "condition 'mode=x' names an unknown input 'mode'"),
    ("tag-with-space", "tags: [get, 'a b']\n", 1, "tag 'a b' may hold ASCII letters, digits, _ . + - only (a query "
                                                 "splits words at spaces)"),
    ("tag-not-ascii", "tags: [get, Émile]\n", 1, "tag 'Émile' may hold ASCII letters, digits, _ . + - only"),
    ("run-a-number", "tags: a\nrun: 5\n", 2, "run must be str or list, not int (5)"),
    ("version-a-float", "tags: a\nversion: 1.10\n", 2, "version is written as a number, which YAML reads as 1.1"),
    ("dep-input-unknown", "tags: a\ninputs:\n  who: {}\ndeps:\n  - query: b\n    inputs:\n      word: '{input.wh}'\n",
     7, "dep input word: {input.wh} names no input of this recipe (did you mean who?)"),
    ("dep-input-mixed", "tags: a\ninputs:\n  who: {}\nvariations:\n  v:\n    deps:\n      - query: b\n        inputs:\n"
     "          word: 'hi {input.who}'\n", 9, "'hi {input.who}' mixes {input.NAME} with other text"),
    ("export-wrong-type", "tags: a\nexports:\n  P: [a, b]\n", 3, "exports.P must be a string or a mapping"),
    ("export-unknown-key", "tags: a\nexports:\n  P: {prepend: a, before: b}\n", 3,
     "unknown key 'before' in exports.P"),
    ("missing-source", "tags: a\nsources:\n  - ../nope.py\n", 3, "source file '../nope.py' does not exist"),
    # From a recipe author's trial: each was accepted and went wrong later, or in silence
    ("input-named-as-an-option", "tags: a\ninputs:\n  n: {}\n  cache: {default: '1'}\n", 4,
     "input name 'cache' is mlrun's own option (--cache): no command line could set it"),
    ("dep-name-read-as-bool", "tags: a\ndeps:\n  - {name: off, query: b}\n", 3,
     "dep name is written off without quotes, which YAML reads as False"),   # was "must be str, not bool (False)"
    ("input-named-as-runs-option", "tags: a\ninputs:\n  jobs: {type: int, default: 1}\n", 3,
     "input name 'jobs' is mlrun's own option (--jobs)"),   # run took it, the step its default; plan showed 7
    # variations no query could choose: each query of them failed at resolution, naming no file or line
    ("variation-base-in-its-group", "tags: a\nvariations:\n  x: {group: g, base: [y]}\n  y: {group: g}\n", 3,
     "variation 'x' can never be chosen: 'x' and its base 'y' are both in group 'g'"),
    ("variation-conflicts-with-itself", "tags: a\nvariations:\n  x: {conflicts: [x]}\n", 3,
     "variation 'x' can never be chosen: 'x' conflicts with itself"),
    ("variation-conflicts-with-its-base", "tags: a\nvariations:\n  x: {base: [y], conflicts: [_y]}\n  y: {}\n", 3,
     "variation 'x' can never be chosen: 'x' conflicts with its base 'y'"),
    ("variation-bases-two-of-a-group", "tags: a\nvariations:\n  x: {base: [y]}\n  y: {base: [c]}\n  c: {group: g}\n"
     "  d: {group: g}\n  e: {base: [x, d]}\n", 7,
     "variation 'e' can never be chosen: its base 'd' and 'c' (base of 'y') are both in group 'g'"),
    ("variation-base-conflicts-with-another", "tags: a\nvariations:\n  x: {base: [y, z]}\n  y: {conflicts: [z]}\n"
     "  z: {}\n", 3, "variation 'x' can never be chosen: its base 'y' conflicts with its base 'z'"),
    ("download-same-file-twice", "tags: a\ndownload:\n  - {url: https://x/a, file: d.txt, sha256: \"" + "ab" * 32
     + "\"}\n  - {url: https://x/b, file: d.txt, sha256: \"" + "cd" * 32 + "\"}\n", 4, "two downloads are saved as d.txt"),
    ("download-not-http", "tags: a\ndownload:\n  url: file:///etc/passwd\n  file: f\n  sha256: \"" + "ab" * 32 + "\"\n",
     3, "download.url 'file:///etc/passwd' is not http:// or https://"),
    ("download-sha-a-number", "tags: a\ndownload:\n  url: https://x/f\n  file: f\n  sha256: 1234\n", 5,
     "download.sha256 is written as a number, which YAML reads as 1234"),
    ("run-empty-program", "tags: a\nrun: ['']\n", 2, "run as a list needs the program first, not ''"),
    ("run-empty-list", "tags: a\nrun: []\n", 2, "run as a list needs the program first, not nothing"),
    ("input-choices-empty", "tags: a\ninputs:\n  m:\n    choices: []\n", 4, "input 'm' has an empty list of choices"),
    ("version-not-a-version", "tags: a\nversion: banana\n", 2, "version 'banana' is not a version deps can compare"),
    ("version-empty", "tags: a\nversion: ''\n", 2, "version '' is not a version deps can compare"),
    # a date object ended every command with 'unexpected TypeError: Object of type date is not JSON serializable'
    ("dep-input-a-date", "tags: a\ndeps:\n  - query: a\n    inputs: {ver: 2024-01-01}\n", 4,
     "2024-01-01 is written without quotes, which YAML reads as a date"),
    ("env-a-date", "tags: a\nenv:\n  V: 2024-01-01\n", 3, "2024-01-01 is written without quotes"),
    # an int input's default 010: YAML's octal 8, taken in silence (a str input's was refused)
    ("int-default-octal", "tags: a\ninputs:\n  n: {type: int, default: 010}\n", 3,
     "the default of input 'n' is written 010, which YAML reads as octal 8"),
    # escapes past the reader's check of raw characters: plan passed, the run said "a bug in mlrun"
    ("env-nul-escape", 'tags: a\nenv: {A: "a\\0b"}\n', 2, "a NUL character"),
    ("run-nul-escape", 'tags: a\nrun:\n  - echo\n  - "\\0"\n', 4, "a NUL character"),
    ("env-lone-surrogate", 'tags: a\nenv: {A: "\\ud800"}\n', 2,   # libyaml refuses the escape itself
     "found invalid Unicode character escape code" if yaml.__with_libyaml__ else "U+D800 (a lone surrogate)"),
    ("key-nul-escape", 'tags: a\nenv: {"A\\0": b}\n', 2, "a NUL character"),
    # two inputs, one variable: two keys, one value seen by the step (MLRUN_INPUT_AB from ab and AB)
    ("inputs-share-a-variable", "tags: a\ninputs:\n  ab: {default: x}\n  AB: {default: y}\n", 4,
     "inputs 'ab' and 'AB' both set MLRUN_INPUT_AB"),
    ("inputs-share-a-named-variable", "tags: a\ninputs:\n  s: {env: X}\n  t:\n    env: X\n", 5,
     "inputs 's' and 't' both set X"),
    ("input-sets-mlruns-own", "tags: a\ninputs:\n  s: {env: MLRUN_ENTRY}\n", 3,
     "input 's' sets MLRUN_ENTRY, which mlrun sets itself"),
    # a float's default, a bound and a choice written so: taken as 8 unsaid
    ("float-default-octal", "tags: a\ninputs:\n  f: {type: float, default: 010}\n", 3,
     "the default of input 'f' is written 010, which YAML reads as octal 8"),
    ("int-min-octal", "tags: a\ninputs:\n  n:\n    type: int\n    min: 010\n", 5, "min of input 'n' is written 010"),
    ("int-choice-octal", "tags: a\ninputs:\n  n:\n    type: int\n    choices: [12, 010]\n", 5,
     "choice 2 of input 'n' is written 010, which YAML reads as octal 8"),
    # an env key an input sets too, or mlrun itself: both in the key, one value reached the step
    ("env-an-input-sets", "tags: a\ninputs:\n  x: {default: i, env: FOO}\nenv: {FOO: e}\n", 4,
     "env FOO is set by input 'x' too"),
    ("variation-env-an-input-sets", "tags: a\ninputs:\n  x: {default: i}\nvariations:\n  v:\n    env:\n"
                                    "      MLRUN_INPUT_X: var\n", 7, "env MLRUN_INPUT_X is set by input 'x' too"),
    ("env-mlruns-own", "tags: a\nenv: {MLRUN_ENTRY: /tmp/x}\n", 2, "env MLRUN_ENTRY is mlrun's own"),
    # bounds no value meets, a choice twice (taken unsaid)
    ("bounds-crossed", "tags: a\ninputs:\n  n:\n    type: int\n    min: 5\n    max: 1\n", 6,
     "input 'n': no value is within its bounds (min 5, max 1)"),
    ("choice-out-of-bounds", "tags: a\ninputs:\n  n:\n    type: int\n    choices: [1, 5]\n    min: 2\n", 5,
     "input 'n': its choice 1 "),
    ("choice-not-the-pattern", "tags: a\ninputs:\n  m:\n    choices: [a, b]\n    pattern: c\n", 4,
     "input 'm': its choice 'a' does not match the pattern 'c'"),
    ("choice-twice", "tags: a\ninputs:\n  m:\n    choices: [x, x]\n", 4, "input 'm' lists a choice twice"),
    # a multiple_of no value within the bounds meets, a choice that is no multiple (each refused at every value)
    ("multiple-of-past-bounds", "tags: a\ninputs:\n  n:\n    type: int\n    above: 16\n    max: 31\n"
                                "    multiple_of: 16\n", 7, "input 'n': no multiple of 16 is within its bounds"),
    ("multiple-of-choice", "tags: a\ninputs:\n  n:\n    type: int\n    choices: [8, 12]\n    multiple_of: 8\n", 5,
     "input 'n': its choice 12 is not a multiple of 8"),
    ("sources-a-string-device", "tags: a\nsources: /dev/zero\n", 2, "source '/dev/zero' is no regular file"),
    ("int-default-base-60", "tags: a\ninputs:\n  x: {type: int, default: 1:30}\n", 3,
     "the default of input 'x' is written 1:30, which YAML reads as 90 (base 60)"),
    ("float-min-base-60", "tags: a\ninputs:\n  x:\n    type: float\n    min: 1:00\n", 5, "reads as 60"),
    ("int-default-octal-negative", "tags: a\ninputs:\n  n: {type: int, default: -010}\n", 3,
     "written -010, which YAML reads as octal -8"),
    ("int-default-octal-underscore", "tags: a\ninputs:\n  n: {type: int, default: 0_10}\n", 3,
     "written 0_10, which YAML reads as octal 8"),   # YAML 1.1's octal takes _: it was 8, unsaid
]


def _write(ws, text, folder="r"):
    path = ws.recipe(folder, "")
    with open(path, "w") as f:   # exact text: no dedent, tabs kept
        f.write(text)
    return path


# a pattern that backtracks takes its whole second by design (the time limit): out of the quick loop
@pytest.mark.parametrize("text,line,fragment", [
    pytest.param(*c[1:], id=c[0], marks=[pytest.mark.slow] if c[0].endswith("backtracks") else []) for c in CASES])
def test_error_names_file_and_line(ws, text, line, fragment):
    assert_recipe_error(ws, text, line, fragment)


def assert_recipe_error(ws, text, line, fragment):
    """Loading a recipe of exactly this text fails with fragment, naming the file and line (exit 2)."""
    path = _write(ws, text)
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    e = info.value
    assert fragment in e.message
    assert e.path == path
    assert e.line == line
    where = f"{path}:{line}: " if line else f"{path}: "
    assert e.message.startswith(where)
    assert e.exit_code == 2


# -- deps are checked against the other recipes when loading -------------------------------------


DEP_TARGET = ("tags: get model\nvariations:\n  fp32: {group: p, default: true}\n  int8: {group: p}\n"
              "inputs:\n  ver: {default: '1.0'}\n  scale: {type: float, default: 1}\n")


@pytest.mark.parametrize("text,line,fragment", [
    ("tags: app\ndeps:\n  - get model\n  - get model _int4\n", 4,
     "dep 'get model _int4': recipe model has no variation '_int4'"),
    ("tags: app\nvariations:\n  q:\n    deps:\n      - name: m\n        query: get model _fp32 _int8\n", 5,
     "are both in group 'p'"),
    ("tags: app\ndeps:\n  - query: get modle\n", 3, "dep 'get modle': no recipe matches 'get modle'"),
    ("tags: app\ndeps:\n  - query: get model\n    version: '>=2'\n", 3,
     "no recipe for 'get model' satisfies version >=2"),
    # YAML read 1.10 as 1.1 and the step got --ver=1.1, in silence (a float input takes it as the number it is)
    ("tags: app\ndeps:\n  - query: get model\n    inputs: {scale: 1.10, ver: 1.10}\n", 3,
     "input ver is written 1.10 without quotes, which YAML reads as 1.1"),
], ids=["unknown-variation", "variation-dep-group-conflict", "no-such-recipe", "version-unsatisfied",
        "dep-text-input-retyped"])
def test_dep_query_errors_name_the_dep_line(ws, text, line, fragment):
    ws.recipe("model", DEP_TARGET)
    path = _write(ws, text, "app")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert fragment in info.value.message
    assert (info.value.path, info.value.line) == (path, line)


@pytest.mark.parametrize("query,inputs,fragment", [
    ("get modle _n.{value}", "{}", "dep 'get modle _n.{value}' (here 'get modle _n.3'): no recipe matches"),
    ("get model _n.{value}", "{}", "(here 'get model _n.3'): recipe model has no variation '_n.3'"),
    ("get model _fp32 _n{value}", "{}", "recipe model has no variation '_n3'"),
])
def test_a_parametric_variations_dep_names_its_line_when_its_value_is_known(ws, query, inputs, fragment):
    """Not checked at load (its value is known only when chosen), it failed at resolution naming no file or line:
    "no recipe matches 'get modle _n.3'", a query the user never typed."""
    ws.recipe("model", DEP_TARGET)
    path = _write(ws, f"tags: app\nvariations:\n  n.#:\n    deps:\n      - query: {query}\n"
                      f"        inputs: {inputs}\n", "app")
    assert_user_error(ws.mlrun("plan", "app _n.3"), 2, f"{path}:5: dep '{query}'", fragment)


@pytest.mark.parametrize("text,line,fragment", [
    ("tags: a\nrun: echo {value}\n", 2, "{value} is replaced only in a parametric variation"),
    ("tags: a\nvariations:\n  v:\n    env: {X: '{value}'}\n", 4, "{value} is replaced only in a parametric"),
    ("tags: a\nvariations:\n  v.#:\n    deps:\n      - query: b\n        inputs: {w: '{value}'}\n", 6,
     "{value} is not replaced in a dep's inputs"),
    ("tags: a\nexports:\n  TOOLS: '{recipe}/tools'\n", 3, "{recipe} is not replaced in exports"),
    ("tags: a\nexports:\n  P: {prepend: ['{recipe}/lib']}\n", 3, "{recipe} is not replaced in exports"),
    ("tags: a\ninputs:\n  n: {}\nenv: {N: '{input.n}'}\n", 4, "{input.n} passes an input to a dep"),
    ("tags: a\ninputs:\n  n: {}\nenv:\n  D: '${E}-${MLRUN_INPUT_N}'\n", 5,
     "env D names ${MLRUN_INPUT_N}, an input's variable, which is set after env: it would be empty here"),
])
def test_a_placeholder_where_nothing_replaces_it_is_refused(ws, text, line, fragment):
    """Each reached the step as written ("v={value}", "TOOLS={recipe}/tools", "N={input.n}"): a user's trial."""
    assert_recipe_error(ws, text, line, fragment)


def test_a_parametric_variations_value_fills_its_run_and_exports(ws):
    """They kept "{value}" as written; its env and dep queries had it."""
    ws.recipe("tool", "tags: tool\nvariations:\n  bs.#:\n    exports: {BS: 'bs={value}', P: {prepend: ['/x{value}']}}\n"
                      "    run: [sh, -c, 'echo {value} > v.txt']\n")
    ws.recipe("user", "tags: user\ncache: false\ndeps: [tool _bs.8]\nrun: 'echo \"$BS $P\" > seen.txt'\n")
    result = ws.mlrun("user", "-v")
    assert result.returncode == 0, result.stderr
    [entry] = ws.entries("tool")
    assert open(os.path.join(ws.cache, entry, "v.txt")).read() == "8\n"
    [seen] = [os.path.join(d, "seen.txt") for d, _, files in os.walk(ws.runs) if "seen.txt" in files]
    assert open(seen).read().startswith("bs=8 /x8")


def test_small_recipe_mistakes_get_a_hint(ws):
    """A tab gave YAML's raw words; a name of dots was said to hold characters it may hold."""
    _write(ws, "tags: a\nenv:\n\tX: 1\n")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert info.value.hint == "indent with spaces: YAML takes no tabs there"
    _write(ws, "name: ..\ntags: a\n")
    with pytest.raises(RecipeError, match="recipe name '..' must start with a letter or digit"):
        RecipeIndex([ws.recipes]).recipes


def test_a_dep_that_names_no_recipe_says_why_every_command_fails(ws):
    """An unfinished recipe in the folders stops every command; the hint said `mlrun find TAG`, which failed the
    same way. A folder given alone replaces mlrun's own recipes: a dep on one of those said only 'unknown tag'."""
    ws.recipe("wip", "tags: wip\ndeps: [{query: get bert vocab}]\nrun: 'true'\n")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert "--recipes (or MLRUN_RECIPES) replaces mlrun's own" in info.value.hint
    ws.recipe("wip", "tags: wip\nrun: 'true'\n")   # a query of the command line, as a dep's
    result = ws.mlrun("plan", "get bert vocab")
    assert result.returncode == 2 and "--recipes (or MLRUN_RECIPES) replaces mlrun's own" in result.stderr
    ws.recipe("wip", "tags: wip\ndeps: [{query: get modle}]\nrun: 'true'\n")
    ws.recipe("model", "tags: get model\n")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert info.value.hint == ("unknown tag 'modle' (did you mean model?); every command reads every recipe in the "
                               "recipe folders: mend this dep, or move its recipe out of them while it is unfinished")


def test_same_recipe_defined_twice(ws, tmp_path):
    ws.recipe("a", "tags: a\nversion: '1.0'\n")
    other = tmp_path / "more" / "a2"
    other.mkdir(parents=True)
    (other / "recipe.yaml").write_text("name: a\ntags: a\nversion: '1.0'\n")
    with pytest.raises(RecipeError, match="recipe a 1.0 is also defined in"):
        RecipeIndex([ws.recipes, str(tmp_path / "more")]).recipes


def test_a_source_that_is_a_folder_is_said_to_be_one(ws):
    path = _write(ws, "tags: a\nsources: [sub]\n")
    os.mkdir(os.path.join(os.path.dirname(path), "sub"))
    with pytest.raises(RecipeError, match="source 'sub' is a folder, not a file"):   # was: does not exist
        RecipeIndex([ws.recipes]).recipes


def test_find_in_folders_without_recipes_says_so(ws):
    os.makedirs(ws.recipes, exist_ok=True)
    assert_user_error(ws.mlrun("find"), 2, f"no recipes in {ws.recipes}")   # was "no recipe matches ''"
    # plan and run said only "no recipe matches 'x'": what in the folders hides the recipe, as find says it
    assert_user_error(ws.mlrun("plan", "x"), 2, "no recipe matches 'x'", f"no recipes in {ws.recipes}: a recipe is")
    own = ws.recipe("x", "tags: x\nrun: echo\n")
    assert_user_error(ws.mlrun("--recipes", os.path.dirname(own), "plan", "x"), 2, "is a recipe's own folder")
    os.rename(own, own[:-len("yaml")] + "yml")
    assert_user_error(ws.mlrun("plan", "x"), 2, "x/recipe.yml: a recipe is read from recipe.yaml (rename it)")
    assert_user_error(ws.mlrun("find"), 2, "x/recipe.yml: a recipe is read from recipe.yaml")


def test_missing_recipe_folder_is_a_user_error(tmp_path):
    from engine import MlrunError
    with pytest.raises(MlrunError, match="recipe folder .* does not exist"):
        RecipeIndex([str(tmp_path / "nowhere")]).recipes


def test_an_int_default_of_zeros_is_zero_either_way(ws):
    """00 is 0 to YAML and to a reader: it ended "unexpected ValueError" (the hint read int(''))."""
    _write(ws, "tags: a\ninputs:\n  n: {type: int, default: 00}\n")
    assert RecipeIndex([ws.recipes]).recipes[0]["inputs"]["n"]["default"] == 0
    _write(ws, "tags: a\ninputs:\n  n: {type: int, default: -010}\n")
    with pytest.raises(RecipeError) as info:   # the sign was dropped: "(or 10)"
        RecipeIndex([ws.recipes]).recipes
    assert info.value.hint == "write -8 (or -10)"


@pytest.mark.parametrize("text,line", [
    ("tags: a\nrun: !!python/object/apply:os.system ['touch {marker}']\n", 2),
    ("tags: a\nrun: !!python/object/apply:os.system 'touch {marker}'\n", 2),
    ("tags: a\nname: !!python/name:os.system\n", 2),
    ("tags: a\nenv: !!python/object/new:dict {{}}\n", 2),
    ("tags: a\nrun: !shell 'touch {marker}'\n", 2),
], ids=["apply-seq", "apply-scalar", "name", "new-mapping", "custom-tag"])
def test_yaml_tags_execute_nothing_and_are_errors(ws, tmp_path, text, line):
    marker = tmp_path / "executed"
    path = _write(ws, text.format(marker=marker))
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert (info.value.path, info.value.line) == (path, line)
    assert "tag" in info.value.message
    assert not marker.exists()


def test_non_utf8_file_is_a_recipe_error(ws):
    path = ws.write(os.path.join(ws.recipes, "r", "recipe.yaml"), b"tags: a\ndescription: caf\xe9\n")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert (info.value.path, info.value.line) == (path, 2)
    assert "UTF-8" in info.value.message


def test_loading_runs_nothing(ws, tmp_path):
    marker = tmp_path / "ran"
    ws.recipe("a", f"""\
        tags: a
        deps: [b]
        run: touch {marker}
        """, files={"build.sh": f"touch {marker}\n"})
    ws.recipe("b", "tags: b\nrun: [sh, '{recipe}/build.sh']\n", files={"build.sh": f"touch {marker}\n"})
    from engine import resolve
    index = RecipeIndex([ws.recipes], state_dir=str(tmp_path / "state"))
    assert {r["name"] for r in index.recipes} == {"a", "b"}
    resolve(index, "a")
    # ...and loading again from the stored copy runs nothing either.
    assert {r["name"] for r in RecipeIndex([ws.recipes], state_dir=str(tmp_path / "state")).recipes} == {"a", "b"}
    assert not marker.exists()


# -- the normal form --------------------------------------------------------------------------


def test_normal_form_fills_defaults(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("tags: get thing\ninputs:\n  n: {type: int, default: 3}\n  s: 7\n  p:\n"
                    "variations:\n  bs.#: {env: {B: '{value}'}}\n  x: {group: g, default: true}\n"
                    "deps: [get other]\nexports:\n  P: {prepend: '{entry}/bin'}\n  V: 1\n")
    data, lines = load(str(path))
    r = normalize(data, str(path), lines, "thing")
    assert r["name"] == "thing" and r["version"] == "0" and r["cache"] is True
    assert r["tags"] == ["get", "thing"]
    assert r["inputs"]["n"]["default"] == 3 and r["inputs"]["n"]["env"] == "MLRUN_INPUT_N"
    assert r["inputs"]["s"] == {"type": "str", "default": "7", "choices": None, "env": "MLRUN_INPUT_S", "help": "",
                                "required": False}
    assert r["inputs"]["p"]["default"] is None
    assert r["variations"]["bs"]["param"] is True
    assert r["variations"]["x"]["default"] is True and r["variations"]["x"]["base"] == []
    assert r["deps"][0]["query"] == "get other" and r["deps"][0]["name"] is None and r["deps"][0]["line"] == 9
    assert r["exports"] == {"P": {"prepend": ["{entry}/bin"]}, "V": "1"}
    assert r["run"] is None and r["download"] == []


def test_lines_are_recorded_per_key(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("# comment\ntags: a\n\nvariations:\n  x:\n    env:\n      A: '1'\n")
    _, lines = load(str(path))
    assert lines[("tags",)] == 2
    assert lines[("variations", "x", "env", "A")] == 7


def test_empty_file_is_reported(ws):
    path = _write(ws, "")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert info.value.path == path and "needs 'tags'" in info.value.message


def test_libyaml_and_pyyamls_python_reader_read_every_recipe_alike(monkeypatch, tmp_path):
    """Recipes are read by libyaml where PyYAML has it (ten times faster), by PyYAML's Python reader where not: the
    same data, lines and written texts of every recipe and YAML file here (the plain scalars' style is '' in one,
    None in the other: a 0755 read as 493 is said either way)."""
    import glob
    import importlib.util
    import sys
    from conftest import ROOT
    from engine import yamlfile
    assert yamlfile._Parser is yaml._yaml.CParser   # the fast one, where PyYAML has it (its wheels do)
    monkeypatch.setitem(sys.modules, "yaml._yaml", None)   # a PyYAML without libyaml
    spec = importlib.util.spec_from_file_location("engine._yamlfile_python", yamlfile.__file__)
    python = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(python)
    assert python._Parser is not yaml._yaml.CParser

    def read(module, path):
        try:
            data, lines = module.load(path)
        except RecipeError as e:
            return "error", e.line
        return data, dict(lines), lines.written
    files = glob.glob(os.path.join(ROOT, "recipes", "*", "recipe.yaml")) + \
        glob.glob(os.path.join(ROOT, "tests", "**", "*.yaml"), recursive=True)
    assert len(files) > 50
    for text in ["tags: a\nmode: 0755\nv: 1.10\n", "tags: a\nenv:\n\tX: 1\n", "a: &x 1\nb: *x\n",
                 "a: " + "[" * 60 + "]" * 60 + "\n", 'a: "\\0"\n', "a: [1, 2\n"]:
        files.append(str(tmp_path / f"{len(files)}.yaml"))
        with open(files[-1], "w") as f:
            f.write(text)
    for path in files:
        assert read(yamlfile, path) == read(python, path), path
    assert read(yamlfile, files[-6])[2] == {("mode",): "0755", ("v",): "1.10"}


def test_every_option_of_the_verbs_that_take_inputs_is_reserved():
    """An input named as an option of run, plan or explain is set by no command line (run's --jobs took `--jobs=7`
    and the step ran with its default, while plan, without that option, showed 7)."""
    from engine.cli import build_parser
    from engine.recipe import RESERVED_INPUTS
    [verbs] = [a for a in build_parser()._actions if a.dest == "verb"]
    for verb in ("run", "plan", "explain"):
        names = {o[2:].replace("-", "_") for a in verbs.choices[verb]._actions for o in a.option_strings
                 if o.startswith("--")}
        assert names <= set(RESERVED_INPUTS), (verb, names - set(RESERVED_INPUTS))
