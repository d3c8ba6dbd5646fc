"""Does this machine keep its speed for as long as a Server run lasts? A full-length Server check (600 s)
is VALID only if the machine never slows down for long enough to build a backlog past the latency bound.

    python -m bench.steadiness [--seconds 600] [--window 0.5] [--shape 177,768,3072] [--loads 0.6,0.7,0.8,0.9]
                               [--size-cv 0.43] [--save FILE.npz | --load FILE.npz]

On each core a thread pinned to it runs the same single-thread onnxruntime MatMul back to back for --seconds
(default: one BERT-Base feed-forward product at the mean SQuAD dev length, M=177 K=768 N=3072, 0.83 GFLOP: a
fixed amount of the work a Server run does, with nothing else in the way). Printed:
  - per core: runs, the median run and its GFLOP/s, p99, p99.9 and slowest run as multiples of the median;
  - the machine's work per --window (all cores) as a fraction of the median window's: the share of windows
    under 90%, 75% and 50%, and the longest spell of consecutive windows under 90%;
  - the CPU time the hypervisor took from this machine over the run (steal, /proc/stat), where Linux reports it;
  - what the measured speeds do to a Server: Poisson queries at a load u (a fraction of what the cores serve
    at their mean speed, what an Offline run measures), one worker per core taking them first come, first
    served from one queue (as mlperf_bert.sut does), each query's work gamma-distributed with a mean of one
    mean run and a spread of --size-cv (default 0.43: the work of the 10833 SQuAD dev features at their real
    lengths, mean 178 tokens, on the small Server model below; 1 is exponential, M/M/c). A core serves a
    query at the speeds it ran its measured runs at over the same stretch of time (MeasuredCore). The same queries (seeded) are served by a
    steady machine (always at the mean speed) and at this run's speeds: the p99 latency of each, against the
    130 ms bound. The default product takes about 10 ms a run on one core, about what one query of the small
    model of docs/performance.md's Server runs takes, so the figures speak of that run.
--save FILE.npz keeps the run times; --load FILE.npz analyses them again (other --loads, --size-cv, --window).
"""
import argparse
import os
import re
import statistics
import threading
import time

import numpy as np

from bench import machine_peak
from mlperf_bert import machine_load, parallelism
from mlperf_bert.queueing import server_latencies

BOUND_S = 0.130   # BERT Server's p99 latency bound


def run_core(core, shape, started, seconds, ends, stop):
    """Run the product on `core` until started + seconds or `stop` is set; append each run's end time
    (perf_counter) to ends."""
    parallelism.pin_current_thread((core,))
    session, feed = machine_peak.gemm_session(*shape, int8=False, threads=1)
    session.run(None, feed)   # allocation, weight packing
    while time.perf_counter() < started and not stop.is_set():
        pass
    ends.append(time.perf_counter())   # the first run's start, then each run's end
    deadline = started + seconds
    while time.perf_counter() < deadline and not stop.is_set():
        session.run(None, feed)
        ends.append(time.perf_counter())


def steal_ticks():
    """Total steal time in clock ticks, or None where it is not reported."""
    ticks = machine_load.cpu_ticks()
    return None if ticks is None or len(ticks) < 8 else ticks[7]


def window_work(ends_per_core, seconds, window):
    """Runs completed in each window, all cores together (a run counts in the window it ends in; times are
    from the common start)."""
    count = int(seconds / window)
    work = np.zeros(count)
    for ends in ends_per_core:
        slots = (np.asarray(ends[1:]) / window).astype(int)
        np.add.at(work, slots[slots < count], 1)
    return work


class MeasuredCore:
    """A core that works as fast as it did in the measurement: its progress is the runs it completed by then
    (linear within a run), so a query's work finishes when the core has done that many runs' worth since the
    query started; past the measurement, at the mean speed."""

    def __init__(self, ends):
        self.ends = np.asarray(ends, dtype=float)   # first run's start, then each run's end
        self.runs = np.arange(len(self.ends), dtype=float)
        self.mean = (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)   # seconds per run

    def finish(self, start, runs):
        """When `runs` runs' worth of work started at `start` is done."""
        if start >= self.ends[-1]:
            return start + runs * self.mean
        target = float(np.interp(start, self.ends, self.runs)) + runs
        if target > self.runs[-1]:
            return self.ends[-1] + (target - self.runs[-1]) * self.mean
        return float(np.interp(target, self.runs, self.ends))


def mean_service(cores):
    """The run time of a core of the steady machine: the one at which every core serves what the measured cores
    served together (it was core 0's alone: cores at 17.7 and 20.0 ms a run made the steady machine faster than the
    measured one, and the load's fraction was of core 0's speed)."""
    return len(cores) / sum(1 / core.mean for core in cores)


def server_p99(load, seconds, service_s, cores, size_cv, seed=0):
    """p99 latency (s) of Poisson queries at `load` x what the cores serve at service_s a query, over
    `seconds`; query sizes gamma-distributed with mean 1 and coefficient of variation size_cv (1: exponential)."""
    rng = np.random.default_rng(seed)
    rate = load * len(cores) / service_s
    arrivals = np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.1)))
    arrivals = arrivals[arrivals < seconds]
    sizes = rng.gamma(1 / size_cv ** 2, size_cv ** 2, len(arrivals))
    return float(np.percentile(server_latencies(arrivals, sizes, service_s, cores), 99))


def longest_spell(below):
    longest = current = 0
    for flag in below:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def measure(cores, shape, seconds):
    """Each core's run ends (seconds from the common start; the first value is its first run's start) and
    the steal ticks over the run (None where not reported)."""
    started = time.perf_counter() + 2.0   # every thread has built its session by then
    ends_per_core = [[] for _ in cores]
    # Ctrl-C: the threads stop after their current run. (They ran on to --seconds, 600 s, after "interrupted",
    # and the process then aborted: "terminate called without an active exception". Waited for on events, not
    # join(): Python 3.11 takes a join cut short by Ctrl-C for the thread's end, and exits under it.)
    stop, done = threading.Event(), [threading.Event() for _ in cores]

    def run_then_say(done, *args):
        try:
            run_core(*args)
        finally:   # run_core's session is gone by now
            done.set()

    threads = [threading.Thread(target=run_then_say, args=(finished, core, shape, started, seconds, ends, stop))
               for core, ends, finished in zip(cores, ends_per_core, done)]
    steal_before = steal_ticks()
    for thread in threads:
        thread.start()
    try:
        for finished in done:
            finished.wait()
    except KeyboardInterrupt:
        stop.set()
        for finished in done:
            finished.wait()
        raise
    finally:
        for thread in threads:
            thread.join()
    steal_after = steal_ticks()
    steal = None if steal_before is None or steal_after is None else steal_after - steal_before
    return [np.asarray(ends) - started for ends in ends_per_core], steal


def load_saved(path):
    """(cores, shape, seconds, each core's run ends, steal ticks or None) from a --save file; ValueError if it
    is not one."""
    try:
        saved = np.load(path)
        cores, shape, seconds = list(saved["cores"]), tuple(saved["shape"]), float(saved["seconds"])
        ends_per_core = [saved[f"core_{n}"] for n in range(len(cores))]
        steal = None if int(saved["steal"]) < 0 else int(saved["steal"])
    except (OSError, ValueError, KeyError) as e:   # missing, unreadable, or not one of --save's files
        raise ValueError(f"cannot read saved run times ({e}); write them with --save FILE.npz") from None
    return cores, shape, seconds, ends_per_core, steal


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long (Server's minimum run: 600 s)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per window of the work series")
    parser.add_argument("--shape", default="177,768,3072", help="M,K,N of the product each core runs")
    parser.add_argument("--size-cv", type=float, default=0.43,
                        help="spread of the queries' work (std/mean; default: SQuAD dev features' real lengths)")
    parser.add_argument("--loads", default="0.6,0.7,0.8,0.9", help="Server loads (fractions of the mean speed)")
    parser.add_argument("--save", metavar="FILE.npz", help="also write the measured run times there")
    parser.add_argument("--load", metavar="FILE.npz", help="analyse run times saved by --save, measure nothing")
    parser.prog = "python -m bench.steadiness"
    args = parser.parse_args(argv)
    try:
        loads = [float(value) for value in args.loads.split(",")]
    except ValueError:
        parser.error(f"--loads: fractions such as 0.6,0.7, not {args.loads!r}")
    # said at once (each was a traceback, some after the whole measurement: 10 minutes at the default)
    if not all(0 < load < 1 for load in loads):
        parser.error(f"--loads: fractions above 0 and below 1, not {args.loads!r}")
    for name in ("seconds", "window", "size_cv"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0, not {getattr(args, name)}")
    if not re.fullmatch(r"[1-9]\d*,[1-9]\d*,[1-9]\d*", args.shape):
        parser.error(f"--shape: M,K,N, three whole numbers above 0, not {args.shape!r}")
    if args.load and args.save:   # it wrote nothing, unsaid
        parser.error("--save writes a measurement and --load measures nothing: give one")
    if args.save:   # checked before measuring: a folder missing ended the run after it, nothing kept
        args.save = args.save if args.save.endswith(".npz") else args.save + ".npz"   # numpy's own name for it
        folder = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"--save {args.save}: {folder} is no folder this process may write")
    if args.load:
        try:
            cores, shape, seconds, ends_per_core, steal = load_saved(args.load)
        except ValueError as e:
            parser.error(f"--load {args.load}: {e}")
    else:
        cores, shape, seconds = parallelism.available_cores(), tuple(int(v) for v in args.shape.split(",")), args.seconds
    if not args.window * 4 <= seconds:   # "no median for empty data"
        parser.error(f"--window {args.window:g} s leaves too few windows in {seconds:g} s of run times (4 at least)")
    print(f"{len(cores)} cores {list(cores)}, each running MatMul {shape[0]}x{shape[1]} by {shape[1]}x{shape[2]} "
          f"single-thread for {seconds:g} s; windows of {args.window:g} s" + (f" (from {args.load})" if args.load else ""))
    if not args.load:
        ends_per_core, steal = measure(cores, shape, seconds)
        if args.save:
            np.savez(args.save, cores=cores, shape=shape, seconds=seconds, steal=-1 if steal is None else steal,
                     **{f"core_{n}": ends for n, ends in enumerate(ends_per_core)})

    flop = 2 * shape[0] * shape[1] * shape[2]
    for core, ends in zip(cores, ends_per_core):
        runs = np.diff(ends)
        median = statistics.median(runs)
        print(f"core {core}: {len(runs)} runs, median {median * 1e3:.2f} ms ({flop / median / 1e9:.1f} GFLOP/s), "
              f"mean {runs.mean() / median:.3f}x the median; "
              f"p99 {np.percentile(runs, 99) / median:.2f}x, p99.9 {np.percentile(runs, 99.9) / median:.2f}x, "
              f"slowest {runs.max() / median:.2f}x ({runs.max() * 1e3:.1f} ms)")

    work = window_work(ends_per_core, seconds, args.window)
    fractions = work / statistics.median(work)
    print(f"machine, {len(work)} windows of {args.window:g} s: median {statistics.median(work):.0f} runs; "
          + ", ".join(f"under {int(limit * 100)}%: {np.mean(fractions < limit) * 100:.1f}% of windows"
                      for limit in (0.9, 0.75, 0.5))
          + f"; slowest window {fractions.min() * 100:.0f}%; longest spell under 90%: "
            f"{longest_spell(fractions < 0.9) * args.window:g} s")
    if steal is not None:
        steal_s = steal / os.sysconf("SC_CLK_TCK")   # ticks, as machine_load.machine_busy_s converts them
        print(f"steal (CPU time taken by the hypervisor): {steal_s:.2f} CPU-s of {seconds * len(cores):.0f} "
              f"({steal_s / (seconds * len(cores)) * 100:.2f}%)")
    else:
        print("steal: not reported by this kernel")
    # Server: the same queries (seeded) on a machine that always runs at its mean speed and on this run's
    # measured speeds (the same mean), so the difference is what the unsteadiness alone costs. The load is
    # a fraction of the mean speed, what an Offline run measures; a query is one mean run's work on average.
    measured_cores = [MeasuredCore(ends) for ends in ends_per_core]
    service = mean_service(measured_cores)
    for load in loads:
        steady = server_p99(load, seconds, service, [None] * len(cores), args.size_cv)
        measured = server_p99(load, seconds, service, measured_cores, args.size_cv)
        print(f"Server at {load * 100:.0f}% of the mean speed ({len(cores)} workers, queries of "
              f"{service * 1e3:.1f} ms on average, spread {args.size_cv:g}): p99 {steady * 1e3:.0f} ms on a "
              f"steady machine, {measured * 1e3:.0f} ms at this run's speeds ({BOUND_S * 1e3:.0f} ms bound)")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
