"""Entries built at once: by one run (--jobs), and by runs started together on one cache, against one run
building one entry after another (--jobs 1).

A plan of --nodes independent steps (each waits --seconds, as a download does) under one root is built in a new
cache by one `mlrun` process with each --jobs N (N - 1 threads build ready entries alongside its own), then by 2
(and more: --processes) processes started together, each with --jobs 1, on another new cache. A run that finds a
step locked by another mlrun's build builds a later step whose deps are done meanwhile (Spack's rule), so N
processes finish the plan in about 1/N of the time alone; were they to wait for each other's builds, every
process would take the time alone. Each entry is built once either way (the script checks it).

    .venv/bin/python -m bench.concurrent_builds [--nodes 8] [--seconds 0.5] [--jobs 1,2,4] [--processes 2,4]
        [--repeat 3]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time

from engine.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLRUN = os.path.join(ROOT, "bin", "mlrun")


def write_recipes(folder, nodes, seconds):
    for i in range(nodes):
        os.makedirs(os.path.join(folder, f"n{i}"))
        with open(os.path.join(folder, f"n{i}", "recipe.yaml"), "w") as f:
            f.write(f"tags: [n{i}]\nrun: sleep {seconds}; echo {i} > out.txt\n")
    os.makedirs(os.path.join(folder, "root"))
    with open(os.path.join(folder, "root", "recipe.yaml"), "w") as f:
        f.write("tags: [root]\ndeps: [" + ", ".join(f"n{i}" for i in range(nodes)) + "]\nrun: echo done > out.txt\n")


def together(count, recipes, cache, runs, jobs=1):
    """Wall time of `count` mlrun processes started at once, until the last ends; every entry built once."""
    env = dict(os.environ, MLRUN_RECIPES=recipes, MLRUN_CACHE=cache, MLRUN_RUNS=runs)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([MLRUN, "root", "--json", "--jobs", str(jobs)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    built = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise UsageError(f"mlrun exited with {p.returncode}: {err.strip()[-500:]}")
        built += [s["recipe"] for s in json.loads(out)["steps"] if s["status"] == "built"]
    if sorted(built) != sorted(set(built)):
        raise UsageError(f"an entry was built twice: {sorted(built)}")
    return wall, len(built)


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:   # nan passed `value <= 0`: the steps then failed on "sleep nan"
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        if math.isinf(value):   # inf (or 1e999): "sleep inf", a run that never ended
            raise argparse.ArgumentTypeError(f"must be finite, not {text}")
        return value
    return parse


def counts(least, why):
    def parse(text):
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"whole numbers separated by commas, not {text!r}") from None
        if not values or min(values) < least:
            raise argparse.ArgumentTypeError(f"each count at least {least} ({why}), not {text}")
        return values
    return parse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=positive(int), default=8, help="independent steps under the root")
    ap.add_argument("--seconds", type=positive(float), default=0.5, help="how long each step takes")
    ap.add_argument("--jobs", type=counts(1, "entries built at once"), default=[1, 2, 4],
                    help="one run's --jobs, each measured (1,2,4); one run with --jobs 1 is always measured")
    ap.add_argument("--processes", type=counts(2, "one alone is always measured"), default=[2, 4],
                    help="how many runs start together, each with --jobs 1 (2,4)")
    ap.add_argument("--repeat", type=positive(int), default=3, help="median of this many (each in a new cache)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        recipes = os.path.join(tmp, "recipes")
        write_recipes(recipes, args.nodes, args.seconds)
        rows, n = [], 0
        # alternating: each round measures every setting once, so a slow minute of the machine hits them all
        settings = [(1, j) for j in sorted(set([1] + args.jobs))] + [(count, 1) for count in args.processes]
        walls = {setting: [] for setting in settings}
        built = {}
        for _ in range(args.repeat):
            for count, jobs in settings:
                n += 1
                wall, built[count, jobs] = together(count, recipes, os.path.join(tmp, f"cache{n}"),
                                                    os.path.join(tmp, "runs"), jobs)
                walls[count, jobs].append(wall)
    alone = statistics.median(walls[1, 1])
    print(f"{args.nodes} steps of {args.seconds} s each under one root, new cache each time, median of {args.repeat}:")
    for count, jobs in settings:
        what = f"one mlrun --jobs {jobs}" if count == 1 else f"{count} mlrun together (--jobs 1 each)"
        median = statistics.median(walls[count, jobs])
        print(f"  {what:<36} {median:6.2f} s (min {min(walls[count, jobs]):.2f})  {median / alone:4.2f}x the time "
              f"of one entry after another  entries built: {built[count, jobs]}")
    return 0


if __name__ == "__main__":
    from bench.entry import run
    run(main)
