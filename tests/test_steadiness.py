"""bench/steadiness.py: whether the machine keeps its speed for a Server run's length (its queue model and a smoke run)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import steadiness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_measured_core_works_at_the_speed_of_its_runs_then():
    core = steadiness.MeasuredCore([0.0, 0.01, 0.02, 0.03, 0.07, 0.08])   # runs of 10, 10, 10, 40, 10 ms
    assert core.mean == pytest.approx(0.016)
    assert core.finish(0.0, 2) == pytest.approx(0.02)
    # Half a run at the fast speed (5 ms), then half a run at the slow one (20 ms).
    assert core.finish(0.025, 1) == pytest.approx(0.05)
    # Past the measurement: the mean speed.
    assert core.finish(0.07, 2) == pytest.approx(0.08 + 0.016)
    assert core.finish(1.0, 0.5) == pytest.approx(1.008)


def test_a_slow_spell_delays_the_queries_queued_behind_it():
    # Runs of 10 ms, except the one from 30 to 70 ms (4x slower); a query is one run's work. A steady core
    # serves each 10-ms query in 10 ms; the measured one serves the query started at 30 ms in 40 ms, and the
    # two that arrive meanwhile wait behind it.
    core = steadiness.MeasuredCore([0.0, 0.01, 0.02, 0.03, 0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13])
    arrivals, sizes = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.10], [1.0] * 7
    steady = steadiness.server_latencies(arrivals, sizes, 0.01, [None])
    assert steady == pytest.approx([0.01] * 7)
    measured = steadiness.server_latencies(arrivals, sizes, core.mean, [core])
    assert measured == pytest.approx([0.01, 0.01, 0.01, 0.04, 0.04, 0.04, 0.01])
    # Two cores share one queue: a query goes to whichever core is free first.
    assert steadiness.server_latencies([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 0.01, [None, None]) == \
        pytest.approx([0.01, 0.01, 0.02])


def test_server_p99_on_a_steady_machine_follows_queueing_theory():
    # M/M/1 at load 0.5 with 10-ms queries: latency is exponential with rate mu - lambda = 50/s, so its p99
    # is ln(100)/50 = 92 ms (within a few % over 600 s of seeded queries).
    assert steadiness.server_p99(0.5, 600, 0.01, [None], size_cv=1.0) == pytest.approx(0.0921, rel=0.08)
    # A core that ran fast for 5 s (5-ms runs) and slow for 5 s (25-ms runs): at 60% of its mean speed the
    # slow half cannot keep up (40 runs/s against 72 queries/s) and the backlog lasts seconds; a steady core
    # of the same mean speed keeps up.
    spells = steadiness.MeasuredCore([0.005 * n for n in range(1001)] + [5.0 + 0.025 * n for n in range(1, 201)])
    assert spells.mean == pytest.approx(10 / 1200)
    assert steadiness.server_p99(0.6, 10, spells.mean, [spells], size_cv=0.43) > 1.0
    assert steadiness.server_p99(0.6, 10, spells.mean, [None], size_cv=0.43) < 0.1
    # Less variable work waits less: at the same load, sizes of spread 0.43 beat exponential ones.
    assert steadiness.server_p99(0.8, 300, 0.01, [None, None], size_cv=0.43) < \
        steadiness.server_p99(0.8, 300, 0.01, [None, None], size_cv=1.0)


def test_window_work_counts_each_run_in_the_window_it_ends_in():
    # Two cores; a core's list starts with its first run's start. Runs past the last window are dropped.
    work = steadiness.window_work([[0.0, 0.4, 0.9, 1.2], [0.0, 1.5, 1.6, 2.5]], 2.0, 1.0)
    assert list(work) == [2, 3]
    assert steadiness.longest_spell([False, True, True, False, True]) == 2


@pytest.mark.slow
def test_smoke_run_prints_each_core_the_windows_and_the_server_estimate(tmp_path):
    saved = tmp_path / "runs.npz"
    args = [sys.executable, "-m", "bench.steadiness", "--window", "0.25", "--loads", "0.5,0.9"]
    result = subprocess.run([*args, "--seconds", "1.5", "--shape", "96,256,512", "--save", str(saved)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for core in os.sched_getaffinity(0):
        assert f"core {core}: " in out and "x the median; p99 " in out, out
    assert "machine, 6 windows of 0.25 s: median " in out and "longest spell under 90%: " in out, out
    assert "steal" in out
    assert "Server at 50% of the mean speed (" in out and "ms on a steady machine, " in out, out
    assert "Server at 90% of" in out and "ms at this run's speeds (130 ms bound)" in out, out
    # The saved run times analysed again give the same figures, without measuring.
    again = subprocess.run([*args, "--load", str(saved)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[1:] == out.splitlines()[1:], again.stdout
    assert f"(from {saved})" in again.stdout.splitlines()[0]


@pytest.mark.parametrize("content, args", [(None, []), (b"not numpy", []), ("foreign npz", []),
                                           ("foreign npz", ["--loads", "0.6,high"])])
def test_a_missing_or_foreign_load_file_and_bad_loads_are_one_line_and_exit_2(tmp_path, capsys, content, args):
    path = tmp_path / "runs.npz"
    if content == "foreign npz":
        np.savez(path, other=np.zeros(1))   # a real .npz, but not one --save wrote
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        steadiness.main(["--load", str(path), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("--loads: fractions" in err) if args else ("cannot read saved run times" in err and "--save" in err), err


def test_a_bench_script_s_usage_error_is_one_line_and_exit_2():
    """It was a traceback ending in UsageError, exit 1 (bench.deepsparse_compile without deepsparse)."""
    import subprocess
    import sys
    from conftest import ROOT
    result = subprocess.run([sys.executable, "-c", "from bench.entry import run\nfrom engine.errors import UsageError\n"
                             "def main():\n    raise UsageError('--x needs y', hint='give y')\nrun(main)"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stderr) == (2, "error: --x needs y\nhint: give y\n")
    # this machine refusing the request (OpenVINO's CpuCannot, a step's 78) is mlrun's 2 here too, not 78
    refused = subprocess.run([sys.executable, "-c", "from bench.entry import run\nfrom engine.errors import MlrunError\n"
                              "def main():\n    raise MlrunError('no bf16 here', hint='fp32', exit_code=78)\nrun(main)"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (refused.returncode, refused.stderr) == (2, "error: no bf16 here\nhint: fp32\n")


@pytest.mark.slow  # about 4 s
def test_ctrl_c_mid_measurement_ends_it_at_once_with_exit_130(tmp_path):
    """Ctrl-C said "interrupted", then the run went on for the rest of --seconds (600 s by default) and ended
    in an abort ("terminate called without an active exception", SIGABRT), writing nothing."""
    import signal
    import time
    saved = tmp_path / "runs.npz"
    process = subprocess.Popen([sys.executable, "-m", "bench.steadiness", "--seconds", "60", "--save", str(saved)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert "single-thread for 60 s" in process.stdout.readline()
        time.sleep(3)   # the sessions are built within 2 s of that line, then every core runs
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        process.kill()
    assert (process.returncode, err) == (130, "interrupted\n")
    assert not saved.exists()


def test_the_steady_machine_serves_what_all_the_measured_cores_served():
    """The steady machine's run time was core 0's alone: with cores at 17.7 and 20.0 ms a run it was faster than
    the measured machine, and each load a fraction of core 0's speed."""
    fast = steadiness.MeasuredCore(np.arange(0, 101) * 0.0177)
    slow = steadiness.MeasuredCore(np.arange(0, 101) * 0.0200)
    service = steadiness.mean_service([fast, slow])
    assert 2 / service == pytest.approx(1 / 0.0177 + 1 / 0.0200)   # runs a second, both cores
    assert steadiness.mean_service([slow, fast]) == pytest.approx(service)   # whichever core is first
