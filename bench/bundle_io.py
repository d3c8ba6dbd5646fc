"""Sharing a run: how long `mlrun export --with-cache` and `mlrun import` take, against one plain read of the
bundle (gzip decompressing its stream to the end, nothing written), measured in the same run.

A BERT-Large bundle with its cache is gigabytes, and each pass over its stream decompresses all of it: the figure
to watch is import / one read (how many times the import pays for the stream), unsigned and signed, and the same of
`mlrun diff BUNDLE ...` (read_record: the bundle checked in place, its run record read). A throwaway SSH key
(ssh-keygen, in a scratch folder) signs the second bundle; the import trusts it as a teammate's key would be.

    .venv/bin/python -m bench.bundle_io [--run RUN_DIR] [--repeat 2]

RUN_DIR defaults to the newest run under MLRUN_RUNS or ./runs (the README's main command makes one); its cache is
MLRUN_CACHE or ./cache.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.bundle import _gzip, export_run, import_bundle, read_record   # noqa: E402
from engine.cache import Cache   # noqa: E402
from engine.errors import MlrunError, UsageError   # noqa: E402
from bench.entry import run, uninterrupted   # noqa: E402


def newest_run(runs):
    """The newest run folder under runs, or None."""
    names = sorted(n for n in os.listdir(runs) if os.path.isfile(os.path.join(runs, n, "run.json"))) \
        if os.path.isdir(runs) else []
    return os.path.join(runs, names[-1]) if names else None


def one_read(path):
    """Decompress the bundle's whole stream once, with the gzip import reads it with (what any import must do at
    least)."""
    with open(path, "rb") as raw, _gzip().read(raw) as f:
        while f.read(1 << 20):
            pass


def timed(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def timed_import(bundle, scratch, trust=None):
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    start = time.perf_counter()
    info = import_bundle(bundle, Cache(os.path.join(scratch, "cache")), os.path.join(scratch, "runs"), trust=trust)
    seconds = time.perf_counter() - start
    shutil.rmtree(scratch, ignore_errors=True)   # its files are read-only entries: rmtree copes (owner's folders)
    return seconds, len(info["added"])


def measure(run_dir, cache, scratch, key, trust, repeat):
    """(label, bundle bytes, entries added, export s, one read s, import s, diff s) of each bundle, best of repeat."""
    rows = []
    for label, sign in (("unsigned", None), ("signed", key)):
        path = os.path.join(scratch, f"{label}.tar.gz")
        # best of repeat too: the first also reads the entries' files from disk where they are not in memory
        export_s = min(timed(export_run, run_dir, cache, path, True, sign) for _ in range(repeat))
        read_s = min(timed(one_read, path) for _ in range(repeat))
        import_s, added = min(timed_import(path, os.path.join(scratch, "imported"), trust if sign else None)
                              for _ in range(repeat))
        diff_s = min(timed(read_record, path) for _ in range(repeat))
        rows.append((label, os.path.getsize(path), added, export_s, read_s, import_s, diff_s))
    return rows


def measure_hint(hint, run_dir):
    """export's hint made this script's: its "mlrun --cache DIR export ..." (DIR shell-quoted: a path with a space was
    cut at it, "MLRUN_CACHE='/tmp/my python ...") as the MLRUN_CACHE=DIR command that measures the run."""
    used = re.search(r"mlrun --cache ('(?:[^']|'\"'\"')*'|\S+) export ", hint or "")
    if used:
        return f"measure it with that cache: MLRUN_CACHE={used[1]} python -m bench.bundle_io --run {shlex.quote(run_dir)}"
    return (hint or "").replace("--cache", "MLRUN_CACHE")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="the run folder to export (default: the newest under MLRUN_RUNS or runs/)")
    parser.add_argument("--repeat", type=int, default=2, help="exports, reads and imports of each bundle (best "
                        "taken)")
    parser.add_argument("--scratch", help="where the bundles and imports go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    runs = os.environ.get("MLRUN_RUNS") or os.path.join(ROOT, "runs")   # was ./runs only: MLRUN_CACHE's runs unseen
    run_dir = args.run or newest_run(runs)
    if run_dir is None:
        parser.error(f"no run under {runs}: run the README's main command first, or give --run")
    run_dir = os.path.abspath(run_dir)
    if not os.path.isfile(os.path.join(run_dir, "run.json")):
        parser.error(f"--run {args.run}: no run record (run.json) there")
    if args.scratch and not os.path.isdir(args.scratch):
        parser.error(f"--scratch {args.scratch}: not a folder")
    if shutil.which("ssh-keygen") is None:
        raise UsageError("needs ssh-keygen to sign the second bundle", hint="Debian: apt-get install openssh-client")
    cache = Cache(os.environ.get("MLRUN_CACHE") or os.path.join(ROOT, "cache"))
    try:
        scratch = tempfile.mkdtemp(prefix="bundle-io-", dir=args.scratch)
    except OSError as e:   # a --scratch that is not writable: was a traceback
        raise UsageError(f"cannot make a scratch folder in {args.scratch or tempfile.gettempdir()}: "
                         f"{e.strerror or e}", hint="give --scratch a folder you may write") from None
    try:
        key = os.path.join(scratch, "key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", key], check=True)
        trust = os.path.join(scratch, "allowed_signers")
        with open(key + ".pub") as f, open(trust, "w") as out:
            out.write("bench@example.com " + " ".join(f.read().split()[:2]) + "\n")
        try:
            rows = measure(run_dir, cache, scratch, key, trust, args.repeat)
        except MlrunError as e:   # a run still running, a cache without its entries: said, not a traceback
            # this script's cache is MLRUN_CACHE's ("mlrun MLRUN_CACHE DIR export ..." was the hint's command)
            raise MlrunError(e.message, measure_hint(e.hint, run_dir) or None, e.exit_code) from None
        print(f"run {os.path.basename(run_dir)}, best of {args.repeat}")
        print(f"{'bundle':<9} {'MB':>7} {'entries':>7} {'export s':>9} {'one read s':>10} {'import s':>9} "
              f"{'import / read':>13} {'diff s':>7} {'diff / read':>11}")
        for label, size, added, export_s, read_s, import_s, diff_s in rows:
            print(f"{label:<9} {size / 1e6:>7.1f} {added:>7} {export_s:>9.2f} {read_s:>10.2f} {import_s:>9.2f} "
                  f"{import_s / read_s:>13.2f} {diff_s:>7.2f} {diff_s / read_s:>11.2f}")
    finally:
        with uninterrupted():   # a Ctrl-C here left the folder half removed
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    run(main)
