"""The BERT benchmark on the OpenVINO backend through the real recipes and bin/mlrun, offline.

Like tests/test_deepsparse_pipeline.py: the mirror ../shared/data gives the SQuAD dev set and vocab, the model is a
tiny random-weight BERT built by its recipe, and the module shares one cache folder started from the warm seed
(the onnxruntime venv is there; the OpenVINO layer over it is a pip install of one wheel).
"""
import json
import os
import re

import numpy as np
import pytest

from conftest import TINY_MODEL, assert_user_error, bench_scratch, offline_mlrun, step_dir, step_of
from mlperf_bert import batching

QUERY = "app mlperf bert _openvino _cpu _random"
ORT_QUERY = "app mlperf bert _onnxruntime _cpu _random"
COUNT = 20


def _cpu_multiplies_bf16():
    flags = open("/proc/cpuinfo").read().split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.fixture(scope="module")
def ov(tmp_path_factory, bert_seed):
    return offline_mlrun(tmp_path_factory.mktemp("openvino-pipeline"), seed=bert_seed.cache)


def _logits(run_dir):
    """{qsl_idx: float32 (L, 2)} of an accuracy run."""
    return {r["qsl_idx"]: np.frombuffer(bytes.fromhex(r["data"]), np.float32).reshape(-1, 2)
            for r in json.load(open(os.path.join(run_dir, "mlperf_log_accuracy.json")))}


def _summary(result):
    return json.load(open(os.path.join(step_dir(result), "summary.json")))


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    """An empty cache: plans only (what is refused is refused before anything is built)."""
    return offline_mlrun(tmp_path_factory.mktemp("openvino-plans"))


@pytest.fixture(scope="module")
def accuracy_run(ov):
    result = ov(QUERY, "--mode=accuracy", f"--count={COUNT}", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fp32_gives_onnxruntimes_answers_on_the_same_model(ov, accuracy_run):
    """fp32 is asked for as f32 (OpenVINO's own default on a CPU with AMX is bf16): the logits of every sample
    within 1e-4 of onnxruntime's on the same model entry, each at its real length (measured: 2.6e-6)."""
    summary = _summary(accuracy_run)
    assert summary["backend"] == "openvino" and summary["precision"] == "fp32"
    assert summary["openvino"]["precision"] == "fp32" and summary["openvino"]["inference_precision_hint"] == "f32"
    assert summary["openvino"]["version"].startswith("2026.4.1")
    assert summary["samples_completed"] == COUNT and set(summary["accuracy"]) >= {"exact_match", "f1"}
    assert summary["sequence_handling"].startswith("exact lengths")
    assert "OpenVINO 2026.4.1: fp32" in accuracy_run.stderr + accuracy_run.stdout or \
        "OpenVINO 2026.4.1: fp32" in open(os.path.join(step_dir(accuracy_run), ".mlrun", "build.log")).read()
    ort = ov(ORT_QUERY, "--mode=accuracy", f"--count={COUNT}", *TINY_MODEL, "--json")
    assert ort.returncode == 0, ort.stderr[-3000:]
    assert step_of(ort, "get-ml-model-bert")["path"] == step_of(accuracy_run, "get-ml-model-bert")["path"]
    ours, theirs = _logits(step_dir(accuracy_run)), _logits(step_dir(ort))
    assert sorted(ours) == sorted(theirs) == list(range(COUNT))
    for index in ours:
        assert ours[index].shape == theirs[index].shape, index   # the same (real) length
        assert float(np.abs(ours[index] - theirs[index]).max()) < 1e-4, index


def test_the_backend_is_a_layer_over_the_onnxruntime_venv(ov, accuracy_run):
    """One venv for the model tools and the runtime beside it: the layer entry holds openvino pinned, its record
    lists what was installed, and nothing in it names the folder it was built in (the cache can move)."""
    layer = step_of(accuracy_run, "get-backend-openvino")["path"]
    assert os.path.isdir(os.path.join(layer, "site", "openvino"))
    packages = open(os.path.join(layer, "packages.txt")).read().split()
    assert "openvino==2026.4.1" in packages and all("==" in p for p in packages)
    cache = os.path.dirname(layer)
    for folder, _, files in os.walk(os.path.join(layer, "site")):   # what the step installed (mlrun's own record
        for name in files:                                            # in entry.json says where it was built)
            if name.endswith((".txt", ".json", ".py", "RECORD", "INSTALLER", ".pth")):
                assert cache not in open(os.path.join(folder, name), errors="replace").read(), name
    venvs = [s["label"] for s in json.loads(accuracy_run.stdout)["steps"] if s["recipe"] == "get-python-venv"]
    assert sorted(venvs) == ["get-python-venv _numpy", "get-python-venv _onnxruntime"]   # no venv of its own


def test_bf16_runs_where_the_cpu_multiplies_it_and_is_refused_elsewhere(ov, accuracy_run):
    """--precision=bf16: on a CPU with AMX or AVX512_BF16 it runs and records bf16 (logits near fp32's, not equal:
    bf16 keeps 8 bits of mantissa; 0.03 apart measured on this model); elsewhere it stops with exit 2 before
    LoadGen starts (OpenVINO would quietly run f32 and the run would say bf16)."""
    result = ov(QUERY, "--precision=bf16", "--mode=accuracy", f"--count={COUNT}", *TINY_MODEL, "--json")
    if not _cpu_multiplies_bf16():
        assert result.returncode == 2, result.stderr[-2000:]
        assert "does not multiply bf16" in result.stderr and "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(result)
    assert summary["precision"] == "bf16" and summary["openvino"]["inference_precision_hint"] == "bf16"
    # Offline, no --batch_size: the rule's batches on this CPU (8 within 16 tokens with AMX, else one sample)
    rule = batching.choose("Offline", "openvino", "bf16")
    assert {key: summary["batching"][key] for key in ("batch_size", "pad_tokens", "rule")} == \
        {"batch_size": rule.size, "pad_tokens": rule.pad, "rule": rule.rule}
    assert (summary["batching"]["mean_batch"] > 1) == (rule.size > 1), summary["batching"]
    fp32_run = _summary(accuracy_run)
    assert fp32_run["batching"]["rule"] == "Offline, openvino fp32: one sample per call (it ran no faster batched)"
    # where the rule may batch (Offline, OpenVINO), the summary says why it did not
    from mlperf_bert import harness
    assert "\n  batching: Offline, openvino fp32: one sample per call (it ran no faster batched)\n" in \
        harness.format_summary(fp32_run)
    fp32, bf16 = _logits(step_dir(accuracy_run)), _logits(step_dir(result))
    worst = max(float(np.abs(fp32[i] - bf16[i]).max()) for i in fp32)
    assert 0 < worst < 0.5, worst


def test_bf16_under_an_isa_cap_below_it_is_refused_before_anything_is_built(planner):
    """--env.ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU: OpenVINO still reported bf16, then failed to compile ("primitive
    descriptors list is empty") and the hint blamed its ONNX reader (exit 1), after 9 steps were built (the override
    is in every key). The probe now sees the --env overrides the step will get."""
    result = planner("plan", QUERY, "--precision=bf16", "--env.ONEDNN_MAX_CPU_ISA=AVX2")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    said = "--env.ONEDNN_MAX_CPU_ISA=AVX2 keeps OpenVINO" if _cpu_multiplies_bf16() else "does not multiply bf16"
    assert said in result.stderr, result.stderr[-2000:]
    if _cpu_multiplies_bf16():   # a cap that keeps bf16 passes
        assert planner("plan", QUERY, "--precision=bf16", "--env.ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX").returncode == 0


def test_instances_and_threads_are_openvino_streams(ov, accuracy_run):
    """--instances/--threads set the streams and their threads, recorded as OpenVINO compiled them."""
    result = ov(QUERY, "--mode=performance", "--count=16", "--min_duration=500", "--instances=1", "--threads=2",
                *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(result)
    assert summary["openvino"]["streams"] == 1 and summary["openvino"]["threads"] == 2
    assert summary["parallelism"]["instances"] == 1 and summary["parallelism"]["threads"] == 2
    assert summary["parallelism"]["overridden"] == ["instances", "threads"]
    assert summary["parallelism"]["cores"] == []   # OpenVINO pins its streams; nothing of ours claims to
    assert summary["loadgen"]["metric"]["Samples per second"] > 0
    # its Offline target: 1.1 x the rate pass, which reads OpenVINO low (1 short run in 3 was INVALID)
    assert summary["rate_pass"]["margin"] == 1.1
    assert summary["settings"]["target_qps"] == pytest.approx(1.1 * 1.1 * summary["rate_pass"]["samples_per_second"],
                                                              rel=0.01)


def test_more_instances_than_openvino_grants_are_refused_not_recorded_as_run(ov, accuracy_run):
    """OpenVINO compiles at most the cores it may use: --instances=4 --threads=3 on 2 cores ran 2 streams of 1
    thread while the run recorded and printed 4 x 3 (and warned that 12 threads take turns)."""
    cores = len(os.sched_getaffinity(0))
    result = ov(QUERY, "--mode=performance", "--count=8", f"--instances={2 * cores}", "--threads=1", *TINY_MODEL)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"not the {2 * cores} x 1 asked for" in result.stderr and "Traceback" not in result.stderr
    assert "one thread per core" in result.stderr   # said before the compile (a BERT-Large's takes its while)


def test_a_model_openvino_cannot_read_is_refused_with_its_reason(ov, accuracy_run, tmp_path):
    """OpenVINO's message opens with where in its sources it failed ("Check 'false' failed at ...cpp:151:"), which
    was all the error said; the reason that follows (the operator it cannot convert) is what is shown now."""
    import onnx
    model = onnx.load(os.path.join(step_of(accuracy_run, "get-ml-model-bert")["path"], "model.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "Add")
    node.op_type, node.domain = "Frobnicate", "my.custom"
    model.opset_import.append(onnx.helper.make_opsetid("my.custom", 1))
    onnx.save(model, tmp_path / "custom.onnx")
    result = ov("app mlperf bert _openvino _cpu", f"--model={tmp_path / 'custom.onnx'}", "--mode=accuracy",
                "--count=4")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "No conversion rule found for operations: my.custom.Frobnicate" in result.stderr
    assert "failed at src/" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow   # an app run: over 0.75 s
def test_onnxruntimes_int8_graph_given_as_a_file_is_refused_as_its_variation_is(ov, accuracy_run, tmp_path):
    """`_openvino _int8-dynamic` is refused; the same graph as --model=FILE ran at a fifth of its speed, recorded
    int8 (DeepSparse's engine crashed on it: the same check)."""
    from onnxruntime.quantization import quantize_dynamic
    source = os.path.join(step_of(accuracy_run, "get-ml-model-bert")["path"], "model.onnx")
    quantize_dynamic(source, str(tmp_path / "int8.onnx"))
    result = ov("app mlperf bert _openvino _cpu", f"--model={tmp_path / 'int8.onnx'}", "--mode=accuracy", "--count=4")
    assert_user_error(result, 2, "is onnxruntime's dynamic int8 graph (", "OpenVINO runs it at a fifth of its "
                      "onnxruntime speed", "run it with _onnxruntime, or give this backend the fp32 model")


@pytest.mark.parametrize("query, flags, said", [
    ("_openvino _int8-dynamic", [], "_openvino (the query) cannot go with _int8-dynamic"),
    ("_openvino _cuda", [], "cannot go with"),
    ("_onnxruntime", ["--precision=bf16"], "--precision=bf16 applies only with _openvino\n"),
    ("_deepsparse", ["--precision=bf16"], "--precision=bf16 applies only with _openvino\n"),
    ("_openvino", ["--precision=fp16"], "--precision=fp16 applies only with _tensorrt or _tensorrt-ep\n"),
    ("_openvino", ["--precision=tf32"], "--precision=tf32 applies only with _cuda or _tensorrt or _tensorrt-ep\n"),
    ("_onnxruntime", ["--precision=int8"], "--precision=int8 applies only with _tensorrt or _openvino\n"),
    ("_onnxruntime", ["--precision=int8-bf16"], "--precision=int8-bf16 applies only with _openvino\n"),
    ("qa: _onnxruntime", ["--precision=int8-bf16"], "--precision=int8-bf16 applies only with _openvino\n"),
    ("_openvino", ["--spin"], "--spin"),
    ("_deepsparse", ["--instances=2"], "--instances"),
    # onnxruntime's int8 graph stopped DeepSparse on an assertion, a page of its backtrace, exit 1
    ("_deepsparse _int8-dynamic", [], "_deepsparse (the query) cannot go with _int8-dynamic"),
    ("qa: _deepsparse _int8-dynamic", [], "_deepsparse (the query) cannot go with _int8-dynamic"),
    ("qa: _openvino _int8-dynamic", [], "_openvino (the query) cannot go with _int8-dynamic"),
    # a checksum not of 64 lower-case hex digits: refused at plan time (a typo failed the step, an upper-case
    # one made a second calibration entry and int8 model)
    ("_openvino", ["--precision=int8", "--dep.calibration-list.sha256=" + "AB" * 32],
     "--dep.calibration-list.sha256=ABAB"),
])
def test_what_openvino_does_not_run_is_refused_before_anything_is_built(planner, query, flags, said):
    app, query = ("app bert qa", query[4:]) if query.startswith("qa: ") else ("app mlperf bert", query)
    result = planner("plan", f"{app} _random {query}", *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("app", ["app mlperf bert _openvino _random", "app bert qa _openvino _random"])
def test_bf16_on_a_cpu_without_it_is_refused_before_anything_is_built(planner, app):
    """On a fresh machine the refusal came when the step compiled the model, after the venv, the OpenVINO layer,
    the model and the features were built. Now a probe of the CPU's flags (get cpu bf16) decides at plan time."""
    result = planner("plan", app, "--precision=bf16")
    if _cpu_multiplies_bf16():
        assert result.returncode == 0, result.stderr[-2000:]
        assert "get-cpu-bf16" in result.stdout and "bf16 instructions: " in result.stdout
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "this CPU does not multiply bf16" in result.stderr and "Traceback" not in result.stderr
    assert "get-cpu-bf16" not in planner("plan", app).stdout   # fp32 asks nothing of the CPU
    both = planner("plan", app, "--precision=int8-bf16")   # the int8 model, its rest bf16: the same check, named so
    if _cpu_multiplies_bf16():
        assert both.returncode == 0 and "get-cpu-bf16" in both.stdout and "int8-nncf" in both.stdout, both.stderr
    else:
        assert both.returncode == 2 and "--precision=int8-bf16: this CPU does not multiply bf16" in both.stderr
        assert "--precision=int8 (the rest fp32)" in both.stderr, both.stderr


def test_the_bf16_probe_reads_the_cpu_flags(tmp_path):
    import subprocess
    probe = os.path.join(os.path.dirname(__file__), "..", "recipes", "get-cpu-bf16", "probe.sh")
    flags = {"zen3": "fpu sse avx2 avx512f", "zen4": "avx2 avx512f avx512_bf16 avx512_vnni",
             "sapphire": "avx512_bf16 amx_bf16 amx_tile amx_int8"}
    said = {}
    for name, line in flags.items():
        (tmp_path / name).write_text(f"processor\t: 0\nflags\t\t: {line}\n\nprocessor\t: 1\nflags\t\t: {line}\n")
        done = subprocess.run(["sh", probe, str(tmp_path / name)], capture_output=True, text=True)
        said[name] = (done.returncode, done.stdout.strip(), done.stderr.strip()[:60])
    assert said == {"zen3": (1, "", "--precision=bf16: this CPU does not multiply bf16 (no amx_bf"),
                    "zen4": (0, "bf16 instructions: avx512_bf16", ""),
                    "sapphire": (0, "bf16 instructions: amx_bf16 avx512_bf16", "")}
    capped = subprocess.run(["sh", probe, str(tmp_path / "zen4")], capture_output=True, text=True,
                            env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert capped.returncode == 1 and "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI keeps OpenVINO" in capped.stderr

    def under(**env):
        clean = {k: v for k, v in os.environ.items() if not k.endswith("_MAX_CPU_ISA")}
        return subprocess.run(["sh", probe, str(tmp_path / "zen4")], capture_output=True, text=True,
                              env={**clean, **env})
    # oneDNN's older name: it went through, and the step failed to compile (exit 1, "OpenVINO's ONNX reader")
    older = under(DNNL_MAX_CPU_ISA="avx2")
    assert older.returncode == 1 and "--env.DNNL_MAX_CPU_ISA=avx2 keeps OpenVINO" in older.stderr, older.stderr
    assert under(DNNL_MAX_CPU_ISA="AVX2", ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16").returncode == 0   # the newer wins
    bogus = under(ONEDNN_MAX_CPU_ISA="bogus")   # was said to keep the kernels below bf16
    assert bogus.returncode == 1 and "--env.ONEDNN_MAX_CPU_ISA=bogus is not one of oneDNN's ISA names" in bogus.stderr
    # int8-bf16 named as asked, and what it would run instead: its rest fp32, not the whole model (it said fp32)
    both = subprocess.run(["sh", probe, str(tmp_path / "zen3")], capture_output=True, text=True,
                          env={**os.environ, "MLRUN_INPUT_PRECISION": "int8-bf16"})
    assert both.returncode == 1 and both.stderr.startswith("--precision=int8-bf16: this CPU does not multiply bf16")
    assert "would run the operators outside its int8 ones fp32 instead; use --precision=int8 (the rest fp32)" \
        in both.stderr, both.stderr
    unknown = subprocess.run(["sh", probe, str(tmp_path / "none")], capture_output=True, text=True)
    assert unknown.returncode == 0 and "OpenVINO checks it" in unknown.stdout


def test_int8_of_the_official_int8_model_is_refused_before_anything_is_built(planner):
    """_openvino --precision=int8 quantises an fp32 model; the official int8 one (_int8) is quantised already."""
    result = planner("plan", "app mlperf bert _openvino _int8", "--precision=int8")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--precision=int8 cannot go with _openvino and _int8\n" in result.stderr
    both = planner("plan", "app mlperf bert _openvino _int8", "--precision=int8-bf16")   # the same model, its rest bf16
    assert both.returncode == 2 and "--precision=int8-bf16 cannot go with _openvino and _int8\n" in both.stderr
    for query in ("app mlperf bert _int8", "app mlperf bert _deepsparse _int8"):   # the whole rule was printed
        elsewhere = planner("plan", query, "--precision=int8-bf16")
        assert elsewhere.returncode == 2, elsewhere.stdout + elsewhere.stderr
        assert "--precision=int8-bf16 applies only with _openvino\n" in elsewhere.stderr, elsewhere.stderr


@pytest.mark.parametrize("data", ["squad", pytest.param("none", marks=pytest.mark.slow)])
def test_the_openvino_bench_runs_itself_under_the_backend_and_prints_its_figures(ov, accuracy_run, tmp_path, data):
    """bench/openvino_peak.py from the repo's venv (no openvino there) runs again under the backend's
    interpreter, found by `bin/mlrun "get backend openvino"` in the cache it is given. Without SQuAD data
    (a mirror without it) every feature was timed, NNCF got none to calibrate on and failed, hinting at an
    int8 model: it now calibrates on others of the same length distribution."""
    import subprocess
    import sys
    from conftest import ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env["MLRUN_CACHE"] = str(ov.root / "cache")
    if data == "none":
        (tmp_path / "empty-mirror").mkdir()
        env["MLRUN_MIRROR"] = str(tmp_path / "empty-mirror")
    result = subprocess.run([sys.executable, "-m", "bench.openvino_peak", "--layers", "2", "--hidden", "64",
                             "--heads", "2", "--samples", "4", "--repeats", "1", "--peak-seconds", "0.05",
                             "--scratch", bench_scratch(ov.root / "cache", tmp_path / "scratch"), "--batch-size", "2",
                             "--batch-pad", "384"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # the Offline layout batched as the app's --batch_size/--batch_pad do (padded samples: the same answers), every
    # backend and precision alike; one instance on all cores one sample per call
    assert "OpenVINO fp32, Offline: batches of up to 2 samples within 384 tokens of each other (--batch-size)\n" \
        in out and "onnxruntime int8, Offline: batches of up to 2" in out and "all cores: batches" not in out, out
    assert out.startswith("OpenVINO 2026.4.1") and "GEMM peak, onnxruntime fp32:" in out, out
    # the quantisers' progress bars and warnings stay out of it: a line each on stderr says what is made
    assert "Statistics collection" not in out + result.stderr and "pre-processing" not in result.stderr, result.stderr
    assert "NNCF int8 of " in result.stderr and "onnxruntime dynamic int8 of " in result.stderr, result.stderr
    assert ("real SQuAD dev features" if data == "squad" else "no SQuAD data in ") in out.splitlines()[0], out
    assert "GEMM peak, OpenVINO int8:" in out and " GOP/s" in out, out   # NNCF's QDQ MatMul, an int8 kernel
    rows = [line for line in out.splitlines() if line.startswith(("onnxruntime", "OpenVINO", "reference"))
            and "passes" in line]
    names = {line.split("  ")[0] for line in rows}
    expected = {f"{name}, {layout}" for name in ("onnxruntime fp32", "onnxruntime int8", "OpenVINO fp32",
                                                 "OpenVINO int8")
                for layout in ("Offline", "all cores")} | {"reference SUT design"}
    if _cpu_multiplies_bf16():
        expected |= {f"OpenVINO {precision}, {layout}" for precision in ("bf16", "int8-bf16")
                     for layout in ("Offline", "all cores")}
        assert "GEMM peak, OpenVINO bf16:" in out
    else:
        assert "does not multiply bf16" in out
    assert names == expected, out
    for line in rows:
        assert "x " in line, line   # its speed against the reference design's, in the same rounds
        if line.startswith("OpenVINO fp32"):
            assert " 4/4 " in line, line   # fp32: onnxruntime's answers
    assert " 1.0x " in next(line for line in rows if line.startswith("reference SUT design"))
    # each share of a peak twice: the pass's own runtime's GEMM, and onnxruntime's (the measure), which
    # has no bf16 kernel: bf16 passes get one
    assert "GEMM peak, onnxruntime int8:" in out and " of peak  of ort " in out, out
    for line in rows:
        want = 0 if line.startswith("reference") else 1 if line.startswith("OpenVINO bf16") else 2
        assert line.count("%") == want, line
    # where OpenVINO's time goes: per precision, the node types and kernels, and the pass's wall time split
    profiled = [line.split(":")[0].strip() for line in out.splitlines()
                if line.startswith("  ") and "the pass at" in line]
    assert profiled == ["fp32", "int8", "bf16", "int8-bf16"][:4 if _cpu_multiplies_bf16() else 2], out
    int8_nodes = out.split("  int8: the pass at")[1].splitlines()[1]
    assert re.search(r"FullyConnected\w* \w+_[iu]8 \d", int8_nodes), out   # int8 kernels ran the weight products
    # of the pass's wall time, or (where the counters sum above it, as they may on a tiny model) of the counted
    assert out.count("the pass's wall time: the weight products ") + out.count(
        "of the counted time: the weight products ") == len(profiled), out


@pytest.mark.slow
def test_the_server_ceiling_bench_runs_openvino_under_the_backend(ov, accuracy_run, tmp_path):
    """bench/server_ceiling.py --backend openvino from the repo's venv runs again under the backend's interpreter,
    as bench.openvino_peak does, and times OpenVINO's streams in both Server layouts."""
    import subprocess
    import sys
    from conftest import ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env["MLRUN_CACHE"] = str(ov.root / "cache")
    result = subprocess.run([sys.executable, "-m", "bench.server_ceiling", "--backend", "openvino", "--layers", "1",
                             "--hidden", "32", "--heads", "2", "--samples", "4", "--repeats", "1", "--seconds", "10",
                             "--loads", "0.5", "--scratch", bench_scratch(ov.root / "cache", tmp_path / "scratch")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("openvino fp32, BERT 1 layers x 32 x 2 heads"), out
    assert "one instance on all cores (1 x " in out and "  one instance on all cores: highest target holding " in out


def test_the_question_answering_app_runs_on_openvino_too(ov, accuracy_run, tmp_path):
    """app bert qa _openvino answers as onnxruntime does on the same model (fp32), and records the precision;
    --precision=bf16 is OpenVINO's (said before anything runs elsewhere)."""
    passage = tmp_path / "passage.txt"
    passage.write_text("The Normans were a people who in the 10th and 11th centuries gave their name to Normandy, "
                       "a region in France. They were descended from Norse raiders.\n")
    answers = {}
    for backend in ("_onnxruntime", "_openvino"):
        result = ov(f"app bert qa {backend} _random", f"--passage-file={passage}", "--question=Where is Normandy?",
                    *TINY_MODEL, "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        qa = json.load(open(os.path.join(step_dir(result), "qa.json")))["qa"]
        assert qa["backend"] == backend[1:] and qa["precision"] == "fp32"
        answers[backend] = qa["answers"][0]["answer"]
    assert answers["_openvino"] == answers["_onnxruntime"]
    refused = ov("app bert qa _random", "--precision=bf16", f"--passage-file={passage}", "--question=x", *TINY_MODEL)
    assert refused.returncode == 2 and "--precision=bf16 applies only with _openvino" in refused.stderr


# -- int8: NNCF's static int8 of the chosen model -------------------------------------------------------------

TINY_SOURCE = [arg.replace("--dep.model.", "--dep.source.") for arg in TINY_MODEL]


@pytest.fixture(scope="module")
def calibration_mirror(tmp_path_factory):
    """The shared data beside a calibration list (the official one is not offline: 100 indices chosen here)."""
    from conftest import SHARED_DATA
    mirror = tmp_path_factory.mktemp("calibration-mirror")
    for name in os.listdir(SHARED_DATA):
        os.symlink(os.path.join(SHARED_DATA, name), mirror / name)
    rows = np.random.default_rng(3).choice(10833, 100, replace=False)
    (mirror / "bert_calibration_features.txt").write_text("".join(f"{row}\n" for row in sorted(rows)))
    return mirror


@pytest.fixture(scope="module")
def int8_run(ov, accuracy_run, calibration_mirror):
    result = ov(QUERY, "--precision=int8", "--mode=accuracy", f"--count={COUNT}", *TINY_SOURCE,
                f"--mirror={calibration_mirror}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_int8_runs_nncfs_int8_of_the_same_model_calibrated_on_the_list(ov, accuracy_run, int8_run):
    """--precision=int8: the fp32 model the fp32 run used, quantised by NNCF on the 100 listed features at their
    real lengths, its axis still dynamic; OpenVINO runs its MatMuls int8 (counted in what it compiled) and the
    rest f32; the logits stay near fp32's (measured 0.02-0.1 on this tiny random model; 0.5 allowed). Without VNNI
    (a Zen 3, AVX2) NNCF's default overflow fix left them 0.86 apart (u8s8 sums saturate): every weight at half
    range there."""
    summary = _summary(int8_run)
    assert summary["precision"] == "int8" and summary["openvino"]["inference_precision_hint"] == "f32"
    assert summary["openvino"]["int8_operators"] >= 2 * 4   # per layer: Q, K, V, output, two FFN MatMuls
    model = step_of(int8_run, "get-ml-model-bert-int8-nncf")["path"]
    facts = json.load(open(os.path.join(model, "quantization.json")))
    assert facts["calibration"]["features"] == 100 and facts["calibration"]["left_out_held_out"] == 0
    assert facts["seq_axis"] == "dynamic" and facts["quantize_nodes"] > 0 and facts["nncf"] == "3.4.0"
    from mlperf_bert import nncf_quantize, quantize
    assert facts["settings"]["overflow_fix"] == nncf_quantize.overflow_fix(quantize.cpu_flags())[0], facts
    assert step_of(int8_run, "get-ml-model-bert")["path"] == step_of(accuracy_run, "get-ml-model-bert")["path"]
    fp32, int8 = _logits(step_dir(accuracy_run)), _logits(step_dir(int8_run))
    assert sorted(int8) == sorted(fp32)
    worst = max(float(np.abs(fp32[i] - int8[i]).max()) for i in fp32)
    assert 0 < worst < 0.5, worst
    assert "int8 (" in int8_run.stderr + open(os.path.join(step_dir(int8_run), ".mlrun", "build.log")).read()


def test_int8_bf16_runs_the_same_int8_model_with_its_other_operators_bf16(ov, int8_run, calibration_mirror):
    """--precision=int8-bf16: NNCF's int8 model of int8's run (the same entry, not quantised again), compiled bf16
    outside its int8 operators (on AMX 0.98-1.14x int8 with f32 there, batched; docs/performance.md). Where the CPU does not
    multiply bf16 it is refused before LoadGen starts, as bf16 is. Its logits: near int8's (bf16 keeps 8 bits of
    mantissa: measured 0.02 apart on this tiny model; 0.5 allowed, as int8's from fp32)."""
    result = ov(QUERY, "--precision=int8-bf16", "--mode=accuracy", f"--count={COUNT}", *TINY_SOURCE,
                f"--mirror={calibration_mirror}", "--json")
    if not _cpu_multiplies_bf16():
        assert result.returncode == 2 and "--precision=int8-bf16: this CPU does not multiply bf16" in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    summary, int8 = _summary(result), _summary(int8_run)
    assert summary["precision"] == "int8-bf16" and summary["openvino"]["inference_precision_hint"] == "bf16"
    assert summary["openvino"]["int8_operators"] == int8["openvino"]["int8_operators"] > 0
    model = step_of(result, "get-ml-model-bert-int8-nncf")
    assert model["path"] == step_of(int8_run, "get-ml-model-bert-int8-nncf")["path"] and model["status"] == "cached"
    said = result.stderr + open(os.path.join(step_dir(result), ".mlrun", "build.log")).read()
    assert "OpenVINO 2026.4.1: int8-bf16 (" in said and "the rest bf16)" in said, said
    both, alone = _logits(step_dir(result)), _logits(step_dir(int8_run))
    worst = max(float(np.abs(both[i] - alone[i]).max()) for i in alone)
    assert sorted(both) == sorted(alone) and 0 < worst < 0.5, worst


def test_the_nncf_layer_is_pinned_and_names_no_build_folder(int8_run):
    layer = step_of(int8_run, "get-nncf")["path"]
    packages = open(os.path.join(layer, "packages.txt")).read().split()
    assert "nncf==3.4.0" in packages and all("==" in p for p in packages)
    cache = os.path.dirname(layer)
    for folder, _, files in os.walk(os.path.join(layer, "site")):
        for name in files:
            if name.endswith((".txt", ".json", "RECORD", "INSTALLER", ".pth")):
                assert cache not in open(os.path.join(folder, name), errors="replace").read(), name


def test_int8_is_refused_on_a_model_openvino_does_not_run_int8(ov, accuracy_run, int8_run):
    """The harness asked for int8 with an fp32 model (what --model of a plain file into the harness would do): OpenVINO
    would run it all f32 and the run would say int8; it stops instead, saying why."""
    import subprocess
    from conftest import ROOT
    layer = step_of(int8_run, "get-backend-openvino")["path"]
    venv = next(s for s in json.loads(int8_run.stdout)["steps"] if s["label"] == "get-python-venv _onnxruntime")
    python = os.path.join(venv["path"], "bin", "python")
    fp32 = os.path.join(step_of(accuracy_run, "get-ml-model-bert")["path"], "model.onnx")
    code = ("from mlperf_bert.ov_backend import OvModel\nfrom engine.errors import MlrunError\n"
            f"try:\n    OvModel({fp32!r}, 1, 1, 'int8')\nexcept MlrunError as e:\n    print('refused:', e)\n")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(layer, "site"), ROOT])))
    assert "refused: --precision int8:" in result.stdout and "not quantised" in result.stdout, result


def test_a_quantised_model_is_not_quantised_again_and_runs_its_int8_as_it_is(ov, int8_run, calibration_mirror):
    """--model=an int8 model with --precision=int8: NNCF calibrated for minutes, then failed with an AttributeError
    naming the cache's copy; now refused at once (exit 2). Run as it is (no --precision), its int8 operators are
    counted and said beside the fp32 asked for the rest."""
    int8_file = os.path.join(step_of(int8_run, "get-ml-model-bert-int8-nncf")["path"], "model.onnx")
    again = ov("app mlperf bert _openvino _cpu", "--precision=int8", f"--model={int8_file}", "--mode=accuracy",
               "--count=4", f"--mirror={calibration_mirror}")
    assert again.returncode == 2, again.stderr[-2000:]
    assert "the source model is quantised already" in again.stderr and "Traceback" not in again.stderr
    as_is = ov("app mlperf bert _openvino _cpu", f"--model={int8_file}", "--mode=accuracy", "--count=4", "--json")
    assert as_is.returncode == 0, as_is.stderr[-2000:]
    summary = _summary(as_is)
    # recorded as what ran: int8 (it read fp32, and `runs --where precision=int8` missed it, while its batch rule
    # and a submission said int8)
    assert summary["precision"] == "int8" and summary["openvino"]["int8_operators"] > 0
    said = as_is.stderr + open(os.path.join(step_dir(as_is), ".mlrun", "build.log")).read()
    assert "OpenVINO 2026.4.1: int8 (" in said and "the rest f32)" in said
    # both counts, told apart (a user's trial: 15 said, 42 recorded, nothing to tell them apart)
    assert f"operators compiled int8 of the model's {summary['model_int8_operators']} quantised nodes" in said, said


def test_the_quantiser_without_nncf_says_so(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    result = subprocess.run([sys.executable, "-m", "mlperf_bert.nncf_quantize", "--model", "m.onnx", "--features",
                             str(tmp_path), "--calibration-list", "l.txt", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "NNCF cannot be imported here" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("variation", ["_random", "_minilm-squad", "_int8", "_fp32"])
def test_a_model_file_beside_a_model_variation_is_refused(planner, variation):
    """--model=FILE with _random: the fp32 run used the file and dropped _random unsaid, and --precision=int8
    quantised the full-size random model instead of the file (the run recorded the file)."""
    from conftest import ROOT
    result = planner("plan", f"app mlperf bert _openvino {variation}", f"--model={os.path.join(ROOT, 'README.md')}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--model cannot go with {variation}\n" in result.stderr


def test_the_question_answering_app_runs_int8_too(ov, int8_run, calibration_mirror, tmp_path):
    """app bert qa had no int8: --precision=int8 with _openvino runs NNCF's int8 of the chosen model (the benchmark's
    entry, same source), _int8-dynamic onnxruntime's; a random source is said first, as its fp32 answers are."""
    passage = tmp_path / "passage.txt"
    passage.write_text("The Normans were a people who in the 10th and 11th centuries gave their name to Normandy, "
                       "a region in France. They were descended from Norse raiders.\n")
    asked = [f"--passage-file={passage}", "--question=Where is Normandy?", *TINY_SOURCE, "--json"]
    for query, extra, model, precision in (("app bert qa _openvino _random", ["--precision=int8"], "int8-nncf", "int8"),
                                           ("app bert qa _int8-dynamic _random", [], "int8-dynamic", "int8")):
        result = ov(query, *extra, *asked, f"--mirror={calibration_mirror}")
        assert result.returncode == 0, result.stderr[-2000:]
        qa = json.load(open(os.path.join(step_dir(result), "qa.json")))["qa"]
        assert qa["model_name"] == model and qa["precision"] == precision and qa["answers"][0]["answer"]
        said = result.stderr + open(os.path.join(step_dir(result), ".mlrun", "build.log")).read()
        assert "a random-weight model (_random): plumbing only" in said and qa["random_weights"]
        if model == "int8-nncf":
            assert step_of(result, "get-ml-model-bert-int8-nncf")["path"] == \
                step_of(int8_run, "get-ml-model-bert-int8-nncf")["path"]
            assert "OpenVINO 2026.4.1: int8, " in said and " operators int8" in said
            assert qa["openvino"]["int8_operators"] > 0
    refused = ov("app bert qa _random", "--precision=int8", *asked)
    assert refused.returncode == 2 and "--precision=int8 applies only with _openvino" in refused.stderr
