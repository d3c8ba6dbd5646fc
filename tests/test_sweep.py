"""`mlrun sweep`, `sweep show`, `sweep list`: grids, records, resume, failing points, --jobs on disjoint cores.

Most tests use a small benchmark-like recipe (fast, and able to fail or wait on demand); the last ones run the
real BERT benchmark with a tiny random model (slow: its venvs are built once for the module).
"""
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from bench_app import APP_HEAD
from conftest import MLRUN, TINY_MODEL, assert_user_error, kept_rows, kill_group, offline_mlrun, wait_for

APP = APP_HEAD + """\
  fail_on: {type: int, default: 0, help: "fail when batch_size is this"}
  hold: {help: "wait while the file HOLD.LAYERS exists"}
variations:
  a: {group: backend, default: true, env: {BACKEND: a}}
  b: {group: backend, env: {BACKEND: b}}
  cpu: {group: device, default: true}
  fast: {description: "no group"}
deps: [{name: model, query: get model}]
run: bash "{recipe}/run.sh"
record: {results: summary.json}
"""

RUN_SH = """\
layers=$(cat "$MODEL_DIR/layers.txt")
while [ -n "$MLRUN_INPUT_HOLD" ] && [ -e "$MLRUN_INPUT_HOLD.$layers" ]; do sleep 0.05; done
if [ "$MLRUN_INPUT_BATCH_SIZE" = "$MLRUN_INPUT_FAIL_ON" ]; then echo "batch size $MLRUN_INPUT_FAIL_ON is broken" >&2; exit 3; fi
python3 - <<EOF
import json, os
bs, layers = int(os.environ["MLRUN_INPUT_BATCH_SIZE"]), int("$layers")
sps = 100.0 * bs / layers * (2 if os.environ["BACKEND"] == "b" else 1)
affinity = sorted(os.sched_getaffinity(0))
summary = {"scenario": os.environ["MLRUN_INPUT_SCENARIO"], "mode": os.environ["MLRUN_INPUT_MODE"],
           "batch_size": bs, "affinity": ",".join(map(str, affinity)),
           "loadgen": {"result": "VALID", "metric": {"Samples per second": sps},
                       "latency_ms": {"p50": 1000.0 / sps, "p99": 2000.0 / sps}}}
if os.environ["MLRUN_INPUT_MODE"] == "accuracy":
    summary["accuracy"] = {"f1": 90.0 - layers, "exact_match": 80.0}
json.dump(summary, open("summary.json", "w"))
EOF
"""

MODEL = """\
tags: get model
inputs:
  layers: {type: int, default: 2}
run: echo "$MLRUN_INPUT_LAYERS" > layers.txt
exports: {MODEL_DIR: "{entry}"}
"""


@pytest.fixture
def bench(ws):
    ws.recipe("app", APP, files={"run.sh": RUN_SH})
    ws.recipe("model", MODEL)
    return ws


def sweep_record(ws, name):
    return json.load(open(os.path.join(ws.runs, "sweeps", name, "sweep.json")))


def run_record(ws, run_id):
    return json.load(open(os.path.join(ws.runs, run_id, "run.json")))


GRID = ["--grid", "batch_size=1,4", "--grid", "dep.model.layers=1,2"]


@pytest.mark.slow
def test_a_2x2_sweep_records_every_point_and_shows_them_as_rows(bench):
    result = bench.mlrun("sweep", "app bench", "--mode=performance", *GRID, "--name", "bs")
    assert result.returncode == 0, result.stderr
    assert "sweep bs: 4 points, 4 to run" in result.stderr and "4 ok" in result.stderr
    data = sweep_record(bench, "bs")
    assert data["query"] == "app bench" and data["grid"] == {"batch_size": ["1", "4"], "dep.model.layers": ["1", "2"]}
    assert data["request"]["inputs"] == {"mode": "performance"}
    assert [(p["id"], p["settings"], p["status"]) for p in data["points"]] == [
        ("p000", {"batch_size": "1", "dep.model.layers": "1"}, "ok"),
        ("p001", {"batch_size": "1", "dep.model.layers": "2"}, "ok"),
        ("p002", {"batch_size": "4", "dep.model.layers": "1"}, "ok"),
        ("p003", {"batch_size": "4", "dep.model.layers": "2"}, "ok")]
    for p in data["points"]:
        run = run_record(bench, p["run"])
        assert run["status"] == "ok" and run["steps"][-1]["key"] == p["plan_key"]
        assert run["request"]["inputs"]["batch_size"] == p["settings"]["batch_size"]
        assert p["node"] == os.uname().nodename and p["error"] is None
    assert len({p["plan_key"] for p in data["points"]}) == 4

    rows = list(csv.DictReader(io.StringIO(bench.mlrun("sweep", "show", "bs", "--csv").stdout)))
    assert [(r["point"], r["batch_size"], r["dep.model.layers"]) for r in rows] == [
        ("p000", "1", "1"), ("p001", "1", "2"), ("p002", "4", "1"), ("p003", "4", "2")]
    assert [float(r["samples_per_second"]) for r in rows] == [100.0, 50.0, 400.0, 200.0]
    assert {r["result"] for r in rows} == {"VALID"} and {r["backend"] for r in rows} == {"a"}
    as_json = json.loads(bench.mlrun("sweep", "show", "bs", "--json").stdout)
    assert as_json[2]["samples_per_second"] == 400.0 and as_json[2]["dep.model.layers"] == 1
    assert as_json[2]["latency_p99_ms"] == 5.0 and as_json[2]["run"] == data["points"][2]["run"]
    markdown = bench.mlrun("sweep", "show", "bs", "--markdown", "--columns", "batch_size,samples_per_second").stdout
    assert markdown.splitlines() == ["| batch_size | samples_per_second |", "| ---: | ---: |", "| 1 | 100.0 |",
                                     "| 1 | 50.00 |", "| 4 | 400.0 |", "| 4 | 200.0 |"]
    table = bench.mlrun("sweep", "show", "bs").stdout.splitlines()
    assert table[0].split()[:4] == ["POINT", "BATCH_SIZE", "LAYERS", "RESULT"] and len(table) == 6
    # what every point shares, no column shows (an all-int8 sweep's table did not say int8)
    assert table[-1] == "every point: 'app bench' --mode=performance (and its grid's values)"
    where = bench.mlrun("sweep", "show", "bs", "--json", "--where", "samples_per_second>=200")
    assert [r["point"] for r in json.loads(where.stdout)] == ["p002", "p003"]
    none = bench.mlrun("sweep", "show", "bs", "--where", "samples_per_second>9999")   # was an empty table, silent
    assert none.returncode == 0 and none.stdout == "no points of sweep 'bs' match (4 in all)\n", none.stdout
    typo = bench.mlrun("sweep", "show", "bs", "--where", "result=VALD")   # was the same line: a typo unsaid
    assert typo.stdout == "no points of sweep 'bs' match (4 in all) (did you mean result=VALID?)\n", typo.stdout
    listed = bench.mlrun("sweeps")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:5] == ["bs", "4", "4", "0", "0"]
    os.makedirs(os.path.join(bench.runs, "sweeps", "cut"))
    with open(os.path.join(bench.runs, "sweeps", "cut", "sweep.json"), "w") as f:
        f.write("{half")   # a record cut short: said, not left out of the list in silence
    listed = bench.mlrun("sweeps")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2
    assert "1 sweep record could not be read: cut (`mlrun sweep show cut` says why)" in listed.stderr


@pytest.mark.slow
def test_the_same_sweep_again_skips_finished_points_and_rerun_repeats_them(bench):
    args = ("sweep", "app bench", *GRID, "--name", "again")
    assert bench.mlrun(*args).returncode == 0
    first = sweep_record(bench, "again")
    again = bench.mlrun(*args)
    assert again.returncode == 0 and "0 to run, 4 skipped" in again.stderr
    assert [p["run"] for p in sweep_record(bench, "again")["points"]] == [p["run"] for p in first["points"]]
    assert len(os.listdir(bench.runs)) == 5   # 4 runs and sweeps/
    rerun = bench.mlrun(*args, "--rerun")
    assert rerun.returncode == 0 and "4 to run" in rerun.stderr
    points = sweep_record(bench, "again")["points"]
    assert all(p["history"] == [old["run"]] and p["run"] != old["run"] for p, old in zip(points, first["points"]))
    # A point whose run was removed runs again (was: skipped, its results gone from the table in silence)
    import shutil
    shutil.rmtree(os.path.join(bench.runs, points[0]["run"]))
    lost = bench.mlrun(*args)
    assert lost.returncode == 0 and "1 to run, 3 skipped" in lost.stderr
    assert "1 whose run record is gone or unreadable: run again" in lost.stderr
    assert os.path.isfile(os.path.join(bench.runs, sweep_record(bench, "again")["points"][0]["run"], "run.json"))
    with open(os.path.join(bench.runs, points[1]["run"], "run.json"), "w") as f:
        f.write('{"status": "ok", "results": [1,2')   # unreadable: counted ok, its results gone without a word
    damaged = bench.mlrun(*args)
    assert damaged.returncode == 0 and "1 to run, 3 skipped" in damaged.stderr, damaged.stderr
    # Another grid under the same name: an error naming what differs, nothing run.
    other = bench.mlrun("sweep", "app bench", "--grid", "batch_size=1,8", "--name", "again")
    assert_user_error(other, 2, "sweep 'again' exists with another grid", 'batch_size was ["1", "4"], now ["1", "8"]',
                      'dep.model.layers was ["1", "2"], now absent', "another --name")
    other = bench.mlrun("sweep", "app bench", "--scenario=SingleStream", *GRID, "--name", "again")
    assert_user_error(other, 2, "sweep 'again' exists with another request: inputs.scenario was absent, now "
                      '"SingleStream"')   # the value that differs (was: two dumps cut before it)
    # The same flags in another order number the points otherwise: refused (was: points re-run, false history).
    other = bench.mlrun("sweep", "app bench", *GRID[2:], *GRID[:2], "--name", "again")
    assert_user_error(other, 2, "exists with another order of --grid flags", "was batch_size, dep.model.layers")
    other = bench.mlrun("sweep", "app bench", "--scenario=SingleStream", *GRID[2:], *GRID[:2], "--name", "again")
    assert_user_error(other, 2, "order of --grid flags", "request: inputs.scenario")   # both said, neither hidden
    # The query's spacing is not another query.
    assert "0 to run, 4 skipped" in bench.mlrun("sweep", "app  bench ", *GRID, "--name", "again").stderr


@pytest.mark.slow
def test_a_failing_point_is_recorded_and_the_others_run(bench):
    result = bench.mlrun("sweep", "app bench", "--fail_on=4", *GRID, "--name", "broken")
    assert result.returncode == 1, result.stderr
    assert "p002 batch_size=4 dep.model.layers=1: failed" in result.stderr and "2 failed, 2 ok" in result.stderr
    points = sweep_record(bench, "broken")["points"]
    assert [p["status"] for p in points] == ["ok", "ok", "failed", "failed"]
    failed = run_record(bench, points[2]["run"])
    assert failed["status"] == "failed" and "exited with code 3" in points[2]["error"]
    rows = json.loads(bench.mlrun("sweep", "show", "broken", "--json").stdout)
    assert rows[2]["point_status"] == "failed" and rows[2]["status"] == "failed" and rows[2]["batch_size"] == 4
    assert "exited with code 3" in rows[2]["error"] and rows[0]["error"] is None
    shown = bench.mlrun("sweep", "show", "broken").stdout   # errors whole, below the table (cut, they said "...uff")
    assert f"errors:\n  p002: {points[2]['error']}\n  p003: " in shown, shown
    # Again: the two that finished are skipped, the failed ones run (and fail) again.
    again = bench.mlrun("sweep", "app bench", "--fail_on=4", *GRID, "--name", "broken")
    assert again.returncode == 1 and "2 to run, 2 skipped" in again.stderr


@pytest.mark.slow   # over 2 s on the EPYC
def test_a_point_run_again_because_its_plan_changed_says_what_changed(bench):
    """A sweep run again without the --mirror it had ran every int8 point again (their calibration list's key
    changed), which then failed offline, with no word of why."""
    args = ("sweep", "app bench", "--grid", "batch_size=1,2", "--name", "changed")
    assert bench.mlrun(*args).returncode == 0
    runs = [p["run"] for p in sweep_record(bench, "changed")["points"]]
    with open(os.path.join(bench.recipes, "model", "recipe.yaml"), "a") as f:
        f.write("version: '2'\n")
    again = bench.mlrun(*args)
    assert again.returncode == 0 and "2 to run" in again.stderr, again.stderr
    said = f"  p000 ran ok as {runs[0]}; its plan changed: model: recipe_digest was '"
    assert said in again.stderr and "(and 1 more)\n" in again.stderr, again.stderr
    line = next(line for line in again.stderr.splitlines() if line.startswith(said))
    assert len(line) < 140, line   # digests cut as the tables show keys


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(bench, tmp_path):
    hold = tmp_path / "hold"
    (tmp_path / "hold.2").write_text("")   # the second point waits on this file until the sweep is killed
    args = ("sweep", "app bench", f"--hold={hold}", "--grid", "dep.model.layers=1,2,3", "--name", "k")
    proc = bench.popen(*args)
    try:
        assert wait_for(lambda: os.path.exists(os.path.join(bench.runs, "sweeps", "k", "sweep.json"))
                        and sweep_record(bench, "k")["points"][1]["status"] == "running", timeout=30)
        # p001's run has begun: its record is written (its folder alone comes a moment earlier)
        assert wait_for(lambda: len([n for n in os.listdir(bench.runs)
                                     if os.path.isfile(os.path.join(bench.runs, n, "run.json"))]) == 2, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)   # the sweep only: its running point must not go on alone
        proc.wait(timeout=10)
        points = sweep_record(bench, "k")["points"]
        assert [p["status"] for p in points] == ["ok", "running", "pending"]
        # shown as stopped, no sweep holding it (was 'running' for ever in show, list and report)
        shown = json.loads(bench.mlrun("sweep", "show", "k", "--json").stdout)
        assert shown[1]["point_status"] == "stopped" and "the same sweep command runs it again" in shown[1]["error"]
        # The point's mlrun got SIGTERM when the sweep died: its run ends interrupted, nothing is left running.
        runs = [n for n in os.listdir(bench.runs) if n not in ("sweeps", ".index", points[0]["run"])]   # (.index: rows)
        assert len(runs) == 1
        assert wait_for(lambda: run_record(bench, runs[0])["status"] == "interrupted", timeout=30)
    finally:
        kill_group(proc)
    (tmp_path / "hold.2").unlink()
    resumed = bench.mlrun(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 to run, 1 skipped" in resumed.stderr and "1 left running by a sweep that stopped: run again" in resumed.stderr
    points = sweep_record(bench, "k")["points"]
    assert [p["status"] for p in points] == ["ok"] * 3 and points[1]["run"] != runs[0]


def test_a_point_whose_mlrun_was_sigkilled_failed_and_links_its_run(bench, tmp_path):
    """Killed by SIGKILL (the out-of-memory killer): 'interrupted', a progress line as its error, no run."""
    hold = tmp_path / "hold"
    (tmp_path / "hold.2").write_text("")
    proc = bench.popen("sweep", "app bench", f"--hold={hold}", "--grid", "dep.model.layers=2", "--name", "oom")
    try:
        def live_run():
            found = [n for n in os.listdir(bench.runs) if os.path.isfile(os.path.join(bench.runs, n, "run.json"))] \
                if os.path.isdir(bench.runs) else []
            return found and run_record(bench, found[0])
        assert wait_for(live_run, timeout=30)
        record = live_run()
        os.kill(record["process"]["pid"], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
    finally:
        kill_group(proc)
        (tmp_path / "hold.2").unlink()
    [point] = sweep_record(bench, "oom")["points"]
    assert point["status"] == "failed" and point["run"] == record["id"], point
    assert point["error"].startswith("mlrun was stopped by SIGKILL (the kernel's out-of-memory killer"), point


@pytest.mark.slow   # about 0.7 s on the EPYC
def test_a_variation_group_in_the_grid_replaces_the_query_s_variation(bench):
    result = bench.mlrun("sweep", "app bench _b _cpu", "--grid", "backend=_a,_b", "--name", "be")
    assert result.returncode == 0, result.stderr
    data = sweep_record(bench, "be")
    queries = [run_record(bench, p["run"])["query"] for p in data["points"]]
    assert queries == ["app bench _a _cpu", "app bench _b _cpu"]
    rows = json.loads(bench.mlrun("sweep", "show", "be", "--json").stdout)
    assert [(r["backend"], r["device"], r["samples_per_second"]) for r in rows] == [("a", "cpu", 50.0),
                                                                                  ("b", "cpu", 100.0)]
    # the query every point shares is said without the grid's group (was "every point: 'app bench _b _cpu'", in the
    # plot's title and the report too, while half the points ran _a)
    from sweeps import table
    assert table.shared_query(data, rows) == "app bench _cpu"
    assert bench.mlrun("sweep", "show", "be").stdout.splitlines()[-1] == "every point: 'app bench _cpu' (and its grid's values)"
    assert table.shared_query({**data, "grid": {}, "kinds": {}}, [{"query": "app bench _a _cpu"}]) == "app bench _cpu"


@pytest.mark.slow   # a sweep of 4 points
def test_sweep_best_names_the_best_valid_point_and_the_submit_command_that_runs_it(bench):
    """Carrying a sweep's best point into `submit` was retyping every flag, its grid's backend forgotten."""
    result = bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--fail_on=9",
                         "--grid", "backend=_a,_b", "--grid", "batch_size=1,4", "--name", "tune")
    assert result.returncode == 0, result.stderr
    best = bench.mlrun("sweep", "best", "tune")
    assert best.returncode == 0, best.stderr
    lines = best.stdout.splitlines()
    assert lines[0].startswith("best of sweep 'tune' by samples_per_second (higher is better), among its VALID "
                               "points: p003 = 400") and "its grid values: backend=b, batch_size=4" in best.stdout
    command = lines[-1].strip()
    # its scenario's inputs scoped: several scenarios' best points go into one submit as they are
    assert command.endswith("submit 'app bench _cpu _b' --Offline.fail_on=9 --Offline.batch_size=4 --scenarios=Offline "
                            "--submitter=YOUR_TEAM --division=open --system=SYSTEM.yaml"), command   # no --mode
    assert command.startswith(f"bin/mlrun --cache={bench.cache} --recipes={bench.recipes} submit "), command
    assert_user_error(bench.mlrun("sweep", "best", "tune", "--y", "latency_p50_ms"), 2,
                      "an Offline run's latency_p50_ms means nothing")
    assert_user_error(bench.mlrun("sweep", "best", "tune", "--y=batch_size"), 2, "batch_size says not whether")
    assert_user_error(bench.mlrun("sweep", "best"), 2, "mlrun sweep best needs a NAME")
    for empty in (["--y"], ["--y="]):   # "unexpected argument(s) ...: --y"; --y= ranked by the default
        assert_user_error(bench.mlrun("sweep", "best", "tune", *empty), 2, "sweep best --y needs a FIELD")
    same = bench.mlrun("sweep", "best", "--y=samples_per_second", "tune")   # the option before NAME: "needs a NAME"
    assert same.returncode == 0 and same.stdout == best.stdout, same.stderr
    as_json = json.loads(bench.mlrun("sweep", "best", "tune", "--json").stdout)   # was plain text
    assert (as_json["point"], as_json["valid"], as_json["submit"][-2]) == ("p003", True, "--division=open")
    failed = bench.mlrun("sweep", "app bench _cpu", "--fail_on=1", "--grid", "batch_size=1", "--name", "broken")
    assert failed.returncode == 1
    assert_user_error(bench.mlrun("sweep", "best", "broken"), 1, "no point of sweep 'broken' ended ok (1 in all)")
    # every point ties: no best, as the plot and the report have none (it named the first one best)
    assert bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--grid",
                       "env.X_FLAVOUR=a,b", "--name", "tie").returncode == 0
    tie = bench.mlrun("sweep", "best", "tie")
    assert tie.returncode == 1 and tie.stdout.startswith("sweep 'tie': no best by samples_per_second: its 2 VALID "
                                                         "points all have 50.0"), tie.stdout
    as_json = json.loads(bench.mlrun("sweep", "best", "tie", "--json").stdout)
    assert (as_json["point"], as_json["tie"], as_json["submit"]) == (None, ["p000", "p001"], None)
    # a score's best gets no notes of the machine's load or a run's length (they change no F1)
    assert bench.mlrun("sweep", "app bench _cpu", "--mode=accuracy", "--grid", "dep.model.layers=1,2", "--name",
                       "acc").returncode == 0
    acc = bench.mlrun("sweep", "best", "acc")
    assert acc.returncode == 0 and "p000 = 89.00" in acc.stdout, acc.stdout
    from sweeps.cli import _best_warnings
    short = [{"other_load.seconds": 0.0, "other_load.share": 0.93, "other_load.busy": True}] * 2
    assert _best_warnings(short[0], {}, short, "f1") == _best_warnings(short[0], {}, short, "exact_match") == []
    assert len(_best_warnings(short[0], {}, short, "samples_per_second")) == 2   # a speed's: as before


@pytest.mark.slow  # about 2.1 s on the 2-core EPYC
def test_the_grid_value_dash_is_not_given(bench):
    """`-` runs the point without the flag: the input's default, no override, the variable unset, the group's
    default variation (not the query's own)."""
    from engine.resolver import Resolver
    from sweeps import grid as gridlib
    recipe, _ = Resolver(bench.index()).select("app bench")
    grid = gridlib.parse(["batch_size=-,4", "backend=-,_b", "dep.model.layers=-,4", "env.X_FLAVOUR=-,x"])
    kinds = gridlib.classify(grid, recipe, {}, {}, {})
    [(_, first), *_, (_, last)] = gridlib.points(grid)
    assert gridlib.point_request("app bench _b _cpu", recipe, first, kinds, {}, {}, {}) == ("app bench _cpu", {}, {}, {})
    assert gridlib.point_request("app bench _b _cpu", recipe, last, kinds, {}, {}, {}) == (
        "app bench _b _cpu", {"batch_size": "4"}, {"model": {"layers": "4"}}, {"X_FLAVOUR": "x"})
    # End to end: the record's request holds nothing for `-`; the table says so and what the run had (batch 1),
    # which a plot keeps apart from a point given 1 (was: both read 1, one series zig-zagged through both)
    result = bench.mlrun("sweep", "app bench", "--grid", "batch_size=-,4", "--name", "dash")
    assert result.returncode == 0, result.stderr
    points = sweep_record(bench, "dash")["points"]
    assert [run_record(bench, p["run"])["request"]["inputs"] for p in points] == [{}, {"batch_size": "4"}]
    rows = json.loads(bench.mlrun("sweep", "show", "dash", "--json").stdout)   # values as the runs have them
    assert [(r["batch_size"], r["samples_per_second"]) for r in rows] == [(1, 50.0), (4, 200.0)]
    assert bench.mlrun("sweep", "show", "dash").stdout.splitlines()[1].split()[1:3] == ["-", "(1)"]
    plotted = bench.mlrun("sweep", "plot", "dash", "--x", "batch_size", "--y", "samples_per_second", "-o",
                          os.path.join(bench.root, "dash.png"))
    assert plotted.returncode == 0 and "2 point" in plotted.stderr + plotted.stdout, plotted.stderr
    assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=-,-", "--name", "d2"), 2,
                      "a value is given twice")


def test_a_point_s_command_runs_the_same_pasted_elsewhere(bench):
    """A point gets its places from MLRUN_*: its command says them as options, quoted (was `mlrun run app bench
    --batch_size=4 --json`: pasted, no recipe matched, or it ran in the default cache)."""
    import shlex
    assert bench.mlrun("sweep", "app bench _b", "--grid", "batch_size=4", "--name", "paste").returncode == 0
    [point] = sweep_record(bench, "paste")["points"]
    shown = bench.mlrun("runs", "show", point["run"]).stdout
    line = next(x for x in shown.splitlines() if x.strip().startswith("command: "))
    argv = shlex.split(line.split("command: ", 1)[1])
    assert argv[:7] == ["mlrun", "--cache", bench.cache, "--runs", bench.runs, "--recipes", bench.recipes], argv
    assert "app bench _b" in argv and "--batch_size=4" in argv
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    again = subprocess.run([MLRUN, *argv[1:]], env=bare, capture_output=True, text=True, timeout=60, cwd="/")
    assert again.returncode == 0, again.stderr
    keys = [run_record(bench, run)["root"]["key"] for run in (json.loads(again.stdout)["run"], point["run"])]
    assert keys[0] == keys[1]


@pytest.mark.parametrize("args, fragments", [
    (["--grid", "batchsize=1,2"], ["app has no input or variation group 'batchsize'", "did you mean batch_size"]),
    (["--grid", "backend=_a,_c"], ["_c is not a variation of the group backend", "no such variation",
                                   "group backend: _a, _b"]),
    (["--grid", "backend=_a,_cpu"], ["_cpu is not a variation of the group backend", "it is in group device"]),
    (["--grid", "backend=_a,_fast"], ["it belongs to no group"]),
    (["--grid", "backends=_a,_b"], ["app has no variation group 'backends' (did you mean backend?)",
                                    "its groups: backend, device"]),
    (["--grid", "backend=_a,b"], ["mixes variations (_x) and plain values"]),
    (["--grid", "backend=a,b"], ["backend is a variation group; its values are variations, written with _ (_a, _b",
                                 "--grid backend=_a,_b"]),
    (["--grid", "batch_size"], ["write --grid NAME=VALUE1,VALUE2"]),
    (["--grid", "batch_size=1,,2"], ["an empty value"]),
    (["--grid", "batch_size=1,1"], ["a value is given twice"]),
    (["--grid", "batch_size=1", "--grid", "batch_size=2"], ["--grid batch_size is given twice"]),
    (["--batch_size=2", "--grid", "batch_size=1,4"], ["--batch_size is given both as a fixed flag and in --grid"]),
    ([], ["a sweep needs at least one --grid"]),
    (["--grid", "batch_size=1,x,2.5"], ["2 of 3 points of sweep 'g' cannot be planned; nothing ran",
                                        "p001 (batch_size=x)", "p002 (batch_size=2.5)"]),
    (["--grid", "dep.nope.layers=1,2"], ["points of sweep 'g' cannot be planned", "--dep.nope.* names no dependency"]),
    # one line for a reason every point shares (a misspelt fixed flag printed it for each of them)
    (["--batch_sise=2", "--grid", "mode=accuracy,performance"], [
        "2 of 2 points of sweep 'g' cannot be planned; nothing ran:\n  every point: app has no input "
        "--batch_sise"]),
    (["--grid", "batch_size=1", "--jobs", "0"], ["--jobs 0: give 1 or more"]),
    (["--grid", "batch_size=1", "--cpus", "-1"], ["--cpus -1: give 1 or more"]),
    (["--grid", "scenario=Offline,offline"], ["points with the same plan", "p000 (scenario=Offline) and p001 "
                                              "(scenario=offline)"]),
    (["--grid", "batch_size=-,1"], ["p000 (batch_size=-) and p001 (batch_size=1)"]),
    # Each point failed on these (exit 1), and the record kept the axis
    (["--grid", "env.1X=1,2"], ["--grid env.1X: '1X' is not a valid environment variable name"]),
    # Printed in every point's line, and the record's masked value never equalled it again: no resume
    (["--grid", "env.HF_TOKEN=hf_GridSecret1"], ["--grid env.HF_TOKEN: a secret is no grid axis",
                                                "--env.HF_TOKEN=VALUE"]),
    (["--grid", "batch_size=1", "--jobs", "2", "--on", "ray"], ["--jobs applies to --on local, not --on ray"]),
])
def test_grid_mistakes_are_usage_errors_before_anything_runs(bench, args, fragments):
    result = bench.mlrun("sweep", "app bench", *args, "--name", "g")
    assert_user_error(result, 2, *fragments)
    assert not os.path.exists(bench.runs) or os.listdir(bench.runs) in ([], ["sweeps"])
    assert not os.path.exists(os.path.join(bench.runs, "sweeps", "g", "sweep.json"))


@pytest.mark.slow   # over 2 s on the EPYC
def test_sweep_usage_errors(bench):
    assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=1"), 2, "a sweep needs a --name")
    assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=1", "--name", "../x"), 2,
                      "a sweep name is letters")
    assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=1", "--name", "x", "--on", "moon"),
                      2, "--on moon: not an executor")
    # an empty --on ran locally, "ray:" on RAY_ADDRESS's cluster, each without a word
    for on, said in (("", "--on '': empty"), ("ray:", "--on 'ray:': no address after it")):
        assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=1", "--name", "x", f"--on={on}"),
                          2, said)
    assert_user_error(bench.mlrun("sweep", "app bench", "more", "--grid", "batch_size=1", "--name", "x"), 2,
                      "unexpected argument 'more'")
    assert_user_error(bench.mlrun("sweep", "show", "nope"), 2, "no sweep 'nope'", "none yet")
    assert bench.mlrun("sweep", "app bench", "--grid", "batch_size=1", "--name", "one").returncode == 0
    assert_user_error(bench.mlrun("sweep", "show", "nope"), 2, "no sweep 'nope'", "the sweeps there are: one")
    assert_user_error(bench.mlrun("sweep", "show", "one", "--columns", "sampels_per_second"), 2,
                      "no field 'sampels_per_second'", "did you mean samples_per_second")
    assert_user_error(bench.mlrun("sweep", "show"), 2, "needs a NAME")
    both = bench.mlrun("sweep", "show", "one", "--csv", "--json")
    assert both.returncode == 2 and "--json: not allowed with argument --csv" in both.stderr
    # As typed (was: the verb misspelled gave no suggestion, the name was "--name", `list NAME` ignored NAME)
    # a misspelt verb is said as one: `sweep lsit` said "a sweep needs a --name", `sweep plto one` named 'one'
    assert_user_error(bench.mlrun("sweep", "shwo", "one"), 2, "mlrun sweep shwo: no such verb (did you mean show?)")
    assert_user_error(bench.mlrun("sweep", "lsit"), 2, "mlrun sweep lsit: no such verb (did you mean list?)")
    assert_user_error(bench.mlrun("sweep", "app bench", "--gird", "batch_size=1", "--name", "x"), 2,
                      "(--gird is given: did you mean --grid?)")
    assert_user_error(bench.mlrun("sweep", "show", "../one"), 2, "sweep '../one': a sweep name is letters")
    assert_user_error(bench.mlrun("sweep", "app bench", "--grid", "batch_size=1", "--name", "x" * 300), 2,
                      "a sweep name is at most 100 characters")
    assert_user_error(bench.mlrun("sweep", "list", "one"), 2, "sweep list takes no NAME (was given 'one')")
    # Options of running one are refused, not ignored (--grid read like a filter and every point showed)
    assert_user_error(bench.mlrun("sweep", "show", "one", "--grid", "batch_size=1", "--jobs", "2"), 2,
                      "--grid, --jobs: options of running a sweep, not of `mlrun sweep show`", "--where FIELD=VALUE")
    assert_user_error(bench.mlrun("sweep", "list", "--rerun"), 2, "--rerun: options of running a sweep")


def overlapping(points):
    """Pairs of points whose runs overlapped in time."""
    spans = {p["id"]: (p["started"], p["started"] + p["seconds"]) for p in points}
    ids = sorted(spans)
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]
            if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]


@pytest.mark.slow
def test_jobs_pin_measuring_points_to_disjoint_cores_or_refuse(bench, tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    sizes = ",".join(str(i) for i in range(1, len(cores) + 2))   # a point for each of the N+1 jobs
    refused = bench.mlrun("sweep", "app bench", "--grid", f"batch_size={sizes}", "--jobs", str(len(cores) + 1),
                          "--name", "many")
    assert_user_error(refused, 2, f"--jobs {len(cores) + 1}: performance points would share cores",
                      f"use --jobs {len(cores)} or fewer")
    assert not os.path.exists(os.path.join(bench.runs, "sweeps", "many", "sweep.json"))
    # Accuracy points may share cores: not refused, not pinned.
    shared = bench.mlrun("sweep", "app bench", "--mode=accuracy", "--grid", "dep.model.layers=1,2,3",
                         "--jobs", str(len(cores) + 1), "--name", "acc")
    assert shared.returncode == 0, shared.stderr
    assert all("cores" not in p for p in sweep_record(bench, "acc")["points"])
    if len(cores) < 2:
        pytest.skip("one core: two measuring points cannot run at once here")
    holds = [tmp_path / "hold.1", tmp_path / "hold.2"]
    for h in holds:
        h.write_text("")
    before = len(os.listdir(bench.runs))
    proc = bench.popen("sweep", "app bench", f"--hold={tmp_path / 'hold'}", "--grid", "dep.model.layers=1,2,3,4",
                       "--jobs", "2", "--name", "pinned")
    try:   # the first two points start and wait on their files together: they overlap for sure
        assert wait_for(lambda: os.path.exists(os.path.join(bench.runs, "sweeps", "pinned", "sweep.json")) and
                        [p["status"] for p in sweep_record(bench, "pinned")["points"]].count("running") == 2, 30)
        assert wait_for(lambda: len(os.listdir(bench.runs)) == before + 2, timeout=30)
        for h in holds:
            h.unlink()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err
    points = sweep_record(bench, "pinned")["points"]
    half = len(cores) // 2
    assert {tuple(p["cores"]) for p in points} == {tuple(cores[:half]), tuple(cores[half:])}
    assert ("p000", "p001") in overlapping(points)
    for a, b in overlapping(points):
        pa, pb = (next(p for p in points if p["id"] == i) for i in (a, b))
        assert not set(pa["cores"]) & set(pb["cores"]), (pa, pb)
    for p in points:   # the run itself saw only its cores: recorded in its host facts and by the benchmark
        run = run_record(bench, p["run"])
        assert run["host"]["cpus_allowed"] == p["cores"]
        assert run["results"]["affinity"] == ",".join(map(str, p["cores"]))


# -- the real benchmark: a tiny random BERT, offline -----------------------------------------------------

BERT = "app mlperf bert _onnxruntime _cpu _random"


@pytest.fixture(scope="module")
def bert(tmp_path_factory, bert_seed):
    return offline_mlrun(tmp_path_factory.mktemp("sweep-bert"), seed=bert_seed.cache)


@pytest.mark.slow
def test_a_bert_sweep_of_2x2_points_with_a_tiny_random_model(bert):
    tiny = [a for a in TINY_MODEL if not a.startswith("--dep.model.layers")]
    args = ("sweep", BERT, "--mode=performance", "--count=32", *tiny, "--grid", "batch_size=1,4",
            "--grid", "dep.model.layers=1,2", "--name", "bert")
    result = bert(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.load(open(bert.root / "runs" / "sweeps" / "bert" / "sweep.json"))
    assert [p["status"] for p in data["points"]] == ["ok"] * 4
    for p in data["points"]:   # the plan the sweep resolved is the one each point's mlrun ran
        assert json.load(open(bert.root / "runs" / p["run"] / "run.json"))["root"]["key"] == p["plan_key"]
    rows = list(csv.DictReader(io.StringIO(bert("sweep", "show", "bert", "--csv").stdout)))
    for row, p in zip(rows, data["points"]):
        assert row["batch_size"] == p["settings"]["batch_size"] and row["run"] == p["run"]
        assert float(row["samples_per_second"]) > 0 and row["result"] in ("VALID", "INVALID")
        assert row["backend"] == "onnxruntime" and row["model"] == "random" and row["scenario"] == "Offline"
        assert row["mode"] == "performance" and row["count"] == "32" and row["batching.batch_size"] == row["batch_size"]
    table = bert("sweep", "show", "bert").stdout.splitlines()
    assert table[0].split()[:5] == ["POINT", "BATCH_SIZE", "LAYERS", "RESULT", "SAMPLES/S"]
    again = bert(*args)
    assert again.returncode == 0 and "4 skipped" in again.stderr


@pytest.mark.slow
def test_a_bert_sweep_with_two_jobs_pins_loadgen_s_instances(bert):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core")
    result = bert("sweep", BERT, "--mode=performance", "--count=32", *TINY_MODEL, "--grid", "batch_size=1,2",
                  "--jobs", "2", "--name", "pinned")
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.load(open(bert.root / "runs" / "sweeps" / "pinned" / "sweep.json"))
    for p in data["points"]:
        run = json.load(open(bert.root / "runs" / p["run"] / "run.json"))
        instance_cores = {c for group in run["results"]["parallelism"]["cores"] for c in group}
        assert instance_cores <= set(p["cores"]) and run["host"]["cpus_allowed"] == p["cores"]


@pytest.mark.slow   # about 0.8 s on the 2-core EPYC
def test_a_secret_given_to_every_point_is_in_no_sweep_file(bench):
    secret = "s3cr3t-value-for-the-sweep"
    result = bench.mlrun("sweep", "app bench", f"--env.API_TOKEN={secret}", "--grid", "batch_size=1,2",
                         "--name", "secret")
    assert result.returncode == 0, result.stderr
    data = sweep_record(bench, "secret")
    assert data["request"]["env_overrides"] == {"API_TOKEN": "<redacted>"}
    for root, _, files in os.walk(bench.runs):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret.encode() not in f.read(), os.path.join(root, name)
    again = bench.mlrun("sweep", "app bench", f"--env.API_TOKEN={secret}", "--grid", "batch_size=1,2",
                        "--name", "secret")
    assert again.returncode == 0 and "2 skipped" in again.stderr


def test_a_point_stopped_by_a_signal_before_it_said_anything_names_the_signal():
    """'interrupted: mlrun exited with code -15' (a SIGTERM just as the point started; a user's trial)."""
    import types
    from sweeps import cli
    point = {}
    outcome = types.SimpleNamespace(run_id=None, returncode=-15, stderr_tail="", node="n", seconds=0.2, log=None,
                                    started=None, cores=None)
    cli._finish(point, outcome, types.SimpleNamespace(runs="/nonexistent"))
    assert (point["status"], point["error"]) == ("interrupted", "mlrun was stopped by SIGTERM")


@pytest.mark.slow   # a sweep of 2 points
def test_sweep_best_says_a_value_not_given_as_not_given(bench):
    """Its grid values read 'dep.model.layers=2' for a point whose value was '-' (as if set, like the next)."""
    assert bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--grid",
                       "dep.model.layers=-,4", "--name", "dash").returncode == 0
    best = bench.mlrun("sweep", "best", "dash")
    assert best.returncode == 0 and "its grid values: dep.model.layers=- (not given: its default)" in best.stdout, \
        best.stdout
    as_json = json.loads(bench.mlrun("sweep", "best", "dash", "--json").stdout)   # said in --json too
    assert as_json["not_given"] == ["dep.model.layers"], as_json


@pytest.mark.slow  # about 2.0 s on the 2-core EPYC
def test_sweep_show_takes_the_rows_runs_keeps_and_a_damaged_record_is_its_points_error(bench):
    """`sweep show` read each point's record (1,000 points: 0.5 s): it takes the rows `runs` keeps, read again
    once a record changes; a record damaged below its top ended it "unexpected TypeError ... a bug"."""
    assert bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--grid",
                       "batch_size=1,4", "--name", "kept").returncode == 0
    shown = json.loads(bench.mlrun("sweep", "show", "kept", "--json").stdout)
    assert [r["samples_per_second"] for r in shown] == [50, 200], shown
    assert set(kept_rows(bench)) == {r["run"] for r in shown}
    assert bench.mlrun("app bench _cpu", "--mode=performance", "--scenario=Offline").returncode == 0
    assert bench.mlrun("runs").returncode == 0
    every = set(kept_rows(bench))
    assert len(every) == 3 and bench.mlrun("sweep", "show", "kept").returncode == 0
    assert set(kept_rows(bench)) == every   # it kept its points' rows alone: `runs` then read every record again
    assert not {"headline", "mode_scenario"} & set(shown[0])   # the listing's own fields stay the listing's
    path = os.path.join(bench.runs, shown[1]["run"], "run.json")
    st, text = os.stat(path), open(path).read()
    changed = text.replace('"Samples per second": 200', '"Samples per second": 300')
    assert changed != text and len(changed) == len(text)
    with open(path, "r+") as f:
        f.write(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # the same identity: the row kept is shown
    assert [r["samples_per_second"] for r in json.loads(bench.mlrun("sweep", "show", "kept", "--json").stdout)] \
        == [50, 200]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))   # rewritten: read again
    assert [r["samples_per_second"] for r in json.loads(bench.mlrun("sweep", "show", "kept", "--json").stdout)] \
        == [50, 300]
    record = json.loads(changed)
    record["request"]["inputs"] = [1]   # passes the record's top-level checks; reading its settings failed
    with open(path, "w") as f:
        json.dump(record, f)
    result = bench.mlrun("sweep", "show", "kept")
    assert result.returncode == 0 and f"p001: {path} is not an mlrun run record: its request.inputs is list" \
        in result.stdout, result.stdout
    assert "bug" not in result.stdout + result.stderr, result.stderr
    report = bench.mlrun("report", "kept", "-o", os.path.join(bench.runs, "kept.html"))
    assert report.returncode == 0, report.stderr
    shutil.rmtree(os.path.join(bench.runs, shown[0]["run"]))   # removed: said so, and what brings it back
    assert f"p000: its run {shown[0]['run']} is gone (no " in bench.mlrun("sweep", "show", "kept").stdout


# A sweep record edited by hand or damaged: each said "unexpected ... a bug in mlrun", `sweep list` for every sweep
DAMAGED_SWEEPS = [
    ("a point's settings is list", lambda d: d["points"][0].update(settings=[1])),
    ("a point's run is int", lambda d: d["points"][0].update(run=5)),
    ("a point's run '../..' is no run id", lambda d: d["points"][0].update(run="../..")),
    ("a point of it is no object", lambda d: d["points"].append(5)),
    ("a point of it is no object with an id, a status", lambda d: d["points"][0].pop("status")),
    ("it has no points or grid", lambda d: d.pop("grid")),
    ("a value in its grid is no text", lambda d: d["grid"].update(batch_size=[1, 4])),
    ("its grid's batch_size is no list of values", lambda d: d["grid"].update(batch_size="1,4")),
    ("its kinds is list", lambda d: d.update(kinds=[1])),
    ("its request.inputs is list", lambda d: d["request"].update(inputs=[1])),
    ("its query is int", lambda d: d.update(query=5)),
]


@pytest.mark.slow  # about 4 s on the 2-core EPYC
def test_a_damaged_sweep_record_is_said_and_the_other_sweeps_still_list(bench):
    for name in ("good", "bad"):
        assert bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--grid",
                           "batch_size=1,4", "--name", name).returncode == 0
    path = os.path.join(bench.runs, "sweeps", "bad", "sweep.json")
    original = open(path).read()
    for said, damage in DAMAGED_SWEEPS:
        data = json.loads(original)
        damage(data)
        with open(path, "w") as f:
            f.write(json.dumps(data))
        for argv in (("sweep", "show", "bad"), ("sweep", "best", "bad"), ("report", "bad", "-o", path + ".html"),
                     ("sweep", "app bench _cpu", "--grid", "batch_size=1,4", "--name", "bad")):
            result = bench.mlrun(*argv)
            assert result.returncode == 2 and "is not an mlrun sweep record" in result.stderr \
                and said in result.stderr and "bug" not in result.stderr, (said, argv, result.stderr)
        listed = bench.mlrun("sweep", "list")
        assert listed.returncode == 0 and "good" in listed.stdout and "1 sweep record could not be read: bad" \
            in listed.stderr, (said, listed.stderr)
    assert open(path).read() == json.dumps(data)   # the sweep run on it wrote nothing over it: it stays as found


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_a_sweep_stopped_by_ctrl_c_says_so_of_its_running_point(ws, tmp_path):
    """Ctrl-C on the sweep: its running point read "mlrun was stopped by SIGTERM" (the sweep's own stop)."""
    marker = tmp_path / "began"
    ws.recipe("point", f"tags: point\ncache: false\ninputs:\n  n: {{type: int, default: 0}}\n"
                       f"run: touch {marker}; sleep 120\n")
    proc = ws.popen("sweep", "point", "--grid", "n=0", "--name", "ctrlc")
    try:
        assert wait_for(lambda: marker.exists(), timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    [p] = json.load(open(os.path.join(ws.runs, "sweeps", "ctrlc", "sweep.json")))["points"]
    assert p["status"] == "interrupted" and p["error"] == "the sweep was stopped by SIGINT, and stopped this point's " \
        "run", p
    # the live line as well (it said "interrupted by SIGTERM", the sweep's own stop of the run)
    assert "p000 n=0: interrupted: the sweep was stopped by SIGINT, and stopped this point's run" in err, err
    assert "SIGTERM" not in err, err


def test_a_grid_over_a_variable_mlrun_sets_is_refused_before_any_point(ws):
    """--grid env.MLRUN_INPUT_N=7,8 ran every point, each failed on it (exit 1), a record of failures left."""
    ws.recipe("b", "tags: b\ncache: false\ninputs:\n  n: {type: int, default: 1}\nrun: echo $MLRUN_INPUT_N\n")
    assert_user_error(ws.mlrun("sweep", "b", "--grid", "env.MLRUN_INPUT_N=7,8", "--name", "e"), 2,
                      "mlrun sets MLRUN_INPUT_N itself for each step")
    assert not os.path.exists(os.path.join(ws.runs, "sweeps", "e"))


def test_a_dep_flag_that_some_points_cannot_take_says_how_to_sweep_them(ws):
    """A grid over --precision: fp32 points take --dep.model.layers, int8 points quantise another model recipe
    that has none, and the hint said only "fix the grid or the flags" (no one set of flags fits both)."""
    ws.recipe("get-thing-a", "tags: [get, thing, a]\ninputs:\n  layers: {type: int, default: 12}\nrun: 'true'\n")
    ws.recipe("get-thing-b", "tags: [get, thing, b]\nrun: 'true'\n")
    ws.recipe("app-x", "tags: [app, x]\ncache: false\ninputs:\n  kind: {default: a, choices: [a, b]}\n"
                       "deps:\n  - {name: thing, query: get thing a, when: kind=a}\n"
                       "  - {name: thing, query: get thing b, when: kind=b}\nrun: 'true'\n")
    result = ws.mlrun("sweep", "app x", "--grid", "kind=a,b", "--dep.thing.layers=2", "--name", "mixed")
    assert_user_error(result, 2, "1 of 2 points of sweep 'mixed' cannot be planned", "has no input --layers",
                      "a --dep.NAME.* flag goes to every point", "sweep them apart")


@pytest.mark.slow   # a sweep of 2 points
def test_sweep_show_where_picks_by_the_runs_values_in_every_format_and_dash_picks_the_points_not_given(bench):
    """`--where threads=1` left out the table's `- (1)` points and kept them in --csv; `--where threads=-` matched
    nothing (a user's trial)."""
    assert bench.mlrun("sweep", "app bench _cpu", "--mode=performance", "--scenario=Offline", "--grid",
                       "batch_size=-,4", "--name", "pick").returncode == 0

    def picked(where, *fmt):
        result = bench.mlrun("sweep", "show", "pick", "--where", where, *fmt)
        assert result.returncode == 0, result.stderr
        if fmt == ("--json",):
            return [r["point"] for r in json.loads(result.stdout)]
        return [line.split()[0].split(",")[0] for line in result.stdout.splitlines()[1:] if line.startswith("p0")]
    for where, points in (("batch_size=1", ["p000"]), ("batch_size=-", ["p000"]), ("batch_size!=-", ["p001"]),
                          ("batch_size=4", ["p001"])):
        assert picked(where) == picked(where, "--csv") == picked(where, "--json") == points, where
    assert "- (1)" in bench.mlrun("sweep", "show", "pick", "--where", "batch_size=1").stdout


@pytest.mark.slow   # one point
def test_a_sweep_of_one_point_says_one_point(bench):
    """A one-point sweep said 'sweep one: 1 points, 1 to run'."""
    result = bench.mlrun("sweep", "app bench", "--mode=performance", "--grid", "batch_size=4", "--name", "one")
    assert result.returncode == 0, result.stderr
    assert "sweep one: 1 point, 1 to run" in result.stderr, result.stderr
