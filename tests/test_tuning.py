"""Threads and instances per scenario, the Server peak search, batching of nearby lengths.

Models are tiny random BERTs (2 layers, hidden 64); LoadGen runs are short and in subprocesses.
"""
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from mlperf_bert import loadgen_summary, parallelism, random_model, seq_plan, squad_features, tuning
from mlperf_bert.model_adapter import make_seq_dynamic, probe_inputs
from mlperf_bert.ort_backend import OrtBackend, session_config
from mlperf_bert.seq_plan import SeqPlan
from mlperf_bert.sut import QaInference, run_on_instances

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
COUNT = 40
EXACT = SeqPlan(None, "exact")
LOGIT_TOLERANCE = 1e-4  # padding with masked tokens: float noise only (the -10000 mask gives exp(-10000) = 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    paths = SimpleNamespace(root=root, model=root / "model.onnx", dynamic=root / "dynamic.onnx",
                            features=root / "features")
    onnx.save(random_model.build(layers=2, hidden=64, heads=2, seq=384), paths.model)
    assert make_seq_dynamic(str(paths.model), str(paths.dynamic))
    squad_features.build(SHARED_DATA / "squad" / "dev-v1.1.json", SHARED_DATA / "bert-vocab" / "vocab.txt",
                         paths.features, max_examples=COUNT)
    return paths


def synthetic_features(lengths):
    ids, mask, segments = probe_inputs(lengths, seq_plan.FEATURE_WIDTH)
    return SimpleNamespace(input_ids=ids, input_mask=mask, segment_ids=segments, lengths=np.array(lengths))


def run_harness(files, out, *args, timeout=120):
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features),
               "--model", str(files.model), "--out", str(out), *args]
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result, json.loads((out / "summary.json").read_text())


# -- the rule and its overrides ------------------------------------------------------------------------

def test_the_rule_per_scenario():
    cores = [0, 1, 2, 3]
    for scenario in ("SingleStream", "MultiStream"):
        chosen = parallelism.choose(scenario, cores)
        assert (chosen.instances, chosen.threads, chosen.spin, chosen.cores) == (1, 4, False, ())
    offline = parallelism.choose("Offline", cores)
    assert (offline.instances, offline.threads, offline.spin) == (4, 1, False)
    assert offline.cores == ((0,), (1,), (2,), (3,)) and offline.overridden == ()
    # Server: latency first until measured; one instance per core when a full-length sample on one core
    # (4 x 10 ms, or 2 x 37-40 ms: OpenVINO's int8-bf16 BERT-Base, whose tail was lower one per core) stays within
    # 75% of the 130 ms bound, not when it does not (4 x 25 ms).
    assert parallelism.choose("Server", cores).instances == 1
    assert parallelism.choose("Server", cores, server_slowest_s=0.010, latency_bound_s=0.130).instances == 4
    for estimate in (0.0369, 0.0398, 0.041, 0.0441):   # estimates OpenVINO's int8-bf16 BERT-Base got (57-68%)
        assert parallelism.choose("Server", [0, 1], server_slowest_s=estimate, latency_bound_s=0.130).instances == 2
    slow = parallelism.choose("Server", cores, server_slowest_s=0.025, latency_bound_s=0.130)
    assert (slow.instances, slow.threads, slow.spin) == (1, 4, False)
    assert "25.0 ms x 4 cores > 75% of the 130 ms bound" in slow.rule


def test_overrides_win_and_are_recorded():
    cores = [0, 1, 2, 3]
    two = parallelism.choose("Offline", cores, instances=2)
    assert (two.instances, two.threads, two.cores, two.overridden) == (2, 2, ((0, 1), (2, 3)), ("instances",))
    assert parallelism.choose("Offline", cores, threads=2).instances == 2   # as many as fit
    assert parallelism.choose("SingleStream", cores, threads=2).instances == 1
    spun = parallelism.choose("SingleStream", cores, spin=True)
    assert spun.spin is True and spun.record()["overridden"] == ["spin"]
    # one thread per instance (Offline's rule): no pool thread to spin, recorded "spinning on" with the same CPU time
    alone = parallelism.choose("Offline", cores, spin=True)
    assert alone.spin is False and alone.record()["overridden"] == ["spin"]
    assert alone.rule.endswith("; --spin does nothing with 1 thread per instance: no pool threads to spin")
    # Server with --instances: the harness makes no estimate, and the rule says so (it said "one instance on all 2
    # cores (latency first: not measured)" beside a run of 2 instances)
    given = parallelism.choose("Server", [0, 1], instances=2, threads=1)
    assert (given.instances, given.threads, given.overridden) == (2, 1, ("instances", "threads"))
    assert given.rule == "Server: --instances given, so the rule's estimate was not made"
    eight = parallelism.choose("Offline", cores, instances=8)
    assert eight.cores == () and eight.record()["available"] == 4  # oversubscribed: not pinned, and said so
    assert session_config(2, False, (2, 3)) == {"session.intra_op.allow_spinning": "0",
                                                "session.intra_op_thread_affinities": "4"}  # 1-based ids
    assert session_config(1, None, (0,)) == {}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_the_rule_makes_no_more_sessions_than_memory_holds():
    """Each onnxruntime session holds its own weights: a BERT-Large Offline run on a many-core machine made one
    per core and was killed by the kernel."""
    cores = list(range(8))
    capped = parallelism.choose("Offline", cores, fit=3)
    assert (capped.instances, capped.threads) == (3, 2) and capped.overridden == ()
    assert capped.rule == "Offline: one instance per core (8); 3 of them fit in the memory available"
    assert parallelism.choose("Offline", cores, fit=8).rule == "Offline: one instance per core (8)"
    assert parallelism.choose("Offline", cores, fit=1).threads == 8   # one session on all the cores
    assert parallelism.instances_in_memory(1_000_000_000, 25e9) == 17   # 1.22 GB a session, 15% kept
    assert parallelism.instances_in_memory(1_000_000_000, 0.5e9) == 1   # one is the run's own, whatever the estimate
    assert parallelism.instances_in_memory(1_000_000_000, None) is None
    assert parallelism.memory_available() > 0


def test_more_instances_than_memory_holds_are_refused_before_any_is_made(files, tmp_path):
    size = files.dynamic.stat().st_size
    if 4096 * parallelism.session_bytes(size) <= parallelism.memory_available():
        pytest.skip("this machine's memory holds 4096 sessions of the tiny model")
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features), "--model",
               str(files.model), "--out", str(tmp_path / "run"), "--scenario", "Offline", "--mode", "performance",
               "--count", "8", "--min-duration", "0", "--instances", "4096"]
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 78, result.stdout + result.stderr   # mlrun's exit 2 (the runner's EX_CONFIG)
    assert "--instances=4096: each onnxruntime session holds its own copy of the model's weights" in result.stderr
    assert "GB of memory is available, 15% of it kept for the run: " in result.stderr
    assert "hint: --instances=" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_the_harness_cannot_write_is_named_not_a_traceback(files, tmp_path):
    """A full runs disk when summary.json was written: a traceback, twice, and 'exited with code 1'."""
    (tmp_path / "run" / "summary.json").mkdir(parents=True)   # unwritable as a file, as a full disk's would be
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features), "--model",
               str(files.model), "--out", str(tmp_path / "run"), "--scenario", "SingleStream", "--mode", "performance",
               "--count", "4", "--min-duration", "0"]
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 78, result.stdout + result.stderr   # mlrun's exit 2 (the runner's EX_CONFIG)
    assert f"error: cannot use {tmp_path / 'run' / 'summary.json'}: Is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_write_that_fails_in_write_names_its_file():
    """A full disk fails in write(), whose OSError names no file: 'cannot use: No space left on device'."""
    from mlperf_bert import harness
    with pytest.raises(OSError) as e:
        harness._write_text("/dev/full", "x" * 10000)
    assert e.value.filename == "/dev/full"


@pytest.mark.slow   # a Server run of its own
def test_server_with_threads_alone_keeps_the_measured_rule(files, tmp_path):
    """--threads=1 in Server ran one instance (the rule left 'not measured') and a core idle; Offline kept two."""
    cores = len(os.sched_getaffinity(0))
    result, summary = run_harness(files, tmp_path / "run", "--scenario", "Server", "--mode", "performance",
                                  "--count", "16", "--min-duration", "0", "--threads", "1")
    par = summary["parallelism"]
    assert par["threads"] == 1 and par["overridden"] == ["threads"]
    assert par["instances"] == cores and par["rule"].startswith(f"Server: one instance per core ({cores})"), par


def test_instances_run_at_once_each_on_its_own_core(files):
    """Two real sessions, one per core: each worker runs on its pinned core, and their runs overlap in time."""
    seen = []

    class Recording(OrtBackend):
        def run(self, *arrays):
            started = time.perf_counter()
            result = super().run(*arrays)
            time.sleep(0.02)  # wide enough that two workers pulling at once must overlap
            seen.append((threading.get_ident(), tuple(sorted(os.sched_getaffinity(0))), started,
                         time.perf_counter()))
            return result

    cores = parallelism.available_cores()[:2]
    chosen = parallelism.choose("Offline", cores)
    features = synthetic_features([40, 60, 80, 100, 120, 140, 160, 180])
    base = QaInference(None, features, EXACT)
    views = [base.on(Recording(str(files.dynamic), chosen.threads, spin=chosen.spin, cores=pin))
             for pin in chosen.cores]
    before = os.sched_getaffinity(0)
    run_on_instances(views, chosen.cores, range(8))
    assert os.sched_getaffinity(0) == before  # the caller's thread is left as it was
    masks = {ident: mask for ident, mask, _, _ in seen}
    assert len(seen) == 8 and sorted(masks.values()) == [(cores[0],), (cores[1],)]
    first, second = ([(a, b) for ident, _, a, b in seen if ident == key] for key in masks)
    assert any(a1 < b2 and a2 < b1 for a1, b1 in first for a2, b2 in second), "the instances never overlapped"


@pytest.mark.slow  # about 2.4 s on the 2-core EPYC
def test_a_run_records_its_parallelism_and_batching(files, tmp_path):
    result, summary = run_harness(files, tmp_path / "run", "--scenario", "Offline", "--mode", "performance",
                                  "--count", "16", "--min-duration", "0", "--instances", "2", "--threads", "1",
                                  "--no-spin", "--batch-size", "4", "--batch-pad", "32")
    par = summary["parallelism"]
    assert (par["instances"], par["threads"], par["spin"]) == (2, 1, False)
    assert summary["instances"] == 2   # beside threads: a sweep's `- (2)` for an input left to the rule
    assert par["overridden"] == ["instances", "threads", "spin"] and par["rule"].startswith("Offline")
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(par["cores"]) == 2 and not set(par["cores"][0]) & set(par["cores"][1])
    batching = summary["batching"]
    assert batching["batch_size"] == 4 and batching["pad_tokens"] == 32 and batching["batches"] >= 4
    assert 1 <= batching["mean_batch"] <= 4 and 0 <= batching["padding_fraction"] < 1
    assert batching["rule"] == "given" and batching["overridden"] == ["batch_size", "batch_pad"]
    assert "parallelism: 2 instance(s) x 1 thread(s), spinning off" in result.stdout
    assert "batching: mean batch" in result.stdout and "(pad <= 32; set by --batch_size)" in result.stdout
    single, default = run_harness(files, tmp_path / "single", "--scenario", "SingleStream", "--mode", "performance",
                                  "--count", "8", "--min-duration", "0", "--batch-size", "2")
    assert "SingleStream sends one sample per query, run as it comes: --batch_size=2 does nothing there" \
        in single.stdout   # was unsaid (and in Server: mean batch 1.0 of 4)
    assert default["parallelism"]["instances"] == 1 and default["parallelism"]["overridden"] == []
    assert default["parallelism"]["threads"] == len(os.sched_getaffinity(0))
    # what ran at the top (a diff said `ran.batch_size: 1 -> 2` of runs that both ran one sample per call), what
    # was asked in `batching`
    assert default["batch_size"] == 1 and default["batch_pad"] == 0
    assert default["batching"]["batch_size"] == 2 and default["batching"]["overridden"] == ["batch_size"]
    cores = len(os.sched_getaffinity(0))
    crowded, padded = run_harness(files, tmp_path / "crowded", "--scenario", "Offline", "--mode", "performance",
                                  "--count", "8", "--min-duration", "0", "--instances", str(cores + 1),
                                  "--batch-pad", "8")
    assert f"    {cores + 1} threads on the {cores} cores this run may use: not pinned" in crowded.stdout
    # a pad alone where the rule runs one sample per call: recorded as given, and said to do nothing
    assert padded["batch_size"] == 1 and padded["batching"]["pad_tokens"] == 8
    assert "batching: --batch_pad=8 does nothing here (rule: Offline, onnxruntime fp32: one sample per call (the " \
        "rule batches OpenVINO's int8, bf16 and int8-bf16 on AMX alone" in crowded.stdout
    assert "not pinned" not in result.stdout
    # --threads alone: the instances dropped from the rule's (one per core) to what fits, said so (a user's trial)
    alone, summary = run_harness(files, tmp_path / "alone", "--scenario", "Offline", "--mode", "performance",
                                 "--count", "8", "--min-duration", "0", "--threads", str(cores + 1))
    assert summary["parallelism"]["instances"] == 1
    # left out: the batching rule's (one sample per call but for OpenVINO's AMX precisions), recorded as the rule's
    assert summary["batch_size"] == 1 and summary["batching"]["overridden"] == [] and summary["batching"]["rule"] \
        .startswith("Offline, onnxruntime fp32: one sample per call") and "batching:" not in alone.stdout
    # in the rule's own text (summary.json, a sweep's report): it said "one instance per core (2)" beside 1
    assert (f"Offline: one instance per core ({cores}); --threads={cores + 1}: 1 instance(s) of {cores + 1} on the "
            f"{cores} cores; set by --threads)") in alone.stdout, alone.stdout
    assert summary["parallelism"]["rule"].endswith(f"--threads={cores + 1}: 1 instance(s) of {cores + 1} on the "
                                                   f"{cores} cores")


# -- batching of nearby lengths -------------------------------------------------------------------

def test_batches_of_nearby_lengths():
    lengths = [90, 50, 60, 52, 91]
    assert EXACT.batches(lengths, 4) == [[1], [3], [2], [0], [4]]   # pad 0: equal lengths only, as before
    assert EXACT.batches(lengths, 4, pad=4) == [[1, 3], [2], [0, 4]]
    assert EXACT.batches(lengths, 4, pad=10) == [[1, 3, 2], [0, 4]]   # within 10 of the batch's first
    assert EXACT.batches(lengths, 2, pad=100) == [[1, 3], [2, 0], [4]]


def test_the_chunks_of_several_workers_are_whole_batches():
    """339 samples a chunk in batches of 8: every chunk ended in a partial batch (Offline, several instances)."""
    backend = SimpleNamespace(io=SimpleNamespace(input_dtype=np.int64))
    inference = QaInference(backend, synthetic_features([10 + i % 300 for i in range(10833)]), EXACT, batch_size=8)
    chunks = inference.chunks(list(range(10833)), workers=4)
    assert all(len(chunk) % 8 == 0 for chunk in chunks[:-1]) and sum(map(len, chunks)) == 10833
    assert len(chunks) >= 4 * 7   # still about CHUNKS_PER_WORKER each


def test_padding_to_a_batch_keeps_each_answer(files):
    lengths = [30, 33, 37, 120, 126, 200]
    features = synthetic_features(lengths)
    backend = OrtBackend(str(files.dynamic))
    alone = {p: r for batch in QaInference(backend, features, EXACT).responses(range(6)) for p, r in batch}
    padded = QaInference(backend, features, EXACT, batch_size=4, batch_pad=10)
    together = {p: r for batch in padded.responses(range(6)) for p, r in batch}
    for index, length in enumerate(lengths):
        assert together[index].shape == (length, 2) and together[index].flags.c_contiguous
        np.testing.assert_allclose(together[index], alone[index], atol=LOGIT_TOLERANCE, rtol=0)
        assert (together[index].argmax(axis=0) == alone[index].argmax(axis=0)).all()
    # [30, 33, 37] at 37 and [120, 126] at 126 and [200]: 546 real tokens of 3 * 37 + 2 * 126 + 200 = 563 run
    assert padded.stats.record() == {"batches": 3, "mean_batch": 2.0, "padding_fraction": round(1 - 546 / 563, 4)}
    # Buckets pad too: the same samples at buckets 128/256 run 5 * 128 + 256 tokens (was: 0.0%, the rows' own
    # lengths taken for real ones)
    bucketed = QaInference(backend, features, SeqPlan((128, 256), "buckets"), batch_size=4)
    for _ in bucketed.responses(range(6)):
        pass
    assert bucketed.stats.record()["padding_fraction"] == round(1 - 546 / (5 * 128 + 256), 4)


# -- the Server peak search --------------------------------------------------------------------------

EARLY_STOPPING_QUERIES = 459  # what LoadGen asked for at p99 with no query over the bound


def fake_summary(valid, latency_missed, processed, need_more):
    """A LoadGen Server summary in loadgen_summary.parse's form."""
    if valid:
        return {"scenario": "Server", "result": "VALID", "reasons": [], "latency_ms": {"p99": 50.0}, "metric": {}}
    reasons = (["Performance constraints satisfied: NO"] if latency_missed else []) + [
        "Early stopping satisfied: NO", "Run unsuccessful.", f"Processed {processed} queries.",
        f"Would need to run at least {need_more} more queries, with the run being successful if every "
        "additional query were under latency."]
    return {"scenario": "Server", "result": "INVALID", "reasons": reasons, "latency_ms": {"p99": 500.0},
            "metric": {}}


def fake_server(peak):
    """Latency grows with load: above `peak` QPS the bound is missed; below it a run is VALID only with
    enough queries for early stopping."""
    calls = []

    def run_fn(qps, queries):
        calls.append((qps, queries))
        if qps > peak:
            return fake_summary(False, True, queries, 20000)
        if queries < EARLY_STOPPING_QUERIES:
            return fake_summary(False, False, queries, EARLY_STOPPING_QUERIES - queries)
        return fake_summary(True, False, queries, 0)
    return run_fn, calls


@pytest.mark.parametrize("start", [10.0, 100.0, 1000.0])
def test_find_peak_brackets_the_boundary_within_its_tolerance(start):
    run_fn, calls = fake_server(peak=137.0)
    search = tuning.find_server_peak(run_fn, start, tolerance=0.05, min_queries=64)
    assert 137.0 / 1.05 <= search.qps <= 137.0 and search.upper > 137.0
    assert search.upper / search.qps <= 1.05
    # Too few queries is never read as valid or as too high: the same target runs again, as long as asked,
    # and every later run starts with what early stopping asked for.
    for trial in search.trials:
        if trial["min_query_count"] < EARLY_STOPPING_QUERIES and trial["target_qps"] <= 137.0:
            assert trial["verdict"] == tuning.TOO_FEW
    assert all(queries == EARLY_STOPPING_QUERIES for _, queries in calls[calls.index(
        next(c for c in calls if c[1] == EARLY_STOPPING_QUERIES)):])
    assert len(search.trials) <= 24


def test_a_challenge_stops_at_once_where_the_other_target_is_not_valid_and_resumes_from_there():
    """The second layout's whole search (341-827 s on the Xeon) only decided which layout was faster. Challenging
    the first's target: one target (and its early-stopping reruns) where it cannot beat it; where it can, its own
    peak as a plain search finds it; resumed after a loss, its peak without a run above the lost target."""
    slower, calls = fake_server(peak=40.0)
    lost = tuning.find_server_peak(slower, 100.0, tolerance=0.05, min_queries=64, challenge=50.0)
    assert lost.lost_challenge and lost.qps is None and lost.upper == 50.0 and lost.challenge == 50.0
    assert {qps for qps, _ in calls} == {50.0} and "not valid at 50 QPS, the other layout's target" in lost.note
    plain_runs = len(tuning.find_server_peak(fake_server(peak=40.0)[0], 100.0, tolerance=0.05, min_queries=64).trials)
    assert len(lost.trials) < plain_runs, (len(lost.trials), plain_runs)
    calls.clear()
    tuning.find_server_peak(slower, 100.0, tolerance=0.05, min_queries=64, resume=lost)
    assert not lost.lost_challenge and 40.0 / 1.05 <= lost.qps <= 40.0 and lost.found == lost.qps and not lost.note
    assert max(qps for qps, _ in calls) < 50.0 and lost.trials[0]["target_qps"] == 50.0   # the lost run kept
    faster, calls = fake_server(peak=60.0)
    won = tuning.find_server_peak(faster, 100.0, tolerance=0.05, min_queries=64, challenge=50.0)
    assert not won.lost_challenge and 60.0 / 1.05 <= won.qps <= 60.0 and calls[0][0] == 50.0


def test_find_peak_when_early_stopping_asks_too_much_or_nothing_is_valid():
    def run_fn(qps, queries):
        return fake_summary(False, False, queries, 100000)  # never enough: undecidable
    search = tuning.find_server_peak(run_fn, 50.0, max_queries=4096, max_runs=6)
    assert search.qps is None and "no target" in search.note
    assert all(trial["verdict"] == tuning.TOO_HIGH and "more than the 4096 allowed" in trial["reason"]
               for trial in search.trials)


def test_the_full_length_check_steps_down_until_valid():
    run_fn, _ = fake_server(peak=100.0)
    checks = []

    def check_fn(qps, queries):
        assert queries == EARLY_STOPPING_QUERIES  # what the search learned
        checks.append(qps)
        return fake_summary(qps <= 92.0, qps > 92.0, 50000, 0)  # the long run is a little stricter
    search = tuning.find_server_peak(run_fn, 80.0, tolerance=0.05, check_fn=check_fn)
    assert search.checked_valid and search.qps <= 92.0 and len(checks) >= 2
    assert [check["verdict"] for check in search.checks][-1] == tuning.VALID
    assert search.checked_qps == round(search.qps, 3)

    # A check that completed far fewer samples per second than its target (a backlog, not a tail): the next
    # target starts below what it completed, not one tolerance step down.
    sustained = []

    def backlog_fn(qps, queries):
        sustained.append(qps)
        summary = fake_summary(qps <= 60.0, qps > 60.0, 50000, 0)
        summary["metric"] = {tuning.COMPLETED: min(qps, 62.0)}
        return summary
    search = tuning.find_server_peak(run_fn, 80.0, tolerance=0.05, check_fn=backlog_fn)
    assert sustained[1] == pytest.approx(62.0 * 0.95) and search.checked_valid and len(sustained) == 2
    assert search.checks[0]["completed_qps"] == 62.0

    # A check too short for early stopping runs once more with the queries it asked for (was: given up at once,
    # 'lengthen it', though the queries needed were known); still too short after that, its tail sits at the bound:
    # it steps down as for a miss (it gave up, with a VALID target a step lower), each check as long as the last
    # asked; undecided to the end of the checks' budget, it says so.
    asked = []

    def too_short(qps, queries):
        asked.append((round(qps, 3), queries))
        return fake_summary(False, False, queries, 100)   # its tail keeps asking for 100 more
    short = tuning.find_server_peak(run_fn, 80.0, check_fn=too_short)
    found = round(short.qps, 3)
    assert asked[:3] == [(found, EARLY_STOPPING_QUERIES), (found, EARLY_STOPPING_QUERIES + 100),
                         (round(found * 0.95, 3), EARLY_STOPPING_QUERIES + 200)], asked
    assert short.checked_valid is False and len(short.checks) == 4 and "the checks' budget was spent" in short.note
    near = []

    def near_bound(qps, queries):   # at the found target early stopping always wants more; 5% lower it is met
        near.append(round(qps, 3))
        return fake_summary(qps < short.qps * 0.99, False, queries, 0 if qps < short.qps * 0.99 else 421)
    stepped = tuning.find_server_peak(run_fn, 80.0, check_fn=near_bound)
    assert stepped.checked_valid and [c["verdict"] for c in stepped.checks] == [tuning.TOO_FEW] * 2 + [tuning.VALID]
    assert near == [found, found, round(found * 0.95, 3)] and stepped.checked_qps == round(found * 0.95, 3)
    lengthened = tuning.find_server_peak(run_fn, 80.0, check_fn=lambda qps, queries: fake_summary(
        queries >= 600, False, queries, 600 - queries))
    assert lengthened.checked_valid and [c["verdict"] for c in lengthened.checks] == [tuning.TOO_FEW, tuning.VALID]
    # the budget spent on a check that only needed more queries: it ended INVALID with no note at all
    seq = iter([fake_summary(False, True, 600, 0)] * 3 + [fake_summary(False, False, 600, 50)])
    spent = tuning.find_server_peak(run_fn, 80.0, check_fn=lambda qps, queries: next(seq), check_retries=3)
    assert spent.checks[-1]["verdict"] == tuning.TOO_FEW and "the checks' budget was spent" in spent.note


def test_checks_that_failed_while_other_processes_were_busy_say_so():
    run_fn, _ = fake_server(peak=100.0)
    loads = iter([{"busy": False, "share": 0.01}, {"busy": True, "share": 0.2}] + [{"busy": False}] * 10)

    def check_fn(qps, queries):   # every full-length check misses the bound; the second met a busy machine
        return {**fake_summary(False, True, 50000, 0), "other_load": next(loads)}
    search = tuning.find_server_peak(run_fn, 80.0, tolerance=0.05, check_fn=check_fn, check_retries=2)
    assert search.checked_valid is False and len(search.checks) == 3
    # what the run ran at is the last check's target, not the search's (it printed 950.7 of a run at 458.2)
    assert search.checked_qps == search.checks[-1]["target_qps"] < search.qps
    assert search.checks[1]["other_load"] == {"busy": True, "share": 0.2}
    assert "no full-length check was VALID; other processes were busy during check 2 " in search.note
    assert "quiet machine" in search.note
    # Quiet checks that fail say nothing of other processes; runs without the record (None) neither.
    quiet = tuning.find_server_peak(run_fn, 80.0, check_fn=lambda qps, _: fake_summary(False, True, 50000, 0))
    assert quiet.note.endswith("no full-length check was VALID") and quiet.checks[0]["other_load"] is None


def test_classify_reads_a_real_loadgen_summary(tmp_path):
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text("Scenario : Server\nMode     : PerformanceOnly\nCompleted samples per second    : 689.15\n"
                    "Result is : INVALID\n  Performance constraints satisfied : NO\n  Min duration satisfied : Yes\n"
                    "  Min queries satisfied : Yes\n  Early stopping satisfied: NO\nRecommendations:\n"
                    " * Reduce target QPS to improve latency.\nEarly Stopping Result:\n * Run unsuccessful.\n"
                    " * Processed 2572 queries.\n * Would need to run at least 256897 more queries,\n"
                    " with the run being successful if every additional\n query were under latency.\n")
    assert tuning.classify(loadgen_summary.parse(path), 4096)[0] == tuning.TOO_HIGH
    text = path.read_text().replace("Performance constraints satisfied : NO", "Performance constraints satisfied : Yes")
    path.write_text(text.replace("256897", "419").replace("2572", "40"))
    assert tuning.classify(loadgen_summary.parse(path), 4096)[:2] == (tuning.TOO_FEW, 459)


# (processed, "would need at least N more") of real LoadGen Server logs at p99 (OpenVINO int8-bf16 BERT-Base's
# --find-peak on the Xeon), and the late queries they say
LOADGEN_EARLY_STOPPING = [(325, 134, 0), (459, 203, 1), (550, 112, 1), (662, 176, 2), (838, 163, 3),
                          (1001, 306, 5), (1307, 146, 6), (1157, 987, 11), (1453, 1086, 14), (2539, 259, 16),
                          (2144, 781, 17), (2798, 1614, 29)]


@pytest.mark.slow   # 10 s on the EPYC: out of the quick loop
def test_early_stopping_counts_as_loadgens_logs_do():
    for processed, more, late in LOADGEN_EARLY_STOPPING:
        assert tuning.early_stopping_queries(late) == processed + more
        assert tuning.late_queries(processed, more) == late
    assert tuning.late_queries(325, 135) is None   # a total no count of late queries gives: another rule
    assert tuning.late_queries(1397, 143698) is None   # an overloaded run's: not worth counting
    assert tuning.early_stopping_queries(0, percentile=90.0) < tuning.early_stopping_queries(0)
    # a share of late queries under 1% passes given enough queries, one at 1% or over never
    assert tuning.queries_to_pass(0.004, 0) == tuning.early_stopping_queries(6) == 1453 and \
        0.004 * tuning.early_stopping_queries(5) > 5
    assert tuning.queries_to_pass(0.01, 0, most=10**5) is None and tuning.queries_to_pass(0.008, 0) is None


@pytest.mark.parametrize("processed, more, late, expected", [
    (40, 419, 0, 459),      # nothing late in 40 queries: LoadGen's least
    (550, 112, 1, 1307),    # 1 late in 550 (2 taken): 1307 queries pass at 0.36% (LoadGen asked for 662)
    (662, 176, 2, 1736),
    (1157, 987, 11, 4096),  # 12 of 1157 is over 1%: the most allowed, the run that decides
    (100, 562, 1, 662),     # one late query of 100: no more than 4x its queries, LoadGen's least above that
])
def test_a_run_too_short_for_early_stopping_runs_again_with_what_its_share_of_late_queries_needs(
        processed, more, late, expected):
    verdict, queries, reason = tuning.classify(fake_summary(False, False, processed, more), 4096)
    assert (verdict, queries) == (tuning.TOO_FEW, expected)
    assert f"{late} of its {processed} queries over the bound, {expected} queries next" in reason
    # the full-length check takes LoadGen's own count (no budget to cap a share's estimate), and a count no number
    # of late queries gives (another LoadGen's rule) too
    assert tuning.classify(fake_summary(False, False, processed, more), math.inf)[:2] == (tuning.TOO_FEW,
                                                                                           processed + more)
    assert tuning.classify(fake_summary(False, False, processed, more + 1), 4096)[1] == processed + more + 1


def aimed_server(peak, aim=lambda qps: 137.0, ceiling=1.3):
    """fake_server whose runs say where the queue model puts the peak (the harness's sut_times.steady_ceiling):
    `aim(qps)` matched to a run's p99, none for a run at over twice the peak (overloaded); the steady machine's
    ceiling, `ceiling` x the peak."""
    run_fn, calls = fake_server(peak)

    def aimed(qps, queries):
        matched = {"slower": 1.1, "qps": aim(qps)} if qps < 2 * peak else None
        return {**run_fn(qps, queries), "steady_ceiling": {"qps": ceiling * peak, "matched": matched}}
    return aimed, calls


@pytest.mark.parametrize("start", [50.0, 300.0, 1000.0])
def test_the_search_aims_where_the_queue_model_puts_the_peak_and_stops_trusting_a_wrong_one(start):
    plain = tuning.find_server_peak(fake_server(137.0)[0], start, tolerance=0.05, min_queries=459)
    aimed = tuning.find_server_peak(aimed_server(137.0)[0], start, tolerance=0.05, min_queries=459)
    for search in (plain, aimed):
        assert 137.0 / 1.05 <= search.qps <= 137.0 < search.upper <= search.qps * 1.05
    assert len(aimed.trials) <= 4 < len(plain.trials), (aimed.trials, plain.trials)
    assert aimed.trials[1]["ceiling_qps"] == pytest.approx(1.3 * 137) and aimed.trials[-1]["aim_qps"] == 137.0
    assert aimed.trials[0]["aimed_at"] is None and aimed.trials[-1]["aimed_at"] == 137.0
    assert all(trial["aimed_at"] is None for trial in plain.trials)
    # an aim a little off (3% high, then low) still takes fewer runs than none
    wobbly = tuning.find_server_peak(aimed_server(137.0, aim=lambda qps: 137.0 * (1.03 if qps > 137 else 0.97))[0],
                                     start, tolerance=0.05, min_queries=459)
    assert 137.0 / 1.05 <= wobbly.qps <= 137.0 and len(wobbly.trials) < len(plain.trials)
    # An aim three times too high or too low: the run it sent far off, two on the wrong side of it, then plain
    # bracketing (a model that keeps saying "just above the highest valid" would otherwise climb a tolerance step
    # a run)
    for wrong in (lambda qps: 3 * 137.0, lambda qps: 137.0 / 3):
        search = tuning.find_server_peak(aimed_server(137.0, aim=wrong)[0], start, tolerance=0.05, min_queries=459)
        assert 137.0 / 1.05 <= search.qps <= 137.0 and len(search.trials) <= len(plain.trials) + 3


def test_a_miss_goes_down_to_just_under_the_steady_ceiling_where_that_is_below_half():
    """An overloaded first run (no p99 to match) says the steady machine's ceiling: where it is below half the
    target, the next run goes just under it, not to half (a model of 384-token samples at half the bound)."""
    run_fn, calls = aimed_server(20.0, aim=lambda qps: 20.0, ceiling=1.2)
    tuning.find_server_peak(run_fn, 200.0, tolerance=0.05, min_queries=459)
    assert calls[1][0] == pytest.approx(24.0 * 0.975)
    run_fn, calls = aimed_server(137.0, ceiling=4.0)   # a ceiling above half: halved, as without one
    tuning.find_server_peak(run_fn, 1000.0, tolerance=0.05, min_queries=459)
    assert calls[1][0] == 500.0


@pytest.mark.slow
def test_one_sample_scenarios_run_one_sample_per_call_whatever_the_batch_size():
    """Server's warm-up ran batches of --batch_size, so its target was half of a rate its one-sample queries never
    reach (and the summary said --batch_size did nothing there); MultiStream's queries of 8 and Offline batch."""
    from mlperf_bert import batching, harness
    given = batching.choose("Server", "openvino", "int8", size=4, pad=16)
    for scenario, expected in (("Server", (1, 0)), ("SingleStream", (1, 0)), ("MultiStream", (4, 16)),
                               ("Offline", (4, 16))):
        assert harness._per_call(SimpleNamespace(scenario=scenario, batching=given)) == expected, scenario
    alone = batching.choose("Offline", "openvino", "fp32", pad=16, flags=set())   # a pad at one sample: none
    assert harness._per_call(SimpleNamespace(scenario="Offline", batching=alone)) == (1, 0)


def test_a_server_only_option_stays_out_of_find_peaks_singlestream_and_offline_runs(tmp_path, monkeypatch):
    """deepsparse --streams went into find-peak's SingleStream run, which refused it: the search always failed."""
    from mlperf_bert import harness
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server", "--mode",
                               "performance", "--backend", "deepsparse", "--streams", "2", "--find-peak"])
    seen = []
    monkeypatch.setattr(tuning, "run_harness", lambda argv, out: seen.append(argv) or {})
    tuning.short_run(args, tmp_path / "s", "SingleStream", 10, 100, target_latency=None, target_qps=None)
    tuning.short_run(args, tmp_path / "o", "Offline", 10, 100, target_latency=None)
    tuning.short_run(args, tmp_path / "v", "Server", 10, 100, target_qps=5)
    assert "--streams" not in seen[0] and "--streams" not in seen[1] and "--streams" in seen[2]
    for argv in seen:   # each one a command line the harness takes
        harness.parse_args(argv + ["--out", "x"])


def test_a_short_search_run_sets_its_own_length_over_the_user_confs(tmp_path, monkeypatch):
    """A user.conf's min_duration made every trial as long as a full run (its line won over the trial's)."""
    from mlperf_bert import harness
    conf = tmp_path / "mine.conf"
    conf.write_text("bert.Server.min_duration = 600000\n*.*.min_query_count = 5000\nbert.Server.max_duration = 9000\n")
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server", "--mode",
                               "performance", "--find-peak", "--user-conf", str(conf)])
    monkeypatch.setattr(tuning, "run_harness", lambda argv, out: {})
    tuning.short_run(args, tmp_path / "t", "Server", 64, 500, target_qps=5)
    written = (tmp_path / "t" / "search.conf").read_text()
    assert "600000" not in written and "5000" not in written and "bert.Server.max_duration = 9000" in written
    assert written.endswith("bert.Server.min_query_count = 64\n")


def test_find_peak_searches_both_layouts_only_where_the_rule_would_choose(monkeypatch):
    """One instance on all cores and one per core, each searched (the rule's estimate chose one instance on both
    cores where one per core held the bound at 52 QPS); the person's --instances or --threads, a backend without
    instances, or one core: the run's own layout alone."""
    from mlperf_bert import harness
    monkeypatch.setattr(parallelism, "available_cores", lambda: [0, 1, 2, 3])

    def layouts(*extra, model="m"):
        return harness._peak_layouts(harness.parse_args(
            ["--features", "f", "--model", model, "--out", "o", "--scenario", "Server", "--mode", "performance",
             "--find-peak", *extra]))
    monkeypatch.setattr(parallelism, "instances_in_memory", lambda size, available: None)
    monkeypatch.setattr(harness.os.path, "getsize", lambda path: 100)
    assert layouts() == [(1, 4), (4, 1)] and layouts("--backend", "openvino") == [(1, 4), (4, 1)]
    for given in (["--instances", "2"], ["--threads", "1"], ["--backend", "deepsparse"]):
        assert layouts(*given) == [None], given
    monkeypatch.setattr(parallelism, "instances_in_memory", lambda size, available: 2)   # 4 sessions do not fit
    assert layouts() == [(1, 4)] and layouts("--backend", "openvino") == [(1, 4), (4, 1)]   # streams share weights
    monkeypatch.setattr(parallelism, "available_cores", lambda: [0])
    assert layouts() == [None]


def mocked_find_peak(tmp_path, monkeypatch, check_run, search=True, alone_p99=60.0):
    """harness.find_peak over two layouts whose searches found 50.2 QPS (1x2) and 62.3 (2x1), each check answered by
    check_run(layout, qps) -> LoadGen summary; (its summary, the checks run as (layout, qps)). alone_p99: the
    SingleStream run's (60 ms: x 2 cores over 75% of the 130 ms bound, so 1x2 is searched first)."""
    from mlperf_bert import harness
    monkeypatch.setattr(parallelism, "available_cores", lambda: [0, 1])
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", str(tmp_path), "--scenario", "Server",
                               "--mode", "performance", "--find-peak", "--count", "64", "--backend", "openvino"])
    monkeypatch.setattr(tuning, "short_run", lambda *a, **k: {"loadgen": {"latency_ms": {"p99": alone_p99}, "metric": {
        "Samples per second": 70.0}}, "warmup_qps": 70.0})
    if search:   # else the caller's
        monkeypatch.setattr(tuning, "harness_run_fn", lambda args, folder, trial_ms, **changes:
                            changes["searched_layout"])
        found = {"1x2": 50.2, "2x1": 62.3}
        monkeypatch.setattr(tuning, "find_server_peak", lambda layout, start, **k: tuning.PeakSearch(
            found[layout], found[layout] * 1.05, 0.05, trials=[{}] * 7, queries=459, found=found[layout]))
    checked = []

    def check(args, run_dir, qps, queries, **changes):
        checked.append((changes["searched_layout"], round(qps, 1)))
        return {**check_run(changes["searched_layout"], qps), "other_load": None}
    monkeypatch.setattr(tuning, "check_run", check)
    (tmp_path / "summary.json").write_text(json.dumps({
        "scenario": "Server", "mode": "performance", "sequence_handling": "exact", "backend": "openvino",
        "batch_size": 1, "batching": {"batch_size": 1, "pad_tokens": 0, "rule": "r", "overridden": []},
        "parallelism": {"instances": 1, "threads": 2, "spin": False, "rule": "x", "overridden": [], "available": 2},
        "short": True}))
    return harness.find_peak(args), checked


VALID_CHECK = {"result": "VALID", "reasons": [], "latency_ms": {"p99": 100.0}, "metric": {}}
MISSED_CHECK = {"result": "INVALID", "reasons": ["Performance constraints satisfied: NO"], "latency_ms": {"p99": 170.0},
                "metric": {}}


def test_find_peak_checks_the_next_layout_when_every_check_of_the_faster_one_misses(tmp_path, monkeypatch):
    """Short runs' p99s are noisy: a search found 62.3 QPS one per core against 50.2 on both cores, and every check
    of 62.3 stepped down missing. The slower layout's target is checked next, and the run says which ran and why."""
    summary, checked = mocked_find_peak(tmp_path, monkeypatch,
                                        lambda layout, qps: VALID_CHECK if layout == "1x2" else MISSED_CHECK)
    assert [layout for layout, _ in checked] == ["2x1"] * 4 + ["1x2"] and checked[-1] == ("1x2", 50.2), checked
    peak = summary["find_peak"]
    assert peak["checked_valid"] and peak["checked_qps"] == 50.2
    assert [(item["checks"], item["checked_valid"]) for item in peak["layouts"]] == [(1, True), (4, False)]
    assert summary["parallelism"]["rule"].startswith(
        "Server: 1 instance(s) x 2 thread(s), --find-peak's checks of 2 instance(s) x 1 thread(s) found none VALID "
        "(QPS found: 1 instance(s) x 2 thread(s) 50.200; 2 instance(s) x 1 thread(s) 62.300)"), summary["parallelism"]
    assert "14 short runs over 2 layouts" in summary["how_it_ran"][-1], summary["how_it_ran"]


def test_a_faster_layout_whose_checks_stepped_down_is_still_said_to_have_found_its_searchs_target(
        tmp_path, monkeypatch):
    """The faster layout's checks stepped down to a VALID target below the other layout's found: the rule said
    "QPS found: 1x2 <stepped-down>; 2x1 <the other's>" beside "the faster layout" (a busy machine's test run)."""
    backlog = {**MISSED_CHECK, "metric": {tuning.COMPLETED: 45.0}}   # it completed 45 a second: the next at 42.75
    summary, checked = mocked_find_peak(tmp_path, monkeypatch,
                                        lambda layout, qps: VALID_CHECK if qps < 45 else backlog)
    assert checked == [("2x1", 62.3), ("2x1", 42.8)], checked
    peak = summary["find_peak"]
    assert peak["checked_valid"] and peak["qps"] == peak["checked_qps"] < 45 and peak["found"] == 62.3
    assert [(item["found"], item["checked_valid"]) for item in peak["layouts"]] == [(50.2, None), (62.3, True)]
    assert summary["parallelism"]["rule"].startswith(
        "Server: 2 instance(s) x 1 thread(s), the faster layout in --find-peak's search "
        "(QPS found: 1 instance(s) x 2 thread(s) 50.200; 2 instance(s) x 1 thread(s) 62.300)"), summary["parallelism"]
    assert f"target {peak['checked_qps']:.3f} QPS" in summary["how_it_ran"][-1]
    assert "found 62.300 and its checks stepped down" in summary["how_it_ran"][-1], summary["how_it_ran"]


def test_a_search_goes_no_higher_than_its_most(monkeypatch):
    """A bound that never binds (--target_latency=100000000): every target VALID, the search went up 1.5x a run for
    its 24 runs, each longer than the last (over 5 minutes on a 2-layer model with --count=32)."""
    calls = []

    def always_valid(qps, queries):
        calls.append(qps)
        return fake_summary(True, False, queries, 0)
    search = tuning.find_server_peak(always_valid, 100.0, tolerance=0.05, min_queries=64, most=200.0)
    assert calls == [100.0, 150.0, 200.0] and search.qps == 200.0 and search.upper is None
    assert search.note == "every target up to 200 QPS was valid, the highest it searches"
    aimed = tuning.find_server_peak(fake_server(peak=137.0)[0], 100.0, tolerance=0.05, min_queries=64, most=200.0)
    assert 137.0 / 1.05 <= aimed.qps <= 137.0 and not aimed.note   # a peak under it: found as before


def test_find_peak_where_every_target_up_to_twice_offline_is_valid_says_the_bound_never_binds(tmp_path, monkeypatch):
    """No peak to find: said at once, with no full-length check at a target the machine cannot serve."""
    from engine.errors import StepError
    backlog = {"result": "VALID", "reasons": [], "latency_ms": {"p99": 5000.0}, "metric": {tuning.COMPLETED: 71.5}}
    monkeypatch.setattr(tuning, "harness_run_fn", lambda args, folder, trial_ms, **changes: lambda qps, q: backlog)
    with pytest.raises(StepError, match=r"every target up to 140\.000 QPS, 2x Offline's 70\.000 samples/s, was VALID "
                                        r"at the 130 ms bound: the bound never held the load back \(the runs completed "
                                        r"at most 71\.500 samples/s\), so there is no peak to find") as e:
        mocked_find_peak(tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK, search=False)
    assert "--target_qps=N" in e.value.hint


def test_find_peak_whose_runs_kept_up_at_twice_offline_checks_there(tmp_path, monkeypatch):
    """Offline's short run read low (another process, a noisy machine) and Server sustained twice its rate, every
    run completing what it was sent: that was said as 'the bound never held the load back' and the run failed."""
    def kept_up(qps, queries):
        return {"result": "VALID", "reasons": [], "latency_ms": {"p99": 80.0}, "metric": {tuning.COMPLETED: qps}}
    monkeypatch.setattr(tuning, "harness_run_fn", lambda args, folder, trial_ms, **changes: kept_up)
    summary, checked = mocked_find_peak(tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK, search=False)
    assert checked and {round(qps, 1) for _, qps in checked} == {140.0}, checked


def test_a_search_run_whose_inference_failed_stops_the_search(tmp_path, monkeypatch):
    """Its samples returned at once: judged on LoadGen's VALID alone, it pushed the search up."""
    from engine.errors import StepError

    def fake_run(argv, capture_output, text):
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"error": "inference failed: out of memory",
                                                      "loadgen": {"result": "VALID"}}))
        return SimpleNamespace(returncode=1, stderr="")
    monkeypatch.setattr(tuning.subprocess, "run", fake_run)
    with pytest.raises(StepError, match="failed: inference failed: out of memory"):
        tuning.run_harness(["--scenario", "Server"], tmp_path / "trial")


@pytest.mark.slow   # about 5 s: a whole search
def test_find_peak_for_real_on_a_tiny_model(files, tmp_path):
    """Short runs (--count 40, 300 ms each, 50% tolerance, starting with 400 queries: early stopping asks
    for more), then the run's own short length as the check, given the queries the search learned."""
    result, summary = run_harness(files, tmp_path / "run", "--scenario", "Server", "--mode", "performance",
                                  "--count", str(COUNT), "--min-duration", "300", "--find-peak",
                                  "--peak-trial-ms", "300", "--peak-tolerance", "0.5", "--peak-min-queries", "400",
                                  timeout=300)
    peak = summary["find_peak"]
    assert peak["qps"] and peak["trials"] and peak["checks"], peak
    # no batch flags given: the check (and every short run) batched by its own scenario's rule, recorded so (the
    # search passed its own choice on as flags, and the summary said --batch_size and --batch_pad were given)
    assert summary["batching"]["overridden"] == [] and summary["batching"]["rule"].startswith("Server,"), summary
    # the search starts from Offline at one sample per call, Server's own calls (Offline batched by OpenVINO's rule
    # on AMX started it at a rate Server cannot reach)
    offline = json.loads((tmp_path / "run" / "find-peak" / "offline" / "summary.json").read_text())
    assert offline["batch_size"] == 1 and offline["batching"]["overridden"] == ["batch_size"], offline["batching"]
    assert "of Offline" in result.stdout and "samples/s at one sample per call" in result.stdout
    assert all(trial["verdict"] in (tuning.VALID, tuning.TOO_HIGH, tuning.TOO_FEW) for trial in peak["trials"])
    valid = [trial["target_qps"] for trial in peak["trials"] if trial["verdict"] == tuning.VALID]
    assert valid and peak["qps"] <= max(valid) + 1e-3
    # The run folder holds the last full-length check: VALID at the recorded target, or the note says why not.
    assert summary["settings"]["target_qps"] == pytest.approx(peak["checks"][-1]["target_qps"], abs=1e-3)
    if peak["checked_valid"]:
        assert summary["loadgen"]["result"] == "VALID"
        assert peak["qps"] == pytest.approx(peak["checks"][-1]["target_qps"], abs=1e-3)
    else:
        assert peak["note"]
    assert (tmp_path / "run" / "find-peak" / "offline" / "summary.json").is_file()
    for number, check in enumerate(peak["checks"], 1):  # each check's own logs kept, the last one's too
        kept = (tmp_path / "run" / "find-peak" / f"check-{number:02d}" / "mlperf_log_summary.txt").read_text()
        assert f"target_qps : {check['target_qps']:g}" in kept or str(check["target_qps"]) in kept
    assert 0 < peak["singlestream_p99_ms"] <= 130
    # Where early stopping asked for more queries (it depends on this machine's latency spread), the search
    # re-ran with the count LoadGen asked for; never a verdict of too high for it.
    too_few = [i for i, trial in enumerate(peak["trials"]) if trial["verdict"] == tuning.TOO_FEW]
    if too_few:
        assert max(trial["min_query_count"] for trial in peak["trials"][too_few[0] + 1:]) > 400, peak["trials"]
    assert "bert.Server.min_query_count" in (tmp_path / "run" / "user.conf").read_text()
    assert "find-peak: target" in result.stdout
    cores = len(parallelism.available_cores())
    if cores > 1:   # both layouts searched, each in a folder of its own; the check ran the faster, said so
        # one per core first where SingleStream's p99 x the cores keeps within 75% of the bound; the other then
        # starts at its target (and may stop there)
        order = [(1, cores), (cores, 1)]
        if peak["singlestream_p99_ms"] * cores <= parallelism.SERVER_BOUND_SHARE * 130:
            order.reverse()
        assert [(item["instances"], item["threads"]) for item in peak["layouts"]] == order
        assert peak["layouts"][1]["challenge"] == peak["layouts"][0]["found"]
        for item in peak["layouts"]:
            assert (Path(item["runs"]) / "trial-01" / "summary.json").is_file(), item
        per_core = next(item for item in peak["layouts"] if item["instances"] == cores)
        trial = json.loads((Path(per_core["runs"]) / "trial-01" / "summary.json").read_text())
        assert trial["parallelism"]["rule"].startswith(
            f"Server: {cores} instance(s) x 1 thread(s), a layout --find-peak's search tries"), trial["parallelism"]
        # the faster by its search (a check may step its target down below the other's)
        faster = max(peak["layouts"], key=lambda item: item["found"] or 0)
        # checked fastest first: the run ran the first VALID one, else the last checked
        ranked = sorted((item for item in peak["layouts"] if item["found"]), key=lambda item: -item["found"])
        ran = next((item for item in ranked if item["checked_valid"]), [item for item in ranked if item["checks"]][-1])
        assert faster["checks"] and (summary["parallelism"]["instances"], summary["parallelism"]["threads"]) == \
            (ran["instances"], ran["threads"]) and summary["parallelism"]["overridden"] == [], peak["layouts"]
        assert ("the faster layout in --find-peak's search" if ran is faster else "found none VALID") \
            in summary["parallelism"]["rule"], summary["parallelism"]
        assert "short runs over 2 layouts" in result.stdout
    # a --count run's check is as short as the run (it said "full-length check VALID" of 2 s)
    assert "check of the run's own short length" in result.stdout and "full-length check" not in result.stdout
    assert ("(above Offline's rate" in result.stdout) == (peak["server_vs_offline"] > 1), result.stdout


@pytest.mark.slow   # about 0.9 s on the 2-core EPYC
def test_find_peak_stops_at_once_when_one_sample_alone_misses_the_bound(files, tmp_path):
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features), "--model",
               str(files.model), "--out", str(tmp_path / "run"), "--scenario", "Server", "--mode", "performance",
               "--count", "8", "--find-peak", "--peak-trial-ms", "0", "--peak-min-queries", "16",
               "--target-latency", "1", "--buckets", "384"]  # 1 ms: no sample padded to 384 meets it
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--find-peak: no Server target can be VALID" in result.stderr and "over the 1 ms bound" in result.stderr
    # the bound is the user's own: the hint says so first (it named only a faster model, and 'fused', no variation)
    assert "hint: --target_latency=1 is the bound you set: raise it, or run an int8 model (_int8-dynamic) or on " \
        "more cores" in result.stderr, result.stderr
    # an int8 model, or a backend that refuses _int8-dynamic: no int8 advice it cannot take (it named _int8-dynamic)
    from mlperf_bert import harness
    from types import SimpleNamespace
    for backend, device, precision, said in (
            ("openvino", "cpu", "fp32", "an int8 model (--precision=int8) or "), ("openvino", "cpu", "int8", ""),
            ("onnxruntime", "cpu", "fp32", "an int8 model (_int8-dynamic) or "),
            ("onnxruntime", "tensorrt-ep", "fp16", "a TensorRT int8 engine (_tensorrt --precision=int8) or ")):
        assert harness._faster_model(SimpleNamespace(backend=backend, device=device, precision=precision,
                                                     model=str(files.model))) == said
    assert not (tmp_path / "run" / "find-peak" / "offline").exists()  # no search was started


@pytest.mark.parametrize("inputs, expected", [
    ({}, ["--device", "cpu"]),   # batch size and pad left out: the harness's rule (mlperf_bert.batching)
    ({"INSTANCES": "2", "THREADS": "1", "SPIN": "false", "BATCH_SIZE": "4", "BATCH_PAD": "8", "FIND_PEAK": "true"},
     ["--batch-size", "4", "--batch-pad", "8", "--threads", "1", "--instances", "2", "--no-spin", "--find-peak",
      "--device", "cpu"]),
    ({"SPIN": "true", "FIND_PEAK": "false", "BATCH_PAD": "0"}, ["--batch-pad", "0", "--spin", "--device", "cpu"]),
])
def test_the_app_recipe_passes_the_inputs_on(tmp_path, inputs, expected):
    """run.sh turns the recipe's inputs (MLRUN_INPUT_*) into harness flags; echo stands in for Python."""
    env = {"PATH": os.environ["PATH"], "MLRUN_BACKEND": "onnxruntime", "HARNESS_BACKEND": "onnxruntime",
           "MLRUN_PYTHON": "echo", "SQUAD_FEATURES": "f", "SQUAD_FILE": "s", "MLRUN_MODEL": "m",
           "MLRUN_INPUT_SCENARIO": "Server", "MLRUN_INPUT_MODE": "performance", "MLRUN_INPUT_BUCKETS": "auto",
           **{f"MLRUN_INPUT_{name}": value for name, value in inputs.items()}}
    result = subprocess.run(["bash", str(ROOT / "recipes" / "app-mlperf-bert" / "run.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[words.index("onnxruntime") + 1:] == expected


def test_the_full_length_check_keeps_a_user_confs_query_count_whatever_its_line(tmp_path, monkeypatch, capsys):
    """Its bert.Server. line beat a user's *.Server. one by LoadGen's order: the user's count was overridden; and it
    was a user.conf of its own, recorded as the user's settings ('your user.conf's min_query_count 459')."""
    from mlperf_bert import harness
    conf = tmp_path / "mine.conf"
    argv = ["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server", "--mode", "performance",
            "--find-peak", "--count", "40", "--user-conf", str(conf)]
    seen = []
    monkeypatch.setattr(tuning, "run_harness", lambda argv, out: seen.append(argv) or {"loadgen": {}})
    for mine, ours in (("*.Server.min_query_count = 100\n", False), ("bert.*.min_query_count = 100\n", False),
                       ("bert.Server.min_duration = 100\n", True), ("", True)):
        conf.write_text(mine)
        tuning.check_run(harness.parse_args(argv), tmp_path / "run", 5.0, 400)
        check = harness.parse_args(seen[-1] + ["--out", "x"])
        assert check.user_conf == str(conf) and check.min_queries == 400   # the user's own file, as given
        lines, chosen = harness.settings_lines(check, total=40, measured_qps=10.0)
        assert ("bert.Server.min_query_count = 400" in lines) == ours, (mine, lines)
    with pytest.raises(SystemExit):   # the check's own option, no user's: not in the help
        harness.parse_args(["--help"])
    assert "--min-queries" not in capsys.readouterr().out


def test_the_summary_says_checks_stepped_down_only_when_they_did():
    """A target rounded to 2277.058 below the search's 2277.0583 read as '2 checks stepped down' (they were re-runs
    asking for more queries, at the same target)."""
    from mlperf_bert import harness
    peak = {"qps": 2277.058393, "checked_qps": 2277.058, "checks": [{}, {}], "trials": [{}] * 5,
            "server_vs_offline": 0.9, "offline_samples_per_second": 2530.0, "checked_valid": True, "note": None}
    line = harness.find_peak_line(peak, short=False)
    assert "find-peak: target 2277.058 QPS" in line and "stepped down" not in line
    assert "found 2277.058 and its checks stepped down" in harness.find_peak_line(dict(peak, checked_qps=2049.352),
                                                                                   short=False)
    # the runs the queue model aimed are counted, per layout where there are layouts; none aimed, nothing said
    assert "after 5 short runs; full-length" in line and "aimed" not in line
    aimed = dict(peak, trials=[{"aimed_at": None}, {"aimed_at": 40.1}, {"aimed_at": 33.0}, {}, {"aimed_at": None}])
    assert "after 5 short runs (2 aimed by the queue model); full-length check VALID" in harness.find_peak_line(
        aimed, short=False)
    layouts = dict(peak, layouts=[{"short_runs": 6, "aimed_runs": 3}, {"short_runs": 4, "aimed_runs": 1}])
    assert "after 10 short runs over 2 layouts (4 aimed by the queue model)" in harness.find_peak_line(layouts, False)


def test_a_server_target_latency_of_part_of_a_millisecond_is_refused(files, tmp_path):
    """LoadGen reads Server's target_latency in whole ms: --target_latency=100.7 ran at 101 while the rule and
    find-peak judged by 100.7 (and 0.001 ran at 1)."""
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files.features), "--model",
               str(files.model), "--out", str(tmp_path / "run"), "--scenario", "Server", "--mode", "performance",
               "--count", "8", "--target-latency", "100.7"]
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 78 and "--target_latency 100.7: LoadGen reads Server's target_latency in whole " \
        "milliseconds" in result.stderr and "give 100 or 101" in result.stderr, result.stderr
    command[-1] = "0.5"   # the hint offered 0, which is refused ("must be a number above 0")
    result = subprocess.run(command, cwd=files.root, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 78 and "hint: give 1\n" in result.stderr, result.stderr


def challenged_find_peak(tmp_path, monkeypatch, check_run, peaks, alone_p99=60.0):
    """harness.find_peak over two layouts, each searched for real against a fake server of its own peak
    (1x2 first, then 2x1 challenging its target, unless alone_p99 puts 2x1 first); (its summary, the checks run,
    each layout's calls)."""
    from mlperf_bert import harness
    servers = {layout: fake_server(peak) for layout, peak in peaks.items()}
    monkeypatch.setattr(tuning, "harness_run_fn", lambda args, folder, trial_ms, **changes:
                        servers[changes["searched_layout"]][0])
    monkeypatch.setattr(tuning, "find_server_peak", REAL_FIND_SERVER_PEAK)
    summary, checked = mocked_find_peak(tmp_path, monkeypatch, check_run, search=False, alone_p99=alone_p99)
    return summary, checked, {layout: calls for layout, (_, calls) in servers.items()}


REAL_FIND_SERVER_PEAK = tuning.find_server_peak


def test_find_peak_stops_the_second_layout_at_the_first_ones_target_where_it_is_slower(tmp_path, monkeypatch):
    summary, checked, calls = challenged_find_peak(tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK,
                                                   {"1x2": 50.0, "2x1": 40.0})
    peak = summary["find_peak"]
    first, second = peak["layouts"]
    assert 50.0 / 1.05 <= first["found"] <= 50.0 and checked == [("1x2", round(first["found"], 1))]
    assert second["lost_challenge"] and second["challenge"] == first["found"] and second["found"] is None
    assert {qps for qps, _ in calls["2x1"]} == {first["found"]}   # one target: its early-stopping reruns only
    assert peak["checked_valid"] and f"2 instance(s) x 1 thread(s) not VALID at the other's {first['found']:.3f}, " \
        "searched no further" in summary["parallelism"]["rule"], summary["parallelism"]["rule"]


def test_a_layout_stopped_at_the_other_ones_target_searches_on_when_every_check_of_that_one_misses(
        tmp_path, monkeypatch):
    summary, checked, calls = challenged_find_peak(
        tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK if layout == "2x1" else MISSED_CHECK,
        {"1x2": 50.0, "2x1": 40.0})
    peak = summary["find_peak"]
    first, second = peak["layouts"]
    assert [layout for layout, _ in checked] == ["1x2"] * 4 + ["2x1"], checked
    assert not second["lost_challenge"] and 40.0 / 1.05 <= second["found"] <= 40.0 and second["checked_valid"]
    assert max(qps for qps, _ in calls["2x1"][1:]) < first["found"]   # resumed below the target it lost at
    assert peak["checked_valid"] and peak["checked_qps"] == round(second["found"], 3)
    assert summary["parallelism"]["rule"].startswith("Server: 2 instance(s) x 1 thread(s), --find-peak's checks of "
                                                     "1 instance(s) x 2 thread(s) found none VALID")


def test_a_faster_second_layout_wins_its_challenge_and_is_checked_first(tmp_path, monkeypatch):
    summary, checked, calls = challenged_find_peak(tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK,
                                                   {"1x2": 40.0, "2x1": 60.0})
    first, second = summary["find_peak"]["layouts"]
    assert not second["lost_challenge"] and 60.0 / 1.05 <= second["found"] <= 60.0
    assert calls["2x1"][0][0] == first["found"] and checked == [("2x1", round(second["found"], 1))]


def test_one_instance_per_core_is_searched_first_where_its_samples_keep_within_the_bound(tmp_path, monkeypatch):
    """SingleStream's p99 on both cores 40 ms: about 80 ms on one core, within 75% of the 130-ms bound. One per core
    (the faster in every search measured) is searched first, and one instance on both cores, slower, stops at its
    target after one target's runs (searched first, it took 4-6 short runs on the EPYC, then the other 3-6 more)."""
    summary, checked, calls = challenged_find_peak(tmp_path, monkeypatch, lambda layout, qps: VALID_CHECK,
                                                   {"1x2": 40.0, "2x1": 60.0}, alone_p99=40.0)
    first, second = summary["find_peak"]["layouts"]
    assert (first["instances"], second["instances"]) == (2, 1), summary["find_peak"]["layouts"]
    assert second["lost_challenge"] and {qps for qps, _ in calls["1x2"]} == {first["found"]}
    assert checked == [("2x1", round(first["found"], 1))]
    from mlperf_bert import harness
    args = harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Server",
                               "--mode", "performance", "--find-peak", "--backend", "openvino"])
    assert harness._peak_layouts(args, 40.0, 130) == [(2, 1), (1, 2)]
    assert harness._peak_layouts(args, 49.0, 130) == [(1, 2), (2, 1)] == harness._peak_layouts(args)
