"""Sweeps on a real single-node SLURM started by this module (Debian's slurm-wlm and munge).

The fixture writes a minimal slurm.conf (slurmctld and slurmd on 127.0.0.1, this host's name and CPUs,
ports chosen here, state in a temp folder, no cgroups, no accounting), starts munged with its own key and
socket, then both daemons in the foreground, each in its own process group, and stops them by their
groups at the end. A machine that cannot start them skips the tests, printing why (the daemon's log).
"""
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import assert_user_error, wait_for
from clusters import ClusterUnavailable, OneNodeSlurm, point_recipes, settings_of, sweep_here, task

pytest.importorskip("submitit", reason="the SLURM executor's tests need requirements-cluster.txt installed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start_all()
    except ClusterUnavailable as e:
        cluster.stop()
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        assert cluster.stop(), f"SLURM processes left: {cluster.left()}"


def run_points(ws, tasks, slurm=(("time", "5"),), events=None):
    from sweeps.slurm_executor import SlurmExecutor
    events = [] if events is None else events
    return list(SlurmExecutor({"slurm": dict(slurm)}).run(
        tasks, settings_of(ws), lambda kind, t, outcome: events.append((kind, t.point_id)))), events


def test_sweep_on_slurm_from_the_command_line(slurm, ws, monkeypatch, capsys):
    point_recipes(ws)
    code, err, data = sweep_here(ws, monkeypatch, capsys, "point", "--grid", "n=0,1", "--name", "two",
                                 "--on", "slurm", "--slurm", "time=5,job-name=mlrun-test",
                                 "--env.MY_TOKEN=supersecret123456")
    assert code == 0 and "sweep two: 2 ok" in err, err
    # the secret was kept in plain text in submitit's pickle of each point (runs/.slurm/N/N_submitted.pkl, 0644)
    holding = [os.path.join(r, f) for r, _, fs in os.walk(ws.runs) for f in fs
               if b"supersecret123456" in open(os.path.join(r, f), "rb").read()]
    assert holding == [], holding
    for p in data["points"]:
        assert p["status"] == "ok" and p["node"].startswith(socket.gethostname()), p
        record = json.load(open(os.path.join(ws.runs, p["run"], "run.json")))
        assert record["steps"][-1]["node"]["inputs"]["n"] == int(p["settings"]["n"])
        assert "point" in open(p["log"]).read()


def test_a_sweep_whose_jobs_sbatch_refuses_leaves_no_record(slurm, ws, monkeypatch, capsys):
    """sbatch refused (a partition that does not exist): the new sweep's record stayed with every point pending,
    `sweep list` showed it, and the name was refused with another grid."""
    from engine.cli import main
    point_recipes(ws)
    for name, value in ws.env().items():
        if name.startswith("MLRUN_"):
            monkeypatch.setenv(name, value)
    code = main(["sweep", "point", "--grid", "n=0", "--name", "nope", "--on", "slurm", "--slurm",
                 "time=5,partition=nosuch"])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch refused" in err, err
    assert not os.path.exists(os.path.join(ws.runs, "sweeps", "nope"))
    # sbatch's own lines are mlrun's one error, not printed before it as well (submitit let them through)
    alone = ws.mlrun("sweep", "point", "--grid", "n=0", "--name", "nope", "--on", "slurm", "--slurm",
                     "time=5,partition=nosuch")
    assert alone.returncode == 2 and "mlrun: error: sbatch refused" in alone.stderr, alone.stderr
    assert not [line for line in alone.stderr.splitlines() if line.startswith("sbatch:")], alone.stderr
    code, err, data = sweep_here(ws, monkeypatch, capsys, "point", "--grid", "n=0,1", "--name", "nope", "--on",
                                 "slurm", "--slurm", "time=5")   # the name is free for another grid
    assert code == 0 and [p["status"] for p in data["points"]] == ["ok", "ok"], err
    # refused with --rerun on a sweep that has a record: it was left with every ok point pending, so the command put
    # right without --rerun ran them all again
    runs = [p["run"] for p in data["points"]]
    again = ws.mlrun("sweep", "point", "--grid", "n=0,1", "--name", "nope", "--on", "slurm", "--slurm",
                     "time=5,partition=nosuch", "--rerun")
    assert again.returncode == 2 and "sbatch refused" in again.stderr, again.stderr
    with open(os.path.join(ws.runs, "sweeps", "nope", "sweep.json")) as f:
        kept = json.load(f)
    assert [(p["status"], p["run"]) for p in kept["points"]] == [("ok", run) for run in runs], kept["points"]


def test_a_stopped_slurm_sweep_links_its_running_point_to_its_run(slurm, ws, tmp_path):
    """Ctrl-C: the point that ran recorded its run interrupted, but the sweep said only 'the sweep was stopped',
    no run (a Ray sweep links it)."""
    import signal
    import sys
    from conftest import ROOT
    marker = tmp_path / "began"
    point_recipes(ws, run=f"touch {marker}; sleep 120")
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "sweep", "point", "--grid", "n=0", "--name", "stop",
                             "--on", "slurm", "--slurm", "time=5"], env=ws.env(), cwd=ws.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: marker.exists(), timeout=90)
        time.sleep(1)   # the sweep has seen the job run
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    [p] = json.load(open(os.path.join(ws.runs, "sweeps", "stop", "sweep.json")))["points"]
    assert p["status"] == "interrupted" and p["run"], p
    assert json.load(open(os.path.join(ws.runs, p["run"], "run.json")))["status"] == "interrupted"


def test_two_points_as_one_job_array(slurm, ws):
    point_recipes(ws)
    outcomes, events = run_points(ws, [task(0), task(1)])
    assert all(o.returncode == 0 for o in outcomes), [o.stderr_tail for o in outcomes]
    assert sorted(o.point_id for o in outcomes) == ["p000", "p001"]
    for o in outcomes:   # the records are in runs/, each with its point's input
        record = json.load(open(os.path.join(ws.runs, o.run_id, "run.json")))
        assert record["status"] == "ok" and record["steps"][-1]["node"]["inputs"]["n"] == int(o.point_id[1:])
        assert o.node.startswith(socket.gethostname())
    # One array: submitit's folders are named ARRAY_TASK, with one array id for both points.
    folders = [f for f in os.listdir(os.path.join(ws.runs, ".slurm")) if "_" in f and not f.startswith(".")]
    assert len(folders) == 2 and len({f.split("_")[0] for f in folders}) == 1, folders
    assert sorted(events) == sorted([(k, p) for p in ("p000", "p001") for k in ("started", "finished")])


def test_measuring_points_run_exclusive_and_a_cancelled_job_is_recorded(slurm, ws, tmp_path):
    pid_file = tmp_path / "pid"
    point_recipes(ws, run=f"echo $$ >> {pid_file}; sleep 60")
    import threading

    def cancel_running():   # the first point to run is cancelled the way a user would
        if wait_for(lambda: pid_file.exists(), timeout=60):
            out = subprocess.run(["squeue", "--noheader", "--array", "--states=RUNNING", "--format=%i"],
                                 capture_output=True, text=True, timeout=10).stdout.split()
            subprocess.run(["scancel", *out], timeout=10)
    canceller = threading.Thread(target=cancel_running)
    canceller.start()
    outcomes, _ = run_points(ws, [task(0, measures=True)])
    canceller.join()
    [o] = outcomes
    # Its mlrun got SLURM's SIGTERM, recorded the run as interrupted and said so; SLURM's state is added.
    assert o.returncode == 143 and "interrupted by SIGTERM" in o.stderr_tail, o.stderr_tail
    assert re.search(r"mlrun: error: SLURM job \d+(_0)? ended CANCELLED", o.stderr_tail), o.stderr_tail
    # The job had the whole node (--exclusive).
    script = open(next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ws.runs, ".slurm"))
                       for f in fs if f.endswith("_submission.sh"))).read()
    assert "#SBATCH --exclusive" in script
    # never requeued: after a node failure the job ran its point again, alone and unrecorded, the sweep ended
    assert "#SBATCH --no-requeue" in script
    assert json.load(open(os.path.join(ws.runs, o.run_id, "run.json")))["status"] == "interrupted"


def test_a_controller_that_does_not_answer_is_one_clear_error(tmp_path, monkeypatch):
    """Before: sbatch's own errors on stderr, then 'sbatch refused ...; check --slurm (partition, time, account)'.
    Needs SLURM's commands only (no daemons): a slurm.conf whose controller port nothing listens on."""
    import shutil
    if not (shutil.which("sbatch") and shutil.which("scontrol")):
        pytest.skip("SLURM's commands are not installed")
    from engine.errors import UsageError
    from sweeps.slurm_executor import SlurmExecutor
    with socket.socket() as s:   # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=none\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\n"
                    "NodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(UsageError) as info:
        SlurmExecutor({}).check([])
    assert "SLURM's controller does not answer here: Slurmctld(primary) at" in info.value.message
    assert info.value.message.endswith("is DOWN") and "scontrol ping" in info.value.hint
    # a SLURM_CONF naming no file: scontrol waited 30 s, then "did not answer", not why
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nonexistent.conf"))
    with pytest.raises(UsageError) as info:
        SlurmExecutor({}).check([])
    assert info.value.message == f"--on slurm: SLURM_CONF={tmp_path / 'nonexistent.conf'} names no file"


def test_a_controller_that_stops_mid_sweep_ends_the_sweep_with_one_clear_error(monkeypatch, tmp_path):
    """slurmctld killed while points were pending: the sweep waited silently for ever (squeue unanswered is
    "nothing concluded", with no deadline). Needs no SLURM: squeue is made to fail."""
    import types
    from engine.errors import UsageError
    from sweeps import slurm_executor

    def unanswered(arrays):
        slurm_executor._squeue.why = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
        return None
    monkeypatch.setattr(slurm_executor, "_squeue", unanswered)
    monkeypatch.setattr(slurm_executor, "CONTROLLER_LOST_S", 0.3)
    monkeypatch.setattr(slurm_executor, "POLL_S", 0.05)
    job = types.SimpleNamespace(job_id="7_0", paths=types.SimpleNamespace(result_pickle=tmp_path / "none.pkl"))
    executor = slurm_executor.SlurmExecutor({})
    started = time.monotonic()
    with pytest.raises(UsageError) as info:
        list(executor._watch(None, {"7_0": (job, task(2))}, str(tmp_path), lambda *a: None))
    assert time.monotonic() - started < 10
    assert "SLURM's controller has not answered squeue for 0 s (slurm_load_jobs error: Unable to contact slurm " \
        "controller (connect failure)): points p002 have no answer" in info.value.message
    assert "scontrol ping" in info.value.hint and "run the same sweep again" in info.value.hint


def test_the_jobs_name_the_runs_folder_the_same_by_every_path(tmp_path):
    """Named by the absolute path's digest, a killed sweep's jobs under a symlinked (or otherwise mounted) runs
    folder were not cancelled by the same sweep started by another path: each point measured twice."""
    from sweeps.slurm_executor import _folder_id
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "link").symlink_to(runs)
    first = _folder_id(str(runs))
    assert re.fullmatch(r"[0-9a-f]{8}", first)
    assert _folder_id(str(tmp_path / "link")) == first == (runs / ".slurm" / "folder-id").read_text().strip()
    other = tmp_path / "other"
    other.mkdir()
    assert _folder_id(str(other)) != first


def test_a_killed_sweep_s_jobs_are_cancelled_when_it_is_started_again(slurm, ws, tmp_path):
    """kill -9 of a sweep left its array queued and running on its own: its points measured beside the points
    the resumed sweep ran again. The jobs carry the sweep's name (and its runs folder's): a new start of that
    sweep cancels them first."""
    import signal
    import sys
    from conftest import ROOT
    marker = tmp_path / "first"
    point_recipes(ws, run=f"if [ ! -e {marker} ]; then touch {marker}; sleep 120; fi; echo done > n.txt")
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "sweep", "point", "--grid", "n=0", "--name", "killed", "--on", "slurm",
            "--slurm", "time=5"]
    first = subprocess.Popen(argv, env=ws.env(), cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ours():
        out = subprocess.run(["squeue", "--noheader", "--format=%F %j"], capture_output=True, text=True, timeout=10)
        return [line.split()[0] for line in out.stdout.splitlines() if line.split()[1].startswith("mlrun-sweep-killed-")]
    assert wait_for(lambda: marker.exists(), timeout=90), first.communicate(timeout=5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    left = ours()
    assert left, "the killed sweep's job should still be there"
    again = subprocess.run(argv, env=ws.env(), cwd=ws.root, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "cancelled 1 SLURM job(s) a stopped run of this sweep left queued or running" in again.stderr
    assert not set(left) & set(ours())


def test_more_cpus_than_any_node_has_are_refused_before_any_job(slurm, ws):
    """--cpus 64 on nodes of 2: the array stayed pending (PartitionConfig) for ever, the sweep saying nothing."""
    from sweeps.slurm_executor import SlurmExecutor, _most_cpus
    from engine.errors import UsageError
    most = _most_cpus()
    assert most and most >= 1
    with pytest.raises(UsageError, match=f"--cpus {most + 1}: no node of SLURM's partitions has that many CPUs "
                                         f"\\(the most: {most}\\)"):
        SlurmExecutor({"slurm": {"time": "5"}}).check([task(0, cpus=most + 1)])
    SlurmExecutor({"slurm": {"time": "5"}}).check([task(0, cpus=most)])   # what a node has: fine


def test_a_job_slurm_keeps_pending_for_ever_ends_the_sweep_saying_why(slurm, ws):
    """A time over the partition's limit: squeue said PENDING (PartitionTimeLimit), the sweep nothing, until it was
    killed; --slurm nodes=2 on a partition of one node likewise (PartitionNodeLimit), now refused before any job."""
    point_recipes(ws)
    result = ws.mlrun("sweep", "point", "--grid", "n=0", "--name", "too-long", "--on", "slurm", "--slurm",
                      "partition=short,time=5", timeout=120)
    assert_user_error(result, 2, "SLURM keeps the jobs of points p000 pending for ever: PartitionTimeLimit",
                      "change --slurm to what the partition allows")
    names = subprocess.run(["squeue", "--noheader", "--format=%j|%T"], capture_output=True, text=True, timeout=10)
    assert not [line for line in names.stdout.splitlines() if "too-long" in line and "PENDING" in line], names.stdout
    assert not os.path.exists(os.path.join(ws.runs, "sweeps", "too-long"))   # nothing started: no record left
    result = ws.mlrun("sweep", "point", "--grid", "n=0", "--name", "two-nodes", "--on", "slurm", "--slurm",
                      "time=5,nodes=2", timeout=120)
    assert_user_error(result, 2, "--slurm nodes=2: a job of SLURM's default partition has 1 node(s) at most",
                      "--slurm nodes=1 or fewer")
    from sweeps.slurm_executor import _most_nodes
    assert _most_nodes("short") == _most_nodes() == 1 and _most_nodes("nosuch") is None
