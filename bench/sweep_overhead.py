"""What a sweep costs per point beyond the point's own work: scheduling plus starting mlrun.

A 12-point sweep (by default) of a one-step recipe that is already cached is run again with --rerun: every point
is a whole `mlrun run ... --json` process that finds its step in the cache, so the wall time per point is the
overhead. Printed next to the same 12 `mlrun` runs started one after another by a plain loop (no sweep), whose
difference is what the sweep adds (planning every point, the record, the executor).

    .venv/bin/python -m bench.sweep_overhead [--points 12] [--jobs N] [--on ray://HOST:PORT ...] [--cache DIR]

Extra arguments (--on, --jobs, --slurm, --cpus) go to `mlrun sweep`; a cluster needs --cache and --runs on a
folder its nodes share.
"""
import argparse
import difflib
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run as a file too
from bench.args import between as _between  # noqa: E402
from engine.errors import MlrunError  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLRUN = os.path.join(ROOT, "bin", "mlrun")
RECIPE = "tags: [noop]\nversion: '1.0'\ninputs:\n  n: {type: int, default: 0}\nrun: echo \"$MLRUN_INPUT_N\" > n.txt\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 0 made an empty grid mlrun refused; 30,000 a grid value past the kernel's 128 KiB for one argument (a traceback)
    parser.add_argument("--points", type=_between(1, 10000), default=12, help="points of the sweep (1 to 10000)")
    parser.add_argument("--cache", help="cache folder (default: a temporary one)")
    parser.add_argument("--runs", help="runs folder (default: a temporary one)")
    args, sweep_args = parser.parse_known_args(argv)
    for arg in sweep_args:   # the rest goes to `mlrun sweep`: a misspelt option of this script went there too
        near = difflib.get_close_matches(arg.split("=")[0], ["--points", "--cache", "--runs"], n=1, cutoff=0.75)
        if arg.startswith("--") and near:
            parser.error(f"{arg}: did you mean {near[0]}? (options this script does not take go to `mlrun sweep`)")
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        os.makedirs(os.path.join(tmp, "recipes", "noop"))
        with open(os.path.join(tmp, "recipes", "noop", "recipe.yaml"), "w") as f:
            f.write(RECIPE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
        env.update(MLRUN_RECIPES=os.path.join(tmp, "recipes"), MLRUN_CACHE=args.cache or os.path.join(tmp, "cache"),
                   MLRUN_RUNS=args.runs or os.path.join(tmp, "runs"))
        values = ",".join(str(i) for i in range(args.points))
        sweep = [MLRUN, "sweep", "noop", "--grid", f"n={values}", "--name", f"overhead-{os.getpid()}", *sweep_args]

        def timed(cmd):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:   # mlrun's own exit code: 2 for what it was given (extra arguments), else 1
                raise MlrunError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}",
                                 exit_code=2 if done.returncode == 2 else 1)
            return time.perf_counter() - t0
        built = timed(sweep)                 # builds the 12 entries
        warm = timed(sweep + ["--rerun"])    # every point cached: only the overhead is left
        loop = sum(timed([MLRUN, "noop", f"--n={i}", "--json"]) for i in range(args.points))
    n = args.points
    print(f"sweep of {n} points, first (builds each step): {built:.2f} s ({built / n * 1000:.0f} ms/point)")
    print(f"sweep of {n} cached points (--rerun):          {warm:.2f} s ({warm / n * 1000:.0f} ms/point)")
    print(f"{n} cached `mlrun` runs in a plain loop:        {loop:.2f} s ({loop / n * 1000:.0f} ms/point)")
    print(f"what the sweep adds per point: {(warm - loop) / n * 1000:.0f} ms "
          f"(ratio sweep/loop {warm / loop:.2f})" + (f"  [{' '.join(sweep_args)}]" if sweep_args else ""))


if __name__ == "__main__":
    from bench.entry import run
    run(main)
