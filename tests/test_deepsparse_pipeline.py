"""The BERT benchmark on the DeepSparse backend through the real recipes and bin/mlrun, offline.

Like tests/test_bert_pipeline.py: the mirror ../shared/data gives the SQuAD dev set and vocab, the
model is a tiny random-weight BERT built by its recipe, and the tests of this module share one cache
folder (the deepsparse venv is the slow part: about 40 s of pip installs). The onnxruntime venv is
built too, to compare the two backends' answers on the same model entry.
"""
import json
import os
import re

import pytest

from conftest import TINY_MODEL, offline_mlrun, step_dir, step_of

QUERY = "app mlperf bert _deepsparse _cpu _random"
ORT_QUERY = "app mlperf bert _onnxruntime _cpu _random"
COUNT = 20


@pytest.fixture(scope="module")
def ds(tmp_path_factory, bert_seed):
    return offline_mlrun(tmp_path_factory.mktemp("deepsparse-pipeline"), seed=bert_seed.cache)


def _log(run_dir):
    return {r["qsl_idx"]: r["data"] for r in json.load(open(os.path.join(run_dir, "mlperf_log_accuracy.json")))}


@pytest.fixture(scope="module")
def accuracy_run(ds):
    result = ds(QUERY, "--mode=accuracy", f"--count={COUNT}", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_accuracy_mode_20_samples(accuracy_run):
    run_dir = step_dir(accuracy_run)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["backend"] == "deepsparse" and summary["mode"] == "accuracy"
    assert summary["samples_completed"] == COUNT and set(summary["accuracy"]) >= {"exact_match", "f1"}
    assert summary["sequence_handling"].startswith("buckets 128,192,256,384")
    engines = summary["deepsparse"]
    assert [(e["length"], e["batch"]) for e in engines["engines"]] == [(128, 1), (192, 1), (256, 1), (384, 1)]
    assert engines["scheduler"] == "single_stream"
    assert '"exact_match"' in open(os.path.join(run_dir, "accuracy.txt")).read()
    # Each response is float32 (bucket, 2): its length is the smallest bucket that holds the sample.
    features = step_of(accuracy_run, "get-dataset-squad-features")["path"]
    import numpy as np
    lengths = np.load(os.path.join(features, "lengths.npy"))[:COUNT]
    log = _log(run_dir)
    assert sorted(log) == list(range(COUNT))
    for index, data in log.items():
        bucket = next(b for b in (128, 192, 256, 384) if b >= lengths[index])
        assert len(data) == bucket * 2 * 4 * 2, index  # hex: 2 characters a byte
    # Compiling showed progress, once per engine, before LoadGen started.
    build_log = open(os.path.join(run_dir, ".mlrun", "build.log")).read()
    assert "deepsparse: compiling 4 engines" in build_log
    assert [int(n) for n in re.findall(r"engine (\d)/4: length \d+, batch 1: compiled in", build_log)] == [1, 2, 3, 4]
    assert build_log.index("engine 4/4") < build_log.index("Offline accuracy:")


def test_same_answers_as_onnxruntime_on_the_same_model(ds, accuracy_run):
    """DeepSparse and onnxruntime on one model entry, at the same bucket lengths: the same answer text
    for at least 95% of the samples (the runtimes' float sums differ a little: about 1e-6 here).

    At the same lengths, because padding alone moves answers of a random-weight model: its logits at
    padded positions are not low, so they take places among the 20 best starts and ends (5 of 300
    samples change between onnxruntime at exact lengths and onnxruntime at these buckets; DeepSparse
    and onnxruntime at the same buckets agreed on 300 of 300).
    """
    from mlperf_bert import accuracy, squad_features
    result = ds(ORT_QUERY, "--mode=accuracy", f"--count={COUNT}", "--buckets=128,192,256,384", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert step_of(result, "get-ml-model-bert")["path"] == step_of(accuracy_run, "get-ml-model-bert")["path"]
    features = squad_features.load(step_of(accuracy_run, "get-dataset-squad-features")["path"])
    texts = {}
    for name, run in (("deepsparse", accuracy_run), ("onnxruntime", result)):
        log = os.path.join(step_dir(run), "mlperf_log_accuracy.json")
        responses = accuracy.read_log(log, len(features.lengths))
        texts[name] = {}
        for index, logits in responses.items():
            feature = features.features[index]
            span = accuracy.best_span(feature, logits)
            texts[name][index] = (accuracy.span_text(feature, features.examples[feature["example_index"]],
                                                     span[1], span[2]) if span else accuracy.NO_ANSWER)
    same = sum(texts["deepsparse"][i] == texts["onnxruntime"][i] for i in range(COUNT))
    print(f"deepsparse vs onnxruntime at buckets 128,192,256,384: same answer text on {same}/{COUNT} samples")
    assert same >= 0.95 * COUNT, (texts["deepsparse"], texts["onnxruntime"])


def test_batched_run_gives_the_same_bytes(ds, accuracy_run):
    """Batches of 4 within a bucket: each sample's response bytes are those of the batch-1 run."""
    result = ds(QUERY, "--mode=accuracy", f"--count={COUNT}", "--batch_size=4", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(step_dir(result), "summary.json")))
    assert summary["deepsparse"]["batch_sizes"] == [1, 4]
    assert _log(step_dir(result)) == _log(step_dir(accuracy_run))


@pytest.mark.parametrize("scenario, extra", [
    ("Offline", ["--batch_size=4", "--buckets=128,256"]),
    ("SingleStream", []),
    ("MultiStream", []),
    ("Server", ["--streams=2"]),
])
def test_performance_mode_each_scenario(ds, accuracy_run, scenario, extra):
    result = ds(QUERY, "--mode=performance", f"--scenario={scenario}", "--count=16", "--min_duration=300",
                *extra, *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = step_dir(result)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["backend"] == "deepsparse" and summary["scenario"] == scenario
    assert summary["samples_completed"] >= 16 and summary["loadgen"]["metric"]
    text = open(os.path.join(run_dir, "mlperf_log_summary.txt")).read()
    assert f"Scenario : {scenario}" in text and "Result is :" in text
    if scenario == "Offline":
        assert summary["sequence_handling"].startswith("buckets 128,256,384")
        assert summary["deepsparse"]["batch_sizes"] == [1, 4] and len(summary["deepsparse"]["engines"]) == 6
    if scenario == "Server":
        assert summary["deepsparse"]["scheduler"] == "multi_stream" and summary["workers"] == 2


def test_model_entry_is_left_as_it_was(ds, accuracy_run):
    """Compiling at static shapes never rewrites the model file (DeepSparse's input_shapes would)."""
    result = ds("cache", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 corrupt" in result.stdout


def test_exact_lengths_and_cuda_are_refused_clearly(ds, accuracy_run):
    # Refused while resolving (exit 2), before anything is built (exact lengths: the harness refused them, exit 1,
    # once the venv and the model were built).
    result = ds(QUERY, "--mode=performance", "--count=4", "--buckets=exact", *TINY_MODEL)
    assert result.returncode == 2 and "--buckets=exact cannot go with _deepsparse\n" in result.stderr, result.stderr
    result = ds("app mlperf bert _deepsparse _cuda _random", "--mode=performance", "--count=4", *TINY_MODEL)
    assert result.returncode == 2 and "_deepsparse (the query) cannot go with _cuda" in result.stderr, result.stderr
    assert "DeepSparse (CPU)" in result.stderr and "Traceback" not in result.stderr
