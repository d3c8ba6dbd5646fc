"""Threads, spinning and instances: how an onnxruntime run uses the cores, chosen per scenario.

An instance is one onnxruntime session with its own worker thread, pinned to its own cores
(the worker thread with os.sched_setaffinity, the session's intra-op pool threads with
onnxruntime's session.intra_op_thread_affinities), so instances never compete for a core.

The rule (measured with `python -m bench.parallelism`: BERT-Base-shaped random model, 32 real SQuAD
lengths, 2 cores shared with other jobs (load average 5-6), medians of 4 alternating passes:
one instance on both cores 1.52 samples/s with onnxruntime's default spinning, 2.60 without,
two pinned single-core instances 3.70, i.e. 2.4x; spinning threads lose most when cores are
contended, so spinning is off unless asked for):
  SingleStream, MultiStream: one instance on all cores. One query at a time: its latency is the
      metric, and every core on it gives the shortest.
  Offline: one instance per core (1 thread each, no pool threads, so spinning does not apply).
      A BERT graph is a chain of operators; splitting each operator over cores costs a sync per
      operator, and short samples make small operators, so independent samples on separate cores
      do more work per second than every core on one sample (measured: see the doc).
  Server: instances by load. A sample's latency on one core is about `cores` times its latency
      on all of them: when the warm-up's slowest sample, so scaled, stays within 75% of the latency
      bound, Server runs as Offline (throughput at peak load); otherwise one instance on all cores
      (latency first). 75%, not half: OpenVINO's int8-bf16 BERT-Base on the Xeon, whose estimate read
      2 x 36.9-44.1 ms (57-68%: it follows the machine's speed) in five runs, had the lower tail one instance per core: p99 97-132 ms at 45 and 52 QPS
      (2000 queries, two rounds) against 117-252 ms on both cores, and 151.6 ms at 40 QPS over 600 s
      against 197.7 and 298.0; --find-peak measures both layouts.
Every choice can be overridden (--instances, --threads per instance, --spin/--no-spin); the
choice, what was overridden and why are recorded in the run's summary.json.

Memory: each onnxruntime session holds its own copy of the weights (measured: 1.09-1.15x the model file per
session, a 90 MB and a 436 MB model), so the rule makes no more instances than the memory available holds at
SESSION_MEMORY_SHARE x the file and SESSION_MEMORY_EXTRA each, with MEMORY_KEPT of it left to the run, and more
asked for with --instances are refused before any is made (a BERT-Large run on a many-core machine was killed by
the kernel instead; under a 700 MB limit the estimate without the extra and the share kept allowed 32 sessions of
a 21 MB model where 15 were killed).
"""
import math
import os
from dataclasses import asdict, dataclass, field

from engine import cgroups

LATENCY_SCENARIOS = ("SingleStream", "MultiStream")
SERVER_BOUND_SHARE = 0.75  # Server many-instance rule: the slowest sample on one instance within 75% of the bound
SESSION_MEMORY_SHARE = 1.2  # an onnxruntime session's memory, as a share of its model file (1.15 measured, above)
SESSION_MEMORY_EXTRA = 20e6  # and its own threads, arena and buffers (a 21 MB model took about 40 MB a session)
MEMORY_KEPT = 0.15  # of the memory available, left to the run itself (LoadGen, features, its own growth)


def available_cores():
    """The cores this process may run on, sorted; under a CPU quota (docker --cpus=0.5) only as many as it allows,
    rounded up (the rule made one instance per core of the affinity, each throttled, and said nothing)."""
    return _within_quota(sorted(os.sched_getaffinity(0)), cgroups.cpu_quota())


def _within_quota(cores, quota):
    return cores[:max(1, math.ceil(quota))] if quota else cores


@dataclass(frozen=True)
class Parallelism:
    instances: int
    threads: int                     # intra-op threads per instance
    spin: bool                       # onnxruntime session.intra_op.allow_spinning
    cores: tuple = ()                # per instance: the cores it is pinned to (empty: not pinned)
    rule: str = ""
    overridden: tuple = field(default=())
    available: int = 0               # the cores this process may use (a CPU quota's, rounded up, when less)
    cpu_quota: float = None          # CPUs a cgroup's quota allows (docker --cpus), None without one

    def record(self):
        """What summary.json holds."""
        record = asdict(self)
        record["cores"] = [list(group) for group in self.cores]
        record["overridden"] = list(self.overridden)
        return record


def memory_available():
    """Bytes this process may still use: the kernel's MemAvailable, within a cgroup's limit (None: unknown)."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    left = cgroups.memory_left()   # a container's or a job's limit, less what it uses
    return min(found + ([left] if left is not None else [])) if found or left is not None else None


def instances_in_memory(model_bytes, available):
    """How many sessions of a model file of `model_bytes` fit in `available` bytes (None: no known limit;
    at least 1: one session is the run's own, whatever the estimate)."""
    if not available or not model_bytes:
        return None
    return max(1, int(available * (1 - MEMORY_KEPT) // session_bytes(model_bytes)))


def session_bytes(model_bytes):
    """The memory one onnxruntime session of a model file of `model_bytes` takes, estimated."""
    return model_bytes * SESSION_MEMORY_SHARE + SESSION_MEMORY_EXTRA


def split_cores(cores, instances, threads):
    """`instances` disjoint groups of `threads` cores each, or () when they do not fit (not pinned)."""
    if instances * threads > len(cores) or instances == 1 and threads == len(cores):
        return ()  # one instance on all cores needs no pinning; oversubscribed ones cannot be pinned apart
    return tuple(tuple(cores[n * threads:(n + 1) * threads]) for n in range(instances))


def choose(scenario, cores=None, *, instances=None, threads=None, spin=None, server_slowest_s=None,
           latency_bound_s=None, fit=None):
    """The Parallelism for `scenario` by the rule above, with any of instances/threads/spin given.

    server_slowest_s: Server only, a full-length (384-token) sample's seconds on all cores, estimated from the
    warm-up's time per token (None: not
    measured yet, so the latency-first choice); latency_bound_s: the Server latency bound; fit: how many
    instances memory holds (instances_in_memory; None: no limit): the rule makes no more (--instances is the
    person's, checked by the caller).
    """
    quota = None if cores else cgroups.cpu_quota()   # read once: for the cores and for the rule's words
    cores = list(cores) if cores else _within_quota(sorted(os.sched_getaffinity(0)), quota)
    count = len(cores)
    if scenario in LATENCY_SCENARIOS:
        rule_instances, rule = 1, f"{scenario}: one instance on all {count} cores (latency)"
    elif scenario == "Offline":
        rule_instances, rule = count, f"Offline: one instance per core ({count})"
    elif server_slowest_s is None and instances:   # the harness estimates only where the rule chooses
        rule_instances, rule = instances, "Server: --instances given, so the rule's estimate was not made"
    elif server_slowest_s is not None and latency_bound_s \
            and server_slowest_s * count <= SERVER_BOUND_SHARE * latency_bound_s:
        rule_instances = count
        rule = (f"Server: one instance per core ({count}): a 384-token sample (from the warm-up) "
                f"{server_slowest_s * 1000:.1f} ms "
                f"x {count} cores <= {SERVER_BOUND_SHARE:.0%} of the {latency_bound_s * 1000:g} ms bound")
    else:
        rule_instances = 1
        why = "not measured" if server_slowest_s is None else (
            f"a 384-token sample (from the warm-up) {server_slowest_s * 1000:.1f} ms x {count} cores > "
            f"{SERVER_BOUND_SHARE:.0%} of the {(latency_bound_s or 0) * 1000:g} ms bound")
        rule = f"Server: one instance on all {count} cores (latency first: {why})"
    if quota:   # said: the cores counted are the quota's, not the machine's
        rule += f"; a CPU quota of {quota:g} CPUs allows {count} of the {len(os.sched_getaffinity(0))} cores"
    if fit is not None and rule_instances > fit:
        rule_instances, rule = fit, f"{rule}; {fit} of them fit in the memory available"
    overridden = tuple(name for name, value in (("instances", instances), ("threads", threads), ("spin", spin))
                       if value is not None)
    # --threads alone: the rule's instances, as many as fit with that many threads each.
    chosen_instances = instances or (max(1, min(rule_instances, count // threads)) if threads else rule_instances)
    if not instances and threads and chosen_instances != rule_instances:   # a report showed the rule's (2) beside 1
        rule += f"; --threads={threads}: {chosen_instances} instance(s) of {threads} on the {count} cores"
    chosen_threads = threads or max(1, count // chosen_instances)
    chosen_spin = bool(spin) and chosen_threads > 1   # off unless asked for (measured above)
    if spin and chosen_threads == 1:   # recorded "spinning on" with no pool thread to spin (same CPU time)
        rule += "; --spin does nothing with 1 thread per instance: no pool threads to spin"
    return Parallelism(chosen_instances, chosen_threads, chosen_spin,
                       split_cores(cores, chosen_instances, chosen_threads), rule, overridden, count, quota)


def pin_current_thread(cores):
    """Pin the calling thread (Linux: pid 0 is the calling thread) to `cores`; nothing for ()."""
    if cores:
        os.sched_setaffinity(0, cores)
