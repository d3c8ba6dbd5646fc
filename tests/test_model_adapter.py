"""mlperf_bert.model_adapter and ort_backend on real onnxruntime sessions."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.errors import MlrunError, UsageError
from mlperf_bert import random_model
from mlperf_bert.model_adapter import inspect, make_seq_dynamic, probe_inputs
from mlperf_bert.ort_backend import OrtBackend

TINY = {"layers": 2, "hidden": 32, "heads": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random models: fixed 384, fixed 384 with a hard-coded Reshape, dynamic with hf names."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, kwargs in {"fixed": {"seq": 384}, "hardcoded": {"seq": 384, "hardcode_seq_reshape": True},
                         "dynamic_hf": {"seq": None, "input_names": "hf"}}.items():
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(random_model.build(**TINY, **kwargs), paths[name])
    return paths


def _save_graph(path, inputs, outputs, nodes, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), path)
    return str(path)


def _int_input(name, seq="seq"):
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", seq])


def test_maps_mlperf_and_hf_names_and_the_sequence_axis(models):
    fixed = inspect(models["fixed"])
    assert fixed.input_names == ("input_ids", "input_mask", "segment_ids")
    assert (fixed.start, fixed.end, fixed.seq_len) == ("output_start_logits", "output_end_logits", 384)
    hf = inspect(models["dynamic_hf"])
    assert hf.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert hf.seq_len is None and hf.input_dtype == np.int64


def test_single_pair_output_is_split_into_start_and_end(tmp_path):
    # logits[b, s] = (input_ids, attention_mask) as floats, so the split is easy to check.
    names = ("input_ids", "attention_mask", "token_type_ids")
    nodes = []
    for name in names[:2]:
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Unsqueeze", [f"{name}_f", "last_axis"], [f"{name}_u"]))
    nodes.append(helper.make_node("Concat", ["input_ids_u", "attention_mask_u"], ["logits"], axis=-1))
    path = _save_graph(tmp_path / "pair.onnx", [_int_input(n) for n in names],
                       [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 2])],
                       nodes, [onnx.numpy_helper.from_array(np.array([-1], np.int64), "last_axis")])
    io = inspect(path)
    assert (io.start, io.end) == ("logits", None)
    start, end = OrtBackend(path, threads=1).run(np.array([[5, 6, 7]]), np.array([[1, 1, 0]]), np.zeros((1, 3)))
    assert start.tolist() == [[5, 6, 7]] and end.tolist() == [[1, 1, 0]] and start.dtype == np.float32


def test_unmappable_inputs_name_what_the_model_has_and_what_was_expected(tmp_path):
    path = _save_graph(tmp_path / "odd.onnx", [_int_input("tokens"), _int_input("input_mask")],
                       [helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", "seq"])],
                       [helper.make_node("Add", ["tokens", "input_mask"], ["out"])])
    with pytest.raises(MlrunError) as raised:
        inspect(path)
    message = str(raised.value)
    for fragment in ("it has tokens[batch, seq], input_mask[batch, seq]", "input_ids", "attention_mask",
                     "segment_ids or token_type_ids", "no input found for ids, segments"):
        assert fragment in message


def test_unmappable_outputs_are_refused(tmp_path):
    names = ("input_ids", "input_mask", "segment_ids")
    path = _save_graph(tmp_path / "odd.onnx", [_int_input(n) for n in names],
                       [helper.make_tensor_value_info("scores", TensorProto.INT64, ["batch", "seq"])],
                       [helper.make_node("Sum", list(names), ["scores"])])
    with pytest.raises(MlrunError, match=r"outputs .*: it has scores\[batch, seq\]; expected output_start_logits"):
        inspect(path)


def test_missing_or_broken_model_file(tmp_path):
    with pytest.raises(MlrunError, match="model file not found"):
        inspect(str(tmp_path / "nope.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MlrunError, match="not a readable ONNX model"):
        inspect(str(tmp_path / "junk.onnx"))


def test_fixed_384_model_is_made_dynamic_with_identical_predictions(models, tmp_path):
    dst = str(tmp_path / "dynamic.onnx")
    assert make_seq_dynamic(models["fixed"], dst) is True
    assert inspect(dst).seq_len is None
    lengths = [1, 64, 171, 383]
    padded_start, padded_end = OrtBackend(models["fixed"]).run(*probe_inputs(lengths, 384))
    dynamic = OrtBackend(dst)
    for row, length in enumerate(lengths):
        start, end = dynamic.run(*(a[row:row + 1, :length] for a in probe_inputs(lengths, 384)))
        for cut, padded in ((start[0], padded_start[row, :length]), (end[0], padded_end[row, :length])):
            assert cut.argmax() == padded.argmax()
            np.testing.assert_allclose(cut, padded, atol=1e-4)


def test_hardcoded_384_reshape_cannot_be_made_dynamic(models, tmp_path):
    dst = tmp_path / "dynamic.onnx"
    assert make_seq_dynamic(models["hardcoded"], str(dst)) is False
    assert list(tmp_path.iterdir()) == []  # neither the copy nor its temporary file is left


def test_already_dynamic_model_is_refused(models, tmp_path):
    with pytest.raises(MlrunError, match="already has a dynamic"):
        make_seq_dynamic(models["dynamic_hf"], str(tmp_path / "x.onnx"))


def test_backend_runs_batches_and_reports_its_axis(models):
    backend = OrtBackend(models["dynamic_hf"], threads=1)
    assert backend.seq_len is None and backend.threads == 1
    start, end = backend.run(*probe_inputs([40, 12], 40, dtype=np.int32))  # converted to the model's int64
    assert start.shape == end.shape == (2, 40) and start.dtype == end.dtype == np.float32
    assert OrtBackend(models["fixed"]).seq_len == 384


def test_seq_plan_cli_prepares_the_copy_the_harness_reuses(models, tmp_path):
    """The model recipe runs this at build time; the harness then finds the copy instead of making one."""
    from mlperf_bert import seq_plan
    cache = tmp_path / "dynamic"
    assert seq_plan.main(["--model", models["fixed"], "--cache", str(cache)]) == 0
    made = sorted(p.name for p in cache.iterdir())
    assert len(made) == 1 and made[0].endswith(".dynamic.onnx")
    path, plan = seq_plan.prepare(models["fixed"], "auto", cache)
    assert path == str(cache / made[0]) and plan.buckets is None
    assert sorted(p.name for p in cache.iterdir()) == made  # reused, nothing new written
    refused = tmp_path / "refused"
    assert seq_plan.main(["--model", models["hardcoded"], "--cache", str(refused)]) == 0
    assert [p.suffix for p in refused.iterdir()] == [".not-dynamic"]
    path, plan = seq_plan.prepare(models["hardcoded"], "auto", refused)
    assert path == models["hardcoded"] and "FALLBACK" in plan.description


def _batch_fixed_at(model, batch):
    """random_model's graph with every input's and output's batch axis fixed (an exporter's static batch)."""
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    return model


def test_a_model_whose_batch_is_fixed_at_1_is_made_dynamic_and_refuses_bigger_batches_in_mlruns_words(tmp_path,
                                                                                                       capsys):
    """The dynamic-axis probe ran its two rows at once: onnxruntime's "Got invalid dimensions ... Expected: 1",
    exit 1, for a model that runs at --batch_size=1; a run with --batch_size=2 failed with the same words."""
    from mlperf_bert import seq_plan
    path = str(tmp_path / "batch1.onnx")
    onnx.save(_batch_fixed_at(random_model.build(**TINY, seq=384), 1), path)
    assert inspect(path).batch == 1 and inspect(path).seq_len == 384
    cache = tmp_path / "dynamic"
    assert seq_plan.main(["--model", path, "--cache", str(cache)]) == 0
    [made] = cache.iterdir()
    assert made.name.endswith(".dynamic.onnx") and inspect(str(made)).batch == 1
    backend = OrtBackend(str(made), threads=1)
    start, _ = backend.run(*probe_inputs([30], 30))
    assert start.shape == (1, 30)
    with pytest.raises(UsageError) as refused:
        backend.run(*probe_inputs([30, 20], 30))
    assert refused.value.message == (f"{made} takes batches of exactly 1 sample (its batch axis is fixed), and this "
                                     "run gave it 2") and refused.value.hint == "run it with --batch_size=1"
    # fixed at 3, the probe's batches cannot run: the step's usage error (78, mlrun's exit 2), in mlrun's words
    three = str(tmp_path / "batch3.onnx")
    onnx.save(_batch_fixed_at(random_model.build(**TINY, seq=384), 3), three)
    capsys.readouterr()
    assert seq_plan.main(["--model", three, "--cache", str(tmp_path / "d3")]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"error: {three} takes batches of exactly 3 samples (its batch axis is fixed)"), err
    assert "hint: export the model with a dynamic batch axis" in err


def test_a_fixed_sequence_length_the_features_lack_is_a_usage_error(tmp_path):
    """A fixed 128 axis (the random model's --dep.model.seq=128): the harness's exit 2 was a failed step (exit 1)."""
    from mlperf_bert import seq_plan
    path = str(tmp_path / "seq128.onnx")
    onnx.save(random_model.build(**TINY, seq=128), path)
    with pytest.raises(UsageError) as refused:
        seq_plan.prepare(path, "auto", tmp_path / "dynamic")
    assert refused.value.message == f"{path} has a fixed sequence length 128; the features are 384 long, so it " \
                                    "cannot run them"
    assert refused.value.hint.startswith("use a model whose sequence axis is 384 or dynamic")
