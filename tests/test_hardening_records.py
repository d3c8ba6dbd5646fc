"""Run records always end (issue 8: run records).

run.json is written when a run starts ("running", with the process that runs it) and ends with a
final status (ok, failed, interrupted, error) and the error text, whatever stops the run; a record
left "running" by a process that is gone shows as `died`.
"""
import contextlib
import json
import os
import signal
import subprocess

import pytest

from conftest import ROOT, SHARED_DATA, assert_user_error, kill_group, run_ids, wait_for
from engine import Cache, cli, records, resolve
from engine.runner import Runner, RunReporter
from engine.results import show


def only_record(ws):
    (run_id,) = os.listdir(ws.runs)
    return json.load(open(os.path.join(ws.runs, run_id, "run.json")))


@contextlib.contextmanager
def tmpfs(path, size="1m"):
    """A small file system at path (root only), so a test can fill it."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder):
    """Write into folder until its file system is full."""
    with open(os.path.join(folder, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_record_is_written_at_the_start_and_a_sigkilled_run_shows_as_died(ws, tmp_path):
    started, quick = tmp_path / "started", tmp_path / "quick"
    ws.recipe("slow", f"tags: slow\ncache: false\nrun: 'touch {started}; [ -e {quick} ] || sleep 60'\n")
    proc = ws.popen("slow")
    try:
        assert wait_for(started.exists, timeout=30), proc.stderr.read() if proc.poll() is not None else ""
        record = only_record(ws)
        assert record["status"] == "running"
        assert record["process"]["pid"] == proc.pid and record["process"]["host"] == os.uname().nodename
        assert "running" in ws.mlrun("runs").stdout.split("\n")[1]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        kill_group(proc)
    assert only_record(ws)["status"] == "running"  # nothing could write after SIGKILL
    listed = ws.mlrun("runs")
    assert listed.returncode == 0 and listed.stdout.split("\n")[1].split()[-1] == "died", listed.stdout
    assert json.loads(ws.mlrun("runs", "--json").stdout)[0]["status"] == "died"
    shown = ws.mlrun("runs", "show", record["id"])
    assert f"run {record['id']}  died" in shown.stdout and f"pid {proc.pid}" in shown.stdout
    assert "not recorded" in shown.stdout and "not run" not in shown.stdout   # its steps' state is unknown
    # Its bundle says why it holds no entries (was: "with 0 cache entries", nothing more)
    exported = ws.mlrun("export", record["id"], "-o", str(tmp_path / "died.tar.gz"), "--with-cache")
    assert "with 0 cache entries (the run died before it recorded the steps it used)" in exported.stdout
    # its replay says how far it got is unknown (it said the run "stopped before 1 step", which it had reached)
    quick.write_text("")
    replayed = ws.mlrun("replay", record["id"])
    assert "the recorded run (died) kept no step's outcome: how far it got is unknown" in replayed.stdout, \
        replayed.stdout + replayed.stderr


def test_a_record_from_another_machine_is_not_judged_here():
    gone = {"status": "running", "process": {"pid": 1, "host": "elsewhere", "boot": "b", "pid_ns": 1,
                                             "started": 5}}
    assert records.status(gone) == "running?"
    assert records.status({"status": "running"}) == "running?"  # recorded before mlrun said who ran it
    assert records.status({"status": "ok", "process": gone["process"]}) == "ok"


def test_an_unexpected_exception_ends_the_record_as_error(ws, monkeypatch):
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\nrecord: {results: a.txt}\n")

    def boom(folder, wanted, strict=False):
        raise RuntimeError("boom")
    monkeypatch.setattr(records, "collect", boom)
    runner = Runner(Cache(ws.cache), ws.runs, reporter=RunReporter(open(os.devnull, "w")), stream_root=False)
    with pytest.raises(RuntimeError):
        runner.run(resolve(ws.index(), "a"), argv=["mlrun", "a"])
    record = only_record(ws)
    assert (record["status"], record["error"]) == ("error", "RuntimeError: boom")
    assert record["finished"] >= record["started"]


@pytest.mark.parametrize("verb, argv, said", [
    ("rm", ["rm", "cache", "--all", "-y"], "what it was removing may be half gone: the same command finishes it"),
    ("export", ["export", "x", "-o", "x.tar.gz"], "no bundle was written"),
    ("run", ["a"], "nothing half-built was published"),
])
def test_an_interrupted_verb_says_what_it_left(ws, monkeypatch, capsys, verb, argv, said):
    """An interrupted rm said 'nothing half-built was published' of an entry already out of sight."""
    from engine.guard import Interrupted

    def stopped(*args):
        raise Interrupted(signal.SIGINT)
    monkeypatch.setitem(cli.VERB_FUNCS, verb, stopped)
    for key, value in ws.env().items():
        monkeypatch.setenv(key, value)
    os.makedirs(ws.cache, exist_ok=True)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == f"mlrun: interrupted by SIGINT; {said}\n"


def test_the_cli_reports_an_unexpected_exception_in_one_line(ws, monkeypatch, capsys):
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\nrecord: {results: a.txt}\n")
    monkeypatch.setattr(records, "collect", lambda folder, wanted, strict=False: {}["no such key"])
    for key, value in ws.env().items():
        monkeypatch.setenv(key, value)
    code = cli.main(["a"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "mlrun: error: unexpected KeyError: 'no such key'" in err
    assert only_record(ws)["status"] == "error"


def test_a_removed_run_folder_is_said_in_one_line_and_the_first_error_stays_the_cause(ws):
    """The step removes its own run folder: step.json could not be written, then neither could run.json."""
    ws.recipe("gone", 'tags: gone\ncache: false\nrun: rm -rf "$(dirname "$MLRUN_ENTRY")"\n')
    result = ws.mlrun("gone")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    error = [line for line in lines if line.startswith("mlrun: error: ")]
    # the step's own doing, said so (it was "cannot use .../step.json: No such file or directory", exit 2)
    assert len(error) == 1 and "it removed its own folder" in error[0] and result.returncode == 1, result.stderr
    assert only_record(ws)["status"] == "failed"


def test_a_results_file_that_is_not_json_fails_the_step(ws):
    """record: {results: summary.json} holding '{broken' ended ok with results ["{broken"]: no field, no word."""
    ws.recipe("np", "tags: np\ncache: false\nrun: echo '{broken' > summary.json\nrecord: {results: summary.json}\n")
    result = ws.mlrun("np")
    assert_user_error(result, 1, "step np failed: its results file summary.json is not JSON (Expecting property name")
    assert only_record(ws)["status"] == "failed"
    ws.recipe("np", "tags: np\ncache: false\nrun: |\n  echo '{\"ok\": 1}' > summary.json\nrecord: {results: summary.json}\n")
    assert ws.mlrun("np").returncode == 0


@pytest.mark.parametrize("run, said", [
    ("if [ -e ../../ok ]; then echo '{\"x\": 1}' > s.json; else echo '{\"x\":' > s.json; fi",
     "its results file s.json is not JSON"),
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else mkdir s.json; fi", "its results file s.json is a folder"),
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else printf '\\xb7\\xff' > s.json; fi",
     "its results file s.json is not UTF-8 text"),
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else python3 -c \"print('['*100000 + ']'*100000)\" > s.json; fi",
     "its results file s.json is not JSON (nested too deep)"),
    # read through a link out of the entry: its results changed with the outside file, cache verify saw nothing
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else echo '{}' > ../../out.json; ln -s $PWD/../../out.json s.json; fi",
     "its results file s.json lies out of its folder, through a link"),
    # a folder on its way linked out, and a link to nothing inside
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else mkdir -p ../../o; echo '{}' > ../../o/s.json; "
     "ln -s $PWD/../../o sub; ln -s sub/s.json s.json; fi", "its results file s.json lies out of its folder"),
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else ln -s nowhere s.json; fi",
     "its results file s.json is a link to nothing"),
    ("if [ -e ../../ok ]; then echo '{}' > s.json; else ln -s /nonexistent/x.json s.json; fi",
     "its results file s.json is a link to nothing"),
])
@pytest.mark.slow  # about 1.0 s each on the 2-core EPYC
def test_a_cached_step_whose_record_cannot_be_read_publishes_nothing(ws, run, said):
    """The record was read after the entry was published: every later run took the cached entry and failed on it
    again, until `rm cache`; a folder said "wrote no s.json", bytes not UTF-8 and deep nesting named no file."""
    ws.recipe("flaky", "tags: flaky\nrun: |\n  " + run + "\nrecord: {results: s.json}\n")
    assert_user_error(ws.mlrun("flaky"), 1, f"step flaky failed: {said}")
    assert ws.entries() == []
    open(os.path.join(ws.cache, "ok"), "w").close()   # ../../ok from the build folder: the step's own fix
    again = ws.mlrun("flaky")
    assert again.returncode == 0 and "built in" in again.stderr, again.stderr


def test_a_full_cache_disk_ends_the_record_as_error(ws):
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    with tmpfs(ws.cache):
        fill(ws.cache)
        result = ws.mlrun("a")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "No space left on device" in result.stderr, result.stderr
    record = only_record(ws)
    assert record["status"] == "error" and "No space left on device" in record["error"]
    assert "error" in ws.mlrun("runs").stdout.split("\n")[1]


def test_a_full_runs_disk_at_the_start_leaves_no_folder_without_a_record(ws):
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    with tmpfs(ws.runs):
        fill(ws.runs)
        result = ws.mlrun("a")
        assert_user_error(result, 2, "cannot write the run record", "No space left on device")
        assert os.listdir(ws.runs) == ["filler"]


def test_a_runs_disk_filled_by_the_recipes_copy_leaves_no_run_folder(ws):
    """The record was written at the start and the recipes' copy filled the disk: nothing had run, yet the folder
    stayed with its record at 'running', shown 'died' for ever (gc never removes a folder with a record)."""
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n", files={"big.dat": "x" * 1_200_000})
    with tmpfs(ws.runs):
        result = ws.mlrun("a")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "mlrun: error: cannot copy the recipes into the run record" in result.stderr
        assert "No space left on device" in result.stderr and "hint: the disk is full" in result.stderr
        assert result.stderr.count("mlrun: error: ") == 1
        assert os.listdir(ws.runs) == [] and ws.entries() == []


SQUAD = os.path.join(SHARED_DATA, "squad", "dev-v1.1.json")
VOCAB = os.path.join(SHARED_DATA, "bert-vocab", "vocab.txt")


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_process_mlperf_accuracy_squad_records_its_accuracy_as_the_runs_results(ws, tmp_path):
    """The real recipe's command and `record:`, on features of 20 questions (its own deps need a venv build)."""
    import numpy as np
    import yaml
    from mlperf_bert import squad_features
    if not (os.path.isfile(SQUAD) and os.path.isfile(VOCAB)):
        pytest.skip(f"SQuAD dev set and vocab not in {SHARED_DATA}")
    ws.recipe("small-features", f"""\
        tags: get dataset squad features small
        env: {{PYTHONPATH: "{ROOT}"}}
        run: '"$MLRUN_PYTHON" "{{recipe}}/build.py"'
        exports: {{SQUAD_FEATURES: "{{entry}}", SQUAD_FILE: "{SQUAD}"}}
        """, files={"build.py": f"""\
        from mlperf_bert import squad_features
        squad_features.build({SQUAD!r}, {VOCAB!r}, ".", max_examples=20)
        """})
    real = yaml.safe_load(open(os.path.join(ROOT, "recipes", "process-mlperf-accuracy-squad", "recipe.yaml")))
    real.pop("sources")
    real.update(deps=[{"name": "features", "query": "get dataset squad features small"}], env={"PYTHONPATH": ROOT})
    ws.recipe("process-mlperf-accuracy-squad", yaml.safe_dump(real))
    built = ws.mlrun("get dataset squad features small", "--json", timeout=300)
    assert built.returncode == 0, built.stderr
    features = squad_features.load(json.loads(built.stdout)["path"])
    # A hand-made LoadGen accuracy log: the same logits for every feature (the figures do not matter).
    rows = np.full((len(features.lengths), 384, 2), -10, "<f4")
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([{"seq_id": i, "qsl_idx": i, "data": rows[i].tobytes().hex().upper()}
                               for i in range(len(features.lengths))]))

    result = ws.mlrun("process mlperf accuracy squad", f"--log={log}", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run"]
    record = json.load(open(os.path.join(ws.runs, run_id, "run.json")))
    accuracy = record["results"]["accuracy"]
    assert accuracy["questions"] == 20 and accuracy["subset"] is False
    printed = json.loads(open(os.path.join(json.loads(result.stdout)["path"], "accuracy.txt")).readline())
    assert printed == {"exact_match": accuracy["exact_match"], "f1": accuracy["f1"]}
    assert run_id not in ws.mlrun("runs").stdout  # a helper command: listed with --all
    row = [line for line in ws.mlrun("runs", "--all").stdout.splitlines() if line.startswith(run_id)][0]
    assert f"F1 {show('f1', accuracy['f1'])} EM {show('exact_match', accuracy['exact_match'])}" in row


def test_a_results_file_that_is_no_object_fails_the_step(ws):
    """`[1, 2]` ran `ok`, then its run vanished from `mlrun runs` ("1 run record could not be read")."""
    ws.recipe("np", "tags: np\ncache: false\nrun: echo '[1, 2]' > summary.json\nrecord: {results: summary.json}\n")
    assert_user_error(ws.mlrun("np"), 1, "step np failed: its results file summary.json holds list [1, 2], where a JSON "
                                         "object of its figures is needed")


SHAPES = """\
tags: app shape
cache: false
inputs:
  data: {default: "{}"}
run: printf '%s' "$MLRUN_INPUT_DATA" > results.json
record: {results: results.json}
"""


@pytest.mark.parametrize("data", [
    '{"samples_per_second": 4.0, "result": true}',    # `runs` ended "unexpected TypeError" for every run
    '{"loadgen": {"result": 5, "metric": "fast"}}',
    '{"accuracy": {"f1": 90.5}}',                     # `runs show`: "unexpected KeyError: 'exact_match'"
    '{"accuracy": {"f1": "n/a", "exact_match": 1}}',  # "Unknown format code 'f'"
    '{"accuracy": 91.0, "seconds": 3, "point": 7, "features": 128, "a": {"b": {"c": 1}}}',
])
@pytest.mark.slow  # about 1.0 s each on the 2-core EPYC
def test_results_of_another_shape_are_shown_by_every_reader(ws, data):
    """A benchmark added as recipes wrote results not shaped as BERT's: one of them broke `runs` for every run,
    `runs show`, `diff` and `replay` crashed, and figures vanished from the rows."""
    ws.recipe("shape", SHAPES)
    first = ws.mlrun("app shape", "--json", "--data={}")
    second = ws.mlrun("app shape", "--json", f"--data={data}")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    a, b = (json.loads(r.stdout)["run"] for r in (first, second))
    for args in (["runs"], ["runs", "--json"], ["runs", "show", b], ["diff", a, b], ["replay", b]):
        result = ws.mlrun(*args)
        assert "unexpected" not in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode in (0, 1), (args, result.stderr)


def test_a_benchmarks_own_figures_are_rows_diff_and_replay_compare(ws):
    ws.recipe("shape", SHAPES)
    runs = [json.loads(ws.mlrun("app shape", "--json", f"--data={data}").stdout)["run"] for data in (
        '{"samples_per_second": 3.0, "accuracy": 91.0, "seconds": 3, "point": 7, "a": {"b": {"c": 1}}, "error": "e"}',
        '{"samples_per_second": 6.0, "accuracy": 92.0, "seconds": 3, "point": 7, "a": {"b": {"c": 1}}}')]
    rows = {row["run"]: row for row in json.loads(ws.mlrun("runs", "--json").stdout)}
    row = rows[runs[0]]
    assert (row["accuracy"], row["results.seconds"], row["results.point"], row["a.b.c"]) == (91.0, 3, 7, 1)
    assert row["error"] is None   # the run's own: a result named error read as the sweep point's failure
    shown = ws.mlrun("runs", "show", runs[0]).stdout
    assert "result: 3.00/s" in shown, shown
    diff = ws.mlrun("diff", *runs)
    assert diff.returncode == 1 and "accuracy" in diff.stdout and "figure.samples_per_second" in diff.stdout, diff.stdout
    replayed = ws.mlrun("replay", runs[0])   # its figures are held to the record: they were not compared at all
    assert replayed.returncode == 0, replayed.stderr
    assert "accuracy: 91.0 (equal)" in replayed.stdout, replayed.stdout
    assert "figure.samples_per_second: 3.0 vs recorded 3.0 (ratio 1.000)" in replayed.stdout, replayed.stdout


def test_json_output_is_json_whatever_a_step_recorded(ws):
    """A result NaN reached `runs --json` as a bare NaN, which a strict reader refuses."""
    ws.recipe("shape", SHAPES)
    ran = ws.mlrun("app shape", "--json", '--data={"weird": NaN, "rate": Infinity}')
    assert ran.returncode == 0, ran.stderr
    json.loads(ran.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in run --json"))
    listed = ws.mlrun("runs", "--json")
    [row] = json.loads(listed.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in runs --json"))
    assert (row["weird"], row["rate"]) == ("nan", "inf")


def test_an_input_named_as_a_runs_own_field_and_a_record_damaged_deep_inside(ws):
    """An input named status took the run's status in `runs` (--status ok found nothing); a record whose request
    held a list for its inputs (an edited import) ended `runs` "unexpected TypeError" for every run."""
    ws.recipe("clash", "tags: [demo, clash]\ncache: false\ninputs:\n  status: {default: draft}\n"
                       "  host: {default: example.org}\nrun: 'true'\n")
    first = json.loads(ws.mlrun("demo clash", "--json").stdout)["run"]
    [row] = json.loads(ws.mlrun("runs", "--json").stdout)
    assert row["status"] == "ok" and row["input.status"] == "draft" and row["input.host"] == "example.org"
    assert first in ws.mlrun("runs", "--status", "ok").stdout
    second = json.loads(ws.mlrun("demo clash", "--json").stdout)["run"]
    path = os.path.join(ws.runs, second, "run.json")
    record = json.load(open(path))
    json.dump({**record, "request": {**record["request"], "inputs": [1]}}, open(path, "w"))
    listed = ws.mlrun("runs")
    assert listed.returncode == 0 and first in listed.stdout and "unexpected" not in listed.stderr, listed.stderr
    assert "could not be read" in listed.stdout + listed.stderr



# A record damaged below its top (an edited import, a bad disk): each said "unexpected ... a bug in mlrun" in
# `runs show`, `diff` or `export` (and a sweep's rows), now one unreadable run with what is wrong
DAMAGED = [
    ("request.inputs is list", lambda r: r["request"].update(inputs=[1])),
    ("request.dep_overrides is int", lambda r: r["request"].update(dep_overrides=5)),
    ("no label or key as text", lambda r: r["steps"][0].update(key=5)),
    ("step's seconds is str", lambda r: r["steps"][0].update(seconds="x")),
    ("step's node.inputs is list", lambda r: r["steps"][0]["node"].update(inputs=[1])),
    ("has no label or key as text", lambda r: r["steps"][0].pop("key")),
    ("its recipes: ", lambda r: r["recipes"].update(a=5)),
    ("its packages: ", lambda r: r.update(packages={"a": 5})),
    ("a step of it is not an object", lambda r: r.update(failed_meanwhile=5)),
]


@pytest.mark.slow  # about 2.2 s on the 2-core EPYC
def test_a_record_damaged_below_its_top_is_said_by_every_reader(ws):
    ws.recipe("plain", "tags: [demo, plain]\ncache: false\ninputs:\n  n: {default: 1}\nrun: 'true'\n")
    good = json.loads(ws.mlrun("demo plain", "--json").stdout)["run"]
    bad = json.loads(ws.mlrun("demo plain", "--n=2", "--json").stdout)["run"]
    path = os.path.join(ws.runs, bad, "run.json")
    original = json.load(open(path))
    for said, damage in DAMAGED:
        record = json.loads(json.dumps(original))
        damage(record)
        json.dump(record, open(path, "w"))
        for argv in (("runs", "show", bad), ("runs", "show", bad, "--json"), ("diff", good, bad),
                     ("export", bad, "-o", os.path.join(ws.root, "b.tar.gz"))):
            result = ws.mlrun(*argv)
            assert result.returncode == 2 and "not an mlrun run record" in result.stderr and said in result.stderr \
                and "bug" not in result.stderr, (said, argv, result.stderr)
        listed = ws.mlrun("runs")
        assert listed.returncode == 0 and good in listed.stdout and f"could not be read: {bad}" in listed.stderr, said
    record = json.loads(json.dumps(original))
    del record["request"]["query"]   # replay: "unexpected KeyError: 'query'"
    json.dump(record, open(path, "w"))
    assert_user_error(ws.mlrun("replay", bad), 2, f"run {bad} has no request to replay")


def test_an_uncached_steps_record_file_that_is_a_fifo_fails_it_without_a_hang(ws):
    ws.recipe("fifo", "tags: fifo\ncache: false\nrun: mkfifo s.json\nrecord: {results: s.json}\n")
    assert_user_error(ws.mlrun("fifo"), 1, "its results file s.json is no file (a FIFO")


def test_a_running_record_whose_process_lacks_its_pid_is_shown(ws):
    """`runs show` ended "unexpected KeyError: 'pid' ... a bug" (the record's process is asked whether it runs)."""
    ws.recipe("plain", "tags: [demo, plain]\ncache: false\nrun: 'true'\n")
    run = json.loads(ws.mlrun("demo plain", "--json").stdout)["run"]
    path = os.path.join(ws.runs, run, "run.json")
    record = json.load(open(path))
    record["status"] = "running"
    del record["process"]["pid"]
    json.dump(record, open(path, "w"))
    for argv in (("runs", "show", run), ("runs",)):
        result = ws.mlrun(*argv)
        assert result.returncode == 0 and "bug" not in result.stderr and run in result.stdout, result.stderr


@pytest.mark.slow
def test_two_recipe_folders_of_the_same_name_are_copied_apart_and_replay(ws):
    """Both --recipes folders named recipes/, each with a recipe folder a/: the second copy overwrote the first, and
    the replay with the recorded recipes was refused ("the run folder was changed after the run")."""
    other = os.path.join(ws.root, "other", "recipes")
    ws.recipe("a", "tags: a\ncache: false\nrun: echo one\n")
    ws.write(os.path.join(other, "a", "recipe.yaml"), "name: a-other\ntags: b\ncache: false\nrun: echo two\n")
    ws.write(os.path.join(other, "top", "recipe.yaml"),
             "tags: top\ncache: false\ndeps: [{query: a}, {query: b}]\nrun: echo top\n")
    first = ws.mlrun("--recipes", ws.recipes, "--recipes", other, "top")
    assert first.returncode == 0, first.stderr
    run = run_ids(ws.runs)[-1]
    record = json.load(open(os.path.join(ws.runs, run, "run.json")))
    assert record["recipes"]["a"]["snapshot"] != record["recipes"]["a-other"]["snapshot"]
    ws.write(os.path.join(other, "a", "recipe.yaml"), "name: a-other\ntags: b\ncache: false\nrun: echo three\n")
    replayed = ws.mlrun("--recipes", ws.recipes, "--recipes", other, "replay", run, "--recorded-recipes")
    assert replayed.returncode == 0 and "recipe a-other: the local one differs or is missing; using the recorded " \
        "copy" in replayed.stdout, replayed.stderr
