"""Steps die with mlrun, whatever stops it (issue 8: processes and signals).

Each test runs the real bin/mlrun on a step whose grandchild (bash -> python) keeps running and
writing into its folder, then stops mlrun one way or another and checks that nothing it started
is left running.
"""
import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import kill_group, wait_for
from engine import guard
from engine.guard import running

# bash forks the python (a command follows it): the python is the step's grandchild.
LOOPER = """\
    tags: looper
    run: |
      if [ -e "{marker}" ]; then echo quick > out.txt; exit 0; fi
      head -c 3000000 /dev/zero > big.bin
      "$MLRUN_PYTHON" "{{recipe}}/loop.py" "{pidfile}"
      echo never reached
    """
LOOP = """\
    import os, sys, time
    open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:  # keeps writing into the step's folder
        with open("out.txt", "a") as f:
            f.write("x")
        time.sleep(0.05)
    """


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def looper(ws, tmp_path):
    """A workspace with the `looper` recipe; .start() runs it and returns (mlrun process, grandchild pid)."""
    pidfile, marker = tmp_path / "grandchild.pid", tmp_path / "quick"
    ws.recipe("looper", LOOPER.format(pidfile=pidfile, marker=marker), files={"loop.py": LOOP})
    started = []

    def start(*args):
        proc = ws.popen("looper", *args)
        started.append(proc)
        if not wait_for(pidfile.exists, timeout=30):
            kill_group(proc)
            pytest.fail(f"the step never started: {proc.communicate(timeout=10)}")
        return proc, int(pidfile.read_text())
    ws.start, ws.marker, ws.pidfile = start, marker, pidfile
    yield ws
    for proc in started:
        kill_group(proc)
    if pidfile.exists():
        kill_pid(int(pidfile.read_text()))


def test_a_steps_grandchild_dies_when_mlrun_is_sigkilled(looper):
    proc, grandchild = looper.start()
    assert running(grandchild)
    os.kill(proc.pid, signal.SIGKILL)  # mlrun alone: bin/mlrun execs python, so this is mlrun itself
    proc.wait(timeout=10)
    assert wait_for(lambda: not running(grandchild), timeout=10), "the step's grandchild outlived mlrun"


def test_a_steps_grandchild_dies_when_mlrun_s_process_group_is_sigkilled(looper):
    """`timeout -s KILL` kills the group: the guard, in a session of its own, survives to stop the step (was:
    killed with mlrun, the step ran on and wrote into the dead run's folder)."""
    proc, grandchild = looper.start()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: not running(grandchild), timeout=10), "the step's grandchild outlived mlrun's group"


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_the_next_mlrun_taking_the_lock_kills_what_a_dead_build_left_running(looper):
    proc, grandchild = looper.start()
    records = glob.glob(os.path.join(looper.cache, ".tmp", "looper-*", ".mlrun", guard.RECORD))
    assert len(records) == 1
    rec = json.load(open(records[0]))
    assert rec["host"] == os.uname().nodename and rec["started"] and rec["pid"] != proc.pid
    for pid in children(proc.pid) + [proc.pid]:   # mlrun and its guard at once: nothing is left to kill the step
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.3)
    assert running(grandchild), "precondition: the step outlives a guard killed with mlrun"
    looper.marker.write_text("")
    again = looper.mlrun("looper", "--json")
    assert again.returncode == 0, again.stderr
    assert wait_for(lambda: not running(grandchild), timeout=10), "the dead build's step still runs"
    entry = json.loads(again.stdout)["path"]
    assert open(os.path.join(entry, "out.txt")).read() == "quick\n"
    assert not os.path.exists(os.path.join(entry, ".mlrun", guard.RECORD))  # never part of an entry
    assert os.listdir(os.path.join(looper.cache, ".tmp")) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_stop_signal_acts_as_ctrl_c(looper, sig, code):
    proc, grandchild = looper.start()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert wait_for(lambda: not running(grandchild), timeout=10), "the step's grandchild outlived mlrun"
    assert os.listdir(os.path.join(looper.cache, ".tmp")) == []  # no 3 MB leftover
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"mlrun: interrupted by {sig.name}; nothing half-built was published" in err
    assert looper.entries() == []
    (run_id,) = os.listdir(looper.runs)
    record = json.load(open(os.path.join(looper.runs, run_id, "run.json")))
    assert (record["status"], record["error"]) == ("interrupted", f"interrupted by {sig.name}")
    assert "interrupted" in looper.mlrun("runs").stdout


def test_what_a_stopped_step_says_while_cleaning_up_is_in_its_log(ws, tmp_path):
    """A trap on EXIT ran, but its words were not in the interrupted build's log (the pipe was not read again)."""
    started = tmp_path / "started"
    ws.recipe("cleaner", f"tags: cleaner\nrun: |\n  trap 'echo cleaning up; echo cleaned' EXIT\n  echo started\n"
                         f"  sh -c 'touch {started}; exec sleep 60'\n")
    proc = ws.popen("cleaner")
    try:
        assert wait_for(started.exists, timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 130
    finally:
        kill_group(proc)
    [log] = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(ws.cache, ".failed"))
             for name in names if name == "build.log"]
    text = open(log).read()
    assert "started\n" in text and "cleaning up\ncleaned\n" in text, text


@pytest.mark.slow   # waits out the 5-s grace it checks
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_step_cleans_up_before_its_group_is_killed(ws, tmp_path, sig):
    """It was killed at once: a step's trap on EXIT never ran (pyenv's rehash lock stayed behind for every later
    pip install on the machine). And one that ignores the signal is still killed after the grace."""
    lock, started = tmp_path / "host.lock", tmp_path / "started"
    ws.recipe("trapper", f"""\
        tags: trapper
        run: |
          echo $$ > {lock}
          trap 'rm -f {lock}' EXIT
          sh -c 'touch {started}; exec sleep 60'
        """)
    proc = ws.popen("trapper")
    try:
        assert wait_for(started.exists, timeout=30)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig and not lock.exists()
    finally:
        kill_group(proc)
    pidfile = tmp_path / "stubborn.pid"   # one that ignores it: killed once the grace is over
    ws.recipe("stubborn", f"tags: stubborn\nrun: trap '' TERM INT HUP; sh -c 'trap \\\"\\\" TERM INT HUP; echo $$ > "
                          f"{pidfile}; exec sleep 120'\n")
    proc = ws.popen("stubborn")
    try:
        assert wait_for(pidfile.exists, timeout=30) and wait_for(lambda: pidfile.read_text().strip(), timeout=10)
        began = time.time()
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig and time.time() - began < 20
        assert wait_for(lambda: not running(int(pidfile.read_text())), timeout=10)
    finally:
        kill_group(proc)


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_process_that_left_the_step_s_group_is_killed_and_fails_the_step(ws, tmp_path, cache):
    """setsid sleep 60 &: mlrun read the step's output until that daemon closed it, 60 s for a 0.5-s step; then it
    outlived mlrun, and one that wrote 2 s later changed the published entry."""
    pidfile = tmp_path / "daemon.pid"
    ws.recipe("daemon", f"tags: daemon\ncache: {cache}\nrun: |\n"
                        f"  setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' &\n"
                        "  python3 -c 'import os,time; os.setpgid(0,0); time.sleep(60)' &\n"
                        "  sleep 0.5\n  echo ok > x\n")
    try:
        began = time.time()
        result = ws.mlrun("daemon", timeout=60)
        assert result.returncode == 1 and time.time() - began < 30, result.stderr
        assert "it left 2 processes running (" in result.stderr and "full log: " in result.stderr
        assert wait_for(lambda: not running(int(pidfile.read_text())), timeout=10)
        assert not ws.entries("daemon")
    finally:
        if pidfile.exists():
            kill_pid(int(pidfile.read_text()))


def test_output_lines_are_passed_on_in_bounded_pieces_and_an_unended_one_is_ended(ws, tmp_path):
    """A line without an end was held whole (200 MB of \\r-less output took 440 MB); a last line without one ran
    into mlrun's own ('...reason XYZmlrun: exited with code 4')."""
    import io
    from engine import runner
    out = tmp_path / "out"   # what a step wrote before it ended (a file: as a pipe, writing it first would block)
    out.write_bytes(b"a" * (runner.LINE_MOST + 10) + b"\rbar 1\rbar 2\ndone")

    class Done:
        stdout = io.FileIO(out)

        def poll(self):
            return 0
    pieces = list(runner._lines(Done()))
    assert [len(p) for p in pieces[:2]] == [runner.LINE_MOST, 10 + 1] and pieces[2:] == [b"bar 1\r", b"bar 2\n",
                                                                                        b"done"]
    ws.recipe("nonl", "tags: nonl\nrun: printf 'reason XYZ'; exit 4\n")
    result = ws.mlrun("nonl")
    assert result.returncode == 1 and "reason XYZ\n" in result.stderr and "XYZmlrun" not in result.stderr


@pytest.mark.slow   # about 1.2 s on the 2-core EPYC
def test_a_background_job_does_not_outlive_its_step(ws, tmp_path):
    """A job a step leaves behind would hold mlrun on its output pipe and write into the published entry: it is
    killed, and the step fails."""
    pidfile = tmp_path / "job.pid"
    ws.recipe("bg", f"""\
        tags: bg
        run: |
          (echo $BASHPID > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 120) &
          while [ ! -e {pidfile} ]; do sleep 0.05; done
          echo started > out.txt
        """)
    try:
        result = ws.mlrun("bg", timeout=60)
        assert result.returncode == 1 and "it left 1 process running (sleep 120)" in result.stderr
        job = int(pidfile.read_text())
        assert wait_for(lambda: not running(job), timeout=10)
        assert not ws.entries("bg")
    finally:
        if pidfile.exists():
            kill_pid(int(pidfile.read_text()))


def test_a_step_killed_by_a_signal_is_reported_so(ws):
    ws.recipe("selfkill", "tags: selfkill\nrun: 'echo before; kill -SEGV $$'\n")
    result = ws.mlrun("selfkill")
    assert result.returncode == 1
    assert "killed by SIGSEGV" in result.stderr


@pytest.mark.parametrize("run, said", [
    ('sh -c "kill -SEGV \\$\\$"; echo unreached', "exited with code 139 (128+11: a process it ran died of SIGSEGV)"),
    ("exit 126", "exited with code 126 (a command it ran is not executable)"),
    ("no-such-command-here", "exited with code 127 (a command it ran was not found)"),
    ("exit 3", "exited with code 3\nhint: full log"),
])
def test_a_shell_s_exit_status_is_said_in_words(ws, run, said):
    """139, 141, 137... were bare numbers."""
    ws.recipe("st", f"tags: st\nrun: '{run}'\n")
    result = ws.mlrun("st")
    assert result.returncode == 1 and f"step st failed: {said}" in result.stderr, result.stderr


def test_kill_recorded_spares_a_reused_pid_and_other_machines(tmp_path):
    """Only the recorded process group is killed: not a new process that got its pid, not one elsewhere."""
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = tmp_path / guard.RECORD
        ident = guard.identity(victim.pid)
        for other in ({"started": ident["started"] + 1}, {"host": "elsewhere"}, {"boot": "another-boot"}):
            record.write_text(json.dumps({**ident, **other}))
            guard.kill_recorded(str(record))
            time.sleep(0.1)
            assert victim.poll() is None, f"killed a process not recorded: {other}"
        assert guard.alive(ident) is True and guard.alive({**ident, "host": "elsewhere"}) is None
        record.write_text(json.dumps(ident))
        guard.kill_recorded(str(record))
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert guard.alive(ident) is False
    finally:
        victim.kill()
        victim.wait(timeout=10)


@pytest.mark.parametrize("pid", [0, -5, 1])
def test_kill_recorded_kills_nothing_for_a_record_of_no_group(tmp_path, pid):
    """pid 0 killed the caller's own process group; -5 was an EINVAL traceback in gc and the cache's lock path."""
    record = tmp_path / guard.RECORD
    record.write_text(json.dumps({**guard.identity(os.getpid()), "pid": pid}))
    guard.kill_recorded(str(record))   # this test still runs: nothing was killed, nothing raised


def test_kill_recorded_kills_the_jobs_a_gone_leader_left(tmp_path):
    """The step's shell gone, its background job left running: the group is still killed (an owner check that asked
    the leader's /proc entry spared it)."""
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; sleep 0.3"], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    record = tmp_path / guard.RECORD
    record.write_text(json.dumps(guard.identity(proc.pid)))
    job = int(proc.stdout.readline())
    proc.wait(timeout=10)
    try:
        assert guard.running(job)
        guard.kill_recorded(str(record))
        assert wait_for(lambda: not guard.running(job), timeout=10), "the left job still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job, signal.SIGKILL)


def test_the_guard_runs_isolated_from_the_steps_python_settings(ws, tmp_path):
    """PYTHONPATH, PYTHONSTARTUP... of a step must not reach the guard's own interpreter."""
    lib = tmp_path / "steplib"
    lib.mkdir()
    (lib / "sitecustomize.py").write_text("raise SystemExit('the guard imported the step site')\n")
    (lib / "json.py").write_text("raise SystemExit('the guard imported the step json')\n")
    ws.recipe("py", f"""\
        tags: py
        env: {{PYTHONPATH: "{lib}", PYTHONSTARTUP: "{lib}/json.py"}}
        run: echo ok > out.txt
        """)
    result = ws.mlrun("py")
    assert result.returncode == 0, result.stderr


def test_a_signal_ignored_when_mlrun_started_stays_ignored(ws, tmp_path):
    """`nohup mlrun ...` must survive a hang-up, and so must its step."""
    started, go = tmp_path / "started", tmp_path / "go"
    ws.recipe("waiter", f"""\
        tags: waiter
        run: |
          touch {started}
          while [ ! -e {go} ]; do sleep 0.05; done
          echo done > out.txt
        """)
    proc = ws.popen("waiter", preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        assert wait_for(started.exists, timeout=30)
        os.killpg(proc.pid, signal.SIGHUP)  # mlrun and its guard, as a closing terminal would
        time.sleep(0.3)
        go.write_text("")
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err
    assert ws.entries("waiter")


def test_a_step_killed_by_sigkill_names_the_likely_out_of_memory_killer(ws):
    """An OOM kill said only 'killed by SIGKILL' (or a shell's 'exited with code 137'), nothing of memory."""
    ws.recipe("oom", "tags: oom\nrun: 'echo before; kill -KILL $$'\n")
    ws.recipe("oom-child", "tags: oom-child\nrun: 'bash -c \"kill -KILL \\$\\$\"; echo unreached'\n")
    for query, said in (("oom", "killed by SIGKILL"),
                        ("oom-child", "exited with code 137 (128+9: a process it ran died of SIGKILL)")):
        result = ws.mlrun(query)
        assert result.returncode == 1 and said in result.stderr, result.stderr
        # it may have killed itself: said so, not "when nobody sent it"; and the hint names the log still
        assert "hint: SIGKILL: unless the step or someone sent it (kill -9), the kernel's out-of-memory killer" \
            in result.stderr and "; full log: " in result.stderr
        # entries may have been built at once, each holding its memory: one at a time is a way out
        assert "fewer --instances, --jobs 1 (one entry built at a time), or more memory" in result.stderr
    alone = ws.mlrun("oom", "--jobs", "1")
    assert "fewer --instances, or more memory" in alone.stderr, alone.stderr


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_mlrun():
    """Python runs a signal's handler wherever the main thread is, a finalizer too (seen in CI: an import lock's
    weakref callback), and drops what a finalizer raises: that Ctrl-C was lost, the other stop signals already
    ignored, and the run went on, deaf to every later one (the test waiting on it timed out after 30 s)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are the main thread's")
    dropped = []

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)   # its handler runs at the next instruction: still in here
            dropped.append("still in the finalizer")

    before, hook, started = signal.getsignal(signal.SIGINT), sys.unraisablehook, time.monotonic()
    try:
        with pytest.raises(guard.Interrupted) as stopped:
            with guard.stop_signals_interrupt():
                thing = Finalized()
                del thing
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:   # as mlrun waits on a step: in pieces (its select, 0.5 s)
                    time.sleep(0.05)
        assert stopped.value.signum == signal.SIGINT and dropped == [] and time.monotonic() - started < 4
        assert signal.getsignal(signal.SIGINT) is before and sys.unraisablehook is hook
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("where", ["recipe", "cli"])
def test_a_step_past_its_timeout_is_stopped_and_fails_with_its_log(ws, where):
    """A stuck step hung mlrun for ever. The recipe's timeout or --timeout, the smaller wins."""
    ws.recipe("stuck", f"tags: stuck\ntimeout: {'0.3' if where == 'recipe' else '1h'}\n"
                       "run: 'echo started; sleep 30'\n")
    began = time.time()
    result = ws.mlrun("stuck", *(["--timeout", "0.3s"] if where == "cli" else []), timeout=60)
    assert result.returncode == 1 and time.time() - began < 20, result.stderr
    assert "step stuck failed: timed out after 0.3 s" in result.stderr and "full log: " in result.stderr
    assert not ws.entries("stuck")


def test_a_timeout_that_is_no_duration_is_refused_and_enters_no_key(ws):
    from engine.keys import recipe_digest
    assert recipe_digest({"name": "a", "timeout": 5}) == recipe_digest({"name": "a"})
    ws.recipe("bad", "tags: bad\ntimeout: soon\nrun: 'true'\n")
    result = ws.mlrun("bad")
    assert result.returncode == 2 and "timeout 'soon' is no duration" in result.stderr
    result = ws.mlrun("bad", "--timeout", "-1")
    assert result.returncode == 2 and "--timeout '-1'" in result.stderr


def test_a_timeout_of_more_digits_than_a_float_holds_is_no_duration():
    """400 digits made an infinite timeout, said as 'inf h' while the step was stopped."""
    from engine.words import duration_seconds
    assert duration_seconds("9" * 400) is None and duration_seconds(10 ** 400) is None
    assert duration_seconds(10 ** 300) == 1e300 and duration_seconds("2.5m") == 150


@pytest.mark.slow   # waits for its timeout
def test_a_stopped_step_is_said_to_be_stopped_with_how_to_resume_it(ws):
    """echo pausing; kill -STOP $$ hung mlrun with nothing said."""
    ws.recipe("stopself", "tags: stopself\ntimeout: 3\nrun: 'echo pausing; kill -STOP $$; echo resumed'\n")
    result = ws.mlrun("stopself", timeout=60)
    assert result.returncode == 1 and "timed out after 3 s" in result.stderr, result.stderr
    said = re.search(r"step stopself is stopped: its process (\d+) .*`kill -CONT (\d+)` resumes it", result.stderr)
    assert said and said[1] == said[2], result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_the_step_s_group_gets_the_very_signal_mlrun_got(ws, tmp_path, sig):
    """guard.stop always sent SIGTERM, whatever stopped mlrun."""
    started, got = tmp_path / "started", tmp_path / "got"
    ws.recipe("trapper", f"""\
        tags: trapper
        run: |
          for s in INT HUP TERM; do trap "echo $s > {got}; exit 3" $s; done
          touch {started}
          while :; do sleep 0.05; done
        """)
    proc = ws.popen("trapper")
    try:
        assert wait_for(started.exists, timeout=30)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == 128 + sig and got.read_text().strip() == sig.name[3:]


@pytest.mark.slow   # waits out the 5-s grace
def test_ctrl_c_stops_steps_built_at_once_within_one_grace(ws, tmp_path):
    """Two steps that ignore signals took 10.5 s: the second was stopped only once the first's grace was over."""
    for name in ("deafa", "deafb"):
        ws.recipe(name, f"tags: {name}\nrun: |\n  trap '' INT TERM HUP\n  touch {tmp_path}/{name}\n"
                        "  sleep 400 & wait\n")
    ws.recipe("both", "tags: both\ndeps: [deafa, deafb]\nrun: 'true'\n")
    proc = ws.popen("both", "--jobs", "2")
    try:
        assert wait_for(lambda: all((tmp_path / n).exists() for n in ("deafa", "deafb")), timeout=30)
        began = time.time()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130 and time.time() - began < 9
    finally:
        kill_group(proc)


def guard_with_grace(tmp_path, script, grace):
    """The guard as mlrun starts it, but with `grace` seconds of GRACE, on `sh -c script`; (process, record)."""
    record = str(tmp_path / guard.RECORD)
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(guard.__file__)!r}); import guard; "
            f"guard.GRACE = {grace}; sys.exit(guard.main(sys.argv))")
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, str(os.getpid()), record, "--",
                             "sh", "-c", script], start_new_session=True)
    return proc, record


def test_a_step_that_outlives_its_grace_is_killed_when_the_grace_ends(tmp_path):
    """A step that ignored the signal got GRACE and then LEFT_GRACE twice more (7 s, not 5) before it was killed."""
    ready = tmp_path / "ready"
    proc, record = guard_with_grace(tmp_path, f"trap '' TERM; touch {ready}; exec sleep 60", grace=0.3)
    try:
        assert wait_for(ready.exists, timeout=10)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert time.monotonic() - began < 0.3 + guard.LEFT_GRACE
    finally:
        kill_group(proc)
        guard.kill_recorded(record)


def test_a_step_that_runs_mlrun_on_its_own_entry_fails_instead_of_waiting_for_itself(ws):
    """A recipe whose step ran its own query (or one that needs its entry) waited for good on the lock its own
    build held."""
    from conftest import MLRUN
    ws.recipe("selfcall", f"tags: selfcall\nrun: {MLRUN} selfcall --recipes {ws.recipes} --cache {ws.cache} "
                          f"--runs {ws.runs}\n")
    proc = ws.popen("selfcall")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == 1 and "selfcall is being built by the step that runs this mlrun" in err, err
    assert not ws.entries("selfcall")
