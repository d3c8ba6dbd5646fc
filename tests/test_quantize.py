"""int8 from any model (mlperf_bert.quantize and its recipe), the dynamic-axis verdict, `--model=FILE` as a
content-keyed entry, and honest model labels. Tiny random models (2 layers, hidden 32-64): quick."""
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT
from engine.probes import Prober
from engine.resolver import resolve
from engine.settings import Settings
from mlperf_bert import quantize, random_model, seq_plan
from mlperf_bert.model_adapter import inspect, probe_inputs, seq_dynamic_verdict
from mlperf_bert.ort_backend import OrtBackend

TINY = {"layers": 2, "hidden": 64, "heads": 2}
# int8 vs fp32 on probe inputs of these tiny random models: measured 0.05-0.09 (start/end logits spread ~2-4).
INT8_TOLERANCE = 0.3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {"fixed": str(folder / "fixed.onnx"), "hardcoded": str(folder / "hardcoded.onnx"),
             "fixed_int8": str(folder / "fixed_int8.onnx")}
    onnx.save(random_model.build(**TINY, seq=384), paths["fixed"])
    onnx.save(random_model.build(**TINY, seq=384, hardcode_seq_reshape=True), paths["hardcoded"])
    # int8 made by hand from the fixed-384 file, as the issue found it: its activation scales see the padding.
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(paths["fixed"], paths["fixed_int8"], per_channel=True, weight_type=QuantType.QInt8)
    return paths


# -- settings chosen for the CPU -------------------------------------------------------------------


def test_auto_settings_follow_the_cpu_and_inputs_win():
    settings, why = quantize.choose({"avx2", "avx512f"})
    assert settings == {"weight_type": "QInt8", "per_channel": True, "reduce_range": True}
    assert "no VNNI" in why["reduce_range"]
    settings, why = quantize.choose({"avx2", "avx512_vnni"})
    assert settings["reduce_range"] is False and "avx512_vnni" in why["reduce_range"]
    assert quantize.choose({"amx_int8"})[0]["reduce_range"] is False
    settings, why = quantize.choose({"avx512_vnni"}, per_channel="false", reduce_range="true", weight_type="QUInt8")
    assert settings == {"weight_type": "QUInt8", "per_channel": False, "reduce_range": True}
    assert set(why.values()) == {"given"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert quantize.cpu_flags(str(info)) == {"fpu", "sse", "avx2", "avx_vnni"}
    assert quantize.cpu_flags(str(tmp_path / "none")) == set()


# -- the quantised model ---------------------------------------------------------------------------


@pytest.mark.slow  # about 1.2 s on the 2-core EPYC
def test_int8_from_a_fixed_384_model_keeps_the_axis_dynamic_and_stays_close(models, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: avx2 avx512f\n")   # no VNNI: reduce_range chosen
    assert quantize.main(["--model", models["fixed"], "--out", str(tmp_path), "--cpuinfo", str(cpuinfo)]) == 0
    int8 = str(tmp_path / "model.onnx")
    assert inspect(int8).seq_len is None
    record = json.loads((tmp_path / "quantization.json").read_text())
    assert record["settings"] == {"weight_type": "QInt8", "per_channel": True, "reduce_range": True}
    assert record["cpu_int8_flags"] == [] and record["seq_axis"] == "dynamic"
    assert "made dynamic" in record["quantized_from"]
    # Run unpadded at two lengths against the fp32 model padded to 384: close, same argmax (8 probes).
    lengths = [37, 200]
    ids, mask, segments = probe_inputs(lengths, 384)
    fp32 = OrtBackend(models["fixed"]).run(ids, mask, segments)
    backend = OrtBackend(int8)
    for row, length in enumerate(lengths):
        got = backend.run(ids[row:row + 1, :length], mask[row:row + 1, :length], segments[row:row + 1, :length])
        assert got[0].shape == (1, length)
        for cut, padded in zip(got, fp32):
            assert np.abs(cut[0] - padded[row, :length]).max() < INT8_TOLERANCE
            assert cut[0].argmax() == padded[row, :length].argmax()
    assert record["vs_fp32"]["max_abs_logit_diff"] < INT8_TOLERANCE


def test_an_int8_source_is_refused_not_quantised_again(models, tmp_path, capsys):
    """_int8-dynamic of an int8 model went through, recorded as int8 made from an fp32 model (NNCF refused it)."""
    code = quantize.main(["--model", models["fixed_int8"], "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 78 and "the source model is quantised already (" in err, err   # the runner's exit 2
    assert "without _int8-dynamic runs its int8 operators as they are" in err
    assert not (tmp_path / "model.onnx").exists()


# -- the verdict: "cannot be made dynamic" vs "quantisation noise" ------------------------------------


def test_hand_made_int8_of_a_fixed_model_is_made_dynamic_as_noise(models, tmp_path):
    """Cut vs padded differs by ~0.06 here (beyond 1e-3), as much as other padding moves it: noise."""
    verdict = seq_dynamic_verdict(models["fixed_int8"], str(tmp_path / "d.onnx"))
    assert verdict.dynamic, verdict.reason
    assert "within the model's own noise" in verdict.reason and "DynamicQuantizeLinear" in verdict.reason
    assert inspect(str(tmp_path / "d.onnx")).seq_len is None
    # The harness's plan says it runs real lengths, not the 384 fallback.
    path, plan = seq_plan.prepare(models["fixed_int8"], "auto", tmp_path / "cache")
    assert plan.buckets is None and path != models["fixed_int8"]


def test_exact_fp32_model_is_same_logits_not_noise(models, tmp_path):
    verdict = seq_dynamic_verdict(models["fixed"], str(tmp_path / "d.onnx"))
    assert verdict.dynamic and "same logits" in verdict.reason


def test_a_model_that_really_hard_codes_384_is_said_so(models, tmp_path):
    from onnxruntime.quantization import quantize_dynamic
    quantize_dynamic(models["hardcoded"], str(tmp_path / "hardcoded_int8.onnx"))
    for name in ("hardcoded", "hardcoded_int8"):
        path = models.get(name) or str(tmp_path / f"{name}.onnx")
        verdict = seq_dynamic_verdict(path, str(tmp_path / "d.onnx"))
        assert not verdict.dynamic and "hard-codes its 384 sequence length" in verdict.reason
        assert "fails at length" in verdict.reason
    path, plan = seq_plan.prepare(models["hardcoded"], "auto", tmp_path / "cache")
    assert path == models["hardcoded"] and "FALLBACK" in plan.description and "fails at length" in plan.description
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "hardcoded_int8.onnx"]


def test_a_model_that_ignores_its_mask_is_not_excused_as_noise(tmp_path):
    """logits = ids/1000 + mean(ids/1000) over all 384 positions: runs at any length, but cut and padded
    differ (and so does other padding, by far more than noise): refused, with the figures."""
    names = ("input_ids", "input_mask", "segment_ids")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", 384]) for n in names]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 384])
               for n in ("output_start_logits", "output_end_logits")]
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "scale"], ["s"]),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Add", ["s", "m"], ["output_start_logits"]),
             helper.make_node("Sub", ["s", "m"], ["output_end_logits"])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.float32(1e-3), "scale")])
    opsets = [helper.make_opsetid("", 13)]
    path = str(tmp_path / "unmasked.onnx")
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), path)
    verdict = seq_dynamic_verdict(path, str(tmp_path / "d.onnx"))
    assert not verdict.dynamic and "hard-codes" in verdict.reason and "an exact graph" in verdict.reason
    assert not (tmp_path / "d.onnx").exists()


# -- keys and labels, resolved with the real recipes (nothing runs) -------------------------------------


def _plan(tmp_path, query, inputs=None, deps=None, prober=None):
    settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(ROOT, "recipes"),
                                          "MLRUN_CACHE": str(tmp_path / "cache")})
    return resolve(settings.index(), query, inputs=inputs or {}, host_env=dict(os.environ),
                   dep_overrides=deps or {}, prober=prober or settings.prober())


def _node(plan, recipe):
    return next(n for n in plan.nodes if n.name == recipe)


INT8 = "get-ml-model-bert-int8-dynamic"


def test_int8_key_changes_with_the_source_and_each_setting(tmp_path):
    def key(deps=None, **inputs):
        return _node(_plan(tmp_path, "get ml-model bert int8-dynamic _random", inputs,
                           {"source": {"layers": "2", **(deps or {})}}), INT8).key
    base = key()
    changed = [key(deps={"layers": "3"}), key(deps={"seed": "1"}), key(per_channel="false"),
               key(reduce_range="true"), key(weight_type="QUInt8")]
    assert base == key() and len({base, *changed}) == 6
    official = _node(_plan(tmp_path, "get ml-model bert int8-dynamic"), INT8)
    assert dict(official.deps)["source"].name == "get-ml-model-bert-large" and official.key != base


@pytest.mark.parametrize("query, recipe", [("get ml-model bert int8-dynamic _random", INT8),
                                           ("get ml-model bert int8-nncf _random", "get-ml-model-bert-int8-nncf")])
def test_int8_key_holds_the_cpus_int8_instructions(tmp_path, query, recipe):
    """Both quantisers choose by the CPU's int8 instructions (reduce_range; NNCF's overflow_fix): a model made on a
    VNNI machine is not the one an AVX2 machine needs (NNCF's was taken from the same key on both)."""
    class FakeCpu(Prober):
        def __init__(self, answer):
            super().__init__(None)
            self.answer = answer

        def __call__(self, node, spec, host, overrides=None):
            return {name: self.answer for name in spec} if node.name == recipe else super().__call__(node, spec, host, overrides)
    def key(answer):
        return _node(_plan(tmp_path, query, prober=FakeCpu(answer)), recipe)
    vnni, plain = key("int8 isa: avx512_vnni"), key("int8 isa:")
    assert vnni.key != plain.key and vnni.material["probe"] == {"cpu_int8": "int8 isa: avx512_vnni"}
    real = _node(_plan(tmp_path, query), recipe).probes["cpu_int8"]
    assert real.startswith("int8 isa:")


def test_nncfs_overflow_fix_follows_the_cpu():
    from mlperf_bert import nncf_quantize
    assert nncf_quantize.overflow_fix({"avx2", "avx512f"})[0] == "enable"   # u8s8 sums saturate: half range
    assert nncf_quantize.overflow_fix({"avx2", "avx_vnni"})[0] == "first_layer_only"   # NNCF's own default
    assert nncf_quantize.overflow_fix({"amx_int8"})[0] == "first_layer_only"
    assert "amx_int8" in nncf_quantize.overflow_fix({"amx_int8", "avx512_vnni"})[1]


def test_app_uses_the_int8_model_of_its_chosen_source(tmp_path, models):
    plan = _plan(tmp_path, "app mlperf bert _onnxruntime _cpu _random _int8-dynamic", deps={"source": {"layers": "2"}})
    model = dict(plan.root.deps)["model"]
    assert model.name == INT8 and dict(model.deps)["source"].inputs["layers"] == 2
    assert plan.root.label == "app-mlperf-bert _onnxruntime _cpu _random _int8-dynamic"
    on_file = _plan(tmp_path, "app mlperf bert _onnxruntime _cpu _int8-dynamic", {"model": models["fixed"]})
    source = dict(dict(on_file.root.deps)["model"].deps)["source"]
    assert (source.name, source.variations) == ("get-ml-model-bert", ["file"])


@pytest.mark.parametrize("query, source, variations", [
    ("app mlperf bert _openvino _random", "get-ml-model-bert", ["random"]),
    ("app mlperf bert _openvino _minilm-squad", "get-ml-model-bert-minilm-squad", ["minilm-squad"]),
    ("app mlperf bert _openvino", "get-ml-model-bert-large", ["onnx", "fp32"]),   # the official fp32 model
    ("app mlperf bert _openvino FILE", "get-ml-model-bert", ["file"]),
])
def test_openvino_int8_runs_nncfs_int8_of_the_model_the_run_names(tmp_path, models, query, source, variations):
    """--precision=int8 with _openvino: the model dep is the NNCF int8 entry of the fp32 model the run would use,
    calibrated on the features and the calibration list; the same NNCF layer over the backend's venv."""
    inputs = {"precision": "int8"}
    if query.endswith(" FILE"):
        query, inputs["model"] = query[:-len(" FILE")], models["fixed"]
    plan = _plan(tmp_path, query, inputs)
    model = dict(plan.root.deps)["model"]
    deps = dict(model.deps)
    assert model.name == "get-ml-model-bert-int8-nncf" and model.exports["MLRUN_MODEL_NAME"] == "int8-nncf"
    assert (deps["source"].name, deps["source"].variations) == (source, variations)
    assert {"features", "calibration-list", "nncf"} <= set(deps)
    backend = _node(_plan(tmp_path, "get backend onnxruntime _cpu"), "get-python-venv").key
    assert dict(deps["nncf"].deps)["python"].key == backend
    fp32 = dict(_plan(tmp_path, query, {k: v for k, v in inputs.items() if k != "precision"}).root.deps)["model"]
    assert fp32.key == deps["source"].key   # the fp32 run's model, quantised


@pytest.mark.parametrize("query, inputs", [
    ("app mlperf bert _onnxruntime _cpu _random _int8-dynamic", {}),
    ("app mlperf bert _onnxruntime _cpu _int8-dynamic", {}),                 # the official model, quantised
    ("app mlperf bert _onnxruntime _cpu", {"model": "FILE"}),
    ("get ml-model bert fused _random", {}),
])
def test_the_model_tools_share_the_backends_venv(tmp_path, models, query, inputs):
    # One venv entry (numpy, onnx, onnxruntime, tqdm) for the model builders and tools and the onnxruntime
    # backend: a near-identical second venv cost 30 s and 300 MB at the first _int8-dynamic, _fused or --model.
    inputs = {name: models["fixed"] if value == "FILE" else value for name, value in inputs.items()}
    venvs = {node.key for node in _plan(tmp_path, query, inputs).nodes if node.name == "get-python-venv"
             and "onnx==" in node.env.get("MLRUN_VENV_SET", "") + node.inputs["packages"]}
    backend = _node(_plan(tmp_path, "get backend onnxruntime _cpu"), "get-python-venv").key
    assert venvs == {backend}


@pytest.mark.parametrize("model, recipe", [(None, "get-ml-model-bert-large"), ("FILE", "get-ml-model-bert"),
                                           ("zoo:nlp/question_answering/x/pytorch/huggingface/squad/y", "get-ml-model-bert"),
                                           ("hf:org/name", "get-ml-model-bert")])
def test_labels_name_no_model_variation_that_was_not_asked_for(tmp_path, models, model, recipe):
    inputs = {"model": models["fixed"] if model == "FILE" else model} if model else {}
    plan = _plan(tmp_path, "app mlperf bert _onnxruntime _cpu", inputs)
    assert plan.root.label == "app-mlperf-bert _onnxruntime _cpu"   # no _fp32 for a file, a stub or a repo
    assert dict(plan.root.deps)["model"].name == recipe
    assert _plan(tmp_path, "app mlperf bert _onnxruntime _cpu _fp32").root.label.endswith("_cpu _fp32")


# -- --model=FILE: an entry keyed by the file's content ----------------------------------------------


def test_model_file_is_keyed_by_content_not_path(tmp_path, models):
    def key(path, query="app mlperf bert _onnxruntime _cpu"):
        return dict(_plan(tmp_path, query, {"model": path}).root.deps)["model"].key
    copy = tmp_path / "elsewhere" / "same.onnx"
    copy.parent.mkdir()
    shutil.copyfile(models["fixed"], copy)
    assert key(models["fixed"]) == key(str(copy))
    int8 = "app mlperf bert _onnxruntime _cpu _int8-dynamic"
    assert key(models["fixed"], int8) == key(str(copy), int8)   # the int8 entry too
    onnx.save(random_model.build(**TINY, seq=384, seed=1), str(copy))   # other bytes, same path
    assert key(str(copy)) != key(models["fixed"])
    memo = json.loads((tmp_path / "cache" / ".index" / "file-digests.json").read_text())["outputs"]
    assert len([k for k in memo if json.loads(k)[0] == str(copy)]) == 1   # one record per file, the newest


def test_a_missing_model_file_is_one_clear_error(tmp_path):
    from engine.errors import ResolutionError
    with pytest.raises(ResolutionError, match=r"--model: no such file or folder: .*/nope.onnx"):
        _plan(tmp_path, "get ml-model bert int8-dynamic", {"model": str(tmp_path / "nope.onnx")})
    zoo = _plan(tmp_path, "get ml-model bert int8-dynamic", {"model": "zoo:nlp/a/b/c/d/e/f"})
    assert _node(zoo, INT8).inputs["model"] == "zoo:nlp/a/b/c/d/e/f" and not _node(zoo, INT8).contents


# -- NNCF's static int8: the calibration features ------------------------------------------------------------------

def _three_features():
    from types import SimpleNamespace
    return SimpleNamespace(lengths=np.array([100, 200, 300]), examples=[{"qas_id": "q0"}, {"qas_id": "q1"}],
                           features=[{"example_index": 0}, {"example_index": 1}, {"example_index": 1}])


def test_calibration_is_the_listed_features_outside_the_held_out_questions(tmp_path):
    """A model scored on held-out questions (the MiniLM one) is never calibrated on their features."""
    from mlperf_bert import nncf_quantize
    listed = tmp_path / "list.txt"
    listed.write_text("0\n2\n")
    assert nncf_quantize.calibration_rows(_three_features(), listed) == ([0, 2], [])
    held = tmp_path / "heldout.json"
    held.write_text(json.dumps({"question_ids": ["q1"]}))
    assert nncf_quantize.calibration_rows(_three_features(), listed, held) == ([0], [2])
    held.write_text(json.dumps({"question_ids": ["q0", "q1"]}))
    with pytest.raises(nncf_quantize.UsageError, match="every feature of the calibration list"):
        nncf_quantize.calibration_rows(_three_features(), listed, held)


@pytest.mark.parametrize("text", ["0\n7\n", "zero\n", ""])
def test_a_calibration_list_outside_the_features_is_refused(tmp_path, text):
    from mlperf_bert import nncf_quantize
    listed = tmp_path / "list.txt"
    listed.write_text(text)
    with pytest.raises(nncf_quantize.UsageError, match="calibration list"):
        nncf_quantize.calibration_rows(_three_features(), listed)


def test_a_mirrors_calibration_list_is_keyed_by_its_content(tmp_path):
    """A changed list in the mirror (the official one put in place of a stand-in) reused the entry of the old one,
    and the int8 model calibrated on it: the calibration entry's url and (empty) --sha256 were all its key."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    listed = mirror / "bert_calibration_features.txt"

    def keys():
        settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(ROOT, "recipes"), "MLRUN_MIRROR": str(mirror),
                                              "MLRUN_CACHE": str(tmp_path / "cache")})
        plan = resolve(settings.index(), "app mlperf bert _openvino _random", inputs={"precision": "int8"},
                       host_env=dict(os.environ), prober=settings.prober())
        calibration = _node(plan, "get-dataset-squad-calibration")
        return calibration.key, _node(plan, "get-ml-model-bert-int8-nncf").key, calibration.probes["mirror_list"]
    listed.write_text("".join(f"{i}\n" for i in range(100)))
    first = keys()
    assert first[2].startswith("mirror copy sha256 ") and keys() == first   # the same file: the same keys
    listed.write_text("".join(f"{i}\n" for i in range(1, 101)))
    second = keys()
    assert second[0] != first[0] and second[1] != first[1]
    # another list of the same size given the old one's time (`cp -p`, `rsync -a`, `touch -r`): the probe's memo
    # knew the file by its size and mtime and kept the old digest
    stat = listed.stat()
    listed.write_text("".join(f"{i}\n" for i in [*range(1, 100), 101]))
    os.utime(listed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert listed.stat().st_size == stat.st_size
    third = keys()
    assert third[0] not in (first[0], second[0]) and third[2] != second[2]
    listed.unlink()
    assert keys()[2] == "none in the mirror"
