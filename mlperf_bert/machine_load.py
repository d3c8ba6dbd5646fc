"""The CPU time other processes take while a run measures. On a 2-core machine a few seconds of somebody
else's work are enough to make a 600-s Server run INVALID (docs/performance.md, bench/steadiness.py: 10 s of
a test run beside a measurement took a simulated Server at 70% of Offline from p99 60 ms to 691 ms), and
lower any throughput; a performance run records how quiet the machine was, so a result can be judged."""
import os
import threading
import time

SPAN_S = 5.0          # the worst span reported
BUSY_SHARE = 0.05     # a run is flagged when other processes took this share of the machine overall ...
BUSY_SPAN_SHARE = 0.25  # ... or this share of it in some SPAN_S,
BUSY_MIN_CPU_S = 0.5    # and at least this much in all (below it, a short run's clock-tick noise)


def cpu_ticks(cpus=None):
    """The CPUs' time since boot in clock ticks, [user, nice, system, idle, iowait, irq, softirq, steal]: all of
    them (/proc/stat's first line), or the sum of those numbered in cpus; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            lines = [line.split() for line in stat if line.startswith("cpu")]
    except OSError:
        return None
    wanted = ["cpu"] if cpus is None else [f"cpu{n}" for n in cpus]
    rows = [[int(value) for value in fields[1:9]] for fields in lines if fields and fields[0] in wanted]
    return [sum(column) for column in zip(*rows)] if len(rows) == len(wanted) else None


def machine_busy_s(cpus=None):
    """Seconds of CPU time the CPUs (all, or those numbered) spent busy since boot (all but idle and iowait)."""
    ticks = cpu_ticks(cpus)
    return None if ticks is None else (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpus():
    """The CPUs this process may run on, when it is pinned to some of the machine's (a sweep's --jobs point, taskset):
    other processes on the others do not take its time. None: all of them."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return mine if len(mine) < (os.cpu_count() or len(mine)) else None


def own_busy_s():
    """CPU seconds this process (every thread) has used."""
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """A context that samples, once a second on a daemon thread, the machine's busy time less this process's:
    what other processes (and the kernel for them) took while the block ran."""

    def __init__(self, interval=1.0):
        self.interval = interval
        self.samples = []      # (time, other processes' CPU seconds so far)
        self._stop = threading.Event()
        self._thread = None
        # pinned: its own CPUs only (the other point of a --jobs 2 sweep, on the other core, flagged every point busy)
        self.pinned = own_cpus()
        self.cpus = len(self.pinned) if self.pinned else os.cpu_count() or 1

    def _sample(self):
        busy = machine_busy_s(self.pinned)
        if busy is not None:
            self.samples.append((time.monotonic(), busy - own_busy_s()))

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="other-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def record(self):
        """{"cpus", "seconds", "other_cpu_s", "share", "worst_span_share", "span_s", "busy"} or None (no /proc)."""
        if len(self.samples) < 2:
            return None
        (start, first), (end, last) = self.samples[0], self.samples[-1]
        seconds = max(end - start, 1e-9)
        other = max(last - first, 0.0)
        share = other / (seconds * self.cpus)
        worst = share if seconds < SPAN_S else 0.0   # a run shorter than a span: the run is the span
        for n, (when, used) in enumerate(self.samples):
            later = next(((t, u) for t, u in self.samples[n + 1:] if t - when >= SPAN_S), None)
            if later:
                worst = max(worst, (later[1] - used) / ((later[0] - when) * self.cpus))
        return {"cpus": self.cpus, **({"pinned_to": self.pinned} if self.pinned else {}),
                "seconds": round(seconds, 1), "other_cpu_s": round(other, 2),
                "share": round(share, 4), "worst_span_share": round(max(worst, 0.0), 4), "span_s": SPAN_S,
                "busy": other >= BUSY_MIN_CPU_S and (share >= BUSY_SHARE or worst >= BUSY_SPAN_SHARE)}


def describe(record):
    """One line for the run's summary."""
    # a run no longer than the span is its own worst span ("worst 5 s" of a 0.1-s run said nothing more)
    worst = f"; worst {record['span_s']:g} s: {record['worst_span_share']:.0%}" \
        if record["seconds"] > record["span_s"] else ""
    which = f"the {record['cpus']} CPUs" if not record.get("pinned_to") else \
        f"the CPU{'s' if len(record['pinned_to']) > 1 else ''} it is pinned to ({','.join(map(str, record['pinned_to']))})"
    line = (f"other processes took {record['share']:.1%} of {which} over the run "
            f"({record['other_cpu_s']:.2f} CPU-s in {record['seconds']:.1f} s{worst})")
    if record["busy"]:
        line += ": a busy machine; throughput and latency measured now are not this machine's (run again quietly)"
    return line
