"""One run builds independent cache entries at once (--jobs, default 2): a download beside a pip install.
The record keeps the plan's order; a benchmark (run-folder) step runs alone; a failure or Ctrl-C ends them all."""
import json
import os
import re
import signal

import pytest

from conftest import assert_user_error, kill_group, wait_for


def waits_for(tmp_path, me, other, then="echo {me} > out.txt"):
    """A step that says it started, then waits (up to $WAIT / 20 s) for `other` to have started: it only gets
    past that when both are built at once."""
    return (f"tags: {me}\nrun: |\n  touch {tmp_path}/{me}.started\n"
            f"  for i in $(seq 1 ${{WAIT:-200}}); do [ -e {tmp_path}/{other}.started ] && break; sleep 0.05; done\n"
            f"  [ -e {tmp_path}/{other}.started ] || {{ echo 'error: {other} never started while {me} was built' >&2; "
            f"exit 5; }}\n  {then.format(me=me)}\n")


def pair(ws, tmp_path, a_then="echo a > out.txt", b_then="echo b > out.txt"):
    ws.recipe("a", waits_for(tmp_path, "a", "b", a_then))
    ws.recipe("b", waits_for(tmp_path, "b", "a", b_then))
    ws.recipe("app", "tags: app\ncache: false\ndeps: [a, b]\nrun: echo app\n")


def record_of(ws, result):
    [run] = os.listdir(ws.runs)
    return json.load(open(os.path.join(ws.runs, run, "run.json")))


@pytest.mark.slow  # about 1.5 s on the 2-core EPYC
def test_independent_entries_of_one_run_are_built_at_once_in_the_plans_order(ws, tmp_path):
    pair(ws, tmp_path)
    result = ws.mlrun("app", "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert [(s["recipe"], s["status"]) for s in steps] == [("a", "built"), ("b", "built"), ("app", "ran")]
    assert re.search(r"\[2/3\] b +built in [\d.]+ s  cache/b-\w+ \(alongside\)", result.stderr), result.stderr
    assert all(s["path"] and s["seconds"] < 20 for s in steps)
    assert len(ws.entries()) == 2 and ws.mlrun("cache", "verify").returncode == 0
    # one after another, a waits for b in vain: --jobs 1 is the old way, and this test can fail
    for started in tmp_path.glob("*.started"):
        started.unlink()
    serial = ws.mlrun("app", "--jobs", "1", "--env.WAIT=20")
    assert_user_error(serial, 1, "step a failed", "b never started while a was built")


@pytest.mark.slow  # about 1.8 s on the 2-core EPYC
def test_a_benchmark_step_never_runs_beside_a_build(ws, tmp_path):
    """m (a run-folder step, as a benchmark is) waits until the entry built alongside is done."""
    ws.recipe("c", f"tags: c\nrun: |\n  while [ ! -e {tmp_path}/s.running ]; do sleep 0.05; done\n  echo c > c.txt\n")
    ws.recipe("s", f"tags: s\nrun: |\n  touch {tmp_path}/s.running; sleep 1.5; rm {tmp_path}/s.running\n"
                   "  echo s > s.txt\n")
    ws.recipe("m", f"tags: m\ncache: false\nrun: |\n  if [ -e {tmp_path}/s.running ]; then "
                   "echo 'error: s was being built beside m' >&2; exit 6; fi\n  echo measured\n")
    ws.recipe("app", "tags: app\ncache: false\ndeps: [c, m, s]\nrun: echo app\n")
    result = ws.mlrun("app", "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert [(s["recipe"], s["status"]) for s in steps] == [("c", "built"), ("m", "ran"), ("s", "built"),
                                                           ("app", "ran")]
    assert "(alongside)" in result.stderr.split("[3/4] s")[1].splitlines()[0], result.stderr


def test_a_step_built_alongside_that_fails_is_the_runs_failed_step(ws, tmp_path):
    # a waits for b to have failed, then ends well: its work is kept, the run stops at b
    pair(ws, tmp_path, a_then=f"while [ ! -e {tmp_path}/b.failed ]; do sleep 0.05; done; sleep 0.3; echo a > out.txt",
         b_then=f"echo 'error: b is broken today' >&2; touch {tmp_path}/b.failed; exit 3")
    result = ws.mlrun("app")
    assert_user_error(result, 1, "step b failed", "b is broken today")
    assert result.stderr.index("[2/3] b ") < result.stderr.index("[1/3] a "), result.stderr   # said when it failed
    record = record_of(ws, result)
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("a", "built"), ("b", "failed")]
    assert record["steps"][1]["seconds"] < record["steps"][0]["seconds"]   # its own time, not the run's
    assert ".failed" in record["steps"][1]["log"] and "b is broken today" in open(record["steps"][1]["log"]).read()
    assert [e.split("-")[0] for e in ws.entries()] == ["a"]
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert "failed at step b" in shown and re.search(r"app +not run", shown), shown


@pytest.mark.slow  # about 1.2 s on the 2-core EPYC
def test_a_failed_step_waits_for_the_steps_built_alongside_and_keeps_them(ws, tmp_path):
    pair(ws, tmp_path, a_then="echo 'error: a is broken' >&2; exit 3", b_then="sleep 1; echo b > out.txt")
    result = ws.mlrun("app")
    assert_user_error(result, 1, "step a failed", "a is broken")
    assert "waiting for the steps built alongside to end: b" in result.stderr, result.stderr
    assert [e.split("-")[0] for e in ws.entries()] == ["b"]   # published: the next run reuses it
    record = record_of(ws, result)
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("a", "failed")]
    assert [m["label"] for m in record["built_meanwhile"]] == ["b"]
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert re.search(r"b +built meanwhile", shown), shown


def test_ctrl_c_stops_every_step_built_at_once(ws, tmp_path):
    forever = "echo $$ > {me}.pid.tmp; mv {me}.pid.tmp " + str(tmp_path) + "/{me}.pid; sleep 60"
    pair(ws, tmp_path, a_then=forever, b_then=forever)
    pids = [tmp_path / "a.pid", tmp_path / "b.pid"]
    run = ws.popen("app")
    try:
        assert wait_for(lambda: all(p.exists() for p in pids), timeout=30), run.stderr.read() if run.poll() else ""
        os.killpg(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            kill_group(run)
    assert run.returncode == 130, err
    for pid in (int(p.read_text()) for p in pids):   # the steps' shells (and their sleeps): gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert ws.entries() == [] and os.listdir(os.path.join(ws.cache, ".tmp")) == []
    record = record_of(ws, None)
    assert record["status"] == "interrupted"
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("a", "interrupted")]
    assert [(m["label"], m["status"]) for m in record["failed_meanwhile"]] == [("b", "interrupted")]
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert re.search(r"b +interrupted .*\(built alongside: stopped with the run\)", shown), shown


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_verbose_shows_a_step_built_alongside_whole_once_it_ends(ws, tmp_path):
    lines = "for x in 1 2 3; do echo {me}$x; sleep 0.2; done; echo {me} > out.txt"
    pair(ws, tmp_path, a_then=lines, b_then=lines)
    result = ws.mlrun("-v", "app")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[out.index("b1"):out.index("b1") + 3] == ["b1", "b2", "b3"], out   # never cut by a's lines
    assert {"a1", "a2", "a3"} <= set(out)
    assert "[2/3] b                                                output (built alongside):" in result.stderr
    # its command, a script of several lines, is no output: its second line on were shown as if they were
    assert not [line for line in out if line.lstrip().startswith(("for i in", "[ -e", "touch", "'"))], out


@pytest.mark.parametrize("args, env, said", [
    (["--jobs", "0"], {}, "--jobs '0'"),
    (["--jobs=many"], {}, "--jobs 'many'"),
    ([], {"MLRUN_JOBS": "-1"}, "MLRUN_JOBS '-1'"),
])
def test_a_bad_number_of_jobs_is_a_usage_error_before_anything_is_planned(ws, args, env, said):
    result = ws.mlrun("no such recipe", *args, env=ws.env(**env))   # said before the query is resolved
    assert_user_error(result, 2, said, "1 or more")
    assert not os.path.exists(ws.runs)


def test_replay_builds_at_once_too_and_takes_jobs(ws, tmp_path):
    pair(ws, tmp_path)
    first = ws.mlrun("app")
    assert first.returncode == 0, first.stderr
    [run] = os.listdir(ws.runs)
    ws.mlrun("rm", "cache", "--all", "-y")
    for p in tmp_path.glob("*.started"):
        p.unlink()
    again = ws.mlrun("replay", run, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert "(alongside)" in again.stderr


def measuring_plan(ws, tmp_path, alone):
    """t checks that nothing is built beside it; s and u would be, were it not alone."""
    running = "touch {d}/{me}.running; {work}; rm {d}/{me}.running"
    ws.recipe("c", "tags: c\nrun: sleep 0.3; echo c > c.txt\n")
    ws.recipe("t", f"tags: t\n{'alone: true' if alone else ''}\nrun: |\n"
                   f"  {running.format(d=tmp_path, me='t', work='sleep 1')}\n"
                   f"  for other in s u; do if [ -e {tmp_path}/$other.running ]; then\n"
                   "    echo \"error: $other was built beside t\" >&2; exit 6; fi; done\n  echo t > t.txt\n")
    for me in ("s", "u"):
        ws.recipe(me, f"tags: {me}\nrun: |\n  {running.format(d=tmp_path, me=me, work='sleep 1.5')}\n"
                      f"  echo {me} > {me}.txt\n")
    ws.recipe("app", "tags: app\ncache: false\ndeps: [c, t, s, u]\nrun: echo app\n")


@pytest.mark.slow
def test_a_step_whose_recipe_says_alone_is_built_with_nothing_beside_it(ws, tmp_path):
    """TensorRT picks its kernels by timing them: its recipes say `alone: true`, and nothing is built beside."""
    measuring_plan(ws, tmp_path, alone=True)
    result = ws.mlrun("app", "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert [(s["recipe"], s["status"]) for s in steps] == [("c", "built"), ("t", "built"), ("s", "built"),
                                                           ("u", "built"), ("app", "ran")]
    assert "(alongside)" in result.stderr.split("[3/5] s")[1].splitlines()[0], result.stderr   # s was, beside c
    assert "(alongside)" not in result.stderr.split("[2/5] t")[1].splitlines()[0], result.stderr
    key = steps[1]["key"]
    # not alone, t is built beside s: the test can fail; and `alone` is in no key (saying so rebuilds nothing)
    other = ws.path("other")
    os.makedirs(other)
    ws2 = type(ws)(other)
    measuring_plan(ws2, tmp_path, alone=False)
    beside = ws2.mlrun("app")
    assert_user_error(beside, 1, "was built beside t")
    planned = json.loads(ws2.mlrun("plan", "t", "--json").stdout)["nodes"]
    assert [n["key"] for n in planned] == [key]


def test_alone_must_be_true_or_false(ws):
    ws.recipe("t", "tags: t\nalone: sometimes\nrun: echo t\n")
    result = ws.mlrun("plan", "t")
    assert_user_error(result, 2, "recipe.yaml:2", "alone")


def test_a_run_that_cannot_start_a_thread_builds_one_entry_at_a_time(tmp_path, monkeypatch):
    """A container's pids limit: "can't start new thread". The run must neither fail nor wait for a thread that
    never started (its benchmark step waits until nothing is built alongside)."""
    import io
    import threading
    from engine import Cache, MemoryIndex, resolve
    from engine.runner import Runner, RunReporter
    index = MemoryIndex({"a": {"tags": "a", "run": "echo a > out.txt"}, "b": {"tags": "b", "run": "echo b > out.txt"},
                         "app": {"tags": "app", "cache": False, "deps": ["a", "b"], "run": "echo app"}})

    def no_thread(self):
        if self.name == "mlrun-alongside":
            raise RuntimeError("can't start new thread")
        return started(self)
    started = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    out = io.StringIO()
    record = Runner(Cache(str(tmp_path / "cache")), str(tmp_path / "runs"), reporter=RunReporter(out), jobs=4,
                    stream_root=False).run(resolve(index, "app"), argv=["mlrun"])
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("a", "built"), ("b", "built"), ("app", "ran")]
    assert "(alongside)" not in out.getvalue()


def test_a_step_alongside_that_fails_as_the_run_ends_keeps_its_log_in_the_record_and_the_bundle(ws, tmp_path):
    """The run's own step failed first; b, built alongside, failed while the run waited for it: its log is named
    (failed_meanwhile) and travels in `export`, as the failed step's does."""
    pair(ws, tmp_path, a_then=f"touch {tmp_path}/a.failed; echo 'error: a is broken' >&2; exit 3",
         b_then=f"while [ ! -e {tmp_path}/a.failed ]; do sleep 0.05; done; echo 'b broke too' >&2; exit 4")
    result = ws.mlrun("app")
    assert_user_error(result, 1, "step a failed")
    record = record_of(ws, result)
    [ended] = record["failed_meanwhile"]
    assert ended["label"] == "b" and ended["status"] == "failed" and "b broke too" in open(ended["log"]).read()
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert f"(built alongside: failed; log: {ended['log']})" in shown, shown
    bundle = tmp_path / "run.tar.gz"
    assert ws.mlrun("export", record["id"], "-o", str(bundle)).returncode == 0
    elsewhere = ws.env(MLRUN_CACHE=str(tmp_path / "cache2"), MLRUN_RUNS=str(tmp_path / "runs2"))
    imported = ws.mlrun("import", str(bundle), env=elsewhere)
    assert imported.returncode == 0, imported.stderr
    carried = tmp_path / "runs2" / record["id"] / "failed-logs" / "b.log"
    assert "b broke too" in carried.read_text()
    os.rename(os.path.dirname(ended["log"]), str(tmp_path / "moved"))   # the recording machine's copy is not here
    shown = ws.mlrun("runs", "show", record["id"], env=elsewhere).stdout
    assert f"(built alongside: failed; log: {carried})" in shown, shown
    as_json = json.loads(ws.mlrun("runs", "show", record["id"], "--json", env=elsewhere).stdout)
    assert as_json["failed_meanwhile"][0]["log"] == str(carried)
