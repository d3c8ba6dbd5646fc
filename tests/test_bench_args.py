"""The bench scripts as a person runs them: what they are given is checked before anything is measured, a
model file cut short is made again, Ctrl-C is said in a line. (Their figures: tests of each script.)"""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT


def _bench(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=env)


@pytest.mark.parametrize("script", ["bench.openvino_peak", "bench.machine_peak", "bench.quantized",
                                    "bench.server_ceiling"])
@pytest.mark.parametrize("flags, said", [
    (["--samples", "0"], "--samples: must be 1 to 10833, not 0"),              # was: ZeroDivisionError
    (["--samples", "-3"], "--samples: must be 1 to 10833, not -3"),            # was: numpy's negative dimensions
    (["--samples", "100000000"], "--samples: must be 1 to 10833"),             # was: numpy asked for 286 GB
    (["--repeats", "0"], "--repeats: must be at least 1, not 0"),              # was: min() of nothing, after warm-up
    (["--layers", "0"], "--layers: must be at least 1, not 0"),                # was: a model of no layers, measured
    (["--hidden", "64", "--heads", "3"], "--hidden 64 is not a multiple of --heads 3"),   # was: a traceback
    (["--samples", "x"], "--samples: not a whole number: 'x'"),
])
def test_bench_arguments_are_checked_before_anything_runs(script, flags, said):
    _refused(script, flags, said)


def _refused(script, flags, said):
    result = _bench(script, *flags)
    assert result.returncode == 2 and said in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # about 0.9 s on the 2-core EPYC
def test_the_openvino_bench_refuses_a_peak_of_no_seconds_and_a_scratch_that_is_a_file(tmp_path):
    result = _bench("bench.openvino_peak", "--peak-seconds", "0")   # was: a peak of 0.0 GFLOP/s, shares '-'
    assert result.returncode == 2 and "--peak-seconds must be above 0, not 0.0" in result.stderr
    # was: ignored unsaid at batch 1 (the app refuses it); a pad alone goes with the rule's batches, as the app's
    result = _bench("bench.openvino_peak", "--batch-size", "1", "--batch-pad", "16")
    assert result.returncode == 2 and "--batch-pad applies only with --batch-size above 1" in result.stderr
    (tmp_path / "file").write_text("")
    result = _bench("bench.openvino_peak", "--scratch", str(tmp_path / "file"))   # was: FileExistsError
    assert result.returncode == 2 and "not a folder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("script, flags, said", [
    # each ran every pass first, then a ZeroDivisionError (batch 0, a peak of 0 s), or printed 614% of the peak
    # (batch -3), or ignored the pad at batch 1
    ("bench.machine_peak", ["--batch-size", "0"], "--batch-size: must be 1 to 64, not 0"),
    ("bench.machine_peak", ["--batch-size", "-3"], "--batch-size: must be 1 to 64, not -3"),
    ("bench.machine_peak", ["--peak-seconds", "0"], "--peak-seconds must be above 0, not 0.0"),
    ("bench.machine_peak", ["--batch-pad", "16"], "--batch-pad applies only with --batch-size above 1"),
    ("bench.machine_peak", ["--threads", "-2"], "--threads: must be 1 to 4096, not -2"),
    # ran with an intra-op pool of 0 or -2 threads, and printed figures for it
    ("bench.harness", ["--threads", "0"], "--threads: must be 1 to 4096, not 0"),
    ("bench.harness", ["--threads", "-2"], "--threads: must be 1 to 4096, not -2"),
    ("bench.quantized", ["--threads", "-1"], "--threads: must be 1 to 4096, not -1"),
    # each a traceback (ZeroDivisionError, StatisticsError, IndexError), some after the whole measurement
    ("bench.steadiness", ["--window", "0"], "--window must be above 0"),
    ("bench.steadiness", ["--seconds", "1", "--window", "5"], "--window 5 s leaves too few windows in 1 s"),
    ("bench.steadiness", ["--size-cv", "0"], "--size-cv must be above 0"),
    ("bench.steadiness", ["--loads", "0"], "--loads: fractions above 0 and below 1, not '0'"),
    ("bench.steadiness", ["--shape", "177,768"], "--shape: M,K,N, three whole numbers above 0"),
    ("bench.steadiness", ["--seconds", "0"], "--seconds must be above 0"),
    ("bench.steadiness", ["--save", "/nonexistent/x.npz"], "--save /nonexistent/x.npz: /nonexistent is no folder"),
    ("bench.steadiness", ["--load", "a.npz", "--save", "b.npz"], "--save writes a measurement and --load"),
    # a line fitted through one sample ("residual 0.0%", 5x off), a load of 0 (p99 nan) or -1 (a negative QPS)
    ("bench.server_ceiling", ["--samples", "1"], "--samples 1: the service time's fit against length needs 4"),
    ("bench.server_ceiling", ["--loads", "-1"], "--loads: fractions above 0 and below 1, not '-1'"),
    # a count of 0: "no median for empty data", "mean requires at least one data point", mlrun's own refusal (exit 1)
    ("bench.engine_overhead", ["--repeat", "0"], "--repeat: must be at least 1, not 0"),
    ("bench.sweep_cluster", ["--points", "0"], "--points: must be at least 1, not 0"),
    ("bench.sweep_overhead", ["--points", "0"], "--points: must be 1 to 10000, not 0"),
    # passed on to `mlrun sweep`, which said "unexpected argument" after the script's own setup
    ("bench.sweep_overhead", ["--pionts", "5"], "--pionts: did you mean --points?"),
    ("bench.concurrent_builds", ["--seconds", "nan"], "--seconds: must be above 0, not nan"),
    # each never ended: "sleep inf" steps, GEMM shapes timed until a deadline of inf
    ("bench.concurrent_builds", ["--seconds", "inf"], "--seconds: must be finite, not inf"),
    ("bench.openvino_peak", ["--peak-seconds", "inf"], "--peak-seconds must be finite, not inf"),
    ("bench.machine_peak", ["--peak-seconds", "1e999"], "--peak-seconds must be finite, not inf"),
    # a grid value past the kernel's 128 KiB for one argument (OSError: Argument list too long), and numpy asked
    # for 3 TiB of simulated queries after the whole measurement: each a traceback
    ("bench.sweep_overhead", ["--points", "30000"], "--points: must be 1 to 10000, not 30000"),
    ("bench.server_ceiling", ["--seconds", "100000000"], "--seconds: must be 1 to 3600, not 100000000"),
])
def test_a_bench_refuses_what_it_would_fail_on_after_measuring(script, flags, said):
    _refused(script, flags, said)


def test_a_failed_mlrun_in_a_bench_is_one_error_line_with_its_words():
    """bench.engine_overhead's failed mlrun was a CalledProcessError's traceback (mlrun's own words unseen),
    bench.sweep_overhead's a bare 'CMD failed:' and exit 1 for mlrun's usage error."""
    env = dict(os.environ, MLRUN_JOBS="abc")
    result = _bench("bench.engine_overhead", "--repeat", "1", "--entries", "15", env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: `") and "Traceback" not in result.stderr
    assert "bench root` failed (exit 2):\nmlrun: error: MLRUN_JOBS 'abc'" in result.stderr, result.stderr
    result = _bench("bench.sweep_overhead", "--points", "1", "--jobs", "abc")   # passed on to `mlrun sweep`
    assert result.returncode == 2 and result.stderr.startswith("error: `") and "Traceback" not in result.stderr
    assert "failed (exit 2):\nmlrun: error: mlrun sweep: argument --jobs" in result.stderr, result.stderr


def test_a_ctrl_c_during_a_bench_clean_up_waits_for_it_then_exits_130():
    """A Ctrl-C while bench.sweep_cluster stopped its Ray cluster left the cluster running; one while
    bench.bundle_io removed its scratch folder left it half removed. The clean-up ends first now."""
    result = subprocess.run([sys.executable, "-c", "import os, signal\nfrom bench.entry import run, uninterrupted\n"
                             "def main():\n    with uninterrupted():\n        os.kill(os.getpid(), signal.SIGINT)\n"
                             "        print('cleaned up', flush=True)\n    print('not reached')\nrun(main)"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (130, "cleaned up\n", "interrupted\n")


def test_the_gpu_check_refuses_a_shape_it_does_not_have():
    result = _bench("bench.gpu_check", "--mirror", ".", "--shapes", "large,huge")   # was: a KeyError mid-check
    assert result.returncode == 2 and "--shapes: huge is none of large, base, tiny" in result.stderr, result.stderr


def test_a_model_file_cut_short_is_made_again(tmp_path):
    """onnx.save wrote the file in place: one cut short was reused, and every later run failed on it until the
    person found and removed it. Now it is written whole and renamed, and an unreadable one is made again."""
    import onnx
    from bench.harness import fixed_model
    args = SimpleNamespace(layers=1, hidden=32, heads=2, seed=0)
    path = fixed_model(args, tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    assert fixed_model(args, tmp_path) == path and path.read_bytes() == whole
    onnx.load(str(path))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no scratch copy left


def test_ctrl_c_in_a_bench_script_is_one_line_and_exit_130():
    result = subprocess.run([sys.executable, "-c", "from bench.entry import run\n"
                             "def main():\n    raise KeyboardInterrupt\nrun(main)"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stderr) == (130, "interrupted\n")


def test_the_data_is_found_where_mlrun_mirror_says(tmp_path):
    """From a checkout not beside ../shared the bench ran on the documented length distribution, saying the SQuAD
    data was not found, though MLRUN_MIRROR named it."""
    env = dict(os.environ, MLRUN_MIRROR=str(tmp_path / "mirror"))
    result = subprocess.run([sys.executable, "-c", "from bench import harness; print(harness.SQUAD)"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.stdout.strip() == str(tmp_path / "mirror" / "squad" / "dev-v1.1.json")


def test_a_derived_model_cut_short_is_not_left_for_the_next_run(tmp_path, monkeypatch):
    """bench.machine_peak's int8 and fused copies and bench.quantized's int8 were written in place: a Ctrl-C
    mid-write (or a fused model that failed its check after it was saved) left a file the next run took as made,
    and every later run stopped on it ("not a readable ONNX model") or measured it until the person removed it."""
    import onnxruntime.quantization
    from bench import machine_peak

    def cut_short(source, out, **_):
        with open(out, "wb") as f:
            f.write(b"half a model")
        raise KeyboardInterrupt
    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", cut_short)
    source = tmp_path / "m.onnx"
    source.write_bytes(b"")
    with pytest.raises(KeyboardInterrupt):
        machine_peak.quantized(source, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]   # neither the int8 copy nor its scratch


def test_written_whole_renames_only_a_finished_write(tmp_path):
    from bench.harness import written_whole
    path = tmp_path / "fused.onnx"
    assert written_whole(path, lambda scratch: scratch.write_text("whole")) == path and path.read_text() == "whole"

    def fails_its_check(scratch):
        scratch.write_text("saved, then found wrong")
        raise RuntimeError("logits differ")
    with pytest.raises(RuntimeError):
        written_whole(tmp_path / "other.onnx", fails_its_check)
    assert [p.name for p in tmp_path.iterdir()] == ["fused.onnx"]


@pytest.mark.slow  # about 2 s each
@pytest.mark.parametrize("script, said", [
    ("bench.harness", ["reference design (thread per sample, batch 1, 384)", "onnxruntime: this harness (sorted, "
                       "real lengths)", "onnxruntime speed-up over the reference design: "]),
    ("bench.parallelism", ["old default: 1 instance x all cores, batch 1", "Offline rule, batch 4, pad <= 16 tokens",
                           "answers of 'Offline rule, batch 4, exact lengths' vs batch 1: 4/4 same"]),
    ("bench.quantized", ["fp32: ", "int8: ", "int8 over fp32: ", "answers: same argmax start and end on "]),
])
def test_the_harness_parallelism_and_quantized_benches_run_as_documented(tmp_path, script, said):
    """Their smoke runs (none of the three had one): a tiny model, 4 samples of the documented lengths (no mirror:
    the SQuAD features are not built), one pass each."""
    result = _bench(script, "--samples", "4", "--repeats", "1", "--layers", "1", "--hidden", "32", "--heads", "2",
                    "--scratch", str(tmp_path), env=dict(os.environ, MLRUN_MIRROR=str(tmp_path / "no-mirror")))
    assert result.returncode == 0, result.stderr[-3000:]
    for line in said:
        assert line in result.stdout, result.stdout
    assert "samples/s" in result.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no scratch copy left


def test_options_a_script_never_uses_are_not_offered():
    """deepsparse_compile's --help offered --samples (default 0) and --repeats, which it never read: it compiles."""
    _refused("bench.deepsparse_compile", ["--samples", "5"], "unrecognized arguments: --samples 5")


def test_bundle_io_hint_keeps_a_cache_path_with_a_space_whole():
    """export's hint quotes the run's cache (mlrun --cache '/tmp/my cache' export ...): bench.bundle_io cut it at
    the space, "MLRUN_CACHE='/tmp/my python -m ...", a command that never closed its quote; the run folder unquoted."""
    import shlex
    from bench.bundle_io import measure_hint
    hint = measure_hint("export with that cache: mlrun --cache '/tmp/my cache' export ID -o FILE --with-cache",
                        "/tmp/r un")
    command = hint.removeprefix("measure it with that cache: ")
    assert shlex.split(command) == ["MLRUN_CACHE=/tmp/my cache", "python", "-m", "bench.bundle_io", "--run",
                                    "/tmp/r un"], hint
