"""Fused graphs: the random model's exported op pattern, onnxruntime's fusions on it, the fused-model
recipe (keys, entry, fusion statistics, the app's way to use it) and the machine-peak script's smoke run.

Tolerance: fused and unfused logits agree within 1e-4 (observed about 1e-6 on these tiny models), on
real and padded positions, at two lengths and two batch sizes.
"""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from conftest import ROOT, TINY_MODEL, offline_mlrun, step_dir
from engine.errors import StepError
from mlperf_bert import fusion, random_model
from mlperf_bert.model_adapter import inspect

TINY = {"hidden": 32, "heads": 2}
EQUAL = 1e-4


def _expected_ops(layers):
    """Op counts of the export: embeddings, mask, `layers` encoder layers, QA head."""
    per_layer = {"MatMul": 8, "Add": 10, "Reshape": 4, "Transpose": 4, "Div": 2, "Softmax": 1, "Erf": 1, "Mul": 2,
                 "LayerNormalization": 2}
    fixed = {"Shape": 1, "Gather": 4, "Unsqueeze": 3, "Slice": 1, "Add": 3, "LayerNormalization": 1, "Cast": 1,
             "Sub": 1, "Mul": 1, "MatMul": 1, "Split": 1, "Squeeze": 2}
    counts = collections.Counter(fixed)
    for op, count in per_layer.items():
        counts[op] += layers * count
    return counts


def _producers(model):
    return {output: node for node in model.graph.node for output in node.output}


def _path(producers, node, steps):
    """Follow (input index, expected op) steps from node up through its producers; return the op types met."""
    met = []
    for index, op in steps:
        node = producers[node.input[index]]
        met.append(node.op_type)
        assert node.op_type == op, f"expected {op}, got {node.op_type} ({node.name}); path so far {met}"
    return node


@pytest.mark.parametrize("layers", [1, 3])
def test_random_model_has_the_op_pattern_of_a_pytorch_bert_export(layers):
    model = random_model.build(layers, **TINY, seq=None)
    assert collections.Counter(n.op_type for n in model.graph.node) == _expected_ops(layers)
    producers = _producers(model)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    # Scores: Softmax(Add(Div(MatMul(Q, K^T), sqrt(d)), mask)), mask = (1 - Cast(mask[:, None, None, :])) * -10000.
    masked = _path(producers, softmax, [(0, "Add")])
    _path(producers, masked, [(0, "Div"), (0, "MatMul"), (1, "Transpose"), (0, "Reshape"), (0, "Add"), (0, "MatMul")])
    unsqueezed = _path(producers, masked, [(1, "Mul"), (0, "Sub"), (1, "Cast"), (0, "Unsqueeze"), (0, "Unsqueeze")])
    assert unsqueezed.input[0] == "input_mask"
    # GELU as torch exports it: Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5) over the intermediate MatMul+Add.
    gelu = producers["layer0.gelu.out"]
    assert gelu.op_type == "Mul" and gelu.input[1] == "layer0.gelu.half"
    _path(producers, gelu, [(0, "Mul"), (1, "Add"), (0, "Erf"), (0, "Div"), (0, "Add"), (0, "MatMul")])
    # Embeddings: LayerNorm(Add(Add(word, token_type), Gather(position, Slice(ids buffer, 0, seq_len)))).
    first_ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    shape = _path(producers, first_ln, [(0, "Add"), (1, "Gather"), (1, "Slice"), (2, "Unsqueeze"), (0, "Gather"),
                                        (0, "Shape")])
    assert shape.input[0] == "input_ids"
    # QA head: Split of MatMul+Add into start and end, each squeezed.
    squeezes = [n for n in model.graph.node if n.op_type == "Squeeze"]
    assert sorted(n.output[0] for n in squeezes) == sorted(random_model.OUTPUT_NAMES)
    assert {producers[n.input[0]].op_type for n in squeezes} == {"Split"}


@pytest.mark.slow   # about 0.76 s for 2 layers on the EPYC
@pytest.mark.parametrize("layers, seq, names", [(2, None, "mlperf"), (3, 384, "hf")])
def test_optimizer_fuses_it_as_it_fuses_the_official_export(tmp_path, layers, seq, names):
    source = tmp_path / "model.onnx"
    onnx.save(random_model.build(layers, **TINY, seq=seq, input_names=names), source)
    facts = fusion.fuse(str(source), tmp_path / "fused.onnx")
    # What onnxruntime's optimiser gives a PyTorch export of BertForQuestionAnswering: the embeddings and
    # their LayerNorm in one op, one Attention and one BiasGelu per layer, both residual LayerNorms skip-fused.
    assert facts["fused_operators"] == {"EmbedLayerNormalization": 1, "Attention": layers,
                                        "SkipLayerNormalization": 2 * layers, "BiasGelu": layers, "FastGelu": 0,
                                        "Gelu": 0, "LayerNormalization": 0}
    assert facts["fully_optimized"] is True and "fully fused" in fusion.describe(facts)
    fused = onnx.load(tmp_path / "fused.onnx")
    left = collections.Counter(n.op_type for n in fused.graph.node)
    assert left["Softmax"] == left["Erf"] == left["LayerNormalization"] == 0
    io = inspect(str(tmp_path / "fused.onnx"))
    assert io.seq_len is None  # a fixed 384 source is made dynamic first
    assert io.input_names == random_model.INPUT_NAMES[names] and (io.start, io.end) == random_model.OUTPUT_NAMES
    assert facts["sequence_axis"] == ("dynamic" if seq is None else "fixed 384, made dynamic before fusing")
    assert facts["check"]["max_abs_diff"] <= EQUAL and facts["check"]["same_argmax"]


def test_fused_outputs_equal_the_unfused_at_two_lengths_and_batch_sizes(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(random_model.build(2, **TINY, seq=None, seed=5), source)
    fusion.fuse(str(source), tmp_path / "fused.onnx")
    # Shapes of our own, not the ones fuse() checked itself.
    check = fusion.compare(str(source), str(tmp_path / "fused.onnx"), shapes=((4, 96), (1, 384)))
    assert check["max_abs_diff"] <= EQUAL and check["same_argmax"], check


def test_a_fused_model_that_differs_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "model.onnx"
    onnx.save(random_model.build(1, **TINY, seq=None), source)
    monkeypatch.setattr(fusion, "TOLERANCE", 0.0)  # fusion reorders float sums: never bit-identical
    with pytest.raises(StepError, match="differ from the unfused model's"):
        fusion.fuse(str(source), tmp_path / "fused.onnx")


# -- the recipe ------------------------------------------------------------------------------------------

FUSED = "get ml-model bert _random fused"
SMALL = ["--layers=2", "--hidden=64", "--heads=2"]


@pytest.fixture(scope="module")
def mlrun(tmp_path_factory, bert_seed):
    return offline_mlrun(tmp_path_factory.mktemp("fusion"), seed=bert_seed.cache)


def _plan(mlrun, *args):
    result = mlrun("plan", *args, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)["nodes"]
    return {node["name"]: node for node in nodes}, nodes


def test_fused_entry_records_its_fusions_and_is_reused(mlrun):
    first = mlrun(FUSED, *SMALL, "--seq=384", "--json", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    entry = step_dir(first)
    assert os.path.basename(entry).startswith("get-ml-model-bert-fused-")
    facts = json.load(open(os.path.join(entry, "fusion.json")))
    assert facts["fused_operators"]["Attention"] == 2 and facts["fused_operators"]["SkipLayerNormalization"] == 4
    assert facts["fused_operators"]["EmbedLayerNormalization"] == 1 and facts["fused_operators"]["BiasGelu"] == 2
    assert facts["optimizer"]["onnxruntime"] == "1.23.2" and facts["optimizer"]["opt_level"] == 0
    exports = json.loads(first.stdout)["exports"]
    assert exports["MLRUN_MODEL"] == os.path.join(entry, "model.onnx")
    assert exports["MLRUN_MODEL_FUSION"] == os.path.join(entry, "fusion.json")
    io = inspect(exports["MLRUN_MODEL"])
    assert io.seq_len is None and io.input_names == random_model.INPUT_NAMES["mlperf"]
    # The run record carries the fusion statistics; a second request reuses the entry.
    record = json.load(open(os.path.join(json.loads(first.stdout)["run_dir"], "run.json")))
    assert record["steps"][-1]["record"]["fusion"]["fused_operators"]["Attention"] == 2
    again = mlrun(FUSED, *SMALL, "--seq=384", "--json", timeout=120)
    assert again.returncode == 0 and step_dir(again) == entry
    assert [s["status"] for s in json.loads(again.stdout)["steps"]][-1] != "built"


def test_fused_key_follows_the_source_and_the_settings(mlrun):
    base, base_nodes = _plan(mlrun, FUSED, *SMALL)
    other_seed, _ = _plan(mlrun, FUSED, *SMALL, "--seed=1")
    heads_given, _ = _plan(mlrun, FUSED, *SMALL, "--num_heads=2")
    assert [n for n, _ in base["get-ml-model-bert-fused"]["deps"]] == ["unfused", "python"]
    assert other_seed["get-ml-model-bert"]["key"] != base["get-ml-model-bert"]["key"]
    assert other_seed["get-ml-model-bert-fused"]["key"] != base["get-ml-model-bert-fused"]["key"]
    assert heads_given["get-ml-model-bert"]["key"] == base["get-ml-model-bert"]["key"]
    assert heads_given["get-ml-model-bert-fused"]["key"] != base["get-ml-model-bert-fused"]["key"]
    # The optimiser's onnxruntime is pinned in the venv the step runs with: that venv's key is in the material.
    python = dict(base["get-ml-model-bert-fused"]["deps"])["python"]
    assert "onnxruntime==1.23.2" in next(n for n in base_nodes if n["key"] == python)["env"]["MLRUN_VENV_SET"]


def test_the_app_runs_a_fused_graph_with_one_flag(mlrun):
    nodes, _ = _plan(mlrun, "app mlperf bert _onnxruntime _cpu _random", *TINY_MODEL, "--dep.model.tags=fused")
    app = nodes["app-mlperf-bert"]
    model_key = dict(app["deps"])["model"]
    assert nodes["get-ml-model-bert-fused"]["key"] == model_key
    assert nodes["get-ml-model-bert-fused"]["variations"] == ["random", "onnx"]
    plain, _ = _plan(mlrun, "app mlperf bert _onnxruntime _cpu _random", *TINY_MODEL)
    # The fused model's source is the very model the app runs without the flag.
    assert dict(nodes["get-ml-model-bert-fused"]["deps"])["unfused"] == dict(plain["app-mlperf-bert"]["deps"])["model"]
    text = mlrun("plan", "app mlperf bert _onnxruntime _cpu _fp32", "--dep.model.tags=fused", timeout=120)
    assert text.returncode == 0, text.stderr
    assert "model: get-ml-model-bert-fused _fp32 _onnx" in text.stdout
    assert "unfused: get-ml-model-bert-large _onnx _fp32" in text.stdout


def test_a_fused_run_says_which_fusions_its_model_holds(mlrun):
    """An int8 run's summary named it int8; a fused run said so only in its model entry's name."""
    result = mlrun("app mlperf bert _onnxruntime _cpu _random", *TINY_MODEL, "--dep.model.tags=fused", "--count=8",
                   "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(open(os.path.join(step_dir(result), "summary.json")).read())
    fused = summary["model_fusion"]
    assert fused["fully_optimized"] and fused["fused_operators"]["Attention"] == 2, fused
    log = open(os.path.join(step_dir(result), ".mlrun", "build.log")).read()   # --json: the summary went there
    assert "model: fused: EmbedLayerNormalization 1, Attention 2" in log
    plain = mlrun("app mlperf bert _onnxruntime _cpu _random", *TINY_MODEL, "--count=8", "--json")
    assert json.loads(open(os.path.join(step_dir(plain), "summary.json")).read())["model_fusion"] is None


def test_fused_then_int8_and_a_model_file_fused(mlrun, tmp_path):
    # The two transforms compose through their model deps: int8 of the fused graph (the quantiser must be
    # told the type of the fused operators' tensors), and a --model=FILE fused like any other source.
    int8 = mlrun("get ml-model bert int8-dynamic _random", "--dep.source.tags=fused",
                 *[a.replace("--", "--dep.source.", 1) for a in SMALL], "--json", timeout=600)
    assert int8.returncode == 0, int8.stderr[-3000:]
    labels = [s["label"] for s in json.loads(int8.stdout)["steps"]]
    assert any(label.startswith("get-ml-model-bert-fused") for label in labels), labels
    assert inspect(os.path.join(step_dir(int8), "model.onnx")).seq_len is None
    model = tmp_path / "m.onnx"
    onnx.save(random_model.build(layers=1, hidden=64, heads=2, seed=3), str(model))
    nodes, _ = _plan(mlrun, "app mlperf bert _onnxruntime _cpu", f"--model={model}", "--dep.model.tags=fused")
    fused = nodes["get-ml-model-bert-fused"]
    assert fused["variations"][0] == "file"
    assert dict(fused["deps"])["unfused"] == nodes["get-ml-model-bert"]["key"]
    assert nodes["get-ml-model-bert"]["variations"][0] == "file"


# -- bench/machine_peak.py ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_machine_peak_quick_run_prints_its_figures(tmp_path):
    # --samples given beside --quick is kept (the smoke run's 8 replaced it unsaid)
    result = subprocess.run([sys.executable, "-m", "bench.machine_peak", "--quick", "--samples", "6", "--scratch",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "fp32 MatMul:" in out and "int8 MatMulInteger:" in out
    models = ("fp32 unfused", "fp32 fused", "int8 unfused", "int8 fused")
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if line.startswith(models)}
    # Each model in both layouts: one session on all cores, and the app's Offline layout (a session per core).
    assert set(rows) == {f"{model}, {layout}" for model in models for layout in ("all cores", "Offline")}, out
    assert "layout Offline: 2 session(s) x 1 thread(s)" in out or "layout Offline: 1 session(s)" in out
    assert "fusion speed-up, all cores: fp32" in out and "fusion speed-up, Offline: fp32" in out
    # answers kept by a single unpinned view only: an Offline layout of sessions per core compares none (its rows
    # said 8/8, the all-cores row's, or 0/8 when --threads pinned the view)
    one_view = "layout Offline: 1 session(s)" in out
    for name, line in rows.items():  # samples/s, median, speed-up, GFLOP/s, % of peak, same answers out of 8
        assert "x " in line and "%" in line, line
        assert ("/6" in line) == (name.endswith("all cores") or one_view), line
        assert ("/6" in line) != ("not compared: this layout keeps no answers" in line), line
    assert " 6/6" in rows["fp32 fused, all cores"]  # fusion keeps every answer
    cores = len(os.sched_getaffinity(0))
    assert "the model's weight GEMMs alone at the mean length" in out
    assert (f"fp32, 1 thread(s) x {cores} cores" if cores > 1 else "fp32, 1 thread(s):") in out, out
    # Where the time goes: each model's operator shares from onnxruntime's profile, the fused ops named.
    shares = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines()[-4:]}
    assert "Attention" in shares["fp32 fused"] and "QAttention" in shares["int8 fused"], out
    assert not list(tmp_path.glob("profile*.json"))  # the profiles are read and removed


def test_model_flops_formula():
    # One layer, L=2, H=4, F=8: QKV 3*2*2*4*4=192, scores 2*2*2*4=32, context 32, output 64, FFN 2*2*2*4*8=256;
    # head 2*2*4*2=32.
    from bench.machine_peak import model_flops
    assert model_flops(2, 1, 4, 8) == 192 + 32 + 32 + 64 + 256 + 32
    assert model_flops(384, 24, 1024, 4096) > 2 * model_flops(192, 24, 1024, 4096)  # attention grows as L^2
