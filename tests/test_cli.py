"""The CLI through its real entry point bin/mlrun: exit codes, messages, every verb."""
import json
import re
import os

import pytest

from conftest import assert_user_error

VERBS = ("run", "plan", "show", "rm", "cache", "find", "explain", "mirror")


def one_paragraph(result, code, *fragments):
    """exit code, `mlrun: error: ...` plus at most a hint line, no traceback."""
    err = assert_user_error(result, code, *fragments)
    lines = err.strip().splitlines()
    assert lines[0].startswith("mlrun: error: "), err
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), err
    return err


def status_lines(stderr):
    """{label: status word} from the runner's `[i/n] label   status ...` lines."""
    out = {}
    for line in stderr.splitlines():
        if line.startswith("["):
            rest = line.split("] ", 1)[1]
            label, status = rest[:48].strip(), rest[48:].split()[0]
            out[label] = status
    return out


@pytest.fixture
def app(ws, tmp_path):
    """app -> model (variations) -> python; steps write files and a marker of what ran."""
    ran = tmp_path / "ran"
    ws.recipe("python", f"""\
        tags: get python
        version: "3.11.9"
        exports: {{PY_HOME: "{{entry}}"}}
        run: echo python >> {ran}; echo py > py.txt
        """)
    ws.recipe("model", f"""\
        description: a model
        tags: get ml-model bert
        deps: [{{name: python, query: get python}}]
        inputs:
          layers: {{type: int, default: 2}}
        variations:
          fp32: {{group: precision, default: true, env: {{PREC: fp32}}}}
          int8: {{group: precision, env: {{PREC: int8}}}}
        exports: {{MODEL: "{{entry}}/model.txt"}}
        run: echo model >> {ran}; echo "$PREC $MLRUN_INPUT_LAYERS" > model.txt
        """)
    ws.recipe("app", f"""\
        tags: app mlperf bert
        deps: [{{name: model, query: get ml-model bert}}]
        inputs:
          count: {{type: int, default: 3, help: how many queries}}
          mode: {{default: performance, choices: [performance, accuracy]}}
        variations:
          cpu: {{group: device, default: true}}
          cuda: {{group: device}}
          batch_size.#: {{env: {{BATCH: "{{value}}"}}}}
        exports: {{RESULT: "{{entry}}/result.txt"}}
        run: echo app >> {ran}; echo "$(cat $MODEL) $MLRUN_INPUT_COUNT ${{BATCH:-1}} ${{GREETING:-}}" > result.txt
        """)
    ws.ran = ran
    return ws


def ran(ws):
    return ws.ran.read_text().split() if ws.ran.exists() else []


# -- help ---------------------------------------------------------------------------------------


def test_help(ws):
    result = ws.mlrun("--help")
    assert result.returncode == 0
    assert "usage: mlrun" in result.stdout and "Exit codes" in result.stdout
    for verb in VERBS:
        assert verb in result.stdout


def test_help_as_a_word_is_the_help_asked_for(ws):
    """`mlrun help` said "no recipe matches 'help'"; now it is `mlrun --help`, and `mlrun help WHAT` is
    `mlrun WHAT --help` (a verb's, a query's)."""
    assert ws.mlrun("help").stdout == ws.mlrun("--help").stdout
    shown = ws.mlrun("help", "plan")
    assert shown.returncode == 0 and shown.stdout == ws.mlrun("plan", "--help").stdout
    assert ws.mlrun("--cache", "C", "help", "sweep").stdout.startswith("usage: mlrun sweep")
    # a misspelt verb: said as `mlrun pln x` says it (was "no recipe matches 'pln'")
    assert_user_error(ws.mlrun("help", "pln"), 2, "unknown verb 'pln' (did you mean plan?)")
    # the help of plan and explain says what they take beside QUERY, find's QUERY picks recipes, show's entries
    for verb in ("plan", "explain"):
        assert "--dep.NAME.INPUT=VALUE" in ws.mlrun(verb, "--help").stdout
    assert "only recipes whose tags" in ws.mlrun("find", "--help").stdout
    assert "show cache QUERY: only the entries" in ws.mlrun("show", "--help").stdout


@pytest.mark.parametrize("verb", VERBS)
def test_help_of_each_verb(ws, verb):
    result = ws.mlrun(verb, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: mlrun {verb}")
    assert "--cache DIR" in result.stdout


def test_no_verb_prints_help_and_exits_2(ws):
    result = ws.mlrun()
    assert result.returncode == 2
    assert "usage: mlrun" in result.stdout


@pytest.mark.parametrize("argv", [["plan", "app"], ["--cache", "C", "plan", "app"], ["-v", "--runs=R", "show", "cache"],
                                  ["--cache", "C", "app", "--help"], ["find", "app"]])
def test_a_verb_loads_only_its_own_modules(app, argv):
    """Every mlrun command pays its start-up: a verb must not import the sweep, report and submission modules
    (they took 60 % of `mlrun plan`'s 0.3 s), wherever the global options put the verb."""
    import subprocess
    import sys
    from conftest import ROOT
    argv = [str(app.path(a)) if a in ("C", "R") else a for a in argv]
    code = ("import sys; from engine.cli import main; main(sys.argv[1:]);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sweeps', 'submission')))")
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=app.env(), capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_the_whole_parser_still_has_the_sweep_and_submission_verbs(ws):   # `mlrun --help`
    result = ws.mlrun("--help")
    assert result.returncode == 0 and "  sweep " in result.stdout and "  submit " in result.stdout, result.stdout
    for verb in ("sweep", "submit"):
        shown = ws.mlrun(verb, "--help")
        assert shown.returncode == 0 and ("--grid" if verb == "sweep" else "--scenarios") in shown.stdout, shown.stdout


# -- running ----------------------------------------------------------------------------------------


def test_run_builds_then_reports_cached(app):
    first = app.mlrun("app _batch_size.8", "--count=5")
    assert first.returncode == 0, first.stderr
    assert status_lines(first.stderr) == {"python": "built", "model _fp32": "built",
                                          "app _cpu _batch_size.8": "built"}
    root_line, export_line = first.stdout.strip().splitlines()[-2:]
    label, path = root_line.split(": ")
    assert label == "app _cpu _batch_size.8" and os.path.dirname(path) == app.cache
    assert export_line == f"  RESULT={path}/result.txt"
    assert open(os.path.join(path, "result.txt")).read() == "fp32 2 5 8 \n"
    second = app.mlrun("app _batch_size.8", "--count=5")
    assert second.returncode == 0, second.stderr
    assert set(status_lines(second.stderr).values()) == {"cached"}
    assert second.stdout.strip().splitlines()[-2:] == [root_line, export_line]
    assert ran(app) == ["python", "model", "app"]


def test_run_json_and_env_override(app):
    result = app.mlrun("run", "app", "--json", "--env.GREETING=hi")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [s["status"] for s in out["steps"]] == ["built", "built", "built"]
    assert out["exports"]["RESULT"] == os.path.join(out["path"], "result.txt")
    assert open(out["exports"]["RESULT"]).read() == "fp32 2 3 1 hi\n"
    assert os.path.isfile(os.path.join(out["run_dir"], "run.json"))


def test_env_override_is_part_of_every_key(app):
    """A build made with --env.K=V is never reused without it, nor the other way round."""
    plain = json.loads(app.mlrun("plan", "app", "--json").stdout)["nodes"]
    changed = json.loads(app.mlrun("plan", "app", "--json", "--env.GREETING=hi").stdout)["nodes"]
    assert all(a["key"] != b["key"] for a, b in zip(plain, changed))
    assert app.mlrun("app", "--env.GREETING=hi").returncode == 0
    again = app.mlrun("app")
    assert set(status_lines(again.stderr).values()) == {"built"}


def test_global_options_before_the_verb_or_query(app, tmp_path):
    moved = str(tmp_path / "elsewhere")
    env = {k: v for k, v in app.env().items() if k != "MLRUN_CACHE"}
    assert app.mlrun("--cache", moved, "app", env=env).returncode == 0
    shown = app.mlrun("--cache", moved, "show", "cache", "--json", env=env)
    assert shown.returncode == 0 and {e["recipe"] for e in json.loads(shown.stdout)} == {"app", "model", "python"}
    assert app.mlrun("-v", "--cache", moved, "plan", "app", env=env).returncode == 0


def test_unnamed_dep_answers_to_its_recipe_name(ws):
    ws.recipe("lib", "tags: lib\nvariations: {a: {group: g, default: true}, b: {group: g}}\n")
    ws.recipe("top", "tags: top\ndeps: [lib]\n")
    result = ws.mlrun("plan", "top", "--json", "--dep.lib.tags=_b")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["variations"] == ["b"]


def test_root_output_is_live_and_verbose_shows_every_step(ws):
    ws.recipe("dep", "tags: dep\nrun: echo hello from dep\n")
    ws.recipe("top", "tags: top\ndeps: [dep]\nrun: echo hello from top\n")
    quiet = ws.mlrun("top")
    assert quiet.returncode == 0, quiet.stderr
    assert "hello from top" in quiet.stdout and "hello from dep" not in quiet.stdout + quiet.stderr
    assert ws.mlrun("rm", "cache", "--all", "-y").returncode == 0
    loud = ws.mlrun("top", "-v")
    assert "hello from dep" in loud.stdout and "hello from top" in loud.stdout
    as_json = ws.mlrun("top", "--json")   # JSON only on stdout
    assert json.loads(as_json.stdout)["steps"][-1]["status"] == "cached"


def test_dep_overrides(app):
    result = app.mlrun("plan", "app", "--json", "--dep.model.tags=_int8", "--dep.model.layers=4")
    assert result.returncode == 0, result.stderr
    model = next(n for n in json.loads(result.stdout)["nodes"] if n["name"] == "model")
    assert model["variations"] == ["int8"] and model["inputs"] == {"layers": 4}
    built = app.mlrun("app", "--dep.model.tags=_int8", "--dep.model.layers=4")
    assert built.returncode == 0, built.stderr
    assert "model _int8" in status_lines(built.stderr)
    one_paragraph(app.mlrun("app", "--dep.modle.tags=_int8"), 2, "--dep.modle.* names no dependency")
    one_paragraph(app.mlrun("app", "--dep.model.tags=_int4"), 2, "recipe model has no variation '_int4'")
    one_paragraph(app.mlrun("app", "--dep.python.version=>=3.12"), 2,
                  "no recipe for 'get python' satisfies version >=3.12 (found: python 3.11.9)")


def test_failed_build(ws):
    ws.recipe("dep", "tags: dep\nrun: echo dep > dep.txt\n")
    ws.recipe("bad", """\
        tags: bad
        deps: [dep]
        run: |
          for i in $(seq 1 40); do echo "noise $i"; done
          echo "disk full: cannot write weights" >&2
          exit 7
        """)
    result = ws.mlrun("bad")
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert "Traceback" not in err
    assert "mlrun: error: step bad failed: exited with code 7" in err
    failed_dir = os.path.join(ws.cache, ".failed")
    [kept] = os.listdir(failed_dir)
    log = os.path.join(failed_dir, kept, "build.log")
    assert f"log: {log}" in err and f"hint: full log: {log}" in err
    assert "disk full: cannot write weights" in err and "noise 40" in err and "noise 5\n" not in err
    assert [e.rsplit("-", 1)[0] for e in ws.entries()] == ["dep"]   # the failed node published nothing
    shown = ws.mlrun("show", "failed")
    assert shown.returncode == 0
    assert log in shown.stdout and "disk full: cannot write weights" in shown.stdout
    assert json.loads(ws.mlrun("show", "failed", "--json").stdout) == [{"log": log, "kind": "failed"}]
    assert "bad" not in ws.mlrun("show", "cache").stdout


def test_show_failed_escapes_the_control_characters_of_a_step_s_log(ws):
    """The log was written to the terminal as the step left it: its escape sequences cleared the screen and
    retitled the window, as the FAILED tail (escaped) does not."""
    ws.recipe("ctl", "tags: ctl\nrun: printf 'a\\033[2Jb\\033]0;title\\007c\\tx\\rz\\n'; exit 3\n")
    assert ws.mlrun("ctl").returncode == 1
    shown = ws.mlrun("show", "failed").stdout
    assert "a\\x1b[2Jb\\x1b]0;title\\x07c\tx\nz\n" in shown and "\x1b" not in shown, shown


# -- errors: exit 2, one paragraph, no traceback -----------------------------------------------------


def test_no_match_shows_closest_tags(app):
    one_paragraph(app.mlrun("get ml-modle bert"), 2, "no recipe matches 'get ml-modle bert'",
                  "did you mean ml-model")


def test_several_matches_are_listed(app):
    one_paragraph(app.mlrun("bert"), 2, "'bert' matches 2 recipes", "model (tags: get ml-model bert)",
                  "app (tags: app mlperf bert)")


def test_unknown_variation(app):
    one_paragraph(app.mlrun("app _tpu"), 2, "recipe app has no variation '_tpu'", "_cpu, _cuda, _batch_size.#")


def test_two_variations_of_one_group(app):
    one_paragraph(app.mlrun("app _cpu _cuda"), 2, "are both in group 'device'")


def test_cycle_prints_its_path(ws):
    ws.recipe("a", "tags: a\ndeps: [b]\n")
    ws.recipe("b", "tags: b\ndeps: [a]\n")
    one_paragraph(ws.mlrun("a"), 2, "dependency cycle: a -> b -> a")
    one_paragraph(ws.mlrun("plan", "b"), 2, "dependency cycle: b -> a -> b")


def test_same_recipe_at_two_versions(ws):
    ws.recipe("py311", "name: python\nversion: '3.11.9'\ntags: get python\n")
    ws.recipe("py312", "name: python\nversion: '3.12.1'\ntags: get python\n")
    ws.recipe("old", "tags: old\ndeps: [{query: get python, version: '<3.12'}]\n")
    ws.recipe("app", "tags: app\ndeps: [old, get python]\n")
    one_paragraph(ws.mlrun("app"), 2, "python is needed at two versions in one graph: 3.11.9", "3.12.1")


def test_bad_inputs_and_arguments(app):
    one_paragraph(app.mlrun("app", "--cuont=3"), 2, "app has no input --cuont", "--count, --mode")
    one_paragraph(app.mlrun("app", "--count=many"), 2, "input 'count' expects an int, got 'many'")
    one_paragraph(app.mlrun("app", "--mode=fast"), 2, "--mode=fast is not one of performance, accuracy")
    one_paragraph(app.mlrun("app", "stray"), 2, "unexpected argument 'stray'")
    one_paragraph(app.mlrun("app _batch_size"), 2, "needs a value, like _batch_size.8")
    one_paragraph(app.mlrun("find", "app", "--count=3"), 2, "unexpected argument(s) for 'find'")
    assert ran(app) == []


@pytest.mark.parametrize("text,line,fragment", [
    ("tags: x\nvariations:\n  a: {}\n  b:\n    colour: red\n", 5, "unknown key 'colour' in variation 'b'"),
    ("tags: x\ninputs:\n  n:\n    type: int\n    default: [1]\n", 5, "input 'n' expects an int"),
    ("tags: x\ndeps:\n  - get python\n  - get ml-model bert _int4\n", 4, "has no variation '_int4'"),
    ("tags: x\nenv:\n  A: 1\n   B: 2\n", 4, "YAML syntax error"),
], ids=["unknown-key", "wrong-type", "dep-unknown-variation", "yaml-syntax"])
def test_recipe_errors_name_file_and_line(app, text, line, fragment):
    path = app.recipe("broken", "")
    with open(path, "w") as f:
        f.write(text)
    for args in (("app",), ("find",), ("plan", "app")):
        one_paragraph(app.mlrun(*args), 2, f"mlrun: error: {path}:{line}: ", fragment)
    assert ran(app) == []


# -- plan, find, explain ------------------------------------------------------------------------------


def test_plan_runs_nothing(app):
    result = app.mlrun("plan", "app _cuda", "--count=4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plan for 'app _cuda': 3 nodes, 0 cached, 3 to run"
    assert lines[1].startswith("app _cuda 0 [") and lines[1].endswith("build  --count=4 --mode=performance")
    assert lines[2].startswith("  model _fp32 0 [") and lines[2].endswith("build  --layers=2")
    assert lines[3].startswith("    python 3.11.9 [") and lines[3].endswith("build")
    assert ran(app) == [] and app.entries() == []
    assert not os.path.exists(app.runs)
    app.recipe("flagged", "tags: flagged\ninputs:\n  fast: {type: bool, default: false}\n")
    assert app.mlrun("plan", "flagged").stdout.splitlines()[1].endswith("build  --fast=false")   # as typed, not False
    as_json = json.loads(app.mlrun("plan", "app _cuda", "--json").stdout)
    assert [n["status"] for n in as_json["nodes"]] == ["build"] * 3
    assert app.entries() == []
    app.mlrun("get python")
    assert "1 cached, 2 to run" in app.mlrun("plan", "app").stdout


def test_find(app):
    result = app.mlrun("find")
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")] == \
        ["app", "model", "python"]
    one = app.mlrun("find", "app").stdout
    assert "variations [device, one of]: _cpu (default), _cuda" in one
    assert "_batch_size.#" in one and "--count (int, default 3)" in one and "how many queries" in one
    assert "dep model: 'get ml-model bert'" in one
    found = json.loads(app.mlrun("find", "bert _int8", "--json").stdout)
    assert [r["name"] for r in found] == ["model"]
    one_paragraph(app.mlrun("find", "nothing-like-this"), 2, "no recipe matches 'nothing-like-this'")
    assert ran(app) == []


@pytest.mark.slow   # over 2 s on the EPYC
def test_explain_names_what_differs(app):
    assert app.mlrun("app", "--count=3").returncode == 0
    out = app.mlrun("explain", "app", "--count=4").stdout
    assert "python: cached" in out and "model _fp32: cached" in out
    assert "app _cpu: build" in out and "inputs.count: 3 -> 4" in out
    out = app.mlrun("explain", "app _cuda").stdout
    assert 'variations: ["cpu"] -> ["cuda"]' in out
    out = app.mlrun("explain", "app", "--dep.model.tags=_int8").stdout
    assert "model _int8: build" in out and "env.PREC" in out and "variations" in out
    assert "(a dependency's key changed, see above)" in out
    # by name and key (the list of all deps, cut, showed the same start on both sides)
    assert re.search(r"deps\.model: \"[0-9a-f]{64}\" -> \"[0-9a-f]{64}\"  \(a dependency.s key changed", out), out
    report = json.loads(app.mlrun("explain", "app", "--count=4", "--json").stdout)
    assert report[-1]["differences"] == [{"field": "inputs.count", "entry": 3, "now": 4}]
    fresh = app.mlrun("explain", "get python", "--cache", app.path("empty-cache")).stdout
    assert "no entry of python in the cache yet" in fresh
    # A file beside the recipe changed: named (was only the recipe_digest's two values)
    app.write(os.path.join(app.recipes, "python", "setup.sh"), "echo one\n")
    assert app.mlrun("get python").returncode == 0
    app.write(os.path.join(app.recipes, "python", "setup.sh"), "echo two\n")
    app.write(os.path.join(app.recipes, "python", "extra.txt"), "x\n")
    out = app.mlrun("explain", "get python").stdout
    assert "(recipe files changed: setup.sh; added: extra.txt)" in out, out
    # recipe.yaml itself: said so (two digests alone said not what)
    assert app.mlrun("get python").returncode == 0
    path = os.path.join(app.recipes, "python", "recipe.yaml")
    app.write(path, open(path).read() + "\n# edited\nenv: {EDITED: '1'}\n")
    out = app.mlrun("explain", "get python").stdout
    assert "(recipe files the same: recipe.yaml changed, or a source it names)" in out, out


# -- the cache verbs ----------------------------------------------------------------------------------


@pytest.mark.slow   # over 2 s on the EPYC
def test_show_cache(app):
    assert "no cache entries" in app.mlrun("show", "cache").stdout
    assert app.mlrun("app _batch_size.8").returncode == 0
    assert app.mlrun("get ml-model bert _int8").returncode == 0
    table = app.mlrun("show", "cache").stdout.splitlines()
    assert table[0].split() == ["RECIPE", "VARIATIONS", "DETAILS", "KEY", "SIZE", "AGE", "PATH"]
    assert table[-1].startswith("4 entries")
    assert sorted(row.split()[0] for row in table[1:-1]) == ["app", "model", "model", "python"]
    models = json.loads(app.mlrun("show", "cache", "ml-model", "--json").stdout)
    assert sorted(m["variations"][0] for m in models) == ["fp32", "int8"]
    [int8] = json.loads(app.mlrun("show", "cache", "model _int8", "--json").stdout)
    assert int8["recipe"] == "model" and int8["inputs"] == {"layers": 2} and os.path.isdir(int8["path"])
    [bs] = json.loads(app.mlrun("show", "cache", "_batch_size", "--json").stdout)
    assert bs["variations"] == ["cpu", "batch_size.8"]
    # a word no recipe has is a typo, as find and plan say (it listed nothing, exit 0)
    assert_user_error(app.mlrun("show", "cache", "nothing", "--json"), 2, "no recipe has 'nothing'")
    assert_user_error(app.mlrun("rm", "cache", "get ml-modle", "-y"), 2, "no recipe has 'ml-modle': nothing removed",
                      "near it: ml-model")
    # A word that is no recipe's tag: the entries' tags near it (inside one, or a typo away), for show and rm alike.
    assert_user_error(app.mlrun("show", "cache", "ml"), 2, "hint: near it: ml-model, mlperf")
    assert_user_error(app.mlrun("rm", "cache", "bret"), 2, "hint: near it: bert")
    assert "hint: mlrun find lists the recipes' tags" in app.mlrun("show", "cache", "nothing").stderr
    assert_user_error(app.mlrun("show", "cache", "model _in8"), 2, "no recipe has '_in8'", "near it: _int8")
    assert_user_error(app.mlrun("rm", "cache", "_in8", "-y"), 2, "near it: _int8")
    assert len(app.entries()) == 4


@pytest.mark.slow   # over 0.75 s on the EPYC
def test_rm_cache(app):
    assert app.mlrun("app").returncode == 0
    assert app.mlrun("get ml-model bert _int8").returncode == 0
    before = app.entries()
    # Not a terminal and no -y: refuse, remove nothing.
    one_paragraph(app.mlrun("rm", "cache", "model"), 2, "2 entries would be removed; pass -y")
    assert app.entries() == before
    result = app.mlrun("rm", "cache", "model _int8", "-y")
    assert result.returncode == 0 and "removed 1 entry\n" in result.stdout
    assert len(app.entries("model")) == 1 and len(app.entries()) == 3
    assert "nothing to remove" in app.mlrun("rm", "cache", "model _int8", "-y").stdout
    one_paragraph(app.mlrun("rm", "cache"), 2, "say which entries")
    one_paragraph(app.mlrun("rm", "cache", "x", "--all", "-y"), 2, "not both")   # it said "say which entries"
    rebuilt = app.mlrun("app")
    assert set(status_lines(rebuilt.stderr).values()) == {"cached"}
    assert app.mlrun("rm", "cache", "--all", "-y").returncode == 0
    assert app.entries() == []


def test_rm_never_deletes_outside_the_cache(app, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    assert app.mlrun("get python", env=app.env(MLRUN_CACHE=elsewhere)).returncode == 0
    [outside] = [e for e in os.listdir(elsewhere) if e.startswith("python-")]
    os.makedirs(app.cache)
    os.symlink(elsewhere / outside, os.path.join(app.cache, outside))
    one_paragraph(app.mlrun("rm", "cache", "python", "-y"), 2, "refusing to delete")
    assert os.path.isfile(elsewhere / outside / "py.txt")


def test_cache_verify_detects_a_changed_byte(app):
    assert app.mlrun("app").returncode == 0
    ok = app.mlrun("cache", "verify")
    assert ok.returncode == 0 and "3 entries checked, 0 corrupt" in ok.stdout
    [model] = app.entries("model")
    path = os.path.join(app.cache, model, "model.txt")
    data = bytearray(open(path, "rb").read())
    data[0] ^= 1
    with open(path, "wb") as f:
        f.write(data)
    bad = app.mlrun("cache", "verify")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"CORRUPT cache/{model}" in bad.stdout or f"CORRUPT {os.path.join(app.cache, model)}" in bad.stdout
    assert "changed: model.txt" in bad.stdout and "1 corrupt" in bad.stdout
    assert json.loads(app.mlrun("cache", "verify", "--json").stdout)["bad"][0]["problems"] == ["changed: model.txt"]
    assert app.mlrun("rm", "cache", "model", "-y").returncode == 0
    assert app.mlrun("app").returncode == 0
    assert app.mlrun("cache", "verify").returncode == 0


def test_a_cache_or_runs_place_that_is_a_file_and_a_folder_given_to_import(ws):
    """gc --dry-run and plan said nothing wrong (exit 0); import published entries, then failed on the runs
    'folder'; `import DIR` said 'no such file'."""
    a_file = ws.write(ws.path("afile"), "x")
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    for args, env in ((("gc", "--dry-run"), {"MLRUN_CACHE": a_file}), (("plan", "a"), {"MLRUN_CACHE": a_file}),
                      (("runs",), {"MLRUN_RUNS": a_file})):
        what = "cache" if "MLRUN_CACHE" in env else "runs"
        assert_user_error(ws.mlrun(*args, env=ws.env(**env)), 2, f"the {what} folder {a_file} is not a folder")
    assert_user_error(ws.mlrun("import", ws.root), 2, f"{ws.root} is a folder, not a file", "a bundle is the .tar.gz")


def test_a_double_dash_ends_the_options():
    """`mlrun -- QUERY` said "'--' is not one of run"."""
    from engine.cli import with_verb
    assert with_verb(["--", "get bert vocab"]) == ["run", "get bert vocab"]
    assert with_verb(["--cache", "c", "--", "plan", "x"]) == ["--cache", "c", "plan", "x"]
    assert with_verb(["plan", "--", "x"]) == ["plan", "--", "x"]   # after the verb: argparse's own


def test_a_verbs_option_given_before_the_verb_is_said_so(app):
    """`mlrun --json runs` said "unexpected argument(s) for 'runs': --json (did you mean --json?)"."""
    one_paragraph(app.mlrun("--json", "runs"), 2, "--json is an option of 'runs': give it after the verb")
    one_paragraph(app.mlrun("--json", "app"), 2, "--json is an option of mlrun: give it after the query")
    # with its value apart: the value was taken for the query or the verb ("no recipe matches '2'", "unexpected
    # argument 'app'")
    for argv, said in ((["--jobs", "2", "app"], "--jobs 2 comes before the verb: --jobs is an option of run"),
                       (["--jobs", "1", "plan", "app"], "--jobs 1 comes before the verb: --jobs is an option of run"),
                       (["--count", "3", "plan", "app"],
                        "--count 3 comes before the verb: a recipe's inputs go after")):
        one_paragraph(app.mlrun(*argv), 2, said, "mlrun VERB QUERY")
    # after the query of a verb without it: blamed on the recipe ("has no input --jobs; it accepts: ...")
    one_paragraph(app.mlrun("plan", "app", "--jobs", "2"), 2, "(--jobs is an option of other verbs than 'plan'")


@pytest.mark.parametrize("argv, said", [
    (("runs", "--wher", "scenario=Offline"), "mlrun runs: unknown option --wher (did you mean --where?)"),
    (("runs", "--lst", "3"), "mlrun runs: unknown option --lst (did you mean --last?)"),
    (("export", "x", "--outptu", "x.tgz"), "mlrun export: unknown option --outptu (did you mean --output?)"),
])
def test_a_misspelt_option_before_its_value_is_named_not_its_value(app, argv, said):
    """`runs --wher scenario=Offline` said "'scenario=Offline' is not one of show"; `export --outptu` "needs -o"."""
    one_paragraph(app.mlrun(*argv), 2, said)


def test_a_misspelt_option_is_looked_for_in_the_command_line_parsed(ws, monkeypatch, capsys):
    """In process (a sweep, a test), sys.argv is the caller's: the words looked in are those cli.main parses."""
    from engine import cli
    monkeypatch.setenv("MLRUN_RUNS", ws.runs)
    monkeypatch.setattr("sys.argv", ["pytest", "--dryrun"])   # near gc's --dry-run: no business of this command
    assert cli.main(["runs", "--wher", "x=y"]) == 2
    assert "unknown option --wher (did you mean --where?)" in capsys.readouterr().err
    assert cli.main(["gc", "--older-than"]) == 2   # an error argparse's own parser says (a missing value)
    err = capsys.readouterr().err
    assert "--older-than" in err and "--dryrun" not in err, err
    assert cli.main(["runs", "bogus", "--", "--jsn"]) == 2   # after --, a word is no option to blame
    assert "--jsn (did you mean" not in capsys.readouterr().err


def test_json_output_stays_json_with_verbose_and_a_dead_runs_status_is_said(ws):
    """--json -v: the steps' output came first on stdout (jq: parse error); runs show --json of a SIGKILLed run
    said "running" where the text and the list said died (a poller waited for ever)."""
    ws.recipe("talk", "tags: talk\ncache: false\nrun: echo 'the step talks'\n")
    result = ws.mlrun("talk", "--json", "-v")
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "ok", result.stdout
    assert "the step talks" in result.stderr
    run_id = json.loads(result.stdout)["run"]
    path = os.path.join(ws.runs, run_id, "run.json")
    record = json.load(open(path))
    record.update(status="running", process=dict(record["process"], started=1))   # its mlrun is gone
    json.dump(record, open(path, "w"))
    listed = json.loads(ws.mlrun("runs", "--json", "--all").stdout)[0]["status"]
    assert json.loads(ws.mlrun("runs", "show", run_id, "--json").stdout)["status"] == listed == "died"
    assert_user_error(ws.mlrun("plan", "submit", "app mlperf bert", "--json", "--submitter=T", "--division=open"), 2,
                      "mlrun plan submit prints text only (no --json)")   # it printed text, exit 0


def test_a_runs_folder_given_that_does_not_exist_is_an_error_for_verbs_that_read_it(ws):
    """`--runs /nonexistent runs --json` printed [] and exit 0: a CI job's typo went unseen (--cache said so)."""
    missing = os.path.join(str(ws.root), "no-such-runs")
    for verb in (["runs", "--json"], ["export", "x", "-o", "x.tgz"], ["sweeps", "--json"], ["sweep", "list"],
                 ["sweep", "show", "x"]):
        assert_user_error(ws.mlrun("--runs", missing, *verb), 2, f"the runs folder {missing} does not exist")
    assert not os.path.exists(missing)


@pytest.mark.parametrize("word", ["--env.MLRUN_INPUT_X=5", "--env.MLRUN_ENTRY=/tmp", "--env.MLRUN_RECIPE_DIR=/tmp"])
def test_an_env_override_of_what_mlrun_sets_is_refused(ws, word):
    """A new key, while the step saw the input's or mlrun's own value."""
    ws.recipe("t", "tags: t\ninputs:\n  x: {type: int, default: 1}\nrun: echo $MLRUN_INPUT_X > ok.txt\n")
    assert_user_error(ws.mlrun("t", word), 2, "mlrun sets", "itself for each step")


def test_sweep_subcommands_have_their_own_help(ws):
    """`sweep best --help` listed --grid --jobs --on..., each refused there, and not --y."""
    for sub, has in (("best", "--y FIELD"), ("show", "--where FIELD=VALUE"), ("list", "mlrun sweeps")):
        shown = ws.mlrun("sweep", sub, "--help")
        assert shown.returncode == 0 and has in shown.stdout and "--grid" not in shown.stdout, shown.stdout


def test_small_sayings_of_the_listings(tmp_path):
    """An entry made under a clock ahead: AGE "-96957650s"; an ambiguous prefix of 57 runs listed 5, unsaid."""
    from engine import cli, records
    from engine.errors import MlrunError
    assert cli._age(-1000) == "future" and cli._age(-5) == "0s" and cli._age(90) == "2m"
    for n in range(7):
        (tmp_path / f"20261205-19000{n}-abcd").mkdir()
        (tmp_path / f"20261205-19000{n}-abcd" / "run.json").write_text("{}")
    with pytest.raises(MlrunError, match=r"names 7 runs: .* and 2 more"):
        records.find(str(tmp_path), "20261205-19")


def test_sweep_best_notes_points_too_short_or_under_load_to_rank():
    """0.1 s points under the busy rule's 0.5 CPU-s floor ranked on noise, no note."""
    from sweeps.cli import _best_warnings
    ok = [{"other_load.seconds": 0.1, "other_load.share": 0.43}, {"other_load.seconds": 0.2, "other_load.share": 0.6}]
    notes = _best_warnings(ok[0], {}, ok, "samples_per_second")
    assert any("under a second" in n for n in notes) and any("up to 60% of the CPUs" in n for n in notes), notes
    assert _best_warnings({}, {}, [{"other_load.seconds": 12.0, "other_load.share": 0.05}], "x") == []
