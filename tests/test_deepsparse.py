"""The DeepSparse backend's logic without DeepSparse: buckets, batch splitting, output padding, the
engine cache. A fake compiler stands in for DeepSparse's (its engines run onnxruntime at the static
shape they were compiled for), so these run in the dev venv; tests/test_deepsparse_pipeline.py runs
the real engines end to end.
"""
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from engine.errors import StepError, UsageError
from mlperf_bert import accuracy, ds_backend, harness, random_model, seq_plan
from mlperf_bert.ds_backend import DEFAULT_BUCKETS, DeepSparseBackend, EngineCache, split_batch
from mlperf_bert.model_adapter import probe_inputs
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.seq_plan import SeqPlan
from mlperf_bert.sut import QaInference

TINY = {"layers": 2, "hidden": 64, "heads": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepsparse")
    paths = SimpleNamespace(root=root, dynamic=root / "dynamic.onnx", fixed=root / "fixed.onnx",
                            hardcoded=root / "hardcoded.onnx", hf=root / "hf.onnx")
    onnx.save(random_model.build(**TINY, seq="dynamic"), paths.dynamic)
    onnx.save(random_model.build(**TINY, seq=384), paths.fixed)
    onnx.save(random_model.build(**TINY, seq=384, hardcode_seq_reshape=True), paths.hardcoded)
    onnx.save(random_model.build(**TINY, seq="dynamic", input_names="hf"), paths.hf)
    return paths


class FakeEngine:
    """A compiled engine's contract: inputs in graph order, exactly [batch, length]; outputs in graph order."""

    def __init__(self, session, length, batch):
        self.session, self.shape, self.calls = session, [batch, length], 0
        self.num_streams = 2

    def run(self, feeds):
        assert [list(a.shape) for a in feeds] == [self.shape] * 3 and all(a.flags.c_contiguous for a in feeds)
        self.calls += 1
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, dict(zip(names, feeds)))


def fake_compiler(log):
    sessions = {}

    def compile_fn(model_path, length, batch):
        log.append((length, batch))
        if model_path not in sessions:
            sessions[model_path] = OrtBackend(str(model_path)).session
        return FakeEngine(sessions[model_path], length, batch)
    return compile_fn


# -- buckets ------------------------------------------------------------------------

def test_bucket_assignment_rounds_up_and_384_is_always_there():
    auto = SeqPlan(DEFAULT_BUCKETS, "buckets")
    assert [auto.run_length(n) for n in (1, 128, 129, 192, 193, 256, 257, 384)] == \
        [128, 128, 192, 192, 256, 256, 384, 384]
    plan = SeqPlan(seq_plan.parse_buckets("192"), "buckets")
    assert plan.buckets == (192, 384)  # the reference DeepSparse SUT's default
    assert [plan.run_length(n) for n in (10, 192, 193, 300, 384)] == [192, 192, 384, 384, 384]
    # Within a bucket, batches; across buckets, never.
    assert plan.batches([10, 300, 20, 30, 200], batch_size=2) == [[0, 2], [3], [1, 4]]


def test_prepare_picks_buckets_and_refuses_exact(models, tmp_path):
    path, plan = ds_backend.prepare(str(models.dynamic), "auto", tmp_path)
    assert path == str(models.dynamic) and plan.buckets == DEFAULT_BUCKETS == (128, 192, 256, 384)
    assert plan.description.startswith("buckets 128,192,256,384")
    assert ds_backend.prepare(str(models.dynamic), (192, 384), tmp_path)[1].buckets == (192, 384)
    with pytest.raises(UsageError, match="runs buckets, not exact lengths"):
        ds_backend.prepare(str(models.dynamic), "exact", tmp_path)
    # A fixed-384 model is made dynamic once, then compiled at each bucket.
    path, plan = ds_backend.prepare(str(models.fixed), "auto", tmp_path)
    assert path != str(models.fixed) and plan.buckets == DEFAULT_BUCKETS and "made dynamic" in plan.description
    # One that hard-codes 384: auto falls back to 384 alone and says so; a bucket list is refused.
    path, plan = ds_backend.prepare(str(models.hardcoded), "auto", tmp_path)
    assert path == str(models.hardcoded) and plan.buckets == (384,) and "FALLBACK" in plan.description
    with pytest.raises(UsageError, match="hard-codes"):
        ds_backend.prepare(str(models.hardcoded), (192, 384), tmp_path)


def test_batch_sizes_and_streams_per_scenario():
    assert ds_backend.batch_sizes_for("Offline", 4) == (1, 4)
    assert ds_backend.batch_sizes_for("MultiStream", 8) == (1, 8)
    assert ds_backend.batch_sizes_for("SingleStream", 4) == ds_backend.batch_sizes_for("Server", 4) == (1,)
    assert [ds_backend.default_streams(n) for n in (1, 2, 4, 16, 64)] == [1, 2, 2, 4, 16]


# -- batches and output padding ---------------------------------------------------------

def test_split_batch_uses_full_batches_then_smaller_ones_never_padding_rows():
    assert split_batch(1, (1, 4)) == [(0, 1)]
    assert split_batch(3, (1, 4)) == [(0, 1), (1, 1), (2, 1)]
    assert split_batch(9, (1, 4)) == [(0, 4), (4, 4), (8, 1)]
    assert split_batch(7, (1, 2, 4)) == [(0, 4), (4, 2), (6, 1)]
    with pytest.raises(ValueError, match="lack 1"):
        split_batch(4, (4,))


def test_responses_have_the_bucket_length_and_pad_to_384_like_the_accuracy_step(models):
    lengths = [30, 150, 200, 384]
    ids, mask, segments = probe_inputs(lengths, 384)
    features = SimpleNamespace(input_ids=ids, input_mask=mask, segment_ids=segments, lengths=np.array(lengths))
    backend = DeepSparseBackend(str(models.dynamic), DEFAULT_BUCKETS, compile_fn=fake_compiler([]))
    inference = QaInference(backend, features, SeqPlan(DEFAULT_BUCKETS, "buckets"))
    responses = {p: r for batch in inference.responses(range(4)) for p, r in batch}
    assert {p: r.shape for p, r in responses.items()} == {0: (128, 2), 1: (192, 2), 2: (256, 2), 3: (384, 2)}
    reference = OrtBackend(str(models.dynamic))
    for position, length in enumerate(lengths):
        response = responses[position]
        assert response.dtype == np.float32 and response.flags.c_contiguous
        # The padded tail is masked: the real positions predict as at the exact length.
        start, end = reference.run(*(a[position:position + 1, :length] for a in (ids, mask, segments)))
        np.testing.assert_allclose(response[:length, 0], start[0], atol=1e-4)
        np.testing.assert_allclose(response[:length, 1], end[0], atol=1e-4)
        # What the accuracy step reads from the log equals the response padded with -10000 logits.
        padded = np.full((384, 2), accuracy.PAD_LOGIT, np.float32)
        padded[:len(response)] = response
        np.testing.assert_array_equal(accuracy.response_logits(response.tobytes().hex().upper()), padded)


def test_a_batch_splits_over_the_compiled_batch_sizes_with_the_same_bytes(models):
    log = []
    backend = DeepSparseBackend(str(models.dynamic), (128, 384), batch_sizes=(4,), compile_fn=fake_compiler(log))
    assert backend.batch_sizes == (1, 4) and sorted(log) == [(128, 1), (128, 4), (384, 1), (384, 4)]
    arrays = probe_inputs([100, 20, 128, 64, 90], 128)
    start, end = backend.run(*arrays)
    assert start.shape == end.shape == (5, 128)
    assert backend.engines.get(128, 4).calls == 1 and backend.engines.get(128, 1).calls == 1
    for row in range(5):
        alone = backend.run(*(a[row:row + 1] for a in arrays))
        np.testing.assert_allclose(alone[0][0], start[row], atol=1e-5)
        np.testing.assert_allclose(alone[1][0], end[row], atol=1e-5)


def test_inputs_and_outputs_are_mapped_by_name(models):
    """An hf-named model (attention_mask, token_type_ids) runs the same through the graph's own order."""
    arrays = probe_inputs([50], 128)
    mlperf = DeepSparseBackend(str(models.dynamic), (128,), compile_fn=fake_compiler([])).run(*arrays)
    hf = DeepSparseBackend(str(models.hf), (128,), compile_fn=fake_compiler([])).run(*arrays)
    np.testing.assert_array_equal(mlperf[0], hf[0])
    np.testing.assert_array_equal(mlperf[1], hf[1])


# -- the engine cache -------------------------------------------------------------------

def test_engine_cache_compiles_each_shape_once_shortest_first_with_progress():
    made, lines = [], []
    cache = EngineCache(lambda length, batch: made.append((length, batch)) or f"engine {length}x{batch}")
    assert cache.compile([(384, 1), (128, 4), (128, 1), (384, 1)], lines.append) == [(128, 1), (128, 4), (384, 1)]
    assert made == [(128, 1), (128, 4), (384, 1)] and len(cache) == 3
    assert [line.split(":")[0].strip() for line in lines] == ["engine 1/3", "engine 2/3", "engine 3/3"]
    assert "length 128, batch 4: compiled in" in lines[1]
    assert cache.compile([(128, 1), (384, 1)]) == [] and len(made) == 3  # nothing compiled twice
    assert cache.get(128, 4) == "engine 128x4" and set(cache.seconds) == set(made)
    with pytest.raises(StepError, match=r"no deepsparse engine was compiled for length 256, batch 1 "
                                        r"\(compiled length x batch: 128x1, 128x4, 384x1\)"):
        cache.get(256, 1)


def test_backend_compiles_before_running_and_never_while_running(models):
    log, lines = [], []
    backend = DeepSparseBackend(str(models.dynamic), (384, 128, 192), compile_fn=fake_compiler(log),
                                progress=lines.append)
    assert log == [(128, 1), (192, 1), (384, 1)]
    assert lines[0].startswith("deepsparse: compiling 3 engines of dynamic.onnx (lengths 128,192,384; batch 1;")
    assert len(lines) == 4 and backend.describe()["lengths"] == [128, 192, 384]
    backend.warm_up()
    backend.run(*probe_inputs([10, 20], 192))
    assert log == [(128, 1), (192, 1), (384, 1)]  # warm-up and runs reuse the engines
    with pytest.raises(StepError, match="no deepsparse engine was compiled for length 200"):
        backend.run(*probe_inputs([10], 200))


def test_multi_stream_backend_reports_its_streams(models):
    backend = DeepSparseBackend(str(models.dynamic), (128,), scheduler="multi_stream", compile_fn=fake_compiler([]))
    assert backend.streams == 2 and backend.describe()["scheduler"] == "multi_stream"
    # more streams than the engine runs: it ran with fewer, the number asked recorded nowhere
    with pytest.raises(UsageError, match=r"--streams 3: DeepSparse runs 2 stream\(s\) on the 1 core\(s\)"):
        DeepSparseBackend(str(models.dynamic), (128,), threads=1, scheduler="multi_stream", streams=3,
                          compile_fn=fake_compiler([]))
    assert DeepSparseBackend(str(models.dynamic), (128,), scheduler="multi_stream", streams=2,
                             compile_fn=fake_compiler([])).streams == 2
    with pytest.raises(UsageError, match="scheduler"):
        DeepSparseBackend(str(models.dynamic), (128,), scheduler="elastic", compile_fn=fake_compiler([]))


def test_the_real_compiler_is_asked_for_only_when_no_fake_is_given(models, monkeypatch):
    """Without deepsparse installed (the dev venv), the error names the recipe that has it."""
    import builtins
    real_import = builtins.__import__

    def no_deepsparse(name, *args, **kwargs):
        if name == "deepsparse":
            raise ImportError("No module named 'deepsparse'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_deepsparse)
    with pytest.raises(UsageError, match="needs the deepsparse package"):
        DeepSparseBackend(str(models.dynamic), (128,))


# -- harness options ----------------------------------------------------------------------

def test_harness_backend_options(capsys):
    base = ["--features", "f", "--model", "m", "--out", "o", "--mode", "performance"]
    args = harness.parse_args(base + ["--scenario", "Server", "--backend", "deepsparse", "--streams", "3"])
    assert args.backend == "deepsparse" and args.streams == 3
    assert harness.parse_args(base + ["--scenario", "Offline"]).backend == "onnxruntime"
    for bad in (["--scenario", "Offline", "--backend", "deepsparse", "--streams", "2"],
                ["--scenario", "Server", "--streams", "2"],
                ["--scenario", "Offline", "--backend", "tensorrt"]):
        with pytest.raises(SystemExit):
            harness.parse_args(base + bad)
    assert "--streams applies to --backend deepsparse" in capsys.readouterr().err
