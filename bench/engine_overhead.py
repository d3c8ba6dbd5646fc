"""Engine overhead on the warm path: what a user pays on every rerun.

Prints the wall time of a fresh `bin/mlrun` process for a 14-recipe graph that is
all cached already, of `bin/mlrun show cache` with 1000 entries, of a run that builds
one small step, and of the first `plan` of the BERT benchmark in a new cache (its recipes
read, their probes run: what a new cache folder, an edited recipe or a test pays), next
to a bare `python -c pass` start measured in the same run (compare ratios: machines are
noisy). Goals (2-core machine): warm 12+-node run < 0.10 s, show cache with 1000 entries
< 0.20 s. Also `mlrun runs` over the runs those builds recorded, with and without the rows it keeps.

    .venv/bin/python -m bench.engine_overhead [--repeat 15]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run as a file too
from bench.args import between as _between  # noqa: E402
from engine.errors import MlrunError  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLRUN = os.path.join(ROOT, "bin", "mlrun")
LAYERS = 4  # a diamond-rich graph: 1 root + 4 layers of 3 + 1 leaf = 14 recipes


def write_recipes(folder):
    """14 recipes: leaf <- 4 layers of 3 (each depending on the whole layer below) <- root."""
    def recipe(name, tags, deps, extra=""):
        os.makedirs(os.path.join(folder, name))
        dep_lines = "".join(f"  - {{name: {d}, query: {d}}}\n" for d in deps)
        with open(os.path.join(folder, name, "recipe.yaml"), "w") as f:
            f.write(f"tags: [{', '.join(tags)}]\nversion: '1.0'\n"
                    + (f"deps:\n{dep_lines}" if deps else "")
                    + "variations:\n  small: {group: size, default: true, env: {SIZE: '1'}}\n"
                      "  big: {group: size, env: {SIZE: '2'}}\n"
                    + f"env: {{NAME: {name}}}\nexports:\n  {name.upper().replace('-', '_')}: '{{entry}}/out.txt'\n"
                      "  PATH: {prepend: ['{entry}/bin']}\n"
                    + "run: echo \"$NAME $SIZE\" > out.txt\n" + extra)
    recipe("leaf", ["leaf"], [])
    below = ["leaf"]
    for layer in range(LAYERS):
        names = [f"l{layer}-n{i}" for i in range(3)]
        for n in names:
            recipe(n, [n], below)
        below = names
    recipe("root", ["bench", "root"], below)
    os.makedirs(os.path.join(folder, "many"))
    with open(os.path.join(folder, "many", "recipe.yaml"), "w") as f:
        f.write("tags: [many]\nvariations:\n  n.#: {env: {N: '{value}'}}\nrun: echo $N > n.txt\n")
    return 1 + 3 * LAYERS + 1


def ran(argv, env):
    """Run argv, its output unread (its stderr in a file, read only when it fails: a pipe would be read while
    timed); a failure is said with mlrun's own words (it was a CalledProcessError's traceback, them unseen: an
    MLRUN_JOBS=abc in the environment, say)."""
    with tempfile.TemporaryFile() as err:
        code = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=err).returncode
        if code != 0:
            err.seek(0)
            said = err.read().decode(errors="replace").strip()[-2000:]
            raise MlrunError(f"`{' '.join(argv)}` failed (exit {code}):\n{said}", exit_code=2 if code == 2 else 1)


def timed(argv, env, repeat, before=None):
    times = []
    for i in range(repeat):
        if before:
            argv = before(i) or argv
        t0 = time.perf_counter()
        ran(argv, env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def fill_cache(env, count):
    """Build `count` entries through the engine API (one process, so it is quick)."""
    sys.path.insert(0, ROOT)
    from engine import Cache, Runner, RunReporter, Settings, resolve
    settings = Settings.from_env(env)
    index, cache = settings.index(), Cache(settings.cache)
    quiet = RunReporter(open(os.devnull, "w"))
    for i in range(count):
        Runner(cache, settings.runs, reporter=quiet).run(resolve(index, f"many _n.{i}"), argv=["bench"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 0 ended in "no median for empty data" (a traceback)
    ap.add_argument("--repeat", type=_between(1), default=15, help="times each command is timed (the median)")
    ap.add_argument("--entries", type=_between(1), default=1000, help="cache entries and runs made to list")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipes = os.path.join(tmp, "recipes")
        nodes = write_recipes(recipes)
        env = dict(os.environ, MLRUN_RECIPES=recipes, MLRUN_CACHE=os.path.join(tmp, "cache"),
                   MLRUN_RUNS=os.path.join(tmp, "runs"))
        # Time what users get: Python's cached bytecode (the first run below writes it).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        ran([MLRUN, "bench root"], env)
        bare = timed([sys.executable, "-c", "pass"], env, args.repeat)
        warm = timed([MLRUN, "bench root"], env, args.repeat)
        fill_cache(env, args.entries - nodes)
        count = len([n for n in os.listdir(env["MLRUN_CACHE"]) if not n.startswith(".")])
        show = timed([MLRUN, "show", "cache"], env, args.repeat)
        build = timed(None, env, args.repeat, before=lambda i: [MLRUN, f"many _n.{args.entries + i}"])
        # the runs recorded so far (one per entry built): listed reading every record, then with the rows kept
        runs = len([n for n in os.listdir(env["MLRUN_RUNS"]) if not n.startswith(".")])
        memo = os.path.join(env["MLRUN_RUNS"], ".index")
        cold = timed([MLRUN, "runs"], env, args.repeat, before=lambda i: shutil.rmtree(memo, ignore_errors=True))
        kept = timed([MLRUN, "runs"], env, args.repeat)
        # the same graph among 1,000 more recipes (a large recipe collection): its plan, the index read once
        crowd = os.path.join(tmp, "crowd")
        for i in range(1000):
            os.makedirs(os.path.join(crowd, f"other-{i}"))
            with open(os.path.join(crowd, f"other-{i}", "recipe.yaml"), "w") as f:
                f.write(f"tags: [other, o{i}]\nrun: echo {i} > n.txt\n")
        crowded = dict(env, MLRUN_RECIPES=os.pathsep.join([recipes, crowd]))
        ran([MLRUN, "plan", "bench root"], crowded)
        among = timed([MLRUN, "plan", "bench root"], crowded, args.repeat)
        # the real recipes in a new cache each time: nothing read or probed before
        bert = dict(env, MLRUN_RECIPES=os.path.join(ROOT, "recipes"), MLRUN_CACHE=os.path.join(tmp, "fresh"))
        fresh = timed([MLRUN, "plan", "app mlperf bert _onnxruntime _cpu _random"], bert, args.repeat,
                      before=lambda i: shutil.rmtree(bert["MLRUN_CACHE"], ignore_errors=True))
    print(f"python -c pass (bare start):          median {bare[0]:.3f} s  min {bare[1]:.3f} s")
    print(f"warm run, {nodes}-node graph all cached:   median {warm[0]:.3f} s  min {warm[1]:.3f} s"
          f"  ({warm[0] / bare[0]:.1f}x bare; goal < 0.10 s)")
    print(f"show cache, {count} entries:            median {show[0]:.3f} s  min {show[1]:.3f} s"
          f"  ({show[0] / bare[0]:.1f}x bare; goal < 0.20 s with 1000)")
    print(f"a run building one small step:       median {build[0]:.3f} s  min {build[1]:.3f} s"
          f"  ({build[0] / bare[0]:.1f}x bare)")
    print(f"runs, {runs} runs, every record read:    median {cold[0]:.3f} s  min {cold[1]:.3f} s"
          f"  ({cold[0] / bare[0]:.1f}x bare)")
    print(f"runs, {runs} runs, rows kept:            median {kept[0]:.3f} s  min {kept[1]:.3f} s"
          f"  ({kept[0] / bare[0]:.1f}x bare; {cold[0] / kept[0]:.1f}x faster)")
    print(f"plan of that graph among 1,000 more recipes: median {among[0]:.3f} s  min {among[1]:.3f} s"
          f"  ({among[0] / bare[0]:.1f}x bare)")
    print(f"first plan of the BERT app, new cache: median {fresh[0]:.3f} s  min {fresh[1]:.3f} s"
          f"  ({fresh[0] / bare[0]:.1f}x bare)")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
