"""Runs as a results list: records.flat() on real records (ok, failed, interrupted), `runs` filters, columns and
formats, `runs show` of a failed run, `run --json` with results."""
import csv
import io
import json
import os
import shutil
import signal

import pytest

from bench_app import APP_HEAD
from conftest import assert_user_error, kept_rows, kill_group, run_ids, wait_for
from engine import records, results
from engine.errors import UsageError
from engine.results import _cut, parse_where, render

APP = APP_HEAD + """\
  wait: {help: "wait while this file exists"}
variations:
  fast: {group: backend, default: true, env: {SPS: "200.5"}}
  slow: {group: backend, env: {SPS: "50"}}
  cpu: {group: device, default: true}
deps: [{name: model, query: get model}]
run: bash "{recipe}/run.sh"
record: {results: summary.json}
"""

RUN_SH = """\
while [ -n "$MLRUN_INPUT_WAIT" ] && [ -e "$MLRUN_INPUT_WAIT" ]; do sleep 0.05; done
acc=""
[ "$MLRUN_INPUT_MODE" = accuracy ] && acc='"accuracy": {"f1": 91.25, "exact_match": 84.5, "questions": 20},'
cat > summary.json <<EOF
{"scenario": "$MLRUN_INPUT_SCENARIO", "mode": "$MLRUN_INPUT_MODE", "batch_size": $MLRUN_INPUT_BATCH_SIZE,
 "threads": 2, "parallelism": {"instances": 2, "cores": [[0], [1]]},
 $acc
 "loadgen": {"result": "INVALID", "reasons": ["Min duration satisfied: NO", "Min queries satisfied: NO"],
             "metric": {"Samples per second": $SPS}, "latency_ms": {"p50": 4.5, "p99.9": 9.25}}}
EOF
"""

MODEL = """\
tags: get model
inputs:
  layers: {type: int, default: 2}
  broken: {type: bool, default: false}
run: '[ "$MLRUN_INPUT_BROKEN" = false ] || { echo "no weights" >&2; exit 4; }; echo "$MLRUN_INPUT_LAYERS" > layers.txt'
"""


@pytest.fixture
def bench(ws):
    ws.recipe("app", APP, files={"run.sh": RUN_SH})
    ws.recipe("model", MODEL)
    return ws


def run(ws, *args, code=0):
    result = ws.mlrun(*args, "--json")
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def flat_of(ws, run_id):
    return records.flat(records.load(os.path.join(ws.runs, run_id, "run.json")))


def test_flat_of_an_ok_run_has_settings_and_results_with_units(bench):
    out = run(bench, "app bench _slow", "--mode=accuracy", "--scenario=SingleStream", "--dep.model.layers=12",
              "--env.OMP_NUM_THREADS=1")
    row = flat_of(bench, out["run"])
    assert {k: row[k] for k in ("run", "status", "query", "host")} == {
        "run": out["run"], "status": "ok", "query": "app bench _slow", "host": os.uname().nodename}
    assert isinstance(row["started"], float) and row["seconds"] >= 0
    assert {k: row[k] for k in ("mode", "scenario", "batch_size", "wait", "backend", "device",
                                "dep.model.layers", "env.OMP_NUM_THREADS")} == {
        "mode": "accuracy", "scenario": "SingleStream", "batch_size": 1, "wait": None, "backend": "slow",
        "device": "cpu", "dep.model.layers": 12, "env.OMP_NUM_THREADS": "1"}
    assert {k: row[k] for k in ("result", "samples_per_second", "latency_p50_ms", "latency_p99_9_ms", "f1",
                                "exact_match", "accuracy_questions", "threads", "parallelism.instances")} == {
        "result": "INVALID", "samples_per_second": 50, "latency_p50_ms": 4.5, "latency_p99_9_ms": 9.25,
        "f1": 91.25, "exact_match": 84.5, "accuracy_questions": 20, "threads": 2, "parallelism.instances": 2}
    assert row["reasons"] == "Min duration satisfied: NO; Min queries satisfied: NO"
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in row.values())
    assert "parallelism.cores" not in row   # lists are not flat fields
    # run --json carries the results, as recorded and as flat fields.
    assert out["status"] == "ok" and out["results"]["loadgen"]["result"] == "INVALID"
    assert out["flat"]["samples_per_second"] == 50 and out["flat"]["run"] == out["run"]


def test_a_figure_that_differs_from_its_setting_is_kept_beside_it(ws):
    """An int8 --model file's run records precision int8 in its summary; its row read fp32 (the input's default), and
    `runs --where precision=int8` left it out with nothing to find it by."""
    ws.recipe("app", "tags: app\ninputs:\n  precision: {default: fp32}\n  n: {type: int, default: 3}\n"
              "run: 'printf %s \"{\\\"precision\\\": \\\"int8\\\", \\\"n\\\": 3}\" > summary.json'\n"
              "record: {results: summary.json}\n")
    row = flat_of(ws, run(ws, "app")["run"])
    assert (row["precision"], row["results.precision"], row["n"]) == ("fp32", "int8", 3) and "results.n" not in row
    listed = ws.mlrun("runs", "--where", "results.precision=int8", "--columns", "precision,results.precision")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[-2:] == ["fp32", "int8"], listed.stdout


def test_a_run_that_fails_before_its_last_step_keeps_what_was_asked(bench):
    out = run(bench, "app bench", "--mode=accuracy", "--scenario=SingleStream", "--dep.model.broken=true", code=1)
    record = records.load(os.path.join(bench.runs, out["run"], "run.json"))
    assert out["status"] == "failed" and "exited with code 4" in out["error"] and out["results"] is None
    assert [s["status"] for s in record["steps"]] == ["failed"] and record["steps"][0]["seconds"] >= 0
    assert record["planned"] == ["model", "app _fast _cpu"]
    row = records.flat(record)
    assert (row["status"], row["mode"], row["scenario"], row["backend"], row["dep.model.broken"]) == (
        "failed", "accuracy", "SingleStream", "fast", "true")
    assert row.get("result") is None and row.get("samples_per_second") is None
    assert records.root_inputs(record)["mode"] == "accuracy"
    shown = bench.mlrun("runs", "show", out["run"])
    assert shown.returncode == 0, shown.stderr
    assert "failed at step model after" in shown.stdout
    lines = shown.stdout.splitlines()
    assert any(line.split()[:3] == ["app", "_fast", "_cpu"] and line.rstrip().endswith("not run") for line in lines)
    assert any(line.split()[:2] == ["model", "failed"] for line in lines)
    assert "settings: backend=fast device=cpu mode=accuracy scenario=SingleStream" in shown.stdout
    listed = bench.mlrun("runs", "--status", "failed").stdout.splitlines()
    assert len(listed) == 2 and "accuracy/SingleStream" in listed[1] and listed[1].split()[-1] == "failed"


def test_an_interrupted_run_is_flat_too(bench, tmp_path):
    wait = tmp_path / "wait"
    wait.write_text("")
    proc = bench.popen("app bench", f"--wait={wait}", "--batch_size=8")
    try:
        assert wait_for(lambda: os.path.isdir(bench.runs) and any(
            os.path.isdir(os.path.join(bench.runs, r, "app")) for r in os.listdir(bench.runs)), timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    (run_id,) = os.listdir(bench.runs)
    row = flat_of(bench, run_id)
    assert (row["status"], row["batch_size"], row["mode"], row["backend"]) == ("interrupted", 8, "performance", "fast")
    record = records.load(os.path.join(bench.runs, run_id, "run.json"))
    assert [s["status"] for s in record["steps"]] == ["built", "interrupted"]
    listed = json.loads(bench.mlrun("runs", "--status", "interrupted", "--json").stdout)
    assert [r["run"] for r in listed] == [run_id]
    assert record["results"] is None   # it wrote none before it was stopped


@pytest.mark.parametrize("written, results", [('{"answers": 2}', {"answers": 2}),
                                              ('{"answ', None)])   # cut mid-write: none, the record still readable
def test_what_a_stopped_step_wrote_of_its_results_is_the_runs(ws, tmp_path, written, results):
    """A QA session stopped by Ctrl-C keeps the answers so far in qa.json; the record had none (`runs`: RESULT -)."""
    ws.recipe("talk", "tags: talk\ncache: false\nrun: bash \"{recipe}/run.sh\"\nrecord: {results: qa.json}\n",
              files={"run.sh": f"echo '{written}' > qa.json; touch started; sleep 60\n"})
    proc = ws.popen("talk")
    try:
        assert wait_for(lambda: os.path.isdir(ws.runs) and any(
            os.path.exists(os.path.join(ws.runs, r, "talk", "started")) for r in os.listdir(ws.runs)), timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    (run_id,) = os.listdir(ws.runs)
    record = records.load(os.path.join(ws.runs, run_id, "run.json"))
    assert record["status"] == "interrupted" and record["results"] == results, record


@pytest.fixture
def history(bench):
    """Five runs: 2 and 12 layers, two backends, one accuracy, one helper command."""
    ids = [run(bench, "app bench", "--dep.model.layers=2")["run"],
           run(bench, "app bench", "--dep.model.layers=12")["run"],
           run(bench, "app bench _slow", "--batch_size=4")["run"],
           run(bench, "app bench", "--mode=accuracy")["run"],
           run(bench, "get model", "--layers=3")["run"]]
    return bench, ids


def rows_of(ws, *args):
    result = ws.mlrun("runs", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_runs_filters(history):
    ws, ids = history
    assert [r["run"] for r in rows_of(ws)] == ids[:4]               # helpers hidden
    assert [r["run"] for r in rows_of(ws, "--all")] == ids
    assert [r["run"] for r in rows_of(ws, "--last", "2")] == ids[2:4]
    assert [r["run"] for r in rows_of(ws, "--where", "backend=_slow")] == [ids[2]]
    assert [r["run"] for r in rows_of(ws, "--where", "backend=SLOW")] == [ids[2]]   # without case
    assert [r["run"] for r in rows_of(ws, "--where", "backend!=slow", "--where", "mode=performance")] == ids[:2]
    assert [r["run"] for r in rows_of(ws, "--where", "samples_per_second>100")] == [ids[0], ids[1], ids[3]]
    assert [r["run"] for r in rows_of(ws, "--where", "samples_per_second<=50")] == [ids[2]]
    assert [r["run"] for r in rows_of(ws, "--where", "dep.model.layers>=12")] == [ids[1]]
    assert [r["run"] for r in rows_of(ws, "--where", "dep.model.layers=2.0")] == [ids[0]]
    assert [r["run"] for r in rows_of(ws, "--query", "_slow")] == [ids[2]]
    assert [r["run"] for r in rows_of(ws, "--query", "get model")] == [ids[4]]   # asked for: shown
    assert [r["run"] for r in rows_of(ws, "--status", "ok,failed", "--last", "1")] == [ids[3]]
    assert rows_of(ws, "--status", "failed") == []
    assert rows_of(ws, "--columns", "run,batch_size", "--last", "1") == [{"run": ids[3], "batch_size": 1}]
    assert_user_error(ws.mlrun("runs", "--where", "layer=2"), 2, "no field 'layer' in the runs",
                      "did you mean layers")
    assert_user_error(ws.mlrun("runs", "--where", "samples_per_second>fast"), 2, "> compares numbers")
    assert_user_error(ws.mlrun("runs", "--where", "=2"), 2, "write FIELD=VALUE")
    assert_user_error(ws.mlrun("runs", "--last", "0"), 2, "--last 0: give a number of runs")
    assert_user_error(ws.mlrun("runs", "--status", "ok,faild"), 2, "--status faild: not a run status (did you mean failed?)")
    assert_user_error(ws.mlrun("runs", "--status="), 2, "--status is empty")   # it listed every run, exit 0
    assert_user_error(ws.mlrun("runs", "--status", " , "), 2, "--status is empty")
    assert_user_error(ws.mlrun("runs", "--columns", "batchsize"), 2, "no field 'batchsize'", "did you mean batch_size")
    # the column the table heads LAYERS (it found nothing near: difflib's ratio of 'layers' to the long name)
    assert_user_error(ws.mlrun("runs", "--columns", "run,LAYERS"), 2, "no field 'LAYERS'",
                      "did you mean dep.model.layers")


@pytest.mark.slow
def test_runs_shows_the_settings_that_differ_in_100_columns(history):
    ws, ids = history
    table = ws.mlrun("runs", env=ws.env(COLUMNS="100")).stdout.splitlines()
    # The query's _slow is the BACKEND column's: the rest of the query is the same for all, said once below.
    assert table[0].split() == ["RUN", "MODE", "BACKEND", "BATCH_SIZE", "LAYERS", "RESULT", "STATUS"]
    assert table[-1] == "every run listed: app bench"
    by_id = {line.split()[0]: line for line in table[1:-1]}
    assert by_id[ids[0]].split()[-4:-2] == ["2", "200.5/s"] and by_id[ids[1]].split()[-4:-2] == ["12", "200.5/s"]
    assert "F1 91.25 EM 84.50" in by_id[ids[3]] and "accuracy/Offline" in by_id[ids[3]]
    assert all(len(line) <= 100 for line in table)
    # Long values are cut to fit; a query keeps its first word and its end (the variations that differ).
    ws.recipe("app", APP.replace("slow:", "another-very-long-variation-name:"), files={"run.sh": RUN_SH})
    run(ws, "app bench _another-very-long-variation-name _cpu", "--batch_size=2", "--env.HOME_OF_THE_RUN=/x/y/z")
    table = ws.mlrun("runs", env=ws.env(COLUMNS="100")).stdout.splitlines()
    assert all(len(line) <= 100 for line in table), "\n".join(table)
    assert _cut("app mlperf bert _onnxruntime _cpu _random", 24, middle=True) == "app ... _cpu _random"
    # Every listed run shares the query and mode: said once below the table.
    same = ws.mlrun("runs", "--where", "backend=fast", "--where", "mode=performance").stdout.splitlines()
    assert same[0].split() == ["RUN", "LAYERS", "RESULT", "STATUS"]
    assert same[-1] == "every run listed: app bench, perf/Offline"


def test_a_run_of_another_recipe_lacks_settings_but_does_not_make_them_differ(bench):
    """Its fields are absent, not other values: before, every setting of the benchmark became a column (21 on a
    100-column table, the query cut to 'app...'). A value left unset (None) of the same recipe still differs."""
    bench.recipe("qa", "tags: app qa\ncache: false\ninputs:\n  passage: {}\nrun: echo answered\n")
    run(bench, "app bench", "--dep.model.layers=2")
    run(bench, "app bench", "--dep.model.layers=12", "--wait=/nonexistent")
    run(bench, "app qa", "--passage=text")
    table = bench.mlrun("runs", env=bench.env(COLUMNS="100")).stdout.splitlines()
    assert table[0].split() == ["RUN", "QUERY", "MODE", "WAIT", "LAYERS", "RESULT", "STATUS"], table


@pytest.mark.slow  # about 3 s on the 2-core EPYC
def test_a_table_of_too_many_differing_settings_leaves_some_out_and_says_which(bench):
    """A varied history made 365-column rows with every value cut to 'app...', 'per...': settings few runs have
    are left out now (named below), and the query keeps its words."""
    for i in range(12):
        run(bench, "app bench", f"--env.KNOB_NUMBER_{i}=value-{i}", f"--batch_size={i + 1}")
    table = bench.mlrun("runs", env=bench.env(COLUMNS="100")).stdout.splitlines()
    assert all(len(line) <= 100 for line in table), "\n".join(table)
    assert table[0].split()[:2] == ["RUN", "BATCH_SIZE"] and table[-1] == "every run listed: app bench, perf/Offline"
    # The names left out are wrapped to the width, never cut: they are what --columns takes
    start = next(i for i, line in enumerate(table) if line.startswith("9 more settings differ"))
    footer = " ".join(table[start:-1])
    assert footer.startswith("9 more settings differ, not shown (--columns picks them, --csv has all): "
                             "env.KNOB_NUMBER_10, env.") and footer.endswith("env.KNOB_NUMBER_9"), footer
    wide = bench.mlrun("runs", "--columns", "run,env.KNOB_NUMBER_3", env=bench.env(COLUMNS="100")).stdout
    assert "value-3" in wide


def test_words_every_listed_run_has_leave_the_query_for_the_line_below(bench):
    """A query cut to fit keeps its first word and its end: two runs that differ in a variation in its middle
    looked alike ('app ... _cpu _random' for _onnxruntime and _deepsparse). The variations all listed runs share
    are said once below the table."""
    bench.recipe("app", APP.replace("slow:", "a-backend-of-a-long-name:"), files={"run.sh": RUN_SH})
    for i, backend in enumerate(("_fast", "_a-backend-of-a-long-name")):
        run(bench, f"app bench {backend} _cpu", f"--batch_size={i + 1}", f"--dep.model.layers={i + 2}",
            f"--env.KNOB_ONE=value-{i}", f"--env.KNOB_TWO=value-{i}")
    lines = bench.mlrun("runs", env=bench.env(COLUMNS="50")).stdout.splitlines()
    assert lines[-1] == "every run listed: perf/Offline, app bench _cpu", lines
    assert {line.split()[1][:3] for line in lines[1:3]} == {"_fa", "_a-"}, lines   # the first words differ
    table = bench.mlrun("runs", "--columns", "run,query,status", env=bench.env(COLUMNS="100")).stdout
    assert "_cpu" in table   # columns asked for: the queries whole


@pytest.mark.parametrize("text", ["{half", '{"id": "x", "results": "oops", "steps": 5, "status": "ok"}',
                                  '{"steps": [], "request": "a string", "status": "ok"}', '{"steps": [3]}',
                                  # an imported bundle's hand-edited record ended the listing ('float' - 'str')
                                  '{"steps": [], "status": "ok", "started": "yesterday", "finished": 5.0}',
                                  '{"steps": [], "status": "ok", "packages": [1, 2]}'])
@pytest.mark.slow  # about 1.0 s each on the 2-core EPYC
def test_a_record_that_cannot_be_read_is_said(bench, text):
    """A record of the wrong shape ("steps": 5) ended `runs`, `runs show` and `diff` with 'unexpected TypeError'."""
    first = run(bench, "app bench")["run"]
    second = run(bench, "app bench")["run"]
    with open(os.path.join(bench.runs, first, "run.json"), "w") as f:
        f.write(text)
    listed = bench.mlrun("runs")
    assert listed.returncode == 0 and f"1 run record could not be read: {first} (`mlrun runs show {first}`" \
        in listed.stderr, listed.stderr
    assert second in listed.stdout
    as_json = bench.mlrun("runs", "--json")   # a script is who needs it most: its rows lacked it unsaid
    assert f"1 run record could not be read: {first}" in as_json.stderr and json.loads(as_json.stdout)
    for verb in (["runs", "show", first], ["diff", first, second], ["replay", first]):
        said = bench.mlrun(*verb)
        assert_user_error(said, 2)
        assert "unexpected" not in said.stderr and ("cannot read run record" in said.stderr
                                                    or "is not an mlrun run record" in said.stderr), said.stderr


def test_an_override_given_to_some_runs_only_makes_a_column(bench):
    """A run without --dep.model.layers ran the recipe's own value: 2 layers and the default look apart (was: the
    override absent from a run made no column, two runs of other models looked alike)."""
    first = run(bench, "app bench", "--dep.model.layers=12")["run"]
    second = run(bench, "app bench", "--env.OMP_WAIT_POLICY=PASSIVE")["run"]
    table = bench.mlrun("runs", env=bench.env(COLUMNS="120")).stdout.splitlines()
    head = table[0].split()
    assert head[1:3] == ["LAYERS", "ENV.OMP_WAIT_POLICY"], table
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert rows[first][1:3] == ["12", "-"] and rows[second][1:3] == ["-", "PASSIVE"], table


def test_an_input_a_run_left_to_the_recipe_reads_as_not_given_with_what_it_had(bench):
    """A column of 2s: one run asked --threads=2, the other left it to the rule (which chose 2); the column said
    the settings differ and showed them alike. As `sweep show`: `- (2)`, in the table and Markdown, not in --csv."""
    bench.recipe("ruled", "tags: app ruled\ncache: false\ninputs:\n  threads: {type: int, help: 'default: a rule'}\n"
                          "run: |\n  echo '{\"threads\": 2}' > summary.json\nrecord: {results: summary.json}\n")
    first = run(bench, "app ruled", "--threads=2")["run"]
    second = run(bench, "app ruled")["run"]
    table = bench.mlrun("runs", env=bench.env(COLUMNS="120")).stdout.splitlines()
    assert table[0].split()[1] == "THREADS", table
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert rows[first][1] == "2" and rows[second][1:3] == ["-", "(2)"], table
    markdown = bench.mlrun("runs", "--markdown").stdout
    assert f"| {second} | - (2) |" in markdown and f"| {first} | 2 |" in markdown, markdown
    assert [r["threads"] for r in csv.DictReader(io.StringIO(bench.mlrun("runs", "--csv").stdout))] == ["2", "2"]


def test_runs_csv_and_markdown_share_the_rows(history):
    ws, ids = history
    rows = list(csv.DictReader(io.StringIO(ws.mlrun("runs", "--csv").stdout)))
    assert [r["run"] for r in rows] == ids[:4] and rows[2]["samples_per_second"] == "50"
    assert rows[0]["dep.model.layers"] == "2" and rows[3]["f1"] == "91.25"
    markdown = ws.mlrun("runs", "--markdown", "--columns", "run,samples_per_second", "--last", "1").stdout
    assert markdown.splitlines() == ["| run | samples_per_second |", "| --- | ---: |", f"| {ids[3]} | 200.5 |"]
    assert ws.mlrun("runs", "--csv", "--json").returncode == 2


def test_short_results_say_so_in_tables_and_keep_loadgen_s_word_for_scripts():
    rows = [{"result": "VALID", "short": True}, {"result": "VALID", "short": False}, {"result": None, "short": True}]
    table = render(rows, ["result"], "table").splitlines()
    assert [line.strip() for line in table] == ["RESULT", "VALID (short)", "VALID", "-"]
    assert "| VALID (short) |" in render(rows, ["result"], "markdown")
    assert [r["result"] for r in csv.DictReader(io.StringIO(render(rows, ["result"], "csv")))] == ["VALID", "VALID", ""]
    assert [r["result"] for r in json.loads(render(rows, ["result"], "json"))] == ["VALID", "VALID", None]


def test_render_and_where_units():
    rows = [{"a": 1, "b": "x|y", "c": None, "d": 1234.5678, "e": True}]
    assert render(rows, ["a", "b", "c", "d", "e"], "markdown").splitlines()[2] == "| 1 | x\\|y | - | 1235 | true |"
    assert json.loads(render(rows, ["c", "d"], "json")) == [{"c": None, "d": 1234.5678}]
    assert parse_where(["a>=2", "b = x "]) == [("a", ">=", "2"), ("b", "=", "x")]
    assert parse_where(["dep.mid/kid.size=7"]) == [("dep.mid/kid.size", "=", "7")]   # a dep of a dep: was refused
    for typo in ("batch_size==1", "batch_size=>1", "batch_size=<1", "a!==1", "a<>1"):   # each matched nothing, unsaid
        with pytest.raises(UsageError, match="one operator between the field and the value"):
            parse_where([typo])
    assert parse_where(["a!=1", "a<=1", "q=x=y"]) == [("a", "!=", "1"), ("a", "<=", "1"), ("q", "=", "x=y")]


def test_a_narrow_table_cuts_paths_and_other_columns_before_the_query():
    """The query says what ran: it keeps its first word and its end while a path is cut to a few characters
    (was: both cut to 'app...' and '/tm...')."""
    rows = [{"run": "20261204-095210-51f5", "query_rest": "app mlperf bert _onnxruntime _cpu _random",
             "mode_scenario": "perf/Offline", "model": "random", "audit_config": "/tmp/subm/work/TEST01/audit.config",
             "headline": "31.30/s VALID (short)", "status": "ok"}]
    [head, line] = render(rows, list(rows[0]), width=104).splitlines()
    assert len(line) <= 104 and "app ... _cpu _random" in line and "/tm..." in line, line
    assert "  perf/Offline  " in line, line   # whole: 'perf/S...' hid SingleStream from Server (a user's trial)
    # An error keeps its end, where a failed step's own words are (was: "step app-mlperf-bert _onn...")
    rows = [{"point": "p001", "point_status": "failed", "error": "step app-mlperf-bert _onnxruntime _cpu _random "
             "failed: exited with code 2: model.onnx has a fixed sequence length 16; the features are 384 long"}]
    [head, line] = render(rows, ["point", "point_status", "error"], width=60).splitlines()
    assert line.endswith("; the features are 384 long") and "  ..." in line and len(line) <= 60, line


def test_a_table_never_cuts_the_columns_it_is_told_to_keep_whole():
    """sweep show cut both package values of a grid to 'onn...': its two points read alike."""
    from engine import results
    rows = [{"point": f"p00{i}", "dep.backend/python.packages": f"onnxruntime==1.2{i}.2", "scenario": "SingleStream",
             "error": "x" * 80} for i in (2, 3)]
    columns = ["point", "dep.backend/python.packages", "scenario", "error"]
    cut = results.render(rows, columns, width=30)
    kept = results.render(rows, columns, width=30, whole=["dep.backend/python.packages", "scenario"])
    assert "onnxruntime==1.22.2" not in cut
    assert "onnxruntime==1.22.2" in kept and "onnxruntime==1.23.2" in kept and "SingleStream" in kept
    assert "true,false" in results.render([{"a": True, "b": False}], ["a", "b"], fmt="csv").replace("\n", ",")


def test_a_documented_field_no_run_has_yet_is_an_empty_column_not_an_error(bench):
    """README's own example (`--columns run,...,samples_per_second`) and the hint's `--where samples_per_second>100`
    failed with "no field" until an Offline performance run existed (a user's trial)."""
    first = run(bench, "app bench", "--mode=accuracy")["run"]
    shown = bench.mlrun("runs", "--columns", "run,scheduled_samples_per_second,accuracy_met", "--csv")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["run,scheduled_samples_per_second,accuracy_met", f"{first},,"], shown.stdout
    where = bench.mlrun("runs", "--where", "scheduled_samples_per_second>100", "--json")
    assert where.returncode == 0 and json.loads(where.stdout) == [], where.stderr
    assert_user_error(bench.mlrun("runs", "--columns", "samples_per_secnd"), 2, "no field 'samples_per_secnd'")


def test_a_result_named_as_an_input_nobody_set_makes_no_settings_column():
    """THREADS and INSTANCES (what the parallelism rule chose, in the results) took the table's room while the
    settings that were asked and differed (count, --env) went to '4 more settings differ, not shown'."""
    from engine.results import run_columns
    items = [({"run": f"r{i}", "query": "app x", "threads": 3 - i, "count": 10 * i, "headline": "-", "status": "ok"},
              {"threads": None, "count": str(10 * i)}) for i in (1, 2)]
    columns, _ = run_columns(items, [row for row, _ in items])
    assert "count" in columns and "threads" not in columns, columns


def test_headline_and_result_asked_together_are_two_headers():
    """`--columns run,headline,result` printed two columns both headed RESULT."""
    from engine.results import label
    assert label("headline") == "RESULT" and label("result", ("headline", "result")) == "RESULT"
    assert label("headline", ("headline", "result")) == "HEADLINE"
    # a sweep's two statuses (the point's and its run's) were both STATUS; a dep of a dep's key said not which dep
    assert label("point_status", ("point", "point_status", "status")) == "POINT_STATUS"
    assert label("point_status", ("point", "point_status")) == "STATUS"
    assert label("dep.model.layers", ("dep.model.layers",)) == "LAYERS"
    assert label("dep.features/python.python", ("dep.features/python.python",)) == "FEATURES/PYTHON.PYTHON"


def _memo(ws):
    return os.path.join(ws.runs, ".index", f"rows-{os.getuid()}.json")


@pytest.mark.slow  # about 0.9 s on the 2-core EPYC
def test_runs_remembers_each_finished_runs_row_until_its_record_changes(bench):
    """`runs` read every record each time (2 s for 3,000 runs): a finished run's row is kept per user, with its
    record's identity (inode, size, mtime), and read again once that changes."""
    first, second = run(bench, "app bench")["run"], run(bench, "app bench _slow")["run"]
    listed = rows_of(bench)
    assert [r["samples_per_second"] for r in listed] == [200.5, 50]
    memo = _memo(bench)
    assert os.stat(memo).st_mode & 0o777 == 0o600   # a teammate's private run never shows through it
    assert rows_of(bench) == listed and bench.mlrun("runs").stdout == bench.mlrun("runs").stdout
    # The same identity: the row kept is the row shown (the record is not read).
    path = os.path.join(bench.runs, first, "run.json")
    st, text = os.stat(path), open(path).read()
    changed = text.replace('"Samples per second": 200.5', '"Samples per second": 300.5')
    assert changed != text and len(changed) == len(text)
    with open(path, "r+") as f:
        f.write(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [r["samples_per_second"] for r in rows_of(bench)] == [200.5, 50]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))   # rewritten: read again
    assert [r["samples_per_second"] for r in rows_of(bench)] == [300.5, 50]
    # A run removed leaves the memo; a memo of another version, or damaged, is read past and written again.
    import shutil
    shutil.rmtree(os.path.join(bench.runs, second))
    assert [r["run"] for r in rows_of(bench)] == [first] and list(kept_rows(bench)) == [first]
    for text in ('{"version": "0.0.1", "rows": {"%s": {"stat": [], "row": {}, "settings": {}}}}' % first,
                 "{not json", '{"version": "x", "rows": [1]}', "[]"):
        with open(memo, "w") as f:
            f.write(text)
        assert [r["samples_per_second"] for r in rows_of(bench)] == [300.5]
        assert list(kept_rows(bench)) == [first]
    # Edited by hand below its first line (a started time as text said "unexpected TypeError ... a bug"): read past
    head, body = open(memo, "rb").read().split(b"\n", 1)
    rows = json.loads(body)
    rows[first]["row"]["started"] = "x"
    open(memo, "wb").write(head + b"\n" + json.dumps(rows).encode())
    listed = bench.mlrun("runs")
    assert listed.returncode == 0 and first in listed.stdout and not listed.stderr, listed.stderr
    assert kept_rows(bench)[first]["row"]["started"] != "x"
    # A memo of this version made by other code (a checkout pulled between two versions) is read past too
    from engine.shapes import seal
    from engine.version import __version__
    rows = kept_rows(bench)
    rows[first]["row"]["samples_per_second"] = 999
    open(memo, "wb").write(seal({"version": __version__}, rows))
    assert [r["samples_per_second"] for r in rows_of(bench)] == [300.5]


def test_a_running_runs_row_is_never_kept_its_death_shows(bench, tmp_path):
    """A record that says running is its process's state, asked each time: kept, a run killed by SIGKILL would
    stay `running` in `runs`."""
    wait = tmp_path / "wait"
    wait.write_text("")
    proc = bench.popen("app bench", f"--wait={wait}")
    try:
        assert wait_for(lambda: os.path.isdir(bench.runs) and any(
            os.path.isdir(os.path.join(bench.runs, r, "app")) for r in os.listdir(bench.runs)), timeout=30)
        assert [r["status"] for r in rows_of(bench)] == ["running"]
    finally:
        kill_group(proc)
        proc.communicate(timeout=30)
    assert [r["status"] for r in rows_of(bench)] == ["died"]
    # dead for good: its row is kept (every `runs` read each died record again)
    assert [kept["row"]["status"] for kept in kept_rows(bench).values()] == ["died"]


def test_runs_lists_without_its_memo_where_it_cannot_write_one(bench):
    """A runs folder this user may only read (a teammate's), or a full disk: every record is read, nothing said."""
    first = run(bench, "app bench")["run"]
    with open(os.path.join(bench.runs, ".index"), "w") as f:   # not a folder: the memo cannot be written there
        f.write("")
    result = bench.mlrun("runs")
    assert result.returncode == 0 and first in result.stdout and not result.stderr, result.stderr
    assert set(os.listdir(bench.runs)) == {first, ".index"}   # no temporary file left


def test_listing_an_empty_runs_folder_writes_nothing_there(ws):
    os.makedirs(ws.runs)
    result = ws.mlrun("runs")
    assert result.returncode == 0 and "no runs in" in result.stdout and os.listdir(ws.runs) == []


@pytest.mark.slow  # about 1.2 s on the 2-core EPYC
def test_last_names_the_newest_run_the_listing_shows(history):
    """`last` (and last~N) for RUN: the run a user just saw at the bottom of `mlrun runs`, helpers left out as
    there (the newest record here is `get model`'s)."""
    ws, ids = history
    shown = ws.mlrun("runs", "show", "last")
    assert shown.returncode == 0 and shown.stdout.startswith(f"run {ids[3]} "), shown.stdout
    assert ws.mlrun("runs", "show", "last~2").stdout.startswith(f"run {ids[1]} ")
    compared = json.loads(ws.mlrun("diff", "last~1", "last", "--json").stdout)
    assert (compared["a"], compared["b"]) == (ids[2], ids[3])
    replayed = ws.mlrun("replay", "last", "--json")
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["replay_of"] == ids[3], replayed.stderr
    assert ws.mlrun("runs", "show", "last").stdout.startswith(f"run {json.loads(replayed.stdout)['run']} ")
    assert_user_error(ws.mlrun("runs", "show", "last~5"), 2, "no run 'last~5'", "`mlrun runs` lists 5")
    assert_user_error(ws.mlrun("runs", "show", "latest"), 2, "no run 'latest'", "`last` names the newest")


@pytest.mark.slow   # about 0.7 s on the EPYC
def test_since_keeps_the_runs_started_within_an_age_or_since_a_date(bench):
    import datetime
    import time
    old, new = run(bench, "app bench")["run"], run(bench, "app bench _slow")["run"]
    path = os.path.join(bench.runs, old, "run.json")
    record = json.load(open(path))
    record["started"] -= 3 * 86400   # three days ago (the listing reads the record again: it changed)
    with open(path, "w") as f:
        json.dump(record, f)
    assert [r["run"] for r in rows_of(bench, "--since", "1d")] == [new]
    assert [r["run"] for r in rows_of(bench, "--since", "4d")] == [old, new]
    between = datetime.datetime.fromtimestamp(time.time() - 86400).isoformat(timespec="minutes")
    assert [r["run"] for r in rows_of(bench, "--since", between)] == [new]
    day = datetime.date.fromtimestamp(record["started"]).isoformat()
    assert [r["run"] for r in rows_of(bench, "--since", day)] == [old, new]
    assert_user_error(bench.mlrun("runs", "--since", "yesterday"), 2, "--since 'yesterday': an age or a date",
                      "2026-12-01T09:30")
    assert_user_error(bench.mlrun("runs", "show", new, "--since", "1d"), 2, "--since")


@pytest.mark.slow   # about 2 s: five runs and a running one
def test_rm_run_removes_runs_by_id_or_age_and_never_a_running_one(ws, tmp_path):
    """Runs could not be removed but by hand (`rm run` said "'run' is not one of cache, failed"): 3,000 runs were
    1.3 GB of recipe copies."""
    ws.recipe("a", "tags: a\ncache: false\nrun: echo hi\n")
    ws.recipe("slow", f"tags: slow\ncache: false\nrun: touch {tmp_path}/started; sleep 60\n")
    for _ in range(3):
        assert ws.mlrun("a").returncode == 0
    three = run_ids(ws.runs)
    assert_user_error(ws.mlrun("rm", "run", "last"), 2, "1 run would be removed; pass -y")
    done = ws.mlrun("rm", "run", "last", "-y")
    assert done.returncode == 0 and "removed 1 run" in done.stdout, done.stderr
    first, second = left = [r for r in three if r != done.stdout.split()[0]]
    assert run_ids(ws.runs) == left
    assert_user_error(ws.mlrun("rm", "run"), 2, "say which runs")
    assert_user_error(ws.mlrun("rm", "run", first, "--older-than", "1d"), 2, "say which runs")
    assert_user_error(ws.mlrun("rm", "cache", "--older-than", "1d"), 2, "rm cache takes no --older-than", "gc")
    assert ws.mlrun("rm", "run", "--older-than", "1h", "-y").stdout.strip() == "nothing to remove"
    proc = ws.popen("slow")
    try:
        assert wait_for(lambda: os.path.exists(tmp_path / "started"), timeout=30)
        [running] = [r for r in run_ids(ws.runs) if r not in (first, second)]
        assert_user_error(ws.mlrun("rm", "run", running, "-y"), 2, f"run {running} is still running", "stop it first")
        aged = ws.mlrun("rm", "run", "--older-than", "0s", "-y")
        assert aged.returncode == 0 and "removed 2 runs" in aged.stdout, aged.stderr
        assert f"1 run of that age still runs and stays: {running}" in aged.stderr
        assert run_ids(ws.runs) == [running]
    finally:
        kill_group(proc)
        proc.communicate(timeout=30)
    assert ws.mlrun("rm", "run", running, "-y").returncode == 0 and run_ids(ws.runs) == []   # died: removable
    assert ws.mlrun("gc", "--dry-run").stdout.strip() == "nothing to remove"
    # a record that says running but names no process (an old or damaged one) is removable: it was never
    assert ws.mlrun("a").returncode == 0
    [old] = run_ids(ws.runs)
    path = os.path.join(ws.runs, old, "run.json")
    record = json.load(open(path))
    record.update(status="running", process={})
    json.dump(record, open(path, "w"))
    assert ws.mlrun("rm", "run", old, "-y").returncode == 0 and run_ids(ws.runs) == []
    # a removal stopped half-way is no second copy of its run
    assert ws.mlrun("a").returncode == 0
    [kept] = run_ids(ws.runs)
    shutil.copytree(os.path.join(ws.runs, kept), os.path.join(ws.runs, f".removing-{kept}.4242"))
    listed = ws.mlrun("runs", "--json")
    assert [r["run"] for r in json.loads(listed.stdout)] == [kept]


def test_last_with_only_helper_runs_says_they_are_not_counted(ws):
    """After `mlrun "get ..."` alone, `runs show last` said "`mlrun runs` lists 0" and no more: the run just made
    was there, a helper, which `last` leaves out as `mlrun runs` does."""
    ws.recipe("thing", "tags: get thing\nrun: echo x > x.txt\n")
    assert ws.mlrun("get thing").returncode == 0
    err = assert_user_error(ws.mlrun("runs", "show", "last"), 2, "no run 'last'", "`mlrun runs` lists 0",
                            "helper commands such as `get ...` are not counted: 1 here", "mlrun runs --all")
    assert len(err.strip().splitlines()) == 2, err


def test_a_filter_that_matches_no_run_names_the_values_near_it(bench):
    """`--where scenario=Ofline`, `--query _slw`: "no runs that match", as if there were none, a typo unsaid."""
    run(bench, "app bench _slow", "--scenario=SingleStream")
    for args, near in ((["--where", "scenario=singlestram"], "(did you mean scenario=SingleStream?)"),
                       (["--where", "backend=slw", "--where", "mode=performance"], "(did you mean backend=slow?)"),
                       (["--query", "app _slw"], "(did you mean --query 'app _slow'?)"),
                       (["--query", "slw"], "(did you mean --query _slow?)")):
        result = bench.mlrun("runs", *args)
        assert result.returncode == 0 and result.stdout.startswith("no runs that match in "), result.stdout
        assert near in result.stdout, result.stdout
    unlike = bench.mlrun("runs", "--where", "scenario=Server", "--query", "app")   # nothing near: no guess
    assert "did you mean" not in unlike.stdout, unlike.stdout
    assert results.near_misses([{"query": "app bench _slow", "scenario": "SingleStream"}],
                               [("scenario", "!=", "singlestram")]) == ""   # != a typo still matches rows
    assert results.near_misses([{"query": "get thing"}], [("query", "=", "get thng")]) \
        == " (did you mean 'query=get thing'?)"   # as it is typed: it read query=get thing, unquoted
