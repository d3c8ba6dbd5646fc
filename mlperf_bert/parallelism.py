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
      on all of them: when the warm-up's slowest sample, so scaled, stays within half the latency
      bound, Server runs as Offline (throughput at peak load); otherwise one instance on all cores
      (latency first).
Every choice can be overridden (--instances, --threads per instance, --spin/--no-spin); the
choice, what was overridden and why are recorded in the run's summary.json.
"""
import os
from dataclasses import asdict, dataclass, field

LATENCY_SCENARIOS = ("SingleStream", "MultiStream")
SERVER_BOUND_SHARE = 0.5  # Server many-instance rule: the slowest sample on one instance within half the bound


def available_cores():
    """The cores this process may run on, sorted."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Parallelism:
    instances: int
    threads: int                     # intra-op threads per instance
    spin: bool                       # onnxruntime session.intra_op.allow_spinning
    cores: tuple = ()                # per instance: the cores it is pinned to (empty: not pinned)
    rule: str = ""
    overridden: tuple = field(default=())
    available: int = 0               # the cores this process may use

    def record(self):
        """What summary.json holds."""
        record = asdict(self)
        record["cores"] = [list(group) for group in self.cores]
        record["overridden"] = list(self.overridden)
        return record


def split_cores(cores, instances, threads):
    """`instances` disjoint groups of `threads` cores each, or () when they do not fit (not pinned)."""
    if instances * threads > len(cores) or instances == 1 and threads == len(cores):
        return ()  # one instance on all cores needs no pinning; oversubscribed ones cannot be pinned apart
    return tuple(tuple(cores[n * threads:(n + 1) * threads]) for n in range(instances))


def choose(scenario, cores=None, *, instances=None, threads=None, spin=None, server_slowest_s=None,
           latency_bound_s=None):
    """The Parallelism for `scenario` by the rule above, with any of instances/threads/spin given.

    server_slowest_s: Server only, the slowest warm-up sample's seconds on all cores (None: not
    measured yet, so the latency-first choice); latency_bound_s: the Server latency bound.
    """
    cores = list(cores or available_cores())
    count = len(cores)
    if scenario in LATENCY_SCENARIOS:
        rule_instances, rule = 1, f"{scenario}: one instance on all {count} cores (latency)"
    elif scenario == "Offline":
        rule_instances, rule = count, f"Offline: one instance per core ({count})"
    elif server_slowest_s is not None and latency_bound_s \
            and server_slowest_s * count <= SERVER_BOUND_SHARE * latency_bound_s:
        rule_instances = count
        rule = (f"Server: one instance per core ({count}): slowest warm-up sample {server_slowest_s * 1000:.1f} ms "
                f"x {count} cores <= {SERVER_BOUND_SHARE:.0%} of the {latency_bound_s * 1000:.0f} ms bound")
    else:
        rule_instances = 1
        why = "not measured" if server_slowest_s is None else (
            f"slowest warm-up sample {server_slowest_s * 1000:.1f} ms x {count} cores > "
            f"{SERVER_BOUND_SHARE:.0%} of the {(latency_bound_s or 0) * 1000:.0f} ms bound")
        rule = f"Server: one instance on all {count} cores (latency first: {why})"
    overridden = tuple(name for name, value in (("instances", instances), ("threads", threads), ("spin", spin))
                       if value is not None)
    # --threads alone: the rule's instances, as many as fit with that many threads each.
    chosen_instances = instances or (max(1, min(rule_instances, count // threads)) if threads else rule_instances)
    chosen_threads = threads or max(1, count // chosen_instances)
    chosen_spin = bool(spin)  # off unless asked for (measured above)
    return Parallelism(chosen_instances, chosen_threads, chosen_spin,
                       split_cores(cores, chosen_instances, chosen_threads), rule, overridden, count)


def pin_current_thread(cores):
    """Pin the calling thread (Linux: pid 0 is the calling thread) to `cores`; nothing for ()."""
    if cores:
        os.sched_setaffinity(0, cores)
