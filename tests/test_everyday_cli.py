"""Everyday use of the CLI (issue 12): finding out what to type, CM's habits, the cache as a person sees it,
mirrors for air-gapped machines, plurals. Through bin/mlrun on tiny recipes: nothing here builds a venv."""
import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import MLRUN, ROOT, assert_user_error, at_a_terminal, wait_for
from engine.version import __version__
from engine.usage import cm_tags
from engine.words import did_you_mean, nearest, plural

PAYLOAD = b"squad-like bytes\n" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def one_line(result, code, *fragments):
    """The error as the project wants it: `mlrun: error: ...` and at most a hint line, no usage dump."""
    err = assert_user_error(result, code, *fragments)
    lines = err.strip().splitlines()
    assert lines[0].startswith("mlrun: error: ") and len(lines) <= 2, err
    assert all(line.startswith("hint: ") for line in lines[1:]), err
    assert "usage:" not in result.stdout + err
    return err


@pytest.fixture
def app(ws):
    """app -> model (alternatives by variation) -> venv-like recipe with a packages input; squad and features."""
    ws.recipe("venv", """\
        tags: get python venv
        inputs:
          python: {default: python3}
          packages: {default: "", help: pinned requirements}
        run: echo "$MLRUN_INPUT_PACKAGES" > packages.txt
        """)
    ws.recipe("model", """\
        tags: get ml-model bert
        inputs:
          layers: {type: int, default: 12, help: encoder layers}
        deps: [{name: python, query: get python venv, inputs: {packages: "numpy==2.3.4 onnx==1.19.1"}}]
        run: echo "$MLRUN_INPUT_LAYERS" > layers.txt
        """)
    ws.recipe("squad", """\
        tags: [get, dataset, squad]
        aliases: [original]
        run: echo squad > dev.json
        """)
    ws.recipe("features", """\
        tags: [get, dataset, squad, features]
        run: echo features > f.txt
        """)
    ws.recipe("app", """\
        description: the benchmark
        tags: app mlperf bert
        cache: false
        inputs:
          count: {type: int, min: 1, default: 3, help: how many queries}
          qps: {type: float, above: 0, when: "scenario!=SingleStream"}
          mode: {default: performance, choices: [performance, accuracy]}
          scenario: {default: Offline, choices: [Offline, SingleStream, Server]}
          spin: {type: bool, help: spin between operators}
        variations:
          cpu: {group: device, default: true}
          cuda: {group: device, description: an NVIDIA GPU}
          int8: {}
        deps:
          - {name: model, query: get ml-model bert, when: "!_int8"}
          - {name: model, query: get ml-model bert, when: "_int8", inputs: {layers: 2}}
          - {name: squad, query: get dataset squad}
        run: echo "$MLRUN_INPUT_MODE $MLRUN_INPUT_SCENARIO" > result.txt
        """)
    return ws


# -- finding out what to type ----------------------------------------------------------------------


def test_the_help_of_sweep_plot_and_plan_submit_is_their_own(app):
    """They printed the generic help of sweep and plan, without --x/--by/-o or the submission's flags."""
    plot = app.mlrun("sweep", "plot", "--help")
    assert plot.returncode == 0 and "--by FIELD" in plot.stdout and "-o FILE.png" in plot.stdout, plot.stdout
    plan = app.mlrun("plan", "submit", "--help")
    assert plan.returncode == 0 and "--submitter=NAME" in plan.stdout, plan.stdout


def test_help_before_the_verb_is_that_verbs_help(app):
    """`mlrun -h runs` printed mlrun's own help with a verb list of one verb, runs (only its parser was built),
    none of its options; it is runs' help now, as `mlrun help runs` gives."""
    for before in (["-h", "runs"], ["--help", "runs"], ["-v", "-h", "runs"]):
        result = app.mlrun(*before)
        assert result.returncode == 0 and result.stdout.startswith("usage: mlrun runs"), result.stdout
        assert "--where FIELD=VALUE" in result.stdout, result.stdout
    assert app.mlrun("-h", "sweep", "show").stdout.startswith("usage: mlrun sweep show NAME")
    for asked in (["-h", "swep"], ["swep", "--help"]):   # `mlrun swep` says so; with a help flag it did not
        one_line(app.mlrun(*asked), 2, "no recipe matches 'swep'", "'swep' is near the verb sweep")
    whole = app.mlrun("-h")
    assert whole.returncode == 0 and "    plan " in whole.stdout and "    runs " in whole.stdout, whole.stdout


def test_a_missing_argument_is_named_as_the_help_names_it(app):
    """`mlrun plan` said "needs query", `mlrun export` "needs run", `mlrun import` "needs bundle", and their usage
    lines `query`, `run`, `bundle`, where every help text writes QUERY, RUN and FILE."""
    for args, said in ((["plan"], "mlrun plan needs QUERY ("), (["export", "-o", "x.tar.gz"], "mlrun export needs RUN ("),
                       (["import"], "mlrun import needs FILE (")):
        one_line(app.mlrun(*args), 2, said)
    usage_line = app.mlrun("replay", "--help").stdout.split("\n\n")[0]
    assert usage_line.rstrip().endswith(" RUN"), usage_line


def test_query_help_of_a_recipe_with_a_required_input(app):
    """Help is what one asks before knowing the inputs (was: 'needy needs --log', exit 2, no help)."""
    app.recipe("needy", "tags: needy\ninputs:\n  log: {type: path, required: true, help: the log}\nrun: 'true'\n")
    result = app.mlrun("needy", "--help")
    assert result.returncode == 0 and "--log=PATH" in result.stdout, result.stderr


def test_query_help_shows_that_recipes_inputs_variations_and_deps(app):
    result = app.mlrun("app mlperf bert _cuda", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('usage: mlrun "app mlperf bert _cuda"')
    assert "app 0" in out and "the benchmark" in out
    for flag in ("--count=INT (>=1)", "--qps=FLOAT (>0)", "--mode=performance|accuracy", "--scenario=Offline|SingleStream|Server",
                 "--spin[=true|false]"):
        assert flag in out, out
    assert "how many queries; default: 3" in out
    assert "only with --scenario other than SingleStream" in out
    assert "device (one of):" in out and "_cpu (default), _cuda (chosen)" in out and "_int8" in out
    assert "an NVIDIA GPU" in out
    # Dependency names for --dep.NAME.*, the alternative this query takes and that dep's inputs.
    assert "--dep.NAME.tags=_x" in out
    flat = " ".join(out.split())
    assert "model get ml-model bert [2 alternatives" in flat and "its inputs: layers]" in flat
    assert "squad get dataset squad" in flat
    assert "--env.KEY=VALUE" in out and "run options:" in out and "--json" in out
    # Generic run help (no query) explains --dep.* and --env.*.
    run_help = app.mlrun("run", "--help")
    assert run_help.returncode == 0 and run_help.stdout.startswith("usage: mlrun run")
    for text in ("--dep.NAME.tags=_x", "--dep.NAME.version=SPEC", "--dep.NAME.INPUT=VALUE", "--env.KEY=VALUE"):
        assert text in run_help.stdout
    one_line(app.mlrun("nothing here", "--help"), 2, "no recipe matches 'nothing here'")


def test_usage_errors_say_what_is_missing_in_words(app):
    one_line(app.mlrun("show"), 2, "mlrun show needs one of: cache, failed")
    one_line(app.mlrun("mirror"), 2, "mlrun mirror needs one of: add, check, fetch")
    one_line(app.mlrun("rm"), 2, "mlrun rm needs one of: cache, failed")
    # a positional's own words, not those of the global --cache DIR (was: 'needs DIR (cache folder ...)')
    one_line(app.mlrun("check", "submission"), 2, "mlrun check needs DIR (the tree: the folder holding closed/")
    one_line(app.mlrun("show", "cach"), 2, "'cach' is not one of cache, failed (did you mean cache?)")
    one_line(app.mlrun("--bogus"), 2, "unknown option --bogus")
    one_line(app.mlrun("--cahce", "x"), 2, "unknown option --cahce (did you mean --cache?)")
    one_line(app.mlrun("shwo", "cache"), 2, "unknown verb 'shwo' (did you mean show?)")
    err = one_line(app.mlrun("shwo"), 2, "no recipe matches 'shwo'")
    assert "near the verb show" in err
    version = app.mlrun("--version")
    assert version.returncode == 0 and version.stdout.startswith(f"mlrun {__version__}")


def test_tag_typos_suggest_the_nearest_real_tags_only(app):
    err = one_line(app.mlrun("plan", "get dataset sqad"), 2, "unknown tag 'sqad' (did you mean squad?)")
    assert "python" not in err and "features" not in err
    err = one_line(app.mlrun("plan", "get xyzzy"), 2, "unknown tag 'xyzzy'")
    assert "did you mean" not in err
    one_line(app.mlrun("find", "get datset"), 2, "unknown tag 'datset' (did you mean dataset?)")
    one_line(app.mlrun("find", "app _cdua"), 2, "no variation _cdua (did you mean _cuda?)")
    one_line(app.mlrun("plan", "app _cdua"), 2, "recipe app has no variation '_cdua' (did you mean _cuda?)")
    one_line(app.mlrun("plan", "app", "--cuont=3"), 2, "app has no input --cuont (did you mean --count?)")
    assert nearest("onnx", ["onnxruntime", "venv", "bert"]) == ["onnxruntime"]
    assert nearest("bret", ["bert", "bet", "squad"]) == ["bert", "bet"]
    assert did_you_mean("zzzz", ["bert"]) == ""


def test_choices_match_whatever_their_case_everywhere(app):
    plan = json.loads(app.mlrun("plan", "app mlperf bert", "--scenario=offline", "--mode=ACCURACY", "--json").stdout)
    assert plan["nodes"][-1]["inputs"]["scenario"] == "Offline" and plan["nodes"][-1]["inputs"]["mode"] == "accuracy"
    same = json.loads(app.mlrun("plan", "app mlperf bert", "--scenario=Offline", "--mode=accuracy", "--json").stdout)
    assert same["nodes"][-1]["key"] == plan["nodes"][-1]["key"]
    one_line(app.mlrun("plan", "app mlperf bert", "--scenario=ofline"), 2,
             "--scenario=ofline is not one of Offline, SingleStream, Server (did you mean Offline?)")


# -- CM habits -------------------------------------------------------------------------------------------


@pytest.mark.slow   # over 2 s on the EPYC
def test_cm_tags_are_the_same_query(app):
    want = json.loads(app.mlrun("plan", "app mlperf bert _cuda", "--json").stdout)["nodes"][-1]["key"]
    for argv in (["plan", "--tags=app,mlperf,bert,_cuda", "--json"], ["--tags=app,mlperf,bert,_cuda", "plan", "--json"],
                 ["plan", "--tags", "app,mlperf,bert,_cuda", "--json"]):
        result = app.mlrun(*argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert json.loads(result.stdout)["nodes"][-1]["key"] == want
    ran = app.mlrun("run", "script", "--tags=app,mlperf,bert,_cuda", "--mode=accuracy", "--json")
    assert ran.returncode == 0, ran.stderr
    assert open(os.path.join(json.loads(ran.stdout)["path"], "result.txt")).read() == "accuracy Offline\n"
    assert cm_tags(["run", "script", "--tags=a,b", "--dep.m.tags=_x"], ("run",)) == ["run", "a b", "--dep.m.tags=_x"]
    # after global options with values (was: `script` kept, 'unexpected argument')
    assert cm_tags(["--cache", "c", "--runs", "r", "run", "script", "--tags=a,b"], ("run",), ("--cache", "--runs")) \
        == ["--cache", "c", "--runs", "r", "run", "a b"]
    one_line(app.mlrun("plan", "--tags="), 2, "--tags= is empty")
    # a quoted query and --tags: two queries (was: "unexpected argument 'app mlperf bert'", a query is one argument)
    for argv in (["app mlperf bert", "--tags=app,mlperf,bert"], ["plan", "app mlperf bert", "--tags=app,mlperf,bert"],
                 ["run", "script", "app mlperf bert", "--tags", "app,mlperf,bert"]):
        one_line(app.mlrun(*argv), 2, "the query is given twice: as 'app mlperf bert' and as --tags=app,mlperf,bert")
    # an option's value is no query, a verb's own word neither (was: 'given twice: as fetch', 'as failed')
    assert cm_tags(["plan", "--tags=a,b", "--mode", "accuracy"], ("plan",)) == ["plan", "a b", "--mode", "accuracy"]
    assert cm_tags(["run", "--tags=a,b", "--question", "Who is it?"], ("run",)) == ["run", "a b", "--question",
                                                                                    "Who is it?"]
    assert cm_tags(["mirror", "fetch", "--tags=a,b", "-o", "d"], ("mirror",)) == ["mirror", "fetch", "a b", "-o", "d"]
    one_line(app.mlrun("show", "failed", "--tags=a,b"), 2, "mlrun show failed takes no QUERY")
    # after a flag that takes no value, a quoted query is one (was: 'unexpected argument')
    one_line(app.mlrun("plan", "--json", "app mlperf bert", "--tags=app,mlperf,bert"), 2, "the query is given twice")
    one_line(app.mlrun("plan", "--tags", "--json"), 2, "--tags needs a value")   # was: --tags=--json


def test_the_flags_cm_tags_knows_are_mlruns_flags():
    """engine.cli.FLAGS (options that take no value, for cm_tags) holds every flag of mlrun's verbs."""
    import argparse
    from engine import cli
    parser = cli.build_parser()
    found = set()

    def walk(p):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.nargs == 0:
                found.update(action.option_strings)
    walk(parser)
    assert found and found <= set(cli.FLAGS), sorted(found - set(cli.FLAGS))


def test_tag_aliases_find_the_recipe_and_change_no_key(app):
    aliased = json.loads(app.mlrun("plan", "get dataset squad original", "--json").stdout)["nodes"][-1]
    assert aliased["name"] == "squad"
    plain = json.loads(app.mlrun("plan", "get dataset squad", "--json").stdout)["nodes"][-1]
    assert plain["key"] == aliased["key"]
    app.recipe("squad", "tags: [get, dataset, squad]\nrun: echo squad > dev.json\n")   # the alias gone
    assert json.loads(app.mlrun("plan", "get dataset squad", "--json").stdout)["nodes"][-1]["key"] == plain["key"]
    one_line(app.mlrun("plan", "get dataset squad original"), 2, "no recipe matches")
    app.recipe("bad", "tags: [x]\naliases: [_y]\n")
    one_line(app.mlrun("plan", "x"), 2, "recipe.yaml:2: alias '_y' must start with a letter or digit")


# -- the cache as a person sees it -------------------------------------------------------------------


def test_show_cache_tells_venvs_apart_by_their_packages(app):
    assert app.mlrun("get python venv", "--packages=numpy==2.3.4 onnxruntime==1.23.2 tokenizers==0.23.3 "
                     "regex==2026.11.15 tqdm==4.70.1").returncode == 0
    assert app.mlrun("get ml-model bert").returncode == 0
    table = app.mlrun("show", "cache", "venv").stdout.splitlines()
    assert table[0].split()[:3] == ["RECIPE", "VARIATIONS", "DETAILS"]
    assert table[-1].startswith("2 entries")
    details = sorted(m["details"] for m in json.loads(app.mlrun("show", "cache", "venv", "--json").stdout))
    # What the two venvs do not share comes first: numpy, common to both, tells nothing.
    assert details == ["onnx numpy", "onnxruntime tokenizers regex tqdm +1"]
    assert all(any(d in row for row in table) for d in details)
    assert app.mlrun("show", "cache", "ml-model").stdout.splitlines()[-1].startswith("1 entry,")
    # entries of another --env read '-' alike (a user's trial: three venvs of OMP_NUM_THREADS and ISA caps)
    assert app.mlrun("get ml-model bert", "--env.OMP_NUM_THREADS=1").returncode == 0
    details = sorted(m["details"] for m in json.loads(app.mlrun("show", "cache", "ml-model", "--json").stdout))
    assert details[0].startswith("-") and details[1].startswith("env.OMP_NUM_THREADS=1"), details


@pytest.mark.slow
def test_rm_cache_by_key_prefix_path_and_query_as_the_resolver_reads_it(app):
    for query in ("get dataset squad", "get dataset squad features", "get ml-model bert"):
        assert app.mlrun(query).returncode == 0
    assert len(app.entries()) == 4   # squad, features, model, venv
    # "get dataset squad" is the squad recipe, as for the resolver: not also the features.
    result = app.mlrun("rm", "cache", "get dataset squad", "-y")
    assert result.returncode == 0 and "removed 1 entry\n" in result.stdout, result.stdout
    assert app.entries("squad") == [] and len(app.entries("features")) == 1
    # said: `show cache` of the same words lists the features too (checked there, one removed here, unsaid)
    assert "note: 'get dataset squad' names squad as a query does; the entries of features, which `show cache` " \
        "lists too, stay" in result.stderr, result.stderr
    # A query that several recipes answer: listed, and -y is needed.
    assert app.mlrun("get dataset squad").returncode == 0
    one_line(app.mlrun("rm", "cache", "get dataset"), 2, "'get dataset' matches entries of 2 recipes: features, squad")
    # By key prefix and by path.
    # (options may stand between the positionals: `rm cache -y X` was 'unexpected argument(s) for rm: X')
    [venv] = json.loads(app.mlrun("show", "cache", "--json", "venv").stdout)
    assert app.mlrun("rm", "cache", "-y", venv["key"][:8]).returncode == 0 and app.entries("venv") == []
    [model] = json.loads(app.mlrun("show", "cache", "ml-model", "--json").stdout)
    assert app.mlrun("rm", "cache", model["path"], "-y").returncode == 0 and app.entries("model") == []
    result = app.mlrun("rm", "cache", "get dataset", "-y")
    assert result.returncode == 0 and "removed 2 entries" in result.stdout and app.entries() == []


def test_show_failed_tells_interrupted_from_failed_and_rm_failed(app, tmp_path):
    app.recipe("bad", "tags: bad\nrun: echo broken; exit 3\n")
    app.recipe("slow", f"tags: slow\nrun: touch {tmp_path}/started; sleep 60\n")
    assert app.mlrun("bad").returncode == 1
    proc = app.popen("slow")
    try:
        assert wait_for(lambda: (tmp_path / "started").exists(), timeout=30)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
    shown = app.mlrun("show", "failed")
    assert shown.returncode == 0
    assert "1 build failed (the step exited with an error):" in shown.stdout
    assert "1 build interrupted (Ctrl-C or a signal stopped mlrun):" in shown.stdout
    kinds = sorted(item["kind"] for item in json.loads(app.mlrun("show", "failed", "--json").stdout))
    assert kinds == ["failed", "interrupted"]
    one_line(app.mlrun("rm", "failed"), 2, "2 failed build logs would be removed; pass -y")
    removed = app.mlrun("rm", "failed", "-y")
    assert removed.returncode == 0 and "removed 2 failed build logs" in removed.stdout
    assert "no failed builds" in app.mlrun("show", "failed").stdout


def test_show_and_rm_failed_take_a_kept_folder_without_its_log(app):
    """Kept when the disk was full (env.sh failed before build.log was made): both verbs failed with 'cannot use
    .../build.log: No such file or directory', and only gc --older-than 0s (every unused entry too) cleared it."""
    kept = os.path.join(app.cache, ".failed", "app-0123456789abcdef-20261204-101010-killed")
    os.makedirs(kept)
    open(os.path.join(kept, "env.sh"), "w").close()
    shown = app.mlrun("show", "failed")
    assert shown.returncode == 0 and "(no log there: ['env.sh'])" in shown.stdout, shown.stderr
    assert app.mlrun("show", "failed", "--json").returncode == 0
    removed = app.mlrun("rm", "failed", "-y")
    assert removed.returncode == 0 and not os.path.exists(kept), removed.stderr


# -- mirrors for air-gapped machines ---------------------------------------------------------------------


@pytest.fixture
def thing(ws, server):
    server.files["/data.json"] = PAYLOAD
    ws.recipe("get-thing", f"""
        tags: [get, thing]
        download: {{url: "{server.url}/data.json", file: data.json, sha256: "{SHA}", size: {len(PAYLOAD)}}}
        """)
    return ws


def test_mirror_check_gives_url_size_and_checksum(thing, server, tmp_path):
    (tmp_path / "m").mkdir()
    check = thing.mlrun("mirror", "check", f"--mirror={tmp_path / 'm'}")
    assert check.returncode == 0, check.stderr
    row = next(line for line in check.stdout.splitlines() if line.startswith("missing"))
    assert f"{server.url}/data.json" in row and f"sha256:{SHA}" in row and "16.6 KB" in row
    assert "1 file not in the mirror" in check.stdout
    [item] = json.loads(thing.mlrun("mirror", "check", f"--mirror={tmp_path / 'm'}", "--json").stdout)
    assert item["url"] == f"{server.url}/data.json" and item["sha256"] == SHA and item["size"] == len(PAYLOAD)


def test_mirror_check_names_a_damaged_file_by_its_path(thing, server, tmp_path):
    """It printed the URL, not which file in the mirror was damaged."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "data.json").write_bytes(b"not the payload")
    check = thing.mlrun("mirror", "check", f"--mirror={tmp_path / 'm'}")
    assert check.returncode == 1, check.stdout + check.stderr
    row = next(line for line in check.stdout.splitlines() if line.startswith("corrupt "))
    assert "  m/data.json  " in row and f"sha256:{SHA}" in row   # said relative to the working folder
    assert (f"corrupt: m/data.json is not the file get-thing: data.json declares: download "
            f"{server.url}/data.json again") in check.stdout
    assert "not in the mirror" not in check.stdout   # it is there, damaged


def test_a_mistyped_mirror_is_an_error_at_once(thing, server, tmp_path):
    one_line(thing.mlrun("get thing", f"--mirror={tmp_path / 'nope'}"), 2, f"the mirror folder {tmp_path / 'nope'}")
    one_line(thing.mlrun("plan", "get thing", env=thing.env(MLRUN_MIRROR=tmp_path / "nope")), 2,
             "does not exist (from $MLRUN_MIRROR)")
    assert server.requests == []
    # words a verb would ignore: `mirror check QUERY` audited every recipe, `mirror add F -o DIR` added to --mirror
    (tmp_path / "m").mkdir()
    one_line(thing.mlrun("mirror", "check", "get thing", f"--mirror={tmp_path / 'm'}"), 2,
             "mirror check takes no QUERY or FILE ('get thing')")
    (tmp_path / "f").write_text("x")
    one_line(thing.mlrun("mirror", "add", str(tmp_path / "f"), "-o", str(tmp_path / "o"),
                         f"--mirror={tmp_path / 'm'}"), 2, "mirror add takes no -o")
    assert os.listdir(tmp_path / "m") == []


def test_mirror_add_says_what_it_did_with_each_file(thing, tmp_path):
    (tmp_path / "data.json").write_bytes(PAYLOAD)
    (tmp_path / "other.txt").write_text("nobody needs me\n")
    mirror = tmp_path / "m"
    first = thing.mlrun("mirror", "add", str(tmp_path / "data.json"), str(tmp_path / "other.txt"), f"--mirror={mirror}")
    assert first.returncode == 0, first.stderr
    assert f"added         {tmp_path / 'data.json'} -> {mirror / 'data.json'}" in first.stdout
    assert "not needed    " in first.stdout and "no recipe declares this file" in first.stdout
    assert "1 file added" in first.stdout and not (mirror / "other.txt").exists()
    again = thing.mlrun("mirror", "add", str(tmp_path / "data.json"), f"--mirror={mirror}")
    assert "already there" in again.stdout and "0 files added" in again.stdout
    # the same bytes twice in one call: one copy (it made two, a later call said "already there")
    (tmp_path / "copy.json").write_bytes(PAYLOAD)
    fresh = tmp_path / "m2"
    both = thing.mlrun("mirror", "add", str(tmp_path / "data.json"), str(tmp_path / "copy.json"), f"--mirror={fresh}")
    assert "1 file added" in both.stdout and os.listdir(fresh) == ["data.json"], both.stdout
    assert f"already there {tmp_path / 'copy.json'} (as {fresh / 'data.json'})" in both.stdout, both.stdout


def test_the_plans_download_total_says_what_it_leaves_out(ws):
    """'2 files, 100 B' where one of the two declared no size."""
    ws.recipe("two", """\
        tags: two
        download:
          - {url: "http://127.0.0.1:9/a.bin", file: a.bin, size: 100, sha256: "%s"}
          - {url: "http://127.0.0.1:9/b.bin", file: b.bin, sha256: "%s"}
        """ % ("a" * 64, "b" * 64))
    plan = ws.mlrun("plan", "two")
    assert "downloads of the nodes to build: 2 files, 100 B and 1 of unknown size" in plan.stdout, plan.stdout


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_mirror_fetch_then_plan_and_run_offline_from_it(thing, server, tmp_path):
    out = tmp_path / "carry"
    plan = thing.mlrun("plan", "get thing")
    assert f"downloads of the nodes to build: 1 file, 16.6 KB (no mirror given" in plan.stdout
    assert server.requests == []   # plan downloads nothing
    fetched = thing.mlrun("mirror", "fetch", "get thing", "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "data.json").read_bytes() == PAYLOAD and len(server.requests) == 1
    assert "fetched       get-thing: data.json" in fetched.stdout
    again = thing.mlrun("mirror", "fetch", "get thing", "-o", str(out))
    assert "already there" in again.stdout and len(server.requests) == 1
    [row] = json.loads(thing.mlrun("mirror", "fetch", "get thing", "-o", str(out), "--json").stdout)   # was lines
    assert (row["name"], row["status"], row["error"]) == ("get-thing: data.json", "already there", None)
    [row] = json.loads(thing.mlrun("mirror", "add", str(out / "data.json"), f"--mirror={tmp_path / 'm2'}",
                                   "--json").stdout)
    assert row["status"] == "added" and row["path"] == str(tmp_path / "m2" / "data.json")
    plan = thing.mlrun("plan", "get thing", f"--mirror={out}")
    assert "get-thing: data.json  16.6 KB  in the mirror: carry/data.json" in plan.stdout
    [row] = json.loads(thing.mlrun("plan", "get thing", f"--mirror={out}", "--json").stdout)["downloads"]
    assert row["status"] == "present"
    server.files.clear()   # the network gone: the run takes the file from the carried folder
    assert thing.mlrun("get thing", f"--mirror={out}").returncode == 0 and len(server.requests) == 1
    one_line(thing.mlrun("mirror", "fetch", "get thing"), 2, "needs -o DIR")
    one_line(thing.mlrun("mirror", "fetch", "get thing", "-o", str(out / "data.json")), 2,
             f"-o {out / 'data.json'} is not a folder")   # was 'cannot write into ...: File exists'


def test_mirror_fetch_goes_on_past_a_failed_download_and_names_it(thing, server, tmp_path):
    """It stopped at the first failure (exit 1), the files after it never fetched and nothing listed."""
    thing.recipe("get-gone", f"""
        tags: [get, gone]
        download: {{url: "{server.url}/gone.json", file: gone.json, sha256: "{'0' * 64}"}}
        """)
    thing.recipe("get-both", """
        tags: [get, both]
        deps: [{name: gone, query: get gone}, {name: thing, query: get thing}]
        run: "true"
        """)
    out = tmp_path / "carry"
    fetched = thing.mlrun("mirror", "fetch", "get both", "-o", str(out))
    assert fetched.returncode == 1, fetched.stdout + fetched.stderr
    assert (out / "data.json").read_bytes() == PAYLOAD   # planned after the failed one
    assert f"failed        get-gone: gone.json  {server.url}/gone.json" in fetched.stdout
    assert "HTTP 404" in fetched.stdout and "fetched       get-thing: data.json" in fetched.stdout
    # a 404 is the server's answer: another try meets it again (it said "run it again to fetch them")
    assert "1 file of the plan of 'get both'" in fetched.stdout and "1 failed (above): what the server answered " \
        "(above), not the network: no try again mends it" in fetched.stdout, fetched.stdout
    # the server's file is not the one asked (a checksum mismatch): "run it again" could not mend it; and the folder
    # made beside another file of that name was left empty
    server.files["/gone.json"] = b"other bytes"
    (out / "gone.json").write_bytes(b"a file of that name")
    mismatch = thing.mlrun("mirror", "fetch", "get both", "-o", str(out))
    assert mismatch.returncode == 1 and "checksum mismatch" in mismatch.stdout, mismatch.stdout
    assert "no try again mends it" in mismatch.stdout and "run it again" not in mismatch.stdout, mismatch.stdout
    assert sorted(os.listdir(out)) == ["data.json", "gone.json"], os.listdir(out)


def test_mirror_fetch_calls_a_rate_limit_or_time_out_worth_another_try():
    """429 and 408 were taken for the server's lasting answer ("no try again mends it"): a try later is the fix."""
    from engine.cli import LASTING_FAILURE
    assert [bool(LASTING_FAILURE.search(f"HTTP {code} x")) for code in (404, 401, 403, 410, 429, 408)] == \
        [True, True, True, True, False, False]


@pytest.mark.slow  # about 1.1 s on the 2-core EPYC
def test_mirror_fetch_puts_a_file_a_step_takes_by_path_where_the_step_looks(ws, server, tmp_path):
    """A file with no checksum known (the calibration list) is not a declared download: `mirror fetch` said of it
    "put its files in the mirror yourself". A recipe's mirror_files says where its step looks: fetched there."""
    server.files["/list.txt"] = b"one\n"
    ws.recipe("get-listed", f"""
        tags: [get, listed]
        inputs:
          url: {{default: "{server.url}/list.txt"}}
          sha256: {{default: ""}}
        mirror_files:
          - {{url: "${{MLRUN_INPUT_URL}}", path: lists/list.txt, sha256: "${{MLRUN_INPUT_SHA256}}"}}
        run: "true"
        """)
    before = ws.mlrun("plan", "get listed", "--json")
    out = tmp_path / "carry"
    fetched = ws.mlrun("mirror", "fetch", "get listed", "-o", str(out))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (out / "lists" / "list.txt").read_bytes() == b"one\n" and len(server.requests) == 1
    assert "fetched       get-listed: lists/list.txt  4 B  " in fetched.stdout and "note:" not in fetched.stdout
    again = ws.mlrun("mirror", "fetch", "get listed", "-o", str(out))
    assert "already there" in again.stdout and len(server.requests) == 1
    # a sha256 asked that the copy there does not have: fetched again; one the server's file does not have fails,
    # and the copy there is kept
    server.files["/list.txt"] = b"two\n"
    two = hashlib.sha256(b"two\n").hexdigest()
    assert "fetched " in ws.mlrun("mirror", "fetch", "get listed", f"--sha256={two}", "-o", str(out)).stdout
    bad = ws.mlrun("mirror", "fetch", "get listed", f"--sha256={'0' * 64}", "-o", str(out), "--json")
    [row] = json.loads(bad.stdout)
    assert bad.returncode == 1 and row["status"] == "failed" and row["path"] == str(out / "lists" / "list.txt")
    assert "sha256" in row["error"] and (out / "lists" / "list.txt").read_bytes() == b"two\n"
    # a folder where the file goes: said (the download was moved into it, and said fetched)
    blocked = tmp_path / "blocked"
    (blocked / "lists" / "list.txt").mkdir(parents=True)
    refused = ws.mlrun("mirror", "fetch", "get listed", "-o", str(blocked))
    assert refused.returncode == 1 and "is there and is not a file" in refused.stdout, refused.stdout
    assert os.listdir(blocked / "lists" / "list.txt") == []
    # its url's input left empty: said so (was "cannot download : Invalid URL ''", then "run it again")
    empty = ws.mlrun("mirror", "fetch", "get listed", "--url=", "-o", str(tmp_path / "e"))
    assert empty.returncode == 1 and "its url ${MLRUN_INPUT_URL} is empty in this plan: the input that gives it is " \
        "not set" in empty.stdout, empty.stdout
    # the plan says whether a mirror holds it, and the file is in no key (the step's probe keys what it takes)
    assert "  get-listed: lists/list.txt  in the mirror: carry/lists/list.txt" in \
        ws.mlrun("plan", "get listed", f"--mirror={out}", cwd=str(tmp_path)).stdout
    (tmp_path / "empty").mkdir()
    assert (f"  get-listed: lists/list.txt  not in the mirror (empty/lists/list.txt): downloaded from "
            f"{server.url}/list.txt (offline: mlrun mirror fetch") in \
        ws.mlrun("plan", "get listed", f"--mirror={tmp_path / 'empty'}", cwd=str(tmp_path)).stdout
    recipe = os.path.join(ws.recipes, "get-listed", "recipe.yaml")
    with open(recipe) as f:
        text = f.read()
    with open(recipe, "w") as f:
        f.write(text.replace("path: lists/list.txt", "path: lists/other.txt"))
    assert json.loads(ws.mlrun("plan", "get listed", "--json").stdout)["nodes"][0]["key"] == \
        json.loads(before.stdout)["nodes"][0]["key"]


def test_mirror_check_audits_the_files_steps_take_by_path(ws, tmp_path):
    """`mirror check` (every recipe, no plan) lists mirror_files too, found by their path: ${VAR} expanded with the
    inputs' defaults; a sha256 given decides; a folder in its place is no file; `mirror add` cannot place them."""
    good = hashlib.sha256(b"one\n").hexdigest()
    ws.recipe("get-listed", f"""
        tags: [get, listed]
        inputs:
          url: {{default: "http://127.0.0.1:9/list.txt"}}
        mirror_files:
          - {{url: "${{MLRUN_INPUT_URL}}", path: lists/list.txt}}
          - {{url: "http://127.0.0.1:9/pinned.txt", path: pinned.txt, sha256: "{good}"}}
        run: "true"
        """)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    missing = ws.mlrun("mirror", "check", f"--mirror={mirror}")
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert re.search(r"missing +get-listed: lists/list.txt +\? +http://127.0.0.1:9/list.txt +none known\n",
                     missing.stdout), missing.stdout
    assert (f"not in the mirror: lists/list.txt (get-listed takes it by that path): mlrun mirror fetch QUERY -o DIR "
            "puts it there, or download http://127.0.0.1:9/list.txt to mirror/lists/list.txt") in missing.stdout
    assert "mirror add" not in missing.stdout   # it would not put them at their paths
    (mirror / "lists").mkdir()
    (mirror / "lists" / "list.txt").write_bytes(b"anything\n")   # no checksum known: there is enough
    (mirror / "pinned.txt").write_bytes(b"two\n")
    bad = ws.mlrun("mirror", "check", f"--mirror={mirror}", "--json")
    rows = {r["name"]: r for r in json.loads(bad.stdout)}
    assert bad.returncode == 1 and rows["get-listed: lists/list.txt"]["status"] == "present"
    assert rows["get-listed: lists/list.txt"]["mirror_path"] == "lists/list.txt"
    assert rows["get-listed: pinned.txt"]["status"] == "corrupt" and rows["get-listed: pinned.txt"]["sha256"] == good
    text = ws.mlrun("mirror", "check", f"--mirror={mirror}").stdout
    assert f"corrupt: mirror/pinned.txt is not the file get-listed: pinned.txt asks for (sha256 {good}): " \
           "download http://127.0.0.1:9/pinned.txt to that path again" in text, text
    (mirror / "pinned.txt").write_bytes(b"one\n")
    assert ws.mlrun("mirror", "check", f"--mirror={mirror}").returncode == 0
    (mirror / "lists" / "list.txt").unlink()
    (mirror / "lists" / "list.txt").mkdir()
    folder = ws.mlrun("mirror", "check", f"--mirror={mirror}")
    assert folder.returncode == 1 and "lists/list.txt asks for: it is not a file" in folder.stdout, folder.stdout


def test_a_mirror_file_the_step_also_takes_elsewhere_is_found_there(ws, server, tmp_path):
    """`also`: paths the step looks at before `path` (the calibration list's older place, the mirror's top): the
    first file there is the one it takes, for `mirror check`, `plan` and `mirror fetch` alike."""
    server.files["/list.txt"] = b"one\n"
    good = hashlib.sha256(b"one\n").hexdigest()
    ws.recipe("get-listed", f"""
        tags: [get, listed]
        inputs:
          sha256: {{default: ""}}
        mirror_files:
          - {{url: "{server.url}/list.txt", path: lists/list.txt, sha256: "${{MLRUN_INPUT_SHA256}}", also: [list.txt]}}
        run: "true"
        """)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "list.txt").write_bytes(b"one\n")
    [row] = [r for r in json.loads(ws.mlrun("mirror", "check", f"--mirror={mirror}", "--json").stdout)
             if r.get("mirror_path")]
    assert row["status"] == "present" and row["path"] == str(mirror / "list.txt"), row
    assert "  get-listed: lists/list.txt  in the mirror: mirror/list.txt" in \
        ws.mlrun("plan", "get listed", f"--mirror={mirror}", cwd=str(tmp_path)).stdout
    kept = ws.mlrun("mirror", "fetch", "get listed", "-o", str(mirror))
    assert kept.returncode == 0 and "already there" in kept.stdout and not server.requests, kept.stdout
    assert not (mirror / "lists").exists()
    # the file taken first is not the one asked for: fetching the other would change nothing, said so
    (mirror / "list.txt").write_bytes(b"two\n")
    refused = ws.mlrun("mirror", "fetch", "get listed", f"--sha256={good}", "-o", str(mirror))
    assert refused.returncode == 1 and f"{mirror}/list.txt is what the step takes (before " in refused.stdout, \
        refused.stdout
    assert not server.requests and not (mirror / "lists").exists()
    assert "in the mirror but corrupt: mirror/list.txt" in \
        ws.mlrun("plan", "get listed", f"--sha256={good}", f"--mirror={mirror}", cwd=str(tmp_path)).stdout
    (mirror / "list.txt").unlink()
    fetched = ws.mlrun("mirror", "fetch", "get listed", f"--sha256={good}", "-o", str(mirror))
    assert fetched.returncode == 0 and (mirror / "lists" / "list.txt").read_bytes() == b"one\n", fetched.stdout


@pytest.mark.parametrize("item, error", [
    ('{url: "http://h/x", path: ../x}', "mirror_files.path '../x' is not a relative path inside the mirror"),
    ('{url: "http://h/x", path: /etc/x}', "mirror_files.path '/etc/x' is not a relative path inside the mirror"),
    ('{url: "ftp://h/x", path: x}', "mirror_files.url 'ftp://h/x' is not http:// or https://"),
    ('{url: "http://h/x"}', "mirror_files needs 'path'"),
    ('{url: "http://h/x", path: x, md5: "0"}', "md5"),
    ('{url: "http://h/x", path: x, also: [../y]}', "mirror_files.also '../y' is not a relative path inside the mirror"),
    ('{url: "http://h/x", path: x, also: y}', "mirror_files.also"),
    # an input not declared: planned an empty url; mirror fetch then "cannot download : Invalid URL ''"
    ('{url: "${MLRUN_INPUT_URL}", path: x}', "mirror_files.url names ${MLRUN_INPUT_URL}, which is no input's "
                                             "variable nor in this recipe's env"),
    ('{url: "http://h/x", path: x, sha256: "${SUM}"}', "mirror_files.sha256 names ${SUM}"),
])
def test_a_bad_mirror_files_item_is_a_recipe_error(ws, item, error):
    ws.recipe("get-listed", f"""
        tags: [get, listed]
        mirror_files: [{item}]
        run: "true"
        """)
    one_line(ws.mlrun("plan", "get listed"), 2, error)


def test_the_calibration_list_goes_into_a_mirror_and_the_offline_step_takes_it(server, tmp_path):
    """The real recipe: `mirror fetch` puts the list where its step looks, and the step builds from it offline."""
    from conftest import offline_mlrun
    server.files["/list.txt"] = "".join(f"{i * 97}\n" for i in range(100)).encode()
    mlrun, out = offline_mlrun(tmp_path), tmp_path / "carry"
    fetched = mlrun("mirror", "fetch", "get dataset squad calibration", f"--url={server.url}/list.txt", "-o", str(out))
    assert fetched.returncode == 0 and "note:" not in fetched.stdout, fetched.stdout + fetched.stderr
    listed = out / "calibration" / "SQuAD-v1.1" / "bert_calibration_features.txt"
    assert listed.read_bytes() == server.files["/list.txt"]
    server.files.clear()   # no network: the step takes the carried copy
    built = mlrun("get dataset squad calibration", f"--mirror={out}", "--json")
    assert built.returncode == 0, built.stderr
    source = json.load(open(os.path.join(json.loads(built.stdout)["path"], "source.json")))
    assert source["source"] == str(listed) and source["sha256"] == hashlib.sha256(listed.read_bytes()).hexdigest()


def test_huggingface_model_from_the_mirror(tmp_path):
    onnx = pytest.importorskip("onnx")
    from mlperf_bert import model_sources, random_model
    folder = tmp_path / "mirror" / "huggingface" / "org" / "tiny"
    (folder / "onnx").mkdir(parents=True)
    onnx.save(random_model.build(layers=1, hidden=32, heads=2, seq=384, input_names="hf"),
              str(folder / "onnx" / "model.onnx"))
    record = model_sources.fetch_huggingface("hf:org/tiny", str(tmp_path / "out"), mirror=str(tmp_path / "mirror"))
    assert record["from"] == f"mirror {folder}" and record["files"] == ["onnx/model.onnx"]
    assert record["inputs"] == {"ids": "input_ids", "mask": "input_mask", "segments": "segment_ids"}
    # A pinned revision is looked for under ORG/NAME@REV only: an unpinned copy cannot prove it.
    assert model_sources.mirror_hf_folder("/m", "org/tiny", "v1") == "/m/huggingface/org/tiny@v1"


# -- plurals -------------------------------------------------------------------------------------------------


def test_plurals():
    assert [plural(n, "entry") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]
    assert plural(1, "node") == "1 node" and plural(3, "node") == "3 nodes"
    assert plural(2, "cache entry") == "2 cache entries" and plural(2, "failed build log") == "2 failed build logs"
    assert plural(2, "match") == "2 matches" and plural(2, "dependency") == "2 dependencies"


def test_plan_of_one_node_says_one_node(app):
    assert "1 node, 0 cached, 1 to run" in app.mlrun("plan", "get dataset squad").stdout


def test_submission_scenarios_match_whatever_their_case():
    from submission import submit
    assert submit._names("offline,SINGLESTREAM", submit.SCENARIOS, "scenario") == ["Offline", "SingleStream"]


def test_show_cache_says_what_a_quantised_or_fused_model_was_made_from():
    """Two int8 models of differently sized sources both read '-' (their own inputs are the defaults)."""
    from engine import cache_view
    recipes = {"m": {"inputs": {"layers": {"default": "12"}, "heads": {"default": "12"}}},
               "q": {"inputs": {"per_channel": {"default": "auto"}}}}
    source = {"recipe": "m", "key": "k1", "variations": ["random"], "inputs": {"layers": "2", "heads": "12"}}
    made = {"recipe": "q", "key": "k2", "variations": ["random"], "inputs": {"per_channel": "auto"},
            "node": {"deps": [["python", "k0"], ["source", "k1"]]}}
    fused = {"recipe": "q", "key": "k3", "variations": [], "inputs": {"per_channel": "true"},
             "node": {"deps": [["unfused", "k1"]]}}
    by_key = {m["key"]: m for m in (source, made, fused)}
    assert cache_view.details(made, recipes, by_key=by_key) == "from _random layers=2"
    assert cache_view.details(fused, recipes, by_key=by_key) == "per_channel=true; from _random layers=2"
    assert cache_view.details(made, recipes) == "-"   # its source gone from the cache: its own inputs only
    assert cache_view.details(source, recipes, by_key=by_key) == "layers=2"
    # 0 is a value: secs=0 and secs=3 entries read alike ("-"), 0 taken for False
    recipes = {"t": {"inputs": {"secs": {"default": 5}, "quiet": {"default": True}, "loud": {"default": False}}}}
    assert cache_view.details({"recipe": "t", "key": "k", "variations": [], "inputs": {"secs": 0}}, recipes) == "secs=0"
    assert cache_view.details({"recipe": "t", "key": "k", "variations": [],
                               "inputs": {"secs": 5, "quiet": False, "loud": False}}, recipes) == "quiet=False"


@pytest.mark.slow  # about 1.3 s on the 2-core EPYC
def test_mlrun_through_a_symlink_and_ctrl_d_at_its_prompt(ws, tmp_path):
    """~/bin/mlrun -> the checkout's: "No module named 'engine'"; Ctrl-D at rm's [y/N]: "unexpected EOFError"."""
    import pty
    link = tmp_path / "bin" / "mlrun"
    link.parent.mkdir()
    link.symlink_to(os.path.join(ROOT, "bin", "mlrun"))
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, env=ws.env())
    assert version.returncode == 0 and version.stdout.startswith("mlrun "), version.stderr
    (tmp_path / "bindir").symlink_to(os.path.join(ROOT, "bin"))   # a symlinked bin/ folder: its .. was not the checkout
    version = subprocess.run([str(tmp_path / "bindir" / "mlrun"), "--version"], capture_output=True, text=True,
                             env=ws.env())
    assert version.returncode == 0 and version.stdout.startswith("mlrun "), version.stderr
    ws.recipe("a", "tags: a\nrun: 'true'\n")
    assert ws.mlrun("a").returncode == 0
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(link), "rm", "cache", "a"], stdin=follower, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ws.env())
    os.close(follower)
    time.sleep(0.5)
    os.write(leader, b"\x04")
    out, err = proc.communicate(timeout=30)
    os.close(leader)
    assert proc.returncode == 0 and "nothing removed" in out and "unexpected" not in err, (out, err)
    assert "remove 1 entry? [y/N]" in err and "[y/N]" not in out   # `> rm.log` hid the prompt: it seemed to hang
    assert ws.entries("a")
    # Ctrl-C at the prompt: nothing was removed ("what it was removing may be half gone" sent the person to rerun it)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(link), "rm", "cache", "a"], stdin=follower, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ws.env())
    os.close(follower)
    time.sleep(0.5)   # at its prompt
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    os.close(leader)
    assert proc.returncode == 130 and "nothing removed: it stopped at its prompt" in err, (out, err)
    assert ws.entries("a")


def test_recipes_given_before_and_after_the_verb_are_both_read(ws, tmp_path):
    """--recipes is repeatable: the verb's parser dropped the folder given before it."""
    for folder, name in (("one", "first"), ("two", "second")):
        os.makedirs(tmp_path / folder / name)
        (tmp_path / folder / name / "recipe.yaml").write_text(f"tags: [{name}]\nrun: 'true'\n")
    found = ws.mlrun("--recipes", str(tmp_path / "one"), "find", f"--recipes={tmp_path / 'two'}")
    assert found.returncode == 0 and "first 0" in found.stdout and "second 0" in found.stdout, found.stdout



def test_show_cache_tells_content_keyed_files_apart():
    """Nine --model=FILE entries all read path=model.onnx: the key's digest of the bytes is what tells them apart."""
    from engine import cache_view
    recipes = {"m": {"inputs": {"path": {"default": None}}}}
    digest = "sha256:" + "ab12" * 16
    entry = {"recipe": "m", "key": "k1", "variations": ["file"], "inputs": {"path": "/home/me/models/model.onnx"},
             "material": {"inputs": {"path": digest}}}
    assert cache_view.details(entry, recipes) == "path=model.onnx (sha256:ab12ab12ab12)"
    made = {"recipe": "q", "key": "k2", "variations": [], "inputs": {}, "node": {"deps": [["source", "k1"]]}}
    assert cache_view.details(made, {**recipes, "q": {"inputs": {}}}, by_key={"k1": entry}, width=None) \
        == "from _file path=model.onnx (sha256:ab12ab12ab12)"


def test_rm_lists_what_it_would_remove_before_it_asks_under_pythonunbuffered(ws):
    """With PYTHONUNBUFFERED=1 (set in many containers and CI images) mlrun's standard output was held in a buffer:
    at a terminal `rm run` asked "remove 1 run? [y/N]" and listed which only after the answer."""
    ws.recipe("thing", "tags: get thing\nrun: echo x > x.txt\n")
    run_id = json.loads(ws.mlrun("get thing", "--json").stdout)["run"]
    code, said = at_a_terminal([MLRUN, "rm", "run", run_id], ws.env(PYTHONUNBUFFERED="1"), answer="n",
                               cwd=ws.root, prompt=b"[y/N]")
    assert code == 0 and "nothing removed" in said, said
    assert said.index(run_id) < said.index("remove 1 run? [y/N]"), said


def test_version_after_a_verb_or_query_is_said_to_go_alone(ws):
    """`mlrun runs --version` said "--version is an option of 'runs': give it after the verb" (it was after it,
    and runs has none); after a query, "give it after the query"."""
    ws.recipe("thing", "tags: get thing\nrun: echo x > x.txt\n")
    err = one_line(ws.mlrun("runs", "--version"), 2, "'runs' takes no --version", "mlrun --version")
    assert "give it after" not in err, err
    err = one_line(ws.mlrun("get thing", "--version"), 2, "has no input --version", "given alone: mlrun --version")
    assert "give it after" not in err, err
    for verb in (["sweep", "show", "x"], ["sweep", "list"], ["sweep", "best", "x"]):   # "unexpected argument(s)"
        one_line(ws.mlrun(*verb, "--version"), 2, f"'sweep {verb[1]}' takes no --version", "mlrun --version")
