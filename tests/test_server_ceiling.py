"""bench/server_ceiling.py and mlperf_bert/queueing.py: the highest Server target a model's measured service times
allow on a steady machine (the fit, the queue model and bisection, and a smoke run on a tiny model)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import server_ceiling, steadiness
from mlperf_bert import queueing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_fit_gives_back_a_quadratic_time_of_the_length():
    lengths = np.array([20, 60, 100, 180, 260, 384])
    seconds = 0.002 + 1e-4 * lengths + 2e-7 * lengths ** 2
    t, residual = queueing.fit(lengths, seconds)
    assert residual < 1e-9
    assert t(384) == pytest.approx(0.002 + 0.0384 + 2e-7 * 384 ** 2)
    assert t(np.array([0]))[0] == pytest.approx(0.002)


def test_the_highest_target_holds_the_bound_and_a_step_more_does_not():
    times = np.full(1000, 0.040)   # every query 40 ms: one worker serves 25/s flat out
    queries = queueing.Queries(times, most_qps=25, seconds=600, seed=0)
    ceiling = queueing.highest_qps(queries, 25, 1, steadiness.BOUND_S)
    assert 0 < ceiling < 25
    assert queries.p99(ceiling, 1) <= steadiness.BOUND_S < queries.p99(ceiling + 0.025, 1)   # 0.1% of 25
    # exponential times (M/M/1): the time in the system is exponential with rate mu - lambda, so its p99 is
    # ln(100) / (25 - 12.5) = 368 ms at half the load of 40-ms queries
    exponential = queueing.Queries(np.random.default_rng(5).exponential(0.040, 200000), 25, 3600, seed=2)
    assert exponential.p99(12.5, 1) == pytest.approx(np.log(100) / 12.5, rel=0.06)
    # the same Offline rate from two workers of twice the time each (one instance per core, each half as fast):
    # each query takes 80 ms of the 130, so less waiting fits and the ceiling is lower
    slow = queueing.Queries(times * 2, most_qps=25, seconds=600, seed=0)
    assert 0 < queueing.highest_qps(slow, 25, 2, steadiness.BOUND_S) < ceiling
    # a query longer than the bound on its own: no target holds it
    assert queueing.highest_qps(queueing.Queries(np.full(10, 0.2), 5, 60, 0), 5, 1, steadiness.BOUND_S) == 0.0


def test_measured_speeds_from_a_steadiness_file_cost_what_their_slow_spell_costs(tmp_path):
    steady = [0.01 * n for n in range(60001)]   # 10-ms runs for 600 s
    spell = [0.01 * n for n in range(10001)] + [100 + 0.04 * n for n in range(1, 2501)] + \
        [200 + 0.01 * n for n in range(1, 40001)]   # 100 s at a quarter of the speed
    path = tmp_path / "speeds.npz"
    np.savez(path, cores=[0, 1], shape=(177, 768, 3072), seconds=600.0, steal=-1,
             core_0=np.array(steady), core_1=np.array(spell))
    times = np.full(1000, 0.030)
    queries = queueing.Queries(times, most_qps=60, seconds=600, seed=1)
    saved = steadiness.load_saved(str(path))
    per_core = server_ceiling.speeds(saved, 2)
    assert queries.p99(30, 2) < 0.1 < queries.p99(30, 2, per_core)
    together = server_ceiling.speeds(saved, 1)   # one worker: both cores' runs as one
    assert together[0].mean == pytest.approx(600 / (60000 + 60000 - 7500), rel=0.01)
    assert server_ceiling.speeds(saved, 4) is None   # more instances than the file has cores


@pytest.mark.parametrize("flags, said", [
    (["--precision", "bf16"], "--precision bf16: onnxruntime runs fp32, int8"),
    (["--loads", "0.5,lots"], "--loads: fractions such as 0.6,0.7, not '0.5,lots'"),
    (["--speeds", "/nonexistent/speeds.npz"], "--speeds /nonexistent/speeds.npz: cannot read saved run times"),
    (["--seconds", "0"], "--seconds: must be 1 to 3600, not 0"),
])
def test_its_arguments_are_checked_before_anything_runs(flags, said):
    result = subprocess.run([sys.executable, "-m", "bench.server_ceiling", *flags], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and said in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_smoke_run_on_a_tiny_model_prints_both_layouts_and_their_ceilings(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.server_ceiling", "--layers", "1", "--hidden", "32",
                             "--heads", "2", "--samples", "6", "--repeats", "1", "--seconds", "20",
                             "--loads", "0.5,0.9", "--scratch", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("onnxruntime fp32, BERT 1 layers x 32 x 2 heads (random weights); 6 samples timed, "), out
    layouts = ["one instance on all cores"] + (["one instance per core"] if len(os.sched_getaffinity(0)) > 1 else [])
    for name in layouts:
        assert f"{name} (" in out and "a sample of 384 tokens " in out and "samples/s one sample per call" in out, out
        assert f"  {name}, 50% of its Offline (" in out and f"  {name}, 90% of its Offline (" in out, out
        assert f"  {name}: highest target holding the bound " in out and "of the faster layout's (" in out, out


def test_a_runs_own_samples_give_its_steady_ceiling_and_too_few_give_none():
    """A Server run fits its samples' run times against their lengths and simulates its workers serving the loaded
    samples (mlperf_bert.queueing.steady_ceiling): the same figure as the queue model over those times."""
    lengths = np.array([40, 80, 120, 160, 200, 240, 280, 320, 384] * 20)
    times = 0.002 + 1e-4 * lengths   # a straight line: the fit gives it back exactly
    rows = [(0.0, float(t), n) for n, t in enumerate(times)]
    ceiling = queueing.steady_ceiling(rows, lengths, range(len(lengths)), workers=2, bound_s=0.130)
    capacity = 2 / times.mean()
    assert ceiling["capacity_qps"] == pytest.approx(capacity, rel=1e-3) and ceiling["fit_residual"] < 1e-6
    queries = queueing.Queries(times, capacity, queueing.SIMULATED_QUERIES / capacity)
    assert ceiling["qps"] == pytest.approx(queueing.highest_qps(queries, capacity, 2, 0.130), abs=1e-3)
    assert 0.3 * capacity < ceiling["qps"] < capacity
    # a tighter bound holds less; samples longer than the bound hold nothing
    assert queueing.steady_ceiling(rows, lengths, range(len(lengths)), 2, 0.060)["qps"] < ceiling["qps"]
    assert queueing.steady_ceiling([(0.0, 0.5, n) for n in range(40)], lengths, range(40), 1, 0.130)["qps"] == 0.0
    # a --count test's few samples, or samples of too few lengths: no fit worth simulating
    assert queueing.steady_ceiling(rows[:29], lengths, range(29), 2, 0.130) is None
    assert queueing.steady_ceiling([(0.0, 0.01, n) for n in range(0, 180, 9)] * 2, lengths, range(180), 2, 0.13) \
        is None


def test_the_summary_says_the_steady_ceiling_beside_the_target():
    from mlperf_bert import harness
    ceiling = {"qps": 42.1234, "capacity_qps": 66.4, "fit_residual": 0.05, "bound_ms": 130, "workers": 2}
    assert harness.steady_ceiling_line(ceiling, 33.0) == (
        "queueing: with these run times, a machine that never slowed down would hold the 130 ms bound to 42.123 QPS "
        "(2 worker(s) first come, first served, 66.400 samples/s flat out; this run's target 33)")
    assert harness.steady_ceiling_line({**ceiling, "qps": 0.0}, None).endswith(
        "would hold the 130 ms bound at no target (2 worker(s) first come, first served, 66.400 samples/s flat out)")
    matched = {**ceiling, "matched": {"slower": 1.1234, "qps": 31.5}}
    assert harness.steady_ceiling_line(matched, 33.0).endswith(
        "this run's target 33); one running every sample 1.123x slower, as this run's p99 says, to 31.500 QPS")


@pytest.mark.slow   # 6 s on the EPYC: out of the quick loop
def test_a_runs_p99_matched_gives_the_slowdown_back_and_an_overloaded_run_none():
    """steady_ceiling(measured=(qps, p99)): the slowdown of every run time at which the queue model gives the p99
    measured at that rate, and the target holding the bound at it (what --find-peak aims its next run by)."""
    lengths = np.array([40, 80, 120, 160, 200, 240, 280, 320, 384] * 20)
    times = 0.002 + 1e-4 * lengths
    rows = [(0.0, float(t), n) for n, t in enumerate(times)]
    steady = queueing.steady_ceiling(rows, lengths, range(len(lengths)), 2, 0.130)
    assert "matched" not in steady
    capacity = steady["capacity_qps"]
    queries = queueing.Queries(times, capacity, queueing.SIMULATED_QUERIES / capacity)
    rate = 0.6 * capacity
    for slower in (0.8, 1.0, 1.25):
        p99 = queries.p99(rate, 2, slower=slower)
        matched = queueing.steady_ceiling(rows, lengths, range(len(lengths)), 2, 0.130, (rate, p99))["matched"]
        assert matched["slower"] == pytest.approx(slower, rel=0.005)
        assert matched["qps"] == pytest.approx(queueing.highest_qps(queries, capacity / slower, 2, 0.130,
                                                                    slower=slower), rel=0.01)
    slow, fast = (queueing.steady_ceiling(rows, lengths, range(len(lengths)), 2, 0.130, (rate, p99))["matched"]
                  for p99 in (0.120, 0.060))
    assert slow["qps"] < steady["qps"] < fast["qps"]   # a slower machine holds less than a steady one
    # a p99 over 3 times the bound (a backlog's), or below what half the run times give, a rate no half-as-long run
    # times serve, or no p99 at all: no match
    for measured in ((rate, 0.39 + 1e-6), (rate, 1e-4), (rate, None), (None, 0.1), (2.5 * capacity, 0.3)):
        assert queueing.steady_ceiling(rows, lengths, range(len(lengths)), 2, 0.130, measured)["matched"] is None
