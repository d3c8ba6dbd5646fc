"""Hostile recipes: no hang, no traceback, nothing silently accepted (issue 8, recipes).

Each case is a recipe error with the file and the line it stands on, exit code 2.
"""
import os

import pytest

from conftest import assert_user_error
from test_recipe_validation import _write, assert_recipe_error
from engine import MemoryIndex, MlrunError, RecipeError, resolve
from engine.index import RecipeIndex

ALIAS_BOMB = "tags: a\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

# (id, recipe.yaml text, expected line, fragment of the message)
CASES = [
    ("nul-byte", "tags: a\nrun: echo\x00\n", 2, "character U+0000 is not allowed"),
    ("control-char", "tags: a\n\ndescription: \x07\n", 3, "character U+0007 is not allowed"),
    ("deep-lists", "tags: a\nrun: " + "[" * 5000 + "]" * 5000 + "\n", 2, "nested more than 50 levels deep"),
    ("deep-mappings", "tags: a\nenv:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 3000)) + "\n", 51,
     "nested more than 50 levels deep"),
    ("alias-scalar", "tags: &t a\nname: *t\n", 2, "YAML alias '*t' is not allowed"),
    ("when-double-equals", "tags: a\ninputs:\n  mode: {default: x}\ndeps:\n  - query: a\n    when: mode==x\n", 6,
     "cannot read 'mode==x'"),
    ("when-not-a-choice", "tags: a\ninputs:\n  mode: {default: fast, choices: [fast, slow]}\n"
                          "deps:\n  - query: a\n    when: mode=Fast\n", 6,
     "'Fast' is not among the choices of input 'mode'"),
    ("when-not-an-int", "tags: a\ninputs:\n  n: {type: int, default: 1}\ndeps:\n  - query: a\n    when: n=one\n", 6,
     "input 'n' expects an int, got 'one'"),
    ("when-int-not-as-compared", "tags: a\ninputs:\n  n: {type: int}\ndeps:\n  - query: a\n    when: n=03\n", 6,
     "write n=3"),
    ("when-bool-yes", "tags: a\ninputs:\n  f: {type: bool}\ndeps:\n  - query: a\n    when: '!f=yes'\n", 6,
     "write f=true"),
    ("when-prefix-of-int", "tags: a\ninputs:\n  n: {type: int}\ndeps:\n  - query: a\n    when: n=1*\n", 6,
     "a prefix (1*) only fits a text input"),
    ("when-prefix-of-no-choice", "tags: a\ninputs:\n  m: {choices: [ab, cd]}\ndeps:\n  - query: a\n    when: m=x*\n",
     6, "no choice of input 'm' starts with 'x'"),
    ("param-and-plain-variation", "tags: a\nvariations:\n  batch.#: {env: {B: '{value}'}}\n  batch: {}\n", 4,
     "variations 'batch' and 'batch.#' cannot both be declared"),
    ("plain-and-param-variation", "tags: a\nvariations:\n  batch: {}\n  batch.#: {env: {B: '{value}'}}\n", 4,
     "variations 'batch' and 'batch.#' cannot both be declared"),
    ("same-dep-name", "tags: a\ndeps:\n  - {name: m, query: a}\n  - {name: m, query: a}\n", 4,
     "two deps are named 'm' (here and line 3) and could both be taken"),
    ("same-dep-name-one-when", "tags: a\nvariations:\n  x: {}\ndeps:\n  - {name: m, query: a, when: _x}\n"
                               "  - {name: m, query: a}\n", 6, "two deps are named 'm'"),
    ("same-dep-name-same-when", "tags: a\nvariations:\n  x: {}\ndeps:\n  - {name: m, query: a, when: _x}\n"
                                "  - {name: m, query: a, when: _x}\n", 6, "two deps are named 'm'"),
    ("same-dep-name-in-variation", "tags: a\nvariations:\n  x:\n    deps:\n      - {name: m, query: a}\n"
                                   "      - {name: m, query: a}\n", 6, "two deps are named 'm'"),
    ("hash-env-not-a-name", "tags: a\nhash_env: [CC, 'B=1']\n", 2, "hash_env: 'B=1' is not a valid"),
    ("pass-env-not-a-name", "tags: a\nvariations:\n  x:\n    pass_env: 'TOKEN 1X'\n", 4,
     "pass_env: '1X' is not a valid environment variable name"),
    ("description-is-mapping", "tags: a\ndescription:\n  a: b\n", 2, "description must be text, not a mapping"),
    ("variation-description-list", "tags: a\nvariations:\n  x:\n    description: [a, b]\n", 4,
     "description must be text, not a list"),
    ("help-mapping", "tags: a\ninputs:\n  n:\n    help: {use: this}\n", 4, "help must be text, not a mapping"),
    # YAML 1.1 reads these plain words as numbers and booleans: where text is meant, what was written is refused
    # (a step got MODE=493, VER=1.1, T=750, a default False, in silence)
    ("env-octal", "tags: a\nenv:\n  MODE: 0755\n", 3, 'env value of MODE is written 0755 without quotes, which '
                                                   'YAML reads as 493'),
    ("env-version", "tags: a\nvariations:\n  x: {env: {VER: 1.10}}\n", 3, "which YAML reads as 1.1"),
    ("env-sexagesimal", "tags: a\nenv: {T: 12:30}\n", 2, "which YAML reads as 750"),
    ("env-no", "tags: a\nenv: {ON: no}\n", 2, "written no without quotes, which YAML reads as False"),
    ("export-hex", "tags: a\nexports: {N: 0x10}\n", 2, "exports.N is written 0x10 without quotes"),
    ("str-default-no", "tags: a\ninputs:\n  s: {default: no}\n", 3, "the default of input 's' is written no"),
    ("str-default-short", "tags: a\ninputs:\n  v: 1.20\n", 3, "the default of input 'v' is written 1.20"),
    ("path-choice", "tags: a\ninputs:\n  p: {type: path, choices: [a, 1.10]}\n", 3, "choice 1.1 of input 'p'"),
    ("base-param-no-value", "tags: a\nvariations:\n  bs.#: {}\n  big: {base: [bs]}\n", 4,
     "variation 'big': base 'bs' needs a value, like bs.8"),
    ("base-plain-with-value", "tags: a\nvariations:\n  x: {}\n  big: {base: [x.2]}\n", 4,
     "variation 'big': base 'x.2' takes no value (x)"),
]


@pytest.mark.parametrize("text,line,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_recipe_error_names_file_and_line(ws, text, line, fragment):
    assert_recipe_error(ws, text, line, fragment)


def test_numbers_written_as_read_are_taken_as_text(ws):
    _write(ws, "tags: a\nenv: {N: 10, F: 0.5, T: 'no'}\ninputs:\n  s: {default: 10}\n  b: {type: bool, default: no}\n"
               "  f: {type: float, default: 1.10}\n", "a")
    [recipe] = ws.index().recipes
    assert recipe["env"] == {"N": "10", "F": "0.5", "T": "no"}
    assert [recipe["inputs"][n]["default"] for n in "sbf"] == ["10", False, 1.1]


def test_alias_bomb_is_refused_at_once(ws):
    """9 levels of 9 aliases expand to 9**9 items: read through a subprocess, so a regression cannot hang the tests."""
    _write(ws, ALIAS_BOMB)
    assert_user_error(ws.mlrun("find", timeout=30), 2, "recipe.yaml:3: YAML alias")


def test_shipped_recipes_use_no_alias():
    from conftest import ROOT
    RecipeIndex([os.path.join(ROOT, "recipes")]).recipes   # loads (no alias refused)


# -- deps: inputs given to a dep must be inputs it has, of its type, among its choices ------------

DEP_TARGET = "tags: get model\ninputs:\n  prec: {choices: [fp32, int8]}\n  layers: {type: int, default: 2}\n"


@pytest.mark.parametrize("inputs,fragment", [
    ("{prec: fp16}", "--prec=fp16 is not one of fp32, int8"),
    ("{layers: two}", "input 'layers' expects an int, got 'two'"),
    ("{layer: 2}", "model has no input --layer"),
], ids=["not-a-choice", "not-its-type", "unknown-input"])
def test_dep_inputs_are_checked_when_loading(ws, inputs, fragment):
    _write(ws, DEP_TARGET, "model")
    path = _write(ws, f"tags: app\ndeps:\n  - name: m\n    query: get model\n    inputs: {inputs}\n", "app")
    with pytest.raises(RecipeError) as info:
        RecipeIndex([ws.recipes]).recipes
    assert fragment in info.value.message
    assert (info.value.path, info.value.line) == (path, 3)


def test_dep_input_passed_on_is_checked_when_resolving():
    index = MemoryIndex({"model": {"tags": "get model", "inputs": {"prec": {"choices": ["fp32", "int8"]}}},
                         "app": {"tags": "app", "inputs": {"p": {"default": "fp32"}},
                                 "deps": [{"query": "get model", "inputs": {"prec": "{input.p}"}}]}})
    assert resolve(index, "app").nodes[0].inputs == {"prec": "fp32"}
    with pytest.raises(MlrunError, match="--prec=fp16 is not one of fp32, int8"):
        resolve(index, "app", inputs={"p": "fp16"})


def test_same_named_deps_whose_conditions_overlap_are_refused_when_resolving():
    index = MemoryIndex({"m": {"tags": "get m", "variations": {"x": {}, "y": {}}},
                         "app": {"tags": "app", "variations": {"x": {}, "y": {}},
                                 "deps": [{"name": "m", "query": "get m _x", "when": "_x"},
                                          {"name": "m", "query": "get m _y", "when": "_y"}]}})
    assert [n.label for n in resolve(index, "app _y").nodes] == ["m _y", "app _y"]
    with pytest.raises(MlrunError, match="two deps named 'm' are both taken"):
        resolve(index, "app _x _y")


def test_unnamed_deps_selecting_one_recipe_twice_are_refused():
    index = MemoryIndex({"m": {"tags": "get m", "variations": {"x": {}}},
                         "app": {"tags": "app", "deps": ["get m", "get m _x"]}})
    with pytest.raises(MlrunError, match="two deps named 'm' are both taken"):
        resolve(index, "app")


def test_conditions_that_can_hold_are_accepted():
    index = MemoryIndex({"m": {"tags": "get m"},
                         "app": {"tags": "app", "inputs": {"n": {"type": "int", "default": 3},
                                                           "f": {"type": "bool", "default": False},
                                                           "s": {"default": "zoo:x"}},
                                 "deps": [{"query": "get m", "when": "n=3 f=false s=zoo:* !s="}]}})
    assert [n.name for n in resolve(index, "app").nodes] == ["m", "app"]


# -- the recipe folder ------------------------------------------------------------------------


def test_fifo_in_a_recipe_folder_is_a_recipe_error(ws):
    _write(ws, "tags: a\nrun: echo hi\n", "a")
    fifo = os.path.join(ws.recipes, "a", "pipe")
    os.mkfifo(fifo)
    for args in (["find"], ["a"]):
        assert_user_error(ws.mlrun(*args, timeout=30), 2, fifo, "FIFO")


def test_fifo_as_recipe_yaml_is_a_recipe_error(ws):
    os.makedirs(os.path.join(ws.recipes, "a"))
    os.mkfifo(os.path.join(ws.recipes, "a", "recipe.yaml"))
    assert_user_error(ws.mlrun("find", timeout=30), 2, "recipe.yaml", "FIFO")


def _digest(ws, name):
    return next(r["digest"] for r in ws.index().recipes if r["name"] == name)


def test_files_behind_a_link_to_a_folder_are_in_the_digest(ws, tmp_path):
    """os.walk did not go into a linked tools/ folder: an edit there reused the entry built before it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "s.sh").write_text("echo v1\n")
    _write(ws, "tags: a\nrun: bash {recipe}/tools/s.sh > out.txt\n", "a")
    os.symlink(shared, os.path.join(ws.recipes, "a", "tools"))
    before = _digest(ws, "a")
    (shared / "s.sh").write_text("echo v2\n")
    assert _digest(ws, "a") != before
    os.symlink("..", os.path.join(ws.recipes, "a", "up"))   # a loop: said, not walked for ever
    assert_user_error(ws.mlrun("find", timeout=30), 2, os.path.join(ws.recipes, "a", "up"),
                      "is a link to a folder it is in (a loop)")


def test_editor_leftovers_and_version_control_folders_are_not_in_the_digest(ws):
    _write(ws, "tags: a\nrun: echo hi\n", "a")
    before = _digest(ws, "a")
    for name in (".recipe.yaml.swp", "run.sh~", ".#run.sh", "#run.sh#", ".DS_Store", ".git/HEAD"):
        ws.write(os.path.join(ws.recipes, "a", name), "x")
    assert _digest(ws, "a") == before
    ws.write(os.path.join(ws.recipes, "a", "run.sh"), "x")   # any other file counts
    assert _digest(ws, "a") != before


def test_a_recipe_yaml_deeper_in_a_recipe_folder_is_one_of_its_files_not_a_recipe(ws):
    """DIR/tool/vendor/recipe.yaml (a vendored tool's own, not mlrun's) was loaded as a recipe, and its
    unknown keys stopped every command."""
    _write(ws, "tags: tool\nrun: echo hi\n", "tool")
    before = _digest(ws, "tool")
    ws.write(os.path.join(ws.recipes, "tool", "vendor", "recipe.yaml"), "package: {name: foo}\n")
    assert [r["name"] for r in ws.index().recipes] == ["tool"]
    assert _digest(ws, "tool") != before   # a file the step may read, like any other


def test_a_recipe_folder_given_twice_is_read_once(ws):
    _write(ws, "tags: a\nrun: echo hi\n", "a")
    result = ws.mlrun("--recipes", ws.recipes, "--recipes", ws.recipes + "/", "plan", "a")
    assert result.returncode == 0, result.stderr   # was 'recipe a 0 is also defined in' the same file
    assert_user_error(ws.mlrun("--recipes", os.path.join(ws.recipes, "a", "recipe.yaml"), "plan", "a"), 2,
                      "recipe.yaml is not a folder")


@pytest.mark.parametrize("make,fragment", [
    (lambda p: os.mkdir(p), "is a folder, not a regular file"),
    (lambda p: os.symlink("gone.yaml", p), "a symbolic link to nothing"),
    (lambda p: os.symlink("/dev/null", p), "not a regular file"),
], ids=["folder", "dangling-link", "device"])
def test_recipe_yaml_that_is_no_file_does_not_vanish(ws, make, fragment):
    _write(ws, "tags: b\n", "b")
    os.makedirs(os.path.join(ws.recipes, "a"))
    path = os.path.join(ws.recipes, "a", "recipe.yaml")
    make(path)
    assert_user_error(ws.mlrun("find", timeout=30), 2, path, fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--count=0"], "app-mlperf-bert: --count=0 is below 1, the least value it takes"),
    (["--batch_size=0"], "app-mlperf-bert: --batch_size=0 is below 1"),
    (["--threads=100000000"], "--threads=100000000 is above 4096, the most it takes"),   # 12 GB in 30 s, silent
    (["--count=10834"], "--count=10834 is above 10833, the most it takes"),   # SQuAD's features: failed in the step
    (["--model=/tmp"], "app-mlperf-bert: --model: /tmp is a folder, not a file"),   # hashed whole first: minutes
    (["--user_conf=/tmp"], "app-mlperf-bert: --user_conf: /tmp is a folder, not a file"),   # failed in the step
    (["--model=/dev/null"], "--model: /dev/null is not a regular file (a device, a pipe or a socket)\n"),   # ", not a file"
    (["--min_duration=-5"], "app-mlperf-bert: --min_duration=-5 is below 0"),
    (["--target_qps=-1"], "app-mlperf-bert: --target_qps=-1 is not above 0"),      # LoadGen ran it at 1 QPS, VALID
    (["--scenario=SingleStream", "--target_latency=0"], "--target_latency=0 is not above 0"),   # LoadGen: OOM
    (["--target_qps=nan"], "input 'target_qps' expects a float, got 'nan'"),
    (["--dep.model.layers=0"], "get-ml-model-bert: --dep.model.layers=0 is below 1"),   # built a model of no layers
    (["--dep.model.ffn=-3"], "get-ml-model-bert: --dep.model.ffn=-3 is below 0"),   # as typed, not --ffn=-3
    (["--dep.model.hidden=100"], "get-ml-model-bert: --dep.model.hidden=100 is not a multiple of --heads=12"),
    (["--buckets=500"], "--buckets=500 is not of the form the input takes\nhint: sequence lengths:"),
    # Flags that apply only with some choices (the harness refused them after every build, exit 1):
    (["--scenario=SingleStream", "--target_qps=5"],
     "--target_qps applies only with --scenario other than SingleStream or MultiStream"),
    (["--target_latency=50"], "--target_latency applies only with --scenario other than Offline"),
    (["--scenario=Server", "--find_peak", "--target_qps=5"],
     "--find_peak applies only with no --target_qps"),   # only what does not hold (--scenario=Server was given)
    (["--scenario=Server", "--streams=2"], "--streams applies only with _deepsparse\n"),
    # the rule of the value that fails (was: every precision rule, '(_cuda or ...) and (... or --precision=tf32)')
    (["--precision=fp16"], "--precision=fp16 applies only with _tensorrt or _tensorrt-ep\n"),
    (["--buckets=128;256"], "--buckets=128;256 is not of the form the input takes"),
    (["--model=zoo:"], "app-mlperf-bert: --model=zoo: is not of the form the input takes"),   # failed in its step
])
def test_the_benchmark_refuses_values_out_of_range_or_place_before_anything_runs(tmp_path, args, fragment):
    """Before, these ran: after the builds the harness refused some (exit 1), others ran something else than
    asked or were killed for memory. Now the plan refuses them, exit 2, with an empty cache and no run."""
    from conftest import offline_mlrun
    mlrun = offline_mlrun(tmp_path)
    result = mlrun("app mlperf bert _onnxruntime _cpu _random", "--mode=performance", *args, timeout=60)
    assert_user_error(result, 2, fragment)
    assert not (tmp_path / "cache").exists() or not any(p for p in (tmp_path / "cache").iterdir()
                                                        if not p.name.startswith("."))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("backend", ["_deepsparse", "_tensorrt"])
def test_engine_backends_refuse_exact_lengths_before_their_venv_and_engines(tmp_path, backend):
    """It was refused by the harness (the engine builder), after the venv and the model were built."""
    from conftest import offline_mlrun
    mlrun = offline_mlrun(tmp_path)
    result = mlrun(f"app mlperf bert {backend} _random", "--buckets=exact", timeout=60)
    # the rule that fails, said as what the value needs (was: all three backends' rules, as alternatives)
    assert_user_error(result, 2, f"--buckets=exact cannot go with {backend}\n", "not _deepsparse, _tensorrt or")
    assert not (tmp_path / "runs").exists()


def test_the_buckets_pattern_takes_what_the_harness_takes():
    """The app's --buckets pattern (checked at resolution) takes only what seq_plan.parse_buckets (the harness)
    takes, and refuses all it refuses: the same range. (The parser also takes +5 and 1_0, as int() does; the
    pattern, ASCII digits only. Editing seq_plan.py would rebuild every model entry, whose recipes run it.)"""
    import yaml

    from conftest import ROOT
    from engine.recipe import pattern_matches
    from mlperf_bert.seq_plan import parse_buckets
    pattern = yaml.safe_load(open(os.path.join(ROOT, "recipes", "app-mlperf-bert", "recipe.yaml")))[
        "inputs"]["buckets"]["pattern"]
    values = ["auto", "exact", "384", "1", "9", "10", "99", "100", "199", "299", "379", "380", "384", "385", "400",
              "999", "0", "00", "0128", "128,256", " 64 , 128", "1,2,3", "128,", ",128", "128,,256", "128;256",
              "abc", "", "-5", "+5", "1_0", "\u0663", "1e2", "128,385", "Auto", "exact,128"] + [str(n) for n in range(0, 400, 7)]
    for value in values:
        try:
            parse_buckets(value)
            taken = True
        except MlrunError:
            taken = False
        assert pattern_matches(pattern, value) == taken or value in ("+5", "1_0", "\u0663"), value


def test_a_dep_input_a_parent_passed_and_a_cached_recipe_on_an_uncached_dep_name_the_file_and_line(ws):
    """'child: input 'size' expects an int, got 'fast'' named neither the parent nor its line; the refusal of a
    cached recipe on a cache: false dep had no file:line, though recipes.md lists it among those refused so."""
    ws.recipe("child", "tags: [get, child]\ninputs:\n  size: {type: int, default: 1}\nrun: 'true'\n")
    ws.recipe("parent", "tags: [app, parent]\ncache: false\ninputs:\n  mode: {default: fast}\n"
                        "deps:\n  - {name: child, query: get child, inputs: {size: '{input.mode}'}}\nrun: 'true'\n")
    parent = os.path.join(ws.recipes, "parent", "recipe.yaml")
    assert_user_error(ws.mlrun("plan", "app parent"), 2, "child: input 'size' expects an int, got 'fast' (passed by "
                      f"parent's dep 'child' as {{input.mode}}: {parent}:6)")
    ws.recipe("y", "tags: [get, y]\ncache: false\nexports: {Y: '{entry}/y'}\nrun: 'true'\n")
    ws.recipe("x", "tags: [get, x]\ndeps:\n  - get child\n  - {name: why, query: get y}\nrun: 'true'\n")
    assert_user_error(ws.mlrun("plan", "get x"), 2, f"{os.path.join(ws.recipes, 'x', 'recipe.yaml')}:4: x is cached "
                      "but its dep 'why' (y) is not (cache: false)")


def test_two_recipes_of_one_name_at_versions_pep440_holds_equal_are_refused(ws):
    """1.0 and 1.0.0 are one version: one of the two was taken without a word."""
    ws.recipe("a", "name: vv\nversion: '1.0'\ntags: [get, vv]\nrun: 'true'\n")
    ws.recipe("b", "name: vv\nversion: '1.0.0'\ntags: [get, vv]\nrun: 'echo'\n")
    assert_user_error(ws.mlrun("plan", "get vv"), 2, "recipe vv 1.0.0 is also defined in",
                      "(as version 1.0, the same)")

