"""Sweeps on a real Ray cluster started on this machine: a head and one more node, one CPU each.

The module starts the cluster once (`ray start --head` and `ray start --address`, ports chosen here, each
node in its own process group, stopped by its group at the end) and runs small recipes through the
Ray executor: points spread over both nodes with their records back in runs/, one cache folder shared
by both nodes (a dependency both need at once is built once), a worker that dies.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster_points import counted_dep, free_port, point_recipes, settings_of, task
from conftest import wait_for

ray = pytest.importorskip("ray", reason="the Ray executor's tests need requirements-cluster.txt installed")

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


class RayCluster:
    """Nodes started by `ray start --block` in their own process groups; stop() kills those groups."""

    def __init__(self, root):
        self.root, self.port, self.client_port = str(root), free_port(), free_port()
        self.address, self.procs = f"127.0.0.1:{self.port}", []

    def start_node(self, head=False, wrap=(), env=None):
        args = [*wrap, RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                "--object-store-memory=100000000", f"--dashboard-agent-listen-port={free_port()}"]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.root}/ray"]
        else:
            args += [f"--address={self.address}"]
        log = open(os.path.join(self.root, f"node{len(self.procs)}.log"), "w")
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env=env))

    def nodes(self):
        ray.init(address=self.address, logging_level="error", configure_logging=False)
        try:
            return [n for n in ray.nodes() if n["Alive"]]
        finally:
            ray.shutdown()

    def wait_nodes(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.nodes()) >= n:
                    return
            except Exception:   # the head is not up yet
                pass
            time.sleep(1)
        raise AssertionError(f"the Ray cluster did not get {n} nodes:\n{self.log_tail()}")

    def log_tail(self):
        return "\n".join(open(os.path.join(self.root, f"node{i}.log")).read()[-1500:] for i in range(len(self.procs)))

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            if all(_waited(p, wait) for p in self.procs):
                break


def _waited(proc, timeout):
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        c.start_node(head=True)
        c.wait_nodes(1)
        c.start_node()
        c.wait_nodes(2)
        yield c
    finally:
        c.stop()
        # Nothing of the cluster is left (its processes name its temp folder): stragglers get SIGKILL by pid.
        def left():
            found = subprocess.run(["pgrep", "-f", c.root], capture_output=True, text=True).stdout
            return [int(p) for p in found.split()]
        if not wait_for(lambda: not left(), timeout=20, interval=0.5):
            for pid in left():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        assert wait_for(lambda: not left(), timeout=10, interval=0.5), f"Ray processes left: {left()}"


def run_points(ws, tasks, **options):
    from sweeps.ray_executor import RayExecutor
    events = []
    outcomes = list(RayExecutor(options.pop("address"), options).run(
        tasks, settings_of(ws), lambda kind, task, outcome: events.append((kind, task.point_id))))
    return outcomes, events


def test_sweep_of_four_points_on_both_nodes_records_back(cluster, ws, monkeypatch, capsys):
    """`mlrun sweep ... --on ray:ADDRESS` (in this process: its Python has ray; the points' mlrun need not)."""
    point_recipes(ws)
    for name, value in ws.env().items():
        if name.startswith("MLRUN_"):
            monkeypatch.setenv(name, value)
    from engine.cli import main
    argv = ["sweep", "point", "--grid", "n=0,1,2,3", "--name", "four", "--on", f"ray:{cluster.address}"]
    assert main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "sweep four: 4 points, 4 to run on ray:" in err and "sweep four: 4 ok" in err, err
    data = json.load(open(os.path.join(ws.runs, "sweeps", "four", "sweep.json")))
    assert [p["status"] for p in data["points"]] == ["ok"] * 4, data["points"]
    assert len({p["node"] for p in data["points"]}) == 2, data["points"]   # both nodes ran points
    for p in data["points"]:   # each run's record is in this machine's runs/, with its own input; its log too
        record = json.load(open(os.path.join(ws.runs, p["run"], "run.json")))
        assert record["status"] == "ok" and record["steps"][-1]["node"]["inputs"]["n"] == int(p["settings"]["n"])
        assert "point" in open(p["log"]).read()
    assert not [n for n in os.listdir(ws.runs) if n.startswith(".sweep-")]   # the markers are gone
    assert main(argv) == 0   # run again: every point finished ok with the same plan, nothing runs
    assert "4 skipped" in capsys.readouterr().err


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
    assert o.returncode != 0 and o.run_id is None
    assert "mlrun: error: the Ray task of point p000 failed" in o.stderr_tail, o.stderr_tail
    assert ("finished", "p000") in events
    # The step's mlrun learned that its worker died (SIGTERM): its run is recorded as interrupted.
    [run_id] = [n for n in os.listdir(ws.runs) if not n.startswith(".")]
    assert wait_for(lambda: json.load(open(os.path.join(ws.runs, run_id, "run.json")))["status"] == "interrupted",
                    timeout=30)
