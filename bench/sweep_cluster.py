"""Sweeps on clusters: the overhead per point, and a 12-point sweep on 1 and 2 Ray nodes.

1. Overhead per point (scheduling + mlrun start) of points whose whole plan is cached: N points run one
   at a time by the local executor, by Ray (a one-node cluster of 1 CPU) and by SLURM (a one-node SLURM,
   array_parallelism=1), next to the same `bin/mlrun run` started directly; the cluster's connection
   (ray.init / sbatch) is inside the executor's time, spread over the N points.
2. A 12-point sweep of tiny BERT performance runs (`mlrun sweep ... --grid batch_size=1,2,4 --grid threads=1,2
   --grid scenario=Offline,SingleStream`) on a Ray cluster of 1 node, then 2 nodes (1 CPU each; every point
   is a measurement, so it has a node to itself), and locally, one point at a time. On a 2-core machine two
   nodes can at best halve the wall time, and less when other work shares the cores.

Starts its clusters with tests/clusters.py (Ray from this Python's venv: requirements-cluster.txt; SLURM needs
root and Debian's slurm-wlm and munge). The BERT part uses --cache (default: a fresh folder, built first).

    .venv/bin/python -m bench.sweep_cluster [--points 8] [--cache DIR] [--skip-overhead|--skip-bert|--skip-slurm]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from bench.args import between as _between  # noqa: E402 (run as a file too: the path first)
from bench.entry import run as _run, uninterrupted  # noqa: E402
from engine.errors import StepError  # noqa: E402
MLRUN = os.path.join(ROOT, "bin", "mlrun")
TINY_MODEL = ["--dep.model.layers=2", "--dep.model.hidden=64", "--dep.model.heads=2"]
BERT = "app mlperf bert _onnxruntime _cpu _random"
GRID = ["--grid", "batch_size=1,2,4", "--grid", "threads=1,2", "--grid", "scenario=Offline,SingleStream"]


def cached_points(root, n):
    """A workspace whose `point` (cached, input n) is built for n = 0..N-1: each run only starts, plans,
    finds its entries and writes its record."""
    from clusters import point_recipes
    from conftest import Workspace
    ws = Workspace(root)
    point_recipes(ws, run='echo "$N" > n.txt')
    with open(os.path.join(ws.recipes, "point", "recipe.yaml")) as f:
        text = f.read().replace("cache: false\n", "")
    with open(os.path.join(ws.recipes, "point", "recipe.yaml"), "w") as f:
        f.write(text)
    for i in range(n):
        subprocess.run([MLRUN, "run", "point", f"--n={i}"], env=ws.env(), check=True, capture_output=True)
    return ws


def per_point(run, n):
    t0 = time.perf_counter()
    outcomes = list(run())
    wall = time.perf_counter() - t0
    bad = [o for o in outcomes if o.returncode != 0]
    if len(outcomes) != n or bad:   # was: an AssertionError's traceback
        raise StepError(f"{len(bad)} of {n} points failed ({len(outcomes)} ran): "
                        + "\n".join(o.stderr_tail or "" for o in bad)[-2000:])
    return wall / n


def overheads(tmp, n, skip_slurm):
    from clusters import ClusterUnavailable, OneNodeSlurm, RayCluster, settings_of, task
    from sweeps.executors import LocalExecutor
    from sweeps.ray_executor import RayExecutor
    from sweeps.slurm_executor import SlurmExecutor
    ws = cached_points(os.path.join(tmp, "points"), n)
    settings = settings_of(ws)
    tasks = [task(i, measures=False) for i in range(n)]
    quiet = lambda *a: None   # noqa: E731
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run([MLRUN, "run", "point", f"--n={i}", "--json"], env=ws.env(), check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    bare = statistics.mean(times)
    rows = [("bin/mlrun run, started directly", bare)]
    rows.append(("local executor (--jobs 1)", per_point(lambda: LocalExecutor().run(tasks, settings, quiet), n)))
    ray = RayCluster(os.path.join(tmp, "ray1"))
    try:
        ray.add_node()
        rows.append(("Ray, 1 node of 1 CPU", per_point(
            lambda: RayExecutor(ray.address).run(tasks, settings, quiet), n)))
    finally:
        with uninterrupted():   # a Ctrl-C in the stop left the cluster running
            ray.stop()
    if not skip_slurm:
        slurm = OneNodeSlurm(os.path.join(tmp, "slurm"))
        try:
            slurm.start_all()
            rows.append(("SLURM, one job array, 1 task at a time", per_point(
                lambda: SlurmExecutor({"slurm": {"array_parallelism": "1"}}).run(tasks, settings, quiet), n)))
        except ClusterUnavailable as e:
            print(f"SLURM skipped: {e}")
        finally:
            with uninterrupted():
                slurm.stop()
    print(f"\nOverhead per point, {n} points whose plan is all cached (mean wall time per point):")
    for name, seconds in rows:
        print(f"  {name:<42} {seconds:6.2f} s   ({seconds - bare:+5.2f} s over a direct start)")


def bert_sweeps(tmp, cache):
    from clusters import RayCluster
    from engine.cli import main
    env = {"MLRUN_CACHE": cache, "MLRUN_RUNS": os.path.join(tmp, "runs"),
           "MLRUN_MIRROR": os.path.join(os.path.dirname(ROOT), "shared", "data")}
    os.environ.update(env)
    common = [BERT, "--mode=performance", "--count=64", *TINY_MODEL, *GRID]
    t0 = time.perf_counter()
    built = subprocess.run([MLRUN, BERT, "--mode=performance", "--count=8", *TINY_MODEL], capture_output=True,
                           text=True)
    if built.returncode != 0:   # was: a CalledProcessError's traceback, mlrun's own words hidden
        raise StepError(f"building the BERT entries failed (mlrun exit {built.returncode}): {built.stderr[-2000:]}")
    print(f"\nBERT entries ready in {time.perf_counter() - t0:.0f} s ({cache})")
    rows = []

    def sweep(name, *where):
        t0 = time.perf_counter()
        code = main(["sweep", *common, "--name", name, *where])
        wall = time.perf_counter() - t0
        data = json.load(open(os.path.join(env["MLRUN_RUNS"], "sweeps", name, "sweep.json")))
        nodes = sorted({p["node"] for p in data["points"]})
        ok = sum(p["status"] == "ok" for p in data["points"])
        rows.append((name, wall, ok, len(data["points"]), len(nodes)))
        return code
    sweep("local")
    for n_nodes in (1, 2):
        ray = RayCluster(os.path.join(tmp, f"ray-{n_nodes}"))
        try:
            for _ in range(n_nodes):
                ray.add_node()
            sweep(f"ray-{n_nodes}-node", "--on", f"ray:{ray.address}")
        finally:
            with uninterrupted():
                ray.stop()
    print("\n12-point sweep of tiny BERT performance runs (--count=64), wall time:")
    for name, wall, ok, total, nodes in rows:
        print(f"  {name:<12} {wall:6.1f} s   {ok}/{total} ok, on {nodes} node(s)")
    local = rows[0][1]
    for name, wall, *_ in rows[1:]:
        print(f"  {name}: {local / wall:.2f}x the local sweep's speed")


def main_(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=_between(1), default=8, help="points of the overhead part (the BERT part is its 12-point grid); 0: a traceback")
    ap.add_argument("--cache", help="the cache for the BERT sweeps (default: a fresh one)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-bert", action="store_true")
    ap.add_argument("--skip-slurm", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlrun-sweep-bench-") as tmp:
        if not args.skip_overhead:
            overheads(tmp, args.points, args.skip_slurm)
        if not args.skip_bert:
            bert_sweeps(tmp, os.path.abspath(args.cache) if args.cache else os.path.join(tmp, "cache"))


if __name__ == "__main__":
    _run(main_)
