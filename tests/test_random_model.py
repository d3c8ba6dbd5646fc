"""mlperf_bert.random_model: graphs that onnxruntime runs, with the official I/O, reproducibly."""
import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlperf_bert import random_model
from mlperf_bert.model_adapter import probe_inputs

TINY = {"layers": 2, "hidden": 32, "heads": 2}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session, names, ids, mask, segments):
    return session.run(None, dict(zip(names, (ids, mask, segments))))


def test_fixed_axis_model_runs_at_384_with_official_io():
    model = random_model.build(**TINY, seq=384)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input_ids", "input_mask", "segment_ids"]
    assert [o.name for o in model.graph.output] == ["output_start_logits", "output_end_logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 384
    lengths = [171, 90, 300, 250]
    start, end = _run(_session(model), random_model.INPUT_NAMES["mlperf"], *probe_inputs(lengths, 384))
    assert start.shape == end.shape == (4, 384) and start.dtype == np.float32
    assert np.isfinite(start).all() and start.std() > 0.1
    # Not degenerate: the best start differs between samples.
    assert len({int(start[row, :length].argmax()) for row, length in enumerate(lengths)}) > 1


def test_dynamic_axis_with_hf_names_runs_at_any_length():
    model = random_model.build(**TINY, seq="dynamic", input_names="hf")
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_param
    session = _session(model)
    for length in (1, 57, 384):
        start, end = _run(session, random_model.INPUT_NAMES["hf"], *probe_inputs([length], length))
        assert start.shape == end.shape == (1, length)


def test_cut_to_real_length_predicts_as_padded_to_384():
    session = _session(random_model.build(**TINY, seq=None))
    names = random_model.INPUT_NAMES["mlperf"]
    lengths = [23, 164, 383]
    inputs = probe_inputs(lengths, 384)
    padded_start, padded_end = _run(session, names, *inputs)
    for row, length in enumerate(lengths):
        start, end = _run(session, names, *(array[row:row + 1, :length] for array in inputs))
        for cut, padded in ((start[0], padded_start[row, :length]), (end[0], padded_end[row, :length])):
            assert cut.argmax() == padded.argmax()
            np.testing.assert_allclose(cut, padded, atol=1e-4)


def test_same_seed_same_bytes_other_seed_other_weights():
    def digest(seed):
        return hashlib.sha256(random_model.build(**TINY, seq=384, seed=seed).SerializeToString()).hexdigest()
    assert digest(0) == digest(0)
    assert digest(0) != digest(1)


def test_hardcoded_reshape_model_runs_at_its_length():
    session = _session(random_model.build(**TINY, seq=384, hardcode_seq_reshape=True))
    names = random_model.INPUT_NAMES["mlperf"]
    assert _run(session, names, *probe_inputs([100], 384))[0].shape == (1, 384)


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden": 30, "heads": 4}, "not a multiple"),
    ({"input_names": "bert"}, "input_names"),
    ({"seq": "long"}, "seq must be"),
    ({"seq": None, "hardcode_seq_reshape": True}, "needs a fixed seq"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_model.build(**{**TINY, **kwargs})


def test_cli_writes_the_model(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    random_model.main(["--out", str(out), "--layers", "1", "--hidden", "32", "--heads", "2",
                       "--seq", "dynamic", "--names", "hf", "--seed", "3"])
    model = onnx.load(out)
    assert model.graph.input[1].name == "attention_mask"
    assert out.read_bytes() == random_model.build(1, 32, 2, seq=None, seed=3, input_names="hf").SerializeToString()
    assert "wrote" in capsys.readouterr().out
