"""Sweeps on a real Ray cluster started on this machine: a head and one more node, one CPU each.

The module starts the cluster once (`ray start --head` and `ray start --address`, ports chosen here, each
node in its own process group, stopped by its group at the end) and runs small recipes through the
Ray executor: a sweep whose points spread over both nodes with their records back in runs/, run folders that
travel back from a node that does not see runs/ (a mount namespace of its own), measuring points alone on a
node, one cache folder shared by both nodes (a dependency both need at once is built once), a worker that dies.
"""
import json
import os
import signal

import pytest

from clusters import RayCluster, can_hide_folders, counted_dep, point_recipes, settings_of, sweep_here, task
from conftest import wait_for

ray = pytest.importorskip("ray", reason="the Ray executor's tests need requirements-cluster.txt installed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The head, and a node that does not see the folder `hidden` (when this machine allows mount namespaces)."""
    c = RayCluster(tmp_path_factory.mktemp("ray"))
    c.hidden = os.path.join(c.root, "hidden") if can_hide_folders() else None
    try:
        c.add_node()
        if c.hidden:
            os.makedirs(c.hidden)
        c.add_node(hide=c.hidden)
        yield c
    finally:
        assert c.stop(), f"Ray processes left: {c.left()}"   # the cluster is gone, whatever happened


def run_points(ws, tasks, **options):
    from sweeps.ray_executor import RayExecutor
    events = []
    outcomes = list(RayExecutor(options.pop("address"), options).run(
        tasks, settings_of(ws), lambda kind, task, outcome: events.append((kind, task.point_id))))
    return outcomes, events


def test_sweep_of_four_points_on_both_nodes_records_back(cluster, ws, monkeypatch, capsys):
    """`mlrun sweep ... --on ray:ADDRESS` (in this process: its Python has ray; the points' mlrun need not)."""
    point_recipes(ws, run='echo "$N" > n.txt; sleep 1')   # points long enough that both nodes get some
    argv = ["point", "--grid", "n=0,1,2,3", "--name", "four", "--on", f"ray:{cluster.address}"]
    code, err, data = sweep_here(ws, monkeypatch, capsys, *argv)
    assert code == 0 and "sweep four: 4 points, 4 to run on ray:" in err and "sweep four: 4 ok" in err, err
    assert [p["status"] for p in data["points"]] == ["ok"] * 4, data["points"]
    assert len({p["node"] for p in data["points"]}) == 2, data["points"]   # both nodes ran points
    for p in data["points"]:   # each run's record is in this machine's runs/, with its own input; its log too
        record = json.load(open(os.path.join(ws.runs, p["run"], "run.json")))
        assert record["status"] == "ok" and record["steps"][-1]["node"]["inputs"]["n"] == int(p["settings"]["n"])
        assert "point" in open(p["log"]).read()
    assert not [n for n in os.listdir(ws.runs) if n.startswith(".sweep-")]   # the markers are gone
    code, err, _ = sweep_here(ws, monkeypatch, capsys, *argv)   # again: every point finished ok, nothing runs
    assert code == 0 and "4 skipped" in err, err


def test_runs_come_back_from_a_node_that_does_not_see_the_runs_folder(cluster, ws):
    """runs/ is `hidden` from the second node: its run folder travels back through Ray, its paths made local."""
    if not cluster.hidden:
        pytest.skip("this machine gives no mount namespace (unshare --mount) to hide a folder from a node")
    from sweeps.ray_executor import RayExecutor
    point_recipes(ws, run='echo "$N" > n.txt; sleep 1')
    settings = settings_of(ws)
    settings.runs = os.path.join(cluster.hidden, os.path.basename(ws.root))
    outcomes = list(RayExecutor(cluster.address, {"log_dir": os.path.join(ws.root, "logs")}).run(
        [task(0), task(1)], settings, lambda *event: None))
    assert all(o.returncode == 0 for o in outcomes), [o.stderr_tail for o in outcomes]
    assert len({o.node for o in outcomes}) == 2   # one point on each node, both records here
    where = []
    for o in outcomes:
        record = json.load(open(os.path.join(settings.runs, o.run_id, "run.json")))
        where.append(record["host"]["env"]["MLRUN_RUNS"] == settings.runs)   # the folder mlrun wrote into
        assert record["status"] == "ok"
        assert record["steps"][-1]["path"] == os.path.join(settings.runs, o.run_id, "point")
        n = int(o.point_id[1:])
        assert open(os.path.join(settings.runs, o.run_id, "point", "n.txt")).read() == f"{n}\n"
        assert "point" in open(os.path.join(ws.root, "logs", f"{o.point_id}.log")).read()
    assert sorted(where) == [False, True]   # the hidden node wrote into a scratch folder, and it came back


def test_measuring_points_get_a_whole_node_each(cluster, ws, tmp_path):
    """Two measuring points and one that is not: never two of them on the same node's CPU at once."""
    log = tmp_path / "spans"
    point_recipes(ws, run=f'echo "start $N $(date +%s.%N)" >> {log}; sleep 1.5; echo "end $N $(date +%s.%N)" >> {log}')
    outcomes, _ = run_points(ws, [task(0, measures=True), task(1, measures=True), task(2)], address=cluster.address)
    assert all(o.returncode == 0 for o in outcomes), [o.stderr_tail for o in outcomes]
    spans = {}
    for line in log.read_text().split("\n")[:-1]:
        kind, n, t = line.split()
        spans.setdefault(o_node(outcomes, n), []).append((kind, float(t)))
    for node, marks in spans.items():   # on each node the runs follow one another (1 CPU per node)
        marks.sort(key=lambda m: m[1])
        assert [k for k, _ in marks] == ["start", "end"] * (len(marks) // 2), (node, marks)


def o_node(outcomes, n):
    return next(o.node for o in outcomes if o.point_id == f"p{int(n):03d}")


def test_two_nodes_one_cache_build_a_dependency_once(cluster, ws, tmp_path):
    """Both nodes need the unbuilt `shared-dep` at once: the engine's per-entry lock on the shared cache
    folder lets one build it; the other waits, then uses it."""
    counter = tmp_path / "builds"
    point_recipes(ws, dep=counted_dep(counter))
    outcomes, _ = run_points(ws, [task(0), task(1)], address=f"ray://127.0.0.1:{cluster.client_port}")
    assert all(o.returncode == 0 for o in outcomes), [o.stderr_tail for o in outcomes]
    assert len({o.node for o in outcomes}) == 2   # at once, on both nodes (one CPU each)
    assert counter.read_text() == "built\n"
    statuses = sorted(json.load(open(os.path.join(ws.runs, o.run_id, "run.json")))["steps"][0]["status"]
                      for o in outcomes)
    assert statuses == ["built", "cached"], statuses
    assert len(ws.entries("shared-dep")) == 1


def test_a_worker_that_dies_leaves_its_point_failed(cluster, ws, tmp_path):
    pid_file = tmp_path / "pid"
    point_recipes(ws, run=f"echo $$ > {pid_file}; sleep 60")
    import threading
    killed = []

    def kill_worker():   # the Ray worker is the nearest ancestor of the step named ray::...
        if wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60):
            pid = int(pid_file.read_text())
            while pid > 1 and not open(f"/proc/{pid}/cmdline").read().startswith("ray::"):
                pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            if pid > 1:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    killer = threading.Thread(target=kill_worker)
    killer.start()
    outcomes, events = run_points(ws, [task(0)], address=cluster.address)
    killer.join()
    assert killed
    [o] = outcomes
    assert o.returncode != 0
    assert "mlrun: error: the Ray task of point p000 failed" in o.stderr_tail, o.stderr_tail
    assert ("finished", "p000") in events
    # The step's mlrun learned that its worker died (SIGTERM): its run is recorded as interrupted.
    [run_id] = [n for n in os.listdir(ws.runs) if not n.startswith(".")]
    assert o.run_id == run_id   # found by its mlrun's pid (the worker answered nothing: the point named no run)
    assert wait_for(lambda: json.load(open(os.path.join(ws.runs, run_id, "run.json")))["status"] == "interrupted",
                    timeout=30)


def test_sigterm_stops_a_ray_sweep_as_it_stops_a_local_one(cluster, ws, tmp_path):
    """ray.init put Ray's own SIGTERM handler in mlrun's place: the sweep died with a stack dump ('*** SIGTERM
    received'), its point left 'running'; with mlrun's handler put back, a signal raised inside Ray's calls was
    swallowed and the sweep ran on. Now: exit 143, the point recorded interrupted, as a local sweep does."""
    import subprocess
    import sys
    from conftest import ROOT
    pid_file = tmp_path / "pid"
    point_recipes(ws, run=f"echo $$ > {pid_file}; sleep 60")
    # this Python (it has ray), as bin/mlrun runs it
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    sweep = subprocess.Popen([sys.executable, "-c", code, "sweep", "point", "--grid", "n=0", "--name", "stopped",
                              "--on", f"ray:{cluster.address}"], env=ws.env(), cwd=ws.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = os.path.join(ws.runs, "sweeps", "stopped", "sweep.json")

    def running():   # the step runs, and the sweep heard that it started
        try:
            return pid_file.exists() and json.load(open(record))["points"][0]["status"] == "running"
        except (OSError, ValueError):
            return False
    assert wait_for(running, timeout=60)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=90)
    assert sweep.returncode == 143, err
    assert "mlrun: interrupted by SIGTERM" in err and "SIGTERM received" not in err, err
    assert "the same command goes on from where it stopped" in err, err   # a sweep resumes
    [point] = json.load(open(record))["points"]
    assert point["status"] == "interrupted"
    # The point names its run (a cancelled Ray task returns nothing: the worker handed the outcome over),
    # which its mlrun recorded interrupted.
    assert point["run"] and json.load(open(os.path.join(ws.runs, point["run"], "run.json")))["status"] == "interrupted"


def test_a_cluster_that_goes_leaves_the_points_not_started_pending(ws, tmp_path):
    """Its head stopped while a point ran: that point failed with the reason, and the points that had not started
    were marked failed too ('the Ray cluster went while it ran'), though nothing of theirs ran. Now they stay
    pending, said in one error, and the same command resumes them."""
    import subprocess
    import sys
    from conftest import ROOT
    pid_file = tmp_path / "pid"
    point_recipes(ws, run=f"echo $$ > {pid_file}; sleep 60")
    own = RayCluster(tmp_path / "ray")
    try:
        own.add_node()   # one CPU: one point at a time, the other queued
        code = f"import sys; sys.path.insert(0, {ROOT!r}); from engine.cli import main; sys.exit(main(sys.argv[1:]))"
        sweep = subprocess.Popen([sys.executable, "-c", code, "sweep", "point", "--grid", "n=0,1", "--name", "gone",
                                  "--on", f"ray:{own.address}"], env=ws.env(), cwd=ws.root,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_for(pid_file.exists, timeout=90)
        own.kill()
        _, err = sweep.communicate(timeout=120)
    finally:
        assert own.stop(), f"Ray processes left: {own.left()}"
    assert sweep.returncode == 2, err
    assert "the Ray cluster went while the sweep ran" in err and "1 point that had not started stay pending" in err
    points = json.load(open(os.path.join(ws.runs, "sweeps", "gone", "sweep.json")))["points"]
    assert [p["status"] for p in points] == ["failed", "pending"], points
    assert len(points[0]["node"]) <= 12, points[0]   # a short node name, not Ray's 56-character id


def test_the_sweep_cluster_bench_prints_each_overhead_signed():
    """bench/sweep_cluster.py's overhead part as a person runs it (about 10 s: it starts a one-node Ray cluster of
    its own); a local executor a hair faster than a direct start printed '(+-0.01 s ...)'."""
    import re
    import subprocess
    import sys
    from conftest import ROOT
    result = subprocess.run([sys.executable, "-m", "bench.sweep_cluster", "--points", "2", "--skip-bert",
                             "--skip-slurm"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "Overhead per point, 2 points whose plan is all cached (mean wall time per point):", lines
    rows = [re.match(r"  (.+?) +(\d+\.\d\d) s   \(([+-]\d+\.\d\d) s over a direct start\)$", line) for line in lines[1:]]
    assert [row and row.group(1) for row in rows] == ["bin/mlrun run, started directly", "local executor (--jobs 1)",
                                                      "Ray, 1 node of 1 CPU"], lines
    direct = float(rows[0].group(2))
    assert all(abs(float(row.group(3)) - (float(row.group(2)) - direct)) <= 0.011 for row in rows), lines
