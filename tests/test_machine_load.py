"""mlperf_bert.machine_load: the CPU time other processes took while a run measured."""
import subprocess
import sys
import time

import pytest

from mlperf_bert import machine_load


def load_of(samples, cpus=2):
    load = machine_load.OtherLoad()
    load.samples, load.cpus = samples, cpus
    return load.record()


def test_share_and_worst_span_from_the_samples():
    # 20 s on 2 CPUs; other processes took 0.1 CPU-s a second, except 6 CPU-s between 10 and 15 s.
    used, samples = 0.0, []
    for second in range(21):
        samples.append((100.0 + second, used))
        used += 1.2 if 10 <= second < 15 else 0.1
    record = load_of(samples)
    assert record["other_cpu_s"] == pytest.approx(7.5) and record["seconds"] == 20.0
    assert record["share"] == pytest.approx(7.5 / 40, abs=1e-4)
    assert record["worst_span_share"] == pytest.approx(6.0 / 10, abs=1e-4)   # 6 CPU-s of 2 CPUs x 5 s
    assert record["busy"]
    line = machine_load.describe(record)
    assert "other processes took 18.8% of the 2 CPUs" in line and "worst 5 s: 60%" in line and "busy machine" in line


def test_a_quiet_run_is_not_flagged_and_a_short_run_is_its_own_span():
    quiet = load_of([(0.0, 5.0), (1.0, 5.01), (2.0, 5.02), (8.0, 5.1)])
    assert quiet["share"] == pytest.approx(0.1 / 16, abs=1e-4) and not quiet["busy"]
    assert "busy" not in machine_load.describe(quiet)
    short = load_of([(0.0, 0.0), (2.0, 1.2)])   # 2 s: 1.2 CPU-s of 4 CPU-s
    assert short["worst_span_share"] == pytest.approx(0.3) and short["busy"]
    assert "(1.20 CPU-s in 2.0 s)" in machine_load.describe(short)   # its own worst span: said once
    assert load_of([(0.0, 0.0)]) is None   # one sample: nothing to say
    # A 0.2-s run: 0.04 CPU-s is 10% of the machine but a few clock ticks: not flagged.
    assert not load_of([(0.0, 0.0), (0.2, 0.04)])["busy"]


@pytest.mark.slow
def test_another_process_burning_a_core_is_counted_and_this_process_is_not():
    burn = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass\n"
    with machine_load.OtherLoad(interval=0.2) as load:
        child = subprocess.run([sys.executable, "-c", burn + "import os; t = os.times(); print(t.user + t.system)"],
                               capture_output=True, text=True, check=True)
        own_end = time.process_time() + 1.0
        while time.process_time() < own_end:   # this process's own work
            pass
    record = load.record()
    assert record["other_cpu_s"] >= 0.9 * float(child.stdout)   # at least the child (others add to it)
    assert len(load.samples) >= 5


def test_this_processs_own_time_is_taken_out(monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr(machine_load, "machine_busy_s", lambda cpus=None: 2.0 * next(clock))   # 2 CPU-s a sample ...
    monkeypatch.setattr(machine_load, "own_busy_s", lambda: 1.5 * len(load.samples))  # ... 1.5 of them ours
    load = machine_load.OtherLoad(interval=0.05)
    with load:
        time.sleep(0.3)
    record = load.record()
    assert record["other_cpu_s"] == pytest.approx(0.5 * (len(load.samples) - 1))


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs two CPUs")
def test_a_pinned_run_counts_only_its_own_cpus(monkeypatch):
    """A --jobs 2 sweep pins its points to a core each: the other point, on the other core, flagged every point
    'busy' (other processes took 50% of the 2 CPUs), and `sweep best` said to run it all again."""
    import os
    cpus = list(range(os.cpu_count()))
    whole, parts = machine_load.cpu_ticks(), [machine_load.cpu_ticks([n]) for n in cpus]
    assert all(parts) and abs(sum(map(sum, parts)) - sum(whole)) < 100 * len(cpus)   # /proc/stat's cpuN lines
    asked = []
    monkeypatch.setattr(machine_load.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(machine_load, "machine_busy_s", lambda cpus=None: asked.append(cpus) or 1.0)
    load = machine_load.OtherLoad(interval=0.05)
    with load:
        pass
    assert load.cpus == 1 and set(map(tuple, asked)) == {(0,)}
    load.samples = [(0.0, 0.0), (2.0, 0.2)]
    line = machine_load.describe(load.record())
    assert "of the CPU it is pinned to (0) over the run" in line
    monkeypatch.setattr(machine_load.os, "sched_getaffinity", lambda pid: set(cpus))   # not pinned: all of them
    assert machine_load.OtherLoad().cpus == len(cpus) and machine_load.own_cpus() is None
