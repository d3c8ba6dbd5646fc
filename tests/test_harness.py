"""The LoadGen harness: sequence plans, the inference path, and real LoadGen runs in a subprocess.

The model is a tiny random BERT (2 layers, hidden 64) with the official fixed-384 axis, so every
run also goes through make_seq_dynamic. The features are the first SQuAD dev questions.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest

from engine.errors import UsageError
from mlperf_bert import harness, loadgen_summary, random_model, seq_plan, squad_features, user_conf
from mlperf_bert.model_adapter import make_seq_dynamic, probe_inputs
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.seq_plan import SeqPlan
from mlperf_bert.sut import QaInference

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SQUAD = SHARED_DATA / "squad" / "dev-v1.1.json"
VOCAB = SHARED_DATA / "bert-vocab" / "vocab.txt"
COUNT = 20
TINY = {"layers": 2, "hidden": 64, "heads": 2}
EXACT = SeqPlan(None, "exact")


# -- fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny fixed-384 models (plain and with a hard-coded 384 Reshape) and a SQuAD features folder."""
    root = tmp_path_factory.mktemp("harness")
    paths = SimpleNamespace(root=root, model=root / "model.onnx", hardcoded=root / "hardcoded.onnx",
                            features=root / "features")
    onnx.save(random_model.build(**TINY, seq=384), paths.model)
    onnx.save(random_model.build(**TINY, seq=384, hardcode_seq_reshape=True), paths.hardcoded)
    squad_features.build(SQUAD, VOCAB, paths.features, max_examples=COUNT)
    return paths


@pytest.fixture(scope="module")
def dynamic_backend(files):
    path = files.root / "dynamic.onnx"
    assert make_seq_dynamic(str(files.model), str(path))
    return OrtBackend(str(path))


def synthetic_features(lengths):
    ids, mask, segments = probe_inputs(lengths, seq_plan.FEATURE_WIDTH)
    return SimpleNamespace(input_ids=ids, input_mask=mask, segment_ids=segments, lengths=np.array(lengths))


def run_harness(files, out, *args, model=None, features=None):
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(features or files.features),
               "--model", str(model or files.model), "--out", str(out), *args]
    # cwd is neither the repository nor the run folder: the harness must not depend on either.
    return subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


def assert_ok(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr


def accuracy_log(run_dir):
    return {entry["qsl_idx"]: entry["data"] for entry in json.loads((run_dir / "mlperf_log_accuracy.json").read_text())}


# -- sequence plans ---------------------------------------------------------------

def test_parse_buckets():
    assert seq_plan.parse_buckets("auto") == "auto"
    assert seq_plan.parse_buckets("exact") == "exact"
    assert seq_plan.parse_buckets("384") == (384,)
    assert seq_plan.parse_buckets("256,128") == (128, 256, 384)  # 384 always holds the longest
    for bad in ("", "0", "400", "128,x", "fast"):
        with pytest.raises(UsageError, match="--buckets"):
            seq_plan.parse_buckets(bad)


def test_exact_plan_runs_shortest_first_and_batches_only_equal_lengths():
    lengths = [300, 50, 120, 50, 384, 50]
    assert [EXACT.run_length(n) for n in lengths] == lengths
    assert EXACT.batches(lengths, batch_size=1) == [[1], [3], [5], [2], [0], [4]]
    assert EXACT.batches(lengths, batch_size=2) == [[1, 3], [5], [2], [0], [4]]


def test_bucket_plan_rounds_up_to_the_smallest_bucket_that_holds_the_sample():
    plan = SeqPlan(seq_plan.parse_buckets("128,256"), "buckets")
    lengths = [300, 50, 129, 128, 256, 384, 1]
    assert [plan.run_length(n) for n in lengths] == [384, 128, 256, 128, 256, 384, 128]
    assert plan.batches(lengths, batch_size=2) == [[1, 3], [6], [2, 4], [0, 5]]


# -- the inference path -----------------------------------------------------------

def test_responses_are_start_end_pairs_at_the_run_length(dynamic_backend):
    features = synthetic_features([30, 200, 30])
    inference = QaInference(dynamic_backend, features, EXACT)
    indices = [1, 0, 1, 2]  # sample 1 twice: it is run twice, never served from a cache
    batches = list(inference.responses(indices))
    assert [[position for position, _ in batch] for batch in batches] == [[1], [3], [0], [2]]
    responses = dict(item for batch in batches for item in batch)
    start, end = dynamic_backend.run(*(array[1:2, :200] for array in probe_inputs([30, 200, 30], 384)))
    for position in (0, 2):
        response = responses[position]
        assert response.dtype == np.float32 and response.shape == (200, 2) and response.flags.c_contiguous
        np.testing.assert_array_equal(response[:, 0], start[0])
        np.testing.assert_array_equal(response[:, 1], end[0])
    assert responses[1].shape == responses[3].shape == (30, 2)


def test_response_bytes_do_not_depend_on_batching_or_neighbours(dynamic_backend):
    lengths = [90, 90, 90, 91, 200]
    features = synthetic_features(lengths)
    alone = {}
    for index in range(len(lengths)):
        (batch,) = QaInference(dynamic_backend, features, EXACT).responses([index])
        alone[index] = batch[0][1].tobytes()
    batched = QaInference(dynamic_backend, features, EXACT, batch_size=3)
    batched.load(range(len(lengths)))
    indices = [4, 2, 0, 1, 3]
    for batch in batched.responses(indices):
        for position, response in batch:
            assert response.tobytes() == alone[indices[position]]


def test_cut_to_real_length_predicts_as_padded_to_384(files, dynamic_backend):
    features = squad_features.load(files.features)
    indices = list(range(COUNT))
    fixed = QaInference(OrtBackend(str(files.model)), features, seq_plan.fixed_plan(384, "test"))
    cut = QaInference(dynamic_backend, features, EXACT)
    padded = {indices[p]: r for batch in fixed.responses(indices) for p, r in batch}
    for batch in cut.responses(indices):
        for position, response in batch:
            length = features.lengths[indices[position]]
            assert response.shape == (length, 2)
            reference = padded[indices[position]][:length]
            assert (response.argmax(axis=0) == reference.argmax(axis=0)).all()
            np.testing.assert_allclose(response, reference, atol=1e-4)


# -- model preparation --------------------------------------------------------------

def test_prepare_makes_a_dynamic_copy_once_and_falls_back_when_it_cannot(files, tmp_path):
    path, plan = seq_plan.prepare(str(files.model), "auto", tmp_path)
    assert plan.buckets is None and "made dynamic" in plan.description
    assert Path(path).parent == tmp_path and Path(path).is_file()
    made_at = Path(path).stat().st_mtime_ns
    assert seq_plan.prepare(str(files.model), (128, 384), tmp_path)[0] == path
    assert Path(path).stat().st_mtime_ns == made_at  # reused, not made again

    path, plan = seq_plan.prepare(str(files.hardcoded), "auto", tmp_path)
    assert path == str(files.hardcoded) and plan.buckets == (384,) and "FALLBACK" in plan.description
    assert len(list(tmp_path.glob("*.not-dynamic"))) == 1  # the verdict is kept, the model not probed again
    for strict in ("exact", (128, 384)):  # only auto falls back; an explicit request is refused
        with pytest.raises(UsageError, match="hard-codes its 384 sequence length"):
            seq_plan.prepare(str(files.hardcoded), strict, tmp_path)

    path, plan = seq_plan.prepare(str(files.model), (384,), tmp_path / "unused")
    assert path == str(files.model) and plan.description == "fixed 384 (as requested)"
    assert not (tmp_path / "unused").exists()


# -- settings ---------------------------------------------------------------------

def test_short_run_settings_and_user_conf_lines_win(tmp_path):
    user_conf = tmp_path / "mine.conf"
    user_conf.write_text("*.Server.target_qps = 7\n# bert.Server.min_duration = 5\n")
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server",
                               "--mode", "performance", "--count", "20", "--user-conf", str(user_conf)])
    lines, chosen = harness.settings_lines(args, total=20, measured_qps=100.0)
    # what the user.conf set is recorded too (diff showed only its digest): as the number it is
    assert chosen == {"performance_sample_count_override": 20, "min_query_count": 20,
                      "min_duration": harness.SHORT_RUN_MIN_DURATION_MS, "target_qps": 7}
    assert "bert.Server.min_query_count = 20" in lines and "bert.Server.target_qps = 7" not in lines
    assert lines[-2:] == ["*.Server.target_qps = 7", "# bert.Server.min_duration = 5"]

    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "MultiStream",
                               "--mode", "performance", "--count", "20"])
    chosen = harness.settings_lines(args, total=20, measured_qps=100.0)[1]
    assert chosen["min_query_count"] == 3 and chosen["target_latency"] == 40  # 8 samples at 100/s, halved


def test_the_user_confs_settings_the_most_specific_line_wins_and_the_server_bound_is_theirs(tmp_path):
    """A user.conf's bert.Server.target_latency = 10: the rule and find-peak's pre-check held the run to 130 ms."""
    lines = ["*.*.target_qps = 1", "bert.Server.target_qps = 5", "*.Server.target_qps = 3", "bert.*.min_duration = 9",
             "# bert.Server.target_latency = 99", "bert.Offline.target_qps = 8", "bert.Server.target_latency = 10",
             "bert.Server.mode = x.5"]
    assert user_conf.values_set(lines, "Server") == {"target_qps": 5, "min_duration": 9, "target_latency": 10,
                                                     "mode": "x.5"}
    conf = tmp_path / "mine.conf"
    conf.write_text("\n".join(lines) + "\n")
    base = ["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server", "--mode", "performance"]
    assert harness.server_bound_ms(harness.parse_args(base + ["--user-conf", str(conf)])) == 10
    assert harness.server_bound_ms(harness.parse_args(base + ["--user-conf", str(conf), "--target-latency", "20"])) \
        == 20
    assert harness.server_bound_ms(harness.parse_args(base)) == harness.SERVER_LATENCY_BOUND_MS


def test_summary_parser_reports_why_a_run_is_invalid(tmp_path):
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text("Scenario : Server\nMode     : PerformanceOnly\nCompleted samples per second    : 200.04\n"
                    "Result is : INVALID\n  Min duration satisfied : Yes\n  Early stopping satisfied: NO\n"
                    "Early Stopping Result:\n * Would need to run at least 356 more queries,\n with the run "
                    "being successful.\n50.00 percentile latency (ns)   : 2159581\n"
                    "99.90 percentile latency (ns)   : 8810276\n")
    parsed = loadgen_summary.parse(path)
    assert parsed["result"] == "INVALID" and parsed["metric"] == {"Completed samples per second": 200.04}
    assert parsed["reasons"] == ["Early stopping satisfied: NO",
                                 "Would need to run at least 356 more queries, with the run being successful."]
    assert parsed["latency_ms"] == {"p50": 2.159581, "p99.9": 8.810276}


# -- real LoadGen runs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def accuracy_run(files):
    out = files.root / "accuracy"
    result = run_harness(files, out, "--scenario", "Offline", "--mode", "accuracy", "--count", str(COUNT),
                         "--squad", str(SQUAD))
    assert_ok(result)
    return SimpleNamespace(out=out, result=result)


def test_accuracy_mode_scores_20_samples(accuracy_run):
    out, stdout = accuracy_run.out, accuracy_run.result.stdout
    for name in ("user.conf", "mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "audit.config").exists()
    assert sorted(accuracy_log(out)) == list(range(COUNT))
    accuracy_line, hash_line = (out / "accuracy.txt").read_text().splitlines()
    scores = json.loads(accuracy_line)
    assert set(scores) == {"exact_match", "f1"} and hash_line.startswith("hash=")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_completed"] == COUNT and summary["accuracy"]["met"] is False
    assert summary["sequence_handling"].startswith("exact lengths (fixed 384 axis made dynamic")
    assert "target F1 >= 89.965: not met" in stdout and '"f1": ' in stdout
    assert "bert.Offline.performance_sample_count_override = 20" in (out / "user.conf").read_text()


def test_performance_mode_logs_the_same_bytes_as_accuracy_mode(files, accuracy_run, tmp_path):
    # TEST01's mechanism: an audit.config that logs every response of a performance run.
    audit = tmp_path / "audit.config"
    audit.write_text("*.*.mode = 2\n*.*.accuracy_log_rng_seed = 720381539243781796\n"
                     "*.*.accuracy_log_sampling_target = 1000\n")
    out = tmp_path / "perf"
    out.mkdir()
    (out / "accuracy.txt").write_text("from an earlier run\n")
    assert_ok(run_harness(files, out, "--scenario", "Offline", "--mode", "performance", "--count", str(COUNT),
                          "--min-duration", "0", "--audit-config", str(audit)))
    logged, reference = accuracy_log(out), accuracy_log(accuracy_run.out)
    assert len(logged) == COUNT and all(logged[index] == reference[index] for index in logged)
    assert not (out / "audit.config").exists() and not (out / "accuracy.txt").exists()


def test_offline_rate_times_a_second_pass_over_a_spread_of_the_loaded_samples():
    class View:   # one unpinned instance: run_on_instances calls it in this thread
        def __init__(self, lengths, batch_size=1):
            self.lengths, self.batch_size, self.passes = np.asarray(lengths), batch_size, []

        def responses(self, indices):
            self.passes.append(list(indices))
            return iter(())
    lengths = [(7 * i) % 1000 for i in range(1000)]     # every length once, out of order
    view = View(lengths)
    rate, samples = harness._offline_rate([view], [()], total=1000, settled_qps=20.0)
    # max(4 per instance, 0.5 s at 20/s) = 10 samples, evenly over the 1000 loaded lengths, run twice
    assert samples == 10 and rate > 0 and len(view.passes) == 2 and view.passes[0] == view.passes[1]
    assert sorted(lengths[i] for i in view.passes[0]) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    # Batches as LoadGen's big query fills them: blocks of 4 neighbouring lengths, spread the same way.
    view = View(lengths, batch_size=4)
    assert harness._offline_rate([view], [()], total=1000, settled_qps=40.0)[1] == 20
    assert sorted(lengths[i] for i in view.passes[1]) == [
        n + k for n in (0, 249, 498, 747, 996) for k in range(4)]
    view = View([5, 3, 4])   # never more than loaded, but a pass of few samples repeated to last about 0.5 s
    assert harness._offline_rate([view], [()], total=3, settled_qps=4.0)[1] == 3
    assert view.passes == [[0, 1, 2]] * 2
    view = View([5, 3, 4])   # (100 samples of a tiny model took 0.1 s: OpenVINO's read 0.61x of LoadGen's rate)
    assert harness._offline_rate([view], [()], total=3, settled_qps=30.0)[1] == 15
    assert view.passes == [[0, 1, 2] * 5] * 2
    view = View([5, 3, 4])
    assert harness._offline_rate([view], [()], total=3, settled_qps=1e6)[1] == 60   # at most 20 times
    assert view.passes == [[0, 1, 2] * 20] * 2


def test_offline_target_has_a_margin_and_find_peak_says_why_it_is_for_server_only(capsys):
    base = ["--features", "f", "--model", "m", "--out", "o", "--mode", "performance"]
    args = harness.parse_args(base + ["--scenario", "Offline"])
    assert harness.settings_lines(args, total=10833, measured_qps=100.0)[1]["target_qps"] == 110.0
    args = harness.parse_args(base + ["--scenario", "Server"])
    assert harness.settings_lines(args, total=10833, measured_qps=100.0)[1]["target_qps"] == 50.0
    # LoadGen reads SingleStream's and MultiStream's target_latency as real ms (a sub-ms model rounded up to
    # 1 ms could be over the 2x its generated queries allow), Server's as whole ms.
    args = harness.parse_args(base + ["--scenario", "SingleStream"])
    assert harness.settings_lines(args, total=10833, measured_qps=2500.0)[1]["target_latency"] == 0.2
    args = harness.parse_args(base + ["--scenario", "MultiStream", "--target-latency", "0.35"])
    assert harness.settings_lines(args, total=10833, measured_qps=1.0)[1]["target_latency"] == 0.35
    args = harness.parse_args(base + ["--scenario", "Server", "--target-latency", "99.2"])
    assert harness.settings_lines(args, total=10833, measured_qps=1.0)[1]["target_latency"] == 100
    for scenario, why in (("Offline", "the expected rate that sizes its query is measured"),
                          ("MultiStream", "VALID up to 4x the real latency")):
        with pytest.raises(SystemExit) as exit_:
            harness.parse_args(base + ["--scenario", scenario, "--find-peak"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"{scenario} has none to search" in err and why in err


@pytest.mark.parametrize("scenario, extra", [
    pytest.param("Offline", ["--batch-size", "4", "--buckets", "128,256"], marks=pytest.mark.slow),   # about 1.8 s
    pytest.param("SingleStream", [], marks=pytest.mark.slow),   # about 0.8 s
    pytest.param("MultiStream", [], marks=pytest.mark.slow),   # about 0.85 s
    pytest.param("Server", ["--target-qps", "200"], marks=pytest.mark.slow),   # about 1.7 s on the 2-core EPYC
])
def test_performance_run_in_each_scenario(files, tmp_path, scenario, extra):
    out = tmp_path / "run"
    result = run_harness(files, out, "--scenario", scenario, "--mode", "performance", "--count", str(COUNT),
                         "--min-duration", "300", "--threads", "2", *extra)
    assert_ok(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loadgen"]["scenario"] == scenario and summary["loadgen"]["mode"] == "PerformanceOnly"
    assert summary["loadgen"]["result"] in ("VALID", "INVALID") and summary["loadgen"]["metric"]
    assert summary["samples_completed"] >= COUNT
    assert (out / "mlperf_log_detail.txt").is_file()
    assert f"{scenario} performance:" in result.stdout and "result: " in result.stdout
    # How quiet the machine was while LoadGen measured: recorded and printed.
    other = summary["other_load"]
    assert other["cpus"] >= 1 and other["seconds"] > 0 and 0 <= other["share"] and isinstance(other["busy"], bool)
    assert "  machine: other processes took " in result.stdout
    # The runtime as it ran, whatever onnxruntime the venv holds.
    assert summary["onnxruntime"] == {"version": onnxruntime.__version__, "providers": ["CPUExecutionProvider"]}
    if scenario == "Offline":
        assert summary["sequence_handling"].startswith("buckets 128,256,384")
        # --buckets 128,256 did not name 384: said, not added in silence
        assert summary["sequence_handling"].endswith("; 384 added to --buckets 128,256: the samples longer than 256 "
                                                     "run there")
        # Its target (which sizes the query, given a min duration) is 1.1 x a rate pass, not the warm-up's.
        rate = summary["rate_pass"]
        assert rate["samples"] >= 4 and rate["samples_per_second"] > 0
        assert summary["warmup_qps"] > 0   # the warm-up's own figure (it held the rate pass's: two names, one value)
        margin = loadgen_summary.OFFLINE_MARGIN
        assert abs(summary["settings"]["target_qps"] - rate["samples_per_second"] * margin) < 0.002
    else:
        assert summary["rate_pass"] is None
    # Server: where each sample's time in the SUT went (waiting for a worker, running), beside LoadGen's latency
    times = summary["sut_times"]
    if scenario == "Server":
        assert times["samples"] == summary["samples_completed"], times
        for part in ("waited_ms", "ran_ms", "in_sut_ms"):
            assert 0 <= times[part]["p50"] <= times[part]["p99"] <= times[part]["max"], times
        assert times["ran_ms"]["p50"] > 0 and 0 <= times["slowest_1pct"]["waited_share"] <= 1, times
        # LoadGen's latency of a sample holds its time in the SUT, and so its percentiles hold the SUT's
        for pct in ("p50", "p99"):
            assert times["in_sut_ms"][pct] <= summary["loadgen"]["latency_ms"][pct] + 0.5, (times, summary["loadgen"])
        assert "  in the SUT (ms): waited for a worker p50 " in result.stdout and "its slowest 1% waited " in \
            result.stdout, result.stdout
        # what its own run times allow on a steady machine (200 QPS over 0.3 s: enough samples, of enough lengths)
        ceiling = times["steady_ceiling"]
        assert 0 < ceiling["qps"] <= ceiling["capacity_qps"] and ceiling["bound_ms"] == 130, ceiling
        assert ceiling["workers"] == summary["workers"] and "  queueing: with these run times, a machine " in \
            result.stdout, result.stdout
    else:
        assert times is None and "in the SUT" not in result.stdout


def test_query_times_say_how_long_each_sample_waited_and_ran():
    from mlperf_bert.sut import QueryTimes
    times = QueryTimes(np.array([100, 384, 50]))
    times.issued = {1: 0.0, 2: 0.0}   # two samples handed over at 0 s
    times.done([(1, 0)], 0.0, 0.010)    # the first ran at once for 10 ms
    times.done([(2, 1)], 0.010, 0.090)  # the second waited for it, then ran 80 ms
    assert times.rows == [(0.0, 0.010, 0), (0.010, 0.080, 1)] and not times.issued
    record = times.record()
    assert record["samples"] == 2 and record["ran_ms"]["max"] == 80.0 and record["waited_ms"]["max"] == 10.0
    assert record["in_sut_ms"]["max"] == 90.0 and record["mean_length"] == 242.0
    # its slowest 1% (at least one sample): the second, 10 of its 90 ms waiting, 384 tokens
    assert record["slowest_1pct"] == {"samples": 1, "waited_share": 0.111, "ran_ms_mean": 80.0, "mean_length": 384.0}
    assert harness.sut_times_line(record) == (
        "in the SUT (ms): waited for a worker p50 5.0, p99 9.9; ran p50 45.0, p99 79.3, max 80.0; its slowest 1% "
        "waited 11% of their time and ran 80.0 ms on average (mean length 384 tokens, all 242)")
    assert QueryTimes(np.array([1])).record() is None


def test_a_model_that_cannot_be_made_dynamic_runs_at_384_and_says_so(files, tmp_path):
    result = run_harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                         "--count", "8", "--min-duration", "0", model=files.hardcoded)
    assert_ok(result)
    assert "sequence handling: fixed 384 (FALLBACK" in result.stdout


def test_an_inference_failure_ends_the_run_with_exit_1(files, tmp_path):
    # Sample 10 holds a token id beyond the vocabulary: the warm-up (samples 0-3) passes, LoadGen
    # starts, the worker fails on it, completes the rest empty, and the run ends instead of hanging.
    features = tmp_path / "features"
    features.mkdir()
    for source in files.features.iterdir():
        (features / source.name).write_bytes(source.read_bytes())
    ids = np.load(features / "input_ids.npy")
    ids[10, 5] = random_model.VOCAB_SIZE + 1
    np.save(features / "input_ids.npy", ids)
    result = run_harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                         "--count", str(COUNT), "--min-duration", "0", features=features)
    assert result.returncode == 1, result.stderr
    assert "error: inference failed: onnxruntime failed" in result.stderr and "Traceback" not in result.stderr
    assert "result: FAILED" in result.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["error"].startswith("inference failed")


@pytest.mark.parametrize("case, fragment", [
    ("no_features", "features folder not found"),
    ("no_model", "model file not found"),
    ("odd_inputs", "cannot map the inputs"),
    ("audit_config", "holds an audit.config"),
])
def test_user_errors_are_one_clear_message(files, tmp_path, case, fragment):
    out, model, features = tmp_path / "run", None, None
    if case == "no_features":
        features = tmp_path / "missing"
    elif case == "no_model":
        model = tmp_path / "missing.onnx"
    elif case == "odd_inputs":
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["tokens"], ["logits"])], "odd",
            [onnx.helper.make_tensor_value_info("tokens", onnx.TensorProto.INT64, ["batch", 384])],
            [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.INT64, ["batch", 384])])
        model = tmp_path / "odd.onnx"
        onnx.save(onnx.helper.make_model(graph), model)
    else:
        out.mkdir()
        (out / "audit.config").write_text("*.*.mode = 2\n")
    result = run_harness(files, out, "--scenario", "Offline", "--mode", "performance", "--count", "4",
                         model=model, features=features)
    # the person's request refused: the runner's EX_CONFIG, mlrun's exit 2; a model that cannot run: exit 2, a
    # failed step for mlrun (exit 1). A --model FILE that cannot be mapped never gets here through mlrun: its model
    # step refuses it first, a usage error (mlperf_bert/model_check.py, tests/test_model_sources.py)
    assert result.returncode == (78 if case in ("no_features", "audit_config") else 2), result.stderr
    assert result.stderr.startswith("error: ") and fragment in result.stderr.splitlines()[0]
    assert "Traceback" not in result.stderr


def test_a_run_reads_each_model_file_once_for_its_tensor_names(tmp_path, monkeypatch):
    """seq_plan, the harness and each onnxruntime session asked model_adapter.inspect, each parsing the whole
    file (4 times in a 2-instance run: 2 of its 13 s with BERT-Base). Once per file now; a file changed meanwhile
    is read again, and outside a run inspect is as it was."""
    from mlperf_bert import model_adapter
    path = tmp_path / "m.onnx"
    onnx.save(random_model.build(**TINY, seq=None), str(path))
    reads = []
    real = model_adapter._load_header
    monkeypatch.setattr(model_adapter, "_load_header", lambda p: reads.append(p) or real(p))
    plain = model_adapter.inspect
    with harness._inspected_once():
        first = [model_adapter.inspect(str(path)) for _ in range(4)]
        seq_plan.prepare(str(path), "auto", str(tmp_path))
        assert len(reads) == 1 and first[0].seq_len is None
        onnx.save(random_model.build(**TINY, seq=384), str(path))   # another model in its place
        assert model_adapter.inspect(str(path)).seq_len == 384 and len(reads) == 2
    assert model_adapter.inspect is plain


def test_a_question_list_holding_questions_the_model_learned_is_refused(tmp_path):
    """A trained model's own training questions given as --questions were scored (F1 21.3 against 7.5 held out), the
    figure called "5 chosen questions of the dev set"."""
    from engine.errors import UsageError
    from mlperf_bert import harness as h
    (tmp_path / "heldout.json").write_text(json.dumps({"question_ids": ["a", "b", "c"], "note": "held out"}))
    (tmp_path / "mine.json").write_text(json.dumps(["a", "x", "y"]))
    (tmp_path / "fine.json").write_text(json.dumps(["a", "c"]))
    with pytest.raises(UsageError) as error:
        h._refuse_learned_questions(str(tmp_path / "mine.json"), str(tmp_path / "heldout.json"))
    assert "2 of its 3 questions are among those the model was trained on" in error.value.message
    h._refuse_learned_questions(str(tmp_path / "fine.json"), str(tmp_path / "heldout.json"))
