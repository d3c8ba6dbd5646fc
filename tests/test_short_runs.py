"""Short runs and results that explain themselves (issue 12).

A --count run issues exactly its samples and says it is short (not for submission); an INVALID result
says in words which check failed and which flag fixes it; --strict turns INVALID into exit 1; progress is
drawn only on a terminal, never into a log; a short accuracy log is scored over what it covers.
The harness runs for real (LoadGen, onnxruntime) on a tiny random model and the first SQuAD questions,
as tests/test_harness.py does; runs through bin/mlrun live in tests/test_bert_pipeline.py (its venvs).
"""
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from engine import records
from mlperf_bert import accuracy, loadgen_summary, random_model, squad_features
from mlperf_bert.model_adapter import make_seq_dynamic, probe_inputs

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SQUAD = SHARED_DATA / "squad" / "dev-v1.1.json"
VOCAB = SHARED_DATA / "bert-vocab" / "vocab.txt"
EXAMPLES = 40


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("short")
    paths = SimpleNamespace(root=root, model=root / "model.onnx", features=root / "features")
    onnx.save(random_model.build(layers=2, hidden=64, heads=2, seq=384), paths.model)
    squad_features.build(SQUAD, VOCAB, paths.features, max_examples=EXAMPLES)
    return paths


def harness(files, out, *args, env=None):
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features),
               "--model", str(files.model), "--out", str(out), "--threads", "1", *args]
    environ = {k: v for k, v in os.environ.items() if k != "MLRUN_PROGRESS"}
    result = subprocess.run(command, cwd=files.root, env={**environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr, result.stderr
    summary = out / "summary.json"
    return result, json.loads(summary.read_text()) if summary.is_file() else None


# -- --count is exact, and short says so ----------------------------------------------------------

@pytest.mark.parametrize("scenario, count, issued", [
    ("SingleStream", 20, 20), ("Server", 20, 20), ("MultiStream", 20, 24),   # whole queries of 8
])   # Offline: below
def test_count_issues_exactly_that_many_samples(files, tmp_path, scenario, count, issued):
    result, summary = harness(files, tmp_path / "run", "--scenario", scenario, "--mode", "performance",
                              "--count", str(count))
    assert result.returncode == 0, result.stderr
    assert summary["samples_completed"] == issued
    assert f"{scenario} performance: {issued} samples completed" + (
        f" (--count {count}: whole MultiStream queries of 8)" if issued != count else "\n") in result.stdout
    assert f"bert.{scenario}.min_duration = 0" in (tmp_path / "run" / "user.conf").read_text()
    assert summary["short"] is True and summary["loadgen"]["short_because"]


def test_a_short_run_says_it_is_not_for_submission(files, tmp_path):
    result, summary = harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                              "--count", "20")
    assert result.returncode == 0, result.stderr
    assert summary["samples_completed"] == 20   # not 1.1 x target_qps x min_duration
    assert "bert.Offline.min_duration = 0" in (tmp_path / "run" / "user.conf").read_text()
    assert summary["loadgen"]["result"] == "VALID"    # LoadGen's own word is kept as it is
    assert "result: VALID (short: not valid for submission)" in result.stdout
    assert "samples loaded (performance_sample_count): 20, a submission needs 10833" in result.stdout
    assert summary["loadgen"]["short_because"] == [
        "samples loaded (performance_sample_count): 20, a submission needs 10833",
        "minimum duration (ms): 0, a submission needs 600000",
        "samples in the Offline query: 20, a submission needs 10833"]
    # What `mlrun runs` shows of it.
    assert records.headline(summary).endswith("VALID (short)")
    assert records.headline({**summary, "short": False}).endswith("VALID")


def test_an_invalid_short_run_explains_itself_and_strict_fails_it(files, tmp_path):
    result, summary = harness(files, tmp_path / "run", "--scenario", "SingleStream", "--mode", "performance",
                              "--count", "8", "--strict")
    assert result.returncode == 1, result.stderr
    assert summary["loadgen"]["result"] == "INVALID" and summary["short"] is True   # the summary is still there
    [item] = summary["loadgen"]["explanation"]
    assert item["check"] == "Early stopping satisfied"
    assert item["why"] == "early stopping needs at least 64 queries to bound the p90 latency; this run issued 8"
    # 64 is more than the features this folder has (40 questions): a longer run, never a --count it refuses
    assert re.fullmatch(r"--min-duration=\d+ or more: 64 queries at [\d.]+/s", item["fix"]), item["fix"]
    assert "    why: early stopping needs at least 64 queries" in result.stdout
    assert "    fix: --min-duration=" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --strict: the performance result is INVALID: early stopping needs at least 64 queries")


@pytest.mark.slow   # over 2 s on the EPYC
def test_strict_passes_a_valid_run_and_fails_an_accuracy_below_target(files, tmp_path):
    result, _ = harness(files, tmp_path / "perf", "--scenario", "Offline", "--mode", "performance", "--count", "8",
                        "--strict")
    assert result.returncode == 0, result.stderr
    result, summary = harness(files, tmp_path / "acc", "--scenario", "Offline", "--mode", "accuracy", "--count", "8",
                              "--squad", str(SQUAD), "--strict")
    assert result.returncode == 1   # a random model never reaches the target
    assert "error: --strict: F1 " in result.stderr and "is below the target 89.96526" in result.stderr
    assert summary["accuracy"]["subset"] is True and summary["short"] is True


# -- INVALID in words: the table, case by case ---------------------------------------------------------

def summary_text(scenario, checks, notes=(), latencies=(), params=()):
    lines = [f"Scenario : {scenario}", "Mode     : PerformanceOnly", "Result is : INVALID"]
    lines += [f"  {name} : {'Yes' if ok else 'NO'}" for name, ok in checks]
    lines += ["Early Stopping Result:"] + [f" * {note}" for note in notes]
    lines += [f"{pct} percentile latency (ns)   : {ns}" for pct, ns in latencies]
    lines += ["Test Parameters Used"] + [f"{key} : {value}" for key, value in params]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("scenario, checks, notes, latencies, params, expected", [
    ("Server", [("Performance constraints satisfied", False), ("Early stopping satisfied", True)], [],
     [("99.00", 190000000)], [("target_qps", "12.5"), ("target_latency (ns)", "130000000")],
     [("Performance constraints satisfied", "the p99 latency 190.00 ms is over the 130 ms bound",
       "lower --target-qps (now 12.5)")]),
    ("Offline", [("Min duration satisfied", False)], [], [], [("target_qps", "3"), ("min_duration (ms)", "600000")],
     [("Min duration satisfied", "ended before its minimum duration (600000 ms)",
       "raise --target-qps (now 3) to the real samples/s or above")]),
    ("Offline", [("Min duration satisfied", False)], [], [],
     [("Samples per second", "3.61234"), ("target_qps", "3"), ("min_duration (ms)", "600000")],
     [("Min duration satisfied", "ended before its minimum duration (600000 ms)",
       "raise --target-qps (now 3) to 3.974 or above (1.1 x the 3.61234 samples/s this run measured)")]),
    ("SingleStream", [("Min duration satisfied", False)], [], [], [("target_qps", "200"), ("target_latency (ns)", "0")],
     [("Min duration satisfied", "queries for twice min_duration at target_latency each", "lower --target-latency (now 5 ms)")]),
    ("MultiStream", [("Early stopping satisfied", False)],
     ["Only processed 3 queries.", "Need to process at least 662 queries for early stopping."], [],
     [("samples_per_query", "8")],
     [("Early stopping satisfied", "at least 662 queries to bound the p99 latency; this run issued 3",
       "--count=5296 or more")]),
    ("Server", [("Early stopping satisfied", False)],
     ["Run unsuccessful.", "Processed 20 queries.", "Would need to run at least 356 more queries,"], [],
     [("target_qps", "40")],
     [("Early stopping satisfied", "needs 356 more queries",
       "--count=376 or more), or a lower --target-qps (now 40)")]),
    # past --count's most (the features there are): a longer --min-duration (it said --count=607114, refused)
    ("Server", [("Early stopping satisfied", False)],
     ["Run unsuccessful.", "Processed 6000 queries.", "Would need to run at least 601114 more queries,"], [],
     [("target_qps", "2000")],
     [("Early stopping satisfied", "needs 601114 more queries",
       "a longer run (--min-duration=303557 or more: 607114 queries at 2000/s), or a lower --target-qps")]),
    # every query within the bound: only a longer run helps (it was told "a lower --target-qps so fewer are late")
    ("Server", [("Early stopping satisfied", False)],
     ["Run unsuccessful.", "Processed 50 queries.", "Would need to run at least 200 more queries,"], [],
     [("target_qps", "303.3"), ("target_latency (ns)", "130000000"), ("Max latency (ns)", "9000000")],
     [("Early stopping satisfied", "needs 200 more queries", "a longer run (--count=250 or more)")]),
    # a user.conf's max_query_count stops Server's schedule: a higher target QPS (the advice given) shortens it more
    ("Server", [("Min duration satisfied", False), ("Min queries satisfied", False), ("Early stopping satisfied", False)],
     ["Run unsuccessful.", "Processed 20 queries.", "Would need to run at least 439 more queries,"], [],
     [("target_qps", "50"), ("min_duration (ms)", "2000"), ("min_query_count", "100"), ("max_query_count", "20")],
     [("Min duration satisfied", "max_query_count 20 stops the schedule at 20 queries, 400 ms at 50/s",
       "raise or remove max_query_count (your --user_conf), or lower --target-qps (now 50) to 8 or below"),
      ("Min queries satisfied", "max_query_count 20 is below min_query_count 100",
       "raise max_query_count (your --user_conf) to 100 or more"),
      ("Early stopping satisfied", "needs 439 more queries",
       "(--count=459 or more), with max_query_count 459 or more (your --user_conf stops it at 20)")]),
    # within the margin of the edge (Poisson arrivals fall short there too); at the advised rate, no circular advice
    ("Server", [("Min duration satisfied", False)], [], [],
     [("target_qps", "18"), ("min_duration (ms)", "1000"), ("max_query_count", "20")],
     [("Min duration satisfied", "max_query_count 20 stops the schedule at 20 queries, 1111 ms at 18/s",
       "lower --target-qps (now 18) to 16 or below")]),
    ("Server", [("Min duration satisfied", False)], [], [],
     [("target_qps", "16"), ("min_duration (ms)", "1000"), ("max_query_count", "20")],
     [("Min duration satisfied", "max_query_count 20 stops", "lower --target-qps (now 16) further")]),
    ("Server", [("Min duration satisfied", False)], [], [],
     [("target_qps", "50"), ("min_duration (ms)", "2000"), ("max_duration (ms)", "1000")],
     [("Min duration satisfied", "max_duration 1000 ms ends it first", "raise or remove max_duration")]),
    ("Offline", [("Some future check satisfied", False)], [], [], [],
     [("Some future check satisfied", "LoadGen's check 'Some future check satisfied' said NO", "see the notes")]),
])
def test_each_invalid_reason_in_words(tmp_path, scenario, checks, notes, latencies, params, expected):
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(summary_text(scenario, checks, notes, latencies, params))
    explanation = loadgen_summary.parse(path)["explanation"]
    assert len(explanation) == len(expected)
    for item, (check, why, fix) in zip(explanation, expected):
        assert item["check"] == check and why in item["why"] and fix in item["fix"], item
        if "Max latency (ns)" in dict(params):
            assert "--target-qps" not in item["fix"], item


def test_the_advice_names_the_user_conf_line_that_set_a_value(tmp_path):
    """A target_qps from --user_conf was told "raise --target-qps (now 10)", which the harness then refused
    beside the file's line ("give each setting one way")."""
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(summary_text("Offline", [("Min duration satisfied", False)], [], [],
                                 [("Samples per second", "142"), ("target_qps", "10"), ("min_duration (ms)", "100")]))
    assert "raise --target-qps (now 10)" in loadgen_summary.parse(path)["explanation"][0]["fix"]
    fix = loadgen_summary.parse(path, user_settings={"target_qps": 10})["explanation"][0]["fix"]
    assert fix.startswith("raise your --user_conf's target_qps (now 10) to 156.2") and "--target-qps" not in fix
    path.write_text(summary_text("Server", [("Early stopping satisfied", False)],
                                 ["Run unsuccessful.", "Processed 6000 queries.", "Would need to run at least 601114 more queries,"],
                                 [], [("target_qps", "2000")]))
    fix = loadgen_summary.parse(path, user_settings={"min_duration": 100})["explanation"][0]["fix"]
    assert "your --user_conf's min_duration = 303557 or more" in fix and "lower --target-qps" in fix


def test_the_count_advised_is_within_the_features_the_run_has(tmp_path):
    """A --questions subset of 40 features was told --count=459, which the harness then refused."""
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(summary_text("Server", [("Early stopping satisfied", False)],
                                 ["Run unsuccessful.", "Processed 40 queries.", "Would need to run at least 419 more queries,"],
                                 [], [("target_qps", "20")]))
    assert "--count=459 or more" in loadgen_summary.parse(path)["explanation"][0]["fix"]
    fix = loadgen_summary.parse(path, features=40)["explanation"][0]["fix"]
    assert "--count" not in fix and "--min-duration=22950 or more: 459 queries at 20/s" in fix


def test_a_full_length_run_is_not_short(tmp_path):
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(summary_text("Offline", [("Min duration satisfied", True)],
                                 params=[("samples_per_query", "12000"), ("min_duration (ms)", "600000"),
                                         ("performance_sample_count", "10833")]).replace("INVALID", "VALID"))
    parsed = loadgen_summary.parse(path)
    assert parsed["short_because"] == [] and parsed["explanation"] == []
    assert loadgen_summary.verdict(parsed) == "VALID"


# -- progress: on the user's terminal only ---------------------------------------------------------------

@pytest.mark.slow  # about 1.0 s on the 2-core EPYC
def test_progress_is_drawn_on_the_named_terminal_never_in_the_output(files, tmp_path):
    screen = tmp_path / "screen"   # stands in for the terminal mlrun names in MLRUN_PROGRESS
    result, _ = harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance", "--count", "20",
                        env={"MLRUN_PROGRESS": str(screen)})
    assert result.returncode == 0, result.stderr
    drawn = screen.read_text()
    assert "Offline performance: 100%" in drawn and "20/20" in drawn and "sample/s" in drawn
    assert "sample/s" not in result.stdout + result.stderr
    # Not a terminal and not named: no bar anywhere.
    result, _ = harness(files, tmp_path / "again", "--scenario", "Offline", "--mode", "performance", "--count", "20")
    assert "sample/s" not in result.stdout + result.stderr


@pytest.mark.slow  # about 0.9 s on the 2-core EPYC
def test_without_a_bar_a_long_test_says_where_it_is_once_a_minute(monkeypatch, tmp_path):
    """CI or a batch job has no terminal: a 600-s Server run printed nothing until its summary. Now a line every
    LOG_EVERY_S (here 0.1 s) on the harness's output, which is the step's log; none once the test ended."""
    from mlperf_bert import progress
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.1)
    log, done = io.StringIO(), [0]

    def tick():   # 5 more samples each time LoadGen is asked
        done[0] += 5
        return done[0]
    with progress.Bar(None, tick, lambda n, elapsed: 100, "Server performance", log=log):
        time.sleep(0.35)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 2 and all(re.fullmatch(r"Server performance: \d+ of 100 samples after 0 s, about \d+ s left",
                                                x) for x in lines), lines
    time.sleep(0.2)
    assert log.getvalue().splitlines() == lines
    # A bar on a terminal (here a file standing in for it) takes the place of the lines.
    screen, log = tmp_path / "screen", io.StringIO()
    with progress.Bar(open(screen, "w"), tick, lambda n, elapsed: 1000, "Offline performance", log=log):
        time.sleep(0.3)
    assert log.getvalue() == "" and "Offline performance" in screen.read_text()


def run_with_stderr_on_a_terminal(ws, *args):
    """bin/mlrun with stdout a pipe and stderr a pseudo-terminal: (stdout, what the terminal showed, exit code)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([ws_mlrun(), *args], env=ws.env(), cwd=ws.root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out = proc.stdout.read()
    proc.stdout.close()
    return out, shown.decode(errors="replace"), proc.wait(timeout=30)


def ws_mlrun():
    from conftest import MLRUN
    return MLRUN


def test_the_runner_names_its_terminal_to_a_live_step_only(ws):
    script = ('import os; t = os.environ.get("MLRUN_PROGRESS"); print("progress:", t or "none"); '
              't and open(t, "w").write("drawn".upper() + " 100%\\n")')
    ws.recipe("bench", f"tags: bench\ncache: false\nrun: python3 -c '{script}'\n")
    out, shown, code = run_with_stderr_on_a_terminal(ws, "bench")
    assert code == 0, shown
    assert "progress: /dev/pts/" in out and "DRAWN 100%" in shown   # on the screen ...
    run_dir = os.path.join(ws.runs, sorted(os.listdir(ws.runs))[-1], "bench", ".mlrun")
    log = open(os.path.join(run_dir, "build.log")).read()
    assert "progress: /dev/pts/" in log and "DRAWN" not in log       # ... never in the log
    assert "MLRUN_PROGRESS" not in open(os.path.join(run_dir, "env.sh")).read()  # nor in what re-runs it
    # --json (output for a script) and a stderr that is no terminal: no progress.
    out, shown, code = run_with_stderr_on_a_terminal(ws, "bench", "--json")
    assert code == 0 and "DRAWN" not in shown
    plain = ws.mlrun("bench")
    assert "progress: none" in plain.stdout


# -- accuracy of a short log ------------------------------------------------------------------------

def write_log(path, responses):
    path.write_text(json.dumps([{"seq_id": i, "qsl_idx": i, "data": np.asarray(rows, "<f4").tobytes().hex().upper()}
                                for i, rows in responses]))
    return path


def test_a_short_log_is_scored_over_the_questions_it_covers(files, tmp_path, capsys):
    n = len(squad_features.load(files.features).lengths)
    minus_ten = np.full((384, 2), -10)
    summary = tmp_path / "accuracy.json"
    args = ["--features", str(files.features), "--squad", str(SQUAD), "--summary", str(summary), "--log"]
    assert accuracy.main(args + [str(write_log(tmp_path / "short.json", ((i, minus_ten) for i in range(10))))]) == 0
    err = capsys.readouterr().err
    assert f"scored 10 of {EXAMPLES} questions: the log covers only these" in err
    scored = json.loads(summary.read_text())
    assert scored["short"] is True and scored["accuracy"]["subset"] is True
    assert scored["accuracy"]["questions"] == 10 and scored["accuracy"]["of"] == EXAMPLES
    # The whole log: every question, the official figure.
    assert accuracy.main(args + [str(write_log(tmp_path / "all.json", ((i, minus_ten) for i in range(n))))]) == 0
    assert f"scored all {EXAMPLES} questions" in capsys.readouterr().err
    assert json.loads(summary.read_text())["accuracy"]["subset"] is False


def test_an_empty_log_is_an_error_not_a_score(files, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    args = ["--features", str(files.features), "--squad", str(SQUAD), "--log", str(empty)]
    assert accuracy.main(args) == 2
    err = capsys.readouterr().err
    assert "holds no responses: nothing to score" in err and "f1" not in err


# -- DeepSparse: static copies share one weights file ---------------------------------------------------

def test_static_copies_write_the_weights_once_and_run_like_the_model(files, tmp_path):
    from mlperf_bert.ds_backend import WEIGHTS, StaticCopies
    from mlperf_bert.ort_backend import OrtBackend
    dynamic = tmp_path / "dynamic.onnx"
    assert make_seq_dynamic(str(files.model), str(dynamic))
    copies = StaticCopies(str(dynamic))
    paths = {shape: copies.path(list(shape)) for shape in ((1, 128), (1, 384), (4, 128))}
    folder = os.path.dirname(paths[1, 128])
    weights = os.path.join(folder, WEIGHTS)
    assert sorted(os.listdir(folder)) == sorted([WEIGHTS] + [os.path.basename(p) for p in paths.values()])
    assert os.path.getsize(weights) > 10 * max(os.path.getsize(p) for p in paths.values())
    reference = OrtBackend(str(dynamic))
    for (batch, length), path in paths.items():
        static = onnx.load(path, load_external_data=False)
        assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [batch, length]
        arrays = probe_inputs([length - 3] * batch, length, reference.io.input_dtype)
        for got, want in zip(OrtBackend(path).run(*arrays), reference.run(*arrays)):
            np.testing.assert_array_equal(got, want)
    copies.close()
    assert not os.path.exists(folder)


# -- bench scratch lives outside the cache --------------------------------------------------------------

def test_bench_scripts_keep_their_scratch_out_of_the_cache(monkeypatch, tmp_path):
    from bench import harness as bench_harness
    monkeypatch.delenv("MLRUN_BENCH_SCRATCH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bench_harness.default_scratch() == tmp_path / "xdg" / "mlrun-bench"
    monkeypatch.setenv("MLRUN_BENCH_SCRATCH", str(tmp_path / "mine"))
    assert bench_harness.model_args("x", 1, 1).parse_args([]).scratch == tmp_path / "mine"
    for script in ("harness", "machine_peak", "parallelism", "quantized"):
        text = (ROOT / "bench" / f"{script}.py").read_text()
        assert '"cache" / "bench"' not in text and "--cache" not in text, script


# -- settings LoadGen cannot hold are refused, not run into the kernel's OOM killer ------------------

def loadgen_settings(scenario, **values):
    import mlperf_loadgen as lg
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.min_duration_ms, settings.min_query_count = 600000, 100
    for name, value in values.items():
        setattr(settings, name, value)
    return settings


@pytest.mark.parametrize("scenario, fits, too_many", [
    # (a real rate or latency: fits; a unit slip: a schedule of tens of GB)
    # (fits: at most 0.3 GB, so on any machine that runs the suite)
    ("Offline", {"offline_expected_qps": 500.0}, {"offline_expected_qps": 5e8}),
    ("Server", {"server_target_qps": 500.0}, {"server_target_qps": 5e8}),
    ("SingleStream", {"single_stream_expected_latency_ns": 5_000_000}, {"single_stream_expected_latency_ns": 10}),
    ("MultiStream", {"multi_stream_expected_latency_ns": 40_000_000}, {"multi_stream_expected_latency_ns": 10}),
])
def test_a_query_schedule_larger_than_half_the_free_memory_is_refused(scenario, fits, too_many):
    from engine.errors import UsageError
    from mlperf_bert import harness as harness_module
    harness_module._check_schedule(loadgen_settings(scenario, **fits), scenario, accuracy=False)
    with pytest.raises(UsageError) as refused:
        harness_module._check_schedule(loadgen_settings(scenario, **too_many), scenario, accuracy=False)
    assert f"{scenario}: LoadGen would generate" in str(refused.value) and "of memory free" in str(refused.value)
    assert "--min_duration" in refused.value.hint
    # A max_query_count caps the schedule, and accuracy mode issues each loaded sample once.
    harness_module._check_schedule(loadgen_settings(scenario, max_query_count=1000, **too_many), scenario, False)
    harness_module._check_schedule(loadgen_settings(scenario, **too_many), scenario, accuracy=True)


def test_an_expected_latency_from_user_conf_that_would_exhaust_memory_stops_the_run(files, tmp_path):
    # Before: LoadGen generated queries for 1200 s at 10 ns each until the kernel killed the run (SIGKILL).
    conf = tmp_path / "user.conf.in"
    conf.write_text("bert.SingleStream.target_latency = 0.00001\n")
    result, summary = harness(files, tmp_path / "run", "--scenario", "SingleStream", "--mode", "performance",
                              "--user-conf", str(conf))
    assert result.returncode == 78, result.stderr   # the runner's EX_CONFIG: mlrun's exit 2
    assert "SingleStream: LoadGen would generate 120,000,000,000 queries before it starts" in result.stderr
    assert summary is None


def test_a_user_conf_line_loadgen_would_drop_unsaid_is_refused_before_the_run(files, tmp_path):
    # Before: `target_qsp` and `key=value` were ignored by LoadGen without a word, and the record said they ran.
    conf = tmp_path / "mine.conf"
    conf.write_text("bert.Offline.target_qsp = 10\nbert.Offline.min_duration=100\n")
    result, summary = harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                              "--user-conf", str(conf))
    assert result.returncode == 78, result.stderr   # the runner's EX_CONFIG: mlrun's exit 2
    assert f"user.conf {conf}: line 1 " in result.stderr and "did you mean 'target_qps'" in result.stderr
    assert "line 2 " in result.stderr and summary is None and not (tmp_path / "run").exists()
    conf.write_text("bert.Offline.target_qps = 50\n")   # LoadGen ran 50 where `runs` showed the option's 100
    result, summary = harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                              "--user-conf", str(conf), "--target-qps", "100")
    assert result.returncode == 78 and "--target_qps and the user.conf's target_qps = 50" in result.stderr


@pytest.mark.parametrize("flag", ["--target-qps", "--target-latency"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_rate_or_latency_must_be_a_number_above_zero(flag, value, capsys):
    from mlperf_bert import harness as harness_module
    with pytest.raises(SystemExit) as stopped:
        harness_module.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server",
                                   "--mode", "performance", f"{flag}={value}"])
    assert stopped.value.code == 2
    assert f"must be a number above 0, not {value}" in capsys.readouterr().err


def test_why_a_count_run_did_more_samples_names_the_real_cause():
    """A --find-peak --count run's check said 'LoadGen added queries to fill --min-duration' (no min duration
    was set): the search's early-stopping query count was the cause."""
    from mlperf_bert.harness import count_note
    base = {"count": 200, "samples_completed": 256, "scenario": "Server"}
    assert count_note(base) == " (--count 200: LoadGen added queries to fill --min-duration)"
    assert count_note({**base, "find_peak": {"qps": 10}}) == (
        " (--count 200: --find-peak's check ran the queries early stopping asked for in its search)")
    assert count_note({"count": 20, "samples_completed": 24, "scenario": "MultiStream"}) == (
        " (--count 20: whole MultiStream queries of 8)")


@pytest.mark.slow  # about 0.9 s each on the 2-core EPYC
@pytest.mark.parametrize("margin, valid", [(None, True), (1, False)])
def test_a_singlestream_warm_up_read_3x_slow_still_gives_a_valid_run(tmp_path, monkeypatch, margin, valid):
    """Real LoadGen, a SUT answering in 2 ms, a warm-up that read 6 ms (a busy spell): LoadGen generated queries
    for twice min_duration at 6 ms, ran out after about 0.7 of it and said INVALID ("Decrease the expected
    latency"). The harness's target is half the warm-up's (margin None); with none (1) the same run is INVALID."""
    import mlperf_loadgen as lg

    from mlperf_bert import harness
    if margin is not None:
        monkeypatch.setattr(harness, "LATENCY_MARGIN", margin)
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--mode", "performance",
                               "--scenario", "SingleStream", "--count", "20", "--min-duration", "1000"])
    chosen = harness.settings_lines(args, total=20, measured_qps=1 / 0.006)[1]

    def issue(queries):
        for q in queries:
            time.sleep(0.002)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0)])
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(20, 20, lambda s: None, lambda s: None)
    settings = lg.TestSettings()
    settings.scenario, settings.mode = lg.TestScenario.SingleStream, lg.TestMode.PerformanceOnly
    settings.single_stream_expected_latency_ns = int(chosen["target_latency"] * 1e6)
    settings.min_duration_ms, settings.min_query_count = chosen["min_duration"], chosen["min_query_count"]
    log = lg.LogSettings()
    log.log_output.outdir = str(tmp_path)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary = (tmp_path / "mlperf_log_summary.txt").read_text()
    assert ("Result is : VALID" in summary) == valid, summary
