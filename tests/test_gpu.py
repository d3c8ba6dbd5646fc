"""GPU variations without a GPU: they fail before anything is built (exit 2, the reason); with an nvidia-smi that
answers (a test stand-in on PATH: the probe's only source) every GPU plan resolves and the engine entries are
keyed by precision, profiles and GPU model. The GPU code itself runs in bench/gpu_check.py on a GPU machine."""
import json
import os
import re
import time

import pytest

from conftest import SHARED_DATA, assert_user_error, offline_mlrun
from engine.errors import MlrunError
from mlperf_bert import gpu

GPU_QUERIES = [("app mlperf bert _onnxruntime _cuda _random", []),
               ("app mlperf bert _onnxruntime _tensorrt-ep _random", ["--precision=fp16"]),
               ("app mlperf bert _tensorrt _random", ["--precision=fp16"]),
               ("app mlperf bert _tensorrt _random", ["--precision=int8"])]


def fake_smi(folder, answer="NVIDIA H200, 9.0, 143771, 580.159.03"):
    """A stand-in nvidia-smi printing one GPU line (tests only: the product reads the real one)."""
    folder.mkdir(exist_ok=True)
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\necho '{answer}'\n")
    path.chmod(0o755)
    return str(folder)


@pytest.fixture
def mlrun(tmp_path):
    return offline_mlrun(tmp_path)


def with_env(mlrun, **extra):
    """mlrun with extra host variables (PATH with a stand-in nvidia-smi, CUDA_VISIBLE_DEVICES)."""
    import subprocess
    from conftest import MLRUN
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(mlrun.root / "cache"), MLRUN_RUNS=str(mlrun.root / "runs"), MLRUN_MIRROR=SHARED_DATA)
    env.update(extra)

    def run(*args, timeout=120):
        return subprocess.run([MLRUN, *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(mlrun.root), stdin=subprocess.DEVNULL)
    return run


@pytest.mark.parametrize("query,flags", GPU_QUERIES[:3])
def test_gpu_variation_without_gpu_fails_before_anything_is_built(mlrun, tmp_path, query, flags):
    path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "nvidia-smi")))
    started = time.monotonic()
    result = with_env(mlrun, PATH=path)("run", query, "--mode=accuracy", "--count=2", *flags)
    assert_user_error(result, 2, "no NVIDIA GPU here", "nvidia-smi", "_cpu runs without")
    assert time.monotonic() - started < 30   # no venv was installed: the probe ran first
    cache = tmp_path / "cache"
    assert not [n for n in (os.listdir(cache) if cache.exists() else []) if not n.startswith(".")]


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_hidden_gpus_and_old_drivers_are_refused_with_the_reason(mlrun, tmp_path):
    smi = fake_smi(tmp_path / "bin")
    hidden = with_env(mlrun, PATH=f"{smi}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="")
    assert_user_error(hidden("plan", GPU_QUERIES[0][0]), 2, "CUDA_VISIBLE_DEVICES=''")
    old = fake_smi(tmp_path / "old", "Tesla K80, 3.7, 11441, 470.82.01")
    result = with_env(mlrun, PATH=f"{old}:{os.environ['PATH']}")("plan", GPU_QUERIES[0][0])
    assert_user_error(result, 2, "driver 470.82.01 is too old", "525.60.13")


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_the_gpu_is_asked_at_every_plan_never_remembered(mlrun, tmp_path):
    """A remembered answer outlived the card and the driver: after a swap to another GPU the plan kept the first
    one's name (and so its engines' keys), and a driver that stopped answering was not refused (a user's trial)."""
    bin_dir = tmp_path / "bin"
    run = with_env(mlrun, PATH=f"{fake_smi(bin_dir)}:{os.environ['PATH']}")
    first = run("plan", GPU_QUERIES[0][0])
    assert first.returncode == 0 and "probe gpu: NVIDIA H200" in first.stdout, first.stderr
    fake_smi(bin_dir, "NVIDIA A100-SXM4-80GB, 8.0, 81920, 580.159.03")   # the same file, another card
    assert "probe gpu: NVIDIA A100-SXM4-80GB, compute capability 8.0" in run("plan", GPU_QUERIES[0][0]).stdout
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert run("plan", GPU_QUERIES[0][0]).returncode == 2


def test_a_probe_that_is_not_remembered_is_declared_so():
    from engine.errors import RecipeError
    from engine.recipe import normalize
    with pytest.raises(RecipeError, match="probe.gpu takes run: \\[program, args...\\] and remember: true|false"):
        normalize({"tags": ["x"], "probe": {"gpu": {"argv": ["nvidia-smi"]}}}, "recipe.yaml", {}, "x")
    plain = normalize({"tags": ["x"], "probe": {"gpu": ["nvidia-smi"]}}, "recipe.yaml", {}, "x")
    assert plain["probe"] == {"gpu": ["nvidia-smi"]}   # the list form keeps its normal form (and every key)


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_every_gpu_plan_resolves_with_a_gpu(mlrun, tmp_path):
    run = with_env(mlrun, PATH=f"{fake_smi(tmp_path / 'bin')}:{os.environ['PATH']}")
    wanted = {"_cuda": "get-backend-onnxruntime _cuda", "_tensorrt-ep": "get-onnxruntime-trt-cache-bert",
              "fp16": "get-tensorrt-engine-bert", "int8": "get-tensorrt-calibration-bert"}
    for query, flags in GPU_QUERIES:
        result = run("plan", query, *flags)
        assert result.returncode == 0, result.stderr
        assert "probe gpu: NVIDIA H200, compute capability 9.0, 143771 MiB" in result.stdout
        word = flags[0].split("=")[1] if flags else "_cuda"
        word = "_tensorrt-ep" if "_tensorrt-ep" in query else word
        assert wanted[word] in result.stdout, result.stdout


def _engine_key(tmp_path, smi, query="get tensorrt engine bert _random", **inputs):
    """The key of the random model's engine (or query's), resolved in this process (as `mlrun plan` does) on a host
    whose nvidia-smi is `smi`."""
    from engine.resolver import resolve
    from engine.settings import Settings
    host = {**os.environ, "PATH": f"{smi}:{os.environ['PATH']}"}
    settings = Settings.from_env(environ={"MLRUN_CACHE": str(tmp_path / "cache"), "MLRUN_RUNS": str(tmp_path)})
    plan = resolve(settings.index(), query, inputs=inputs, host_env=host,
                   prober=settings.prober())
    return plan.nodes[-1].key


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_engine_keys_follow_precision_profiles_and_gpu_model(tmp_path):
    h200 = fake_smi(tmp_path / "a")
    h100 = fake_smi(tmp_path / "b", "NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.03")
    base = _engine_key(tmp_path, h200)
    assert _engine_key(tmp_path, h200) == base   # the same engine is reused, never rebuilt
    others = [_engine_key(tmp_path, h200, precision="int8"), _engine_key(tmp_path, h200, precision="fp32"),
              _engine_key(tmp_path, h200, batch_size="8"), _engine_key(tmp_path, h200, buckets="128,384"),
              _engine_key(tmp_path, h100)]
    assert len({base, *others}) == 6


@pytest.mark.slow
@pytest.mark.parametrize("query,inputs", [("get tensorrt engine bert", {"precision": "fp16"}),
                                          ("get tensorrt calibration bert", {}),
                                          ("get tensorrt engine onnxruntime bert", {"precision": "fp16"})])
def test_a_model_files_builds_are_keyed_by_its_content_not_its_path(tmp_path, query, inputs):
    """The same bytes at two paths (or through a link) built the engine again: minutes each."""
    h200 = fake_smi(tmp_path / "a")
    for name, text in (("m1/model.onnx", "same"), ("m2/model.onnx", "same"), ("m3/model.onnx", "other")):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text(text)
    (tmp_path / "m2" / "link.onnx").symlink_to(tmp_path / "m1" / "model.onnx")
    keys = [_engine_key(tmp_path, h200, query, model=str(tmp_path / m), **inputs)
            for m in ("m1/model.onnx", "m2/model.onnx", "m2/link.onnx", "m3/model.onnx")]
    assert keys[0] == keys[1] == keys[2] != keys[3]


def test_onnxruntime_without_the_cuda_provider_says_which_it_has(tmp_path, monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)   # ort_providers sets it: not for later tests
    from mlperf_bert import random_model
    from mlperf_bert.ort_backend import OrtBackend
    import onnx
    path = str(tmp_path / "tiny.onnx")
    onnx.save(random_model.build(layers=1, hidden=32, heads=2, seq=None), path)
    providers = gpu.ort_providers("cuda")
    with pytest.raises(gpu.GpuUnavailable) as caught:
        gpu.before_session(providers)
    assert "has no CUDAExecutionProvider" in str(caught.value) and "CPUExecutionProvider" in str(caught.value)
    assert caught.value.exit_code == 78
    # Asked anyway, onnxruntime runs the session on the CPU and only logs it: the check after catches that.
    with pytest.warns(UserWarning, match="not in available provider names"):
        backend = OrtBackend(path, providers=providers, quiet=True)
    with pytest.raises(gpu.GpuUnavailable, match="would run on CPUExecutionProvider"):
        gpu.check_session(backend.session, providers)


def test_a_step_that_finds_the_machine_unfit_exits_2(ws):
    ws.recipe("unfit", """
        tags: [unfit]
        cache: false
        run: "echo 'error: no CUDAExecutionProvider' >&2; echo 'hint: run _cpu' >&2; exit 78"
    """)
    result = ws.mlrun("unfit")
    # the reason quoted, and the step's own hint in the last line, before the log (it was 'hint: full log: ...',
    # the step's one buried above)
    assert_user_error(result, 2, "exited with code 78", "the step refused this machine or request)",
                      "no CUDAExecutionProvider")
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("hint: run _cpu; full log: ") and last.endswith("build.log"), result.stderr


def test_provider_options_cover_the_profiles_asked(monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    profiles = gpu.trt_profiles((128, 384), [1, 8])
    assert profiles == [((1, 1), (8, 128), (8, 128)), ((1, 129), (8, 384), (8, 384))]
    providers = gpu.ort_providers("tensorrt-ep", "fp16", "/c", profiles, ["input_ids", "input_mask"])
    name, options = providers[0]
    assert name == gpu.TRT_PROVIDER and providers[1] == (gpu.CUDA_PROVIDER, {"use_tf32": "1"})
    assert options["trt_fp16_enable"] and options["trt_engine_cache_path"] == "/c"
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,input_mask:1x1,input_ids:1x129,input_mask:1x129"
    assert options["trt_profile_max_shapes"] == "input_ids:8x128,input_mask:8x128,input_ids:8x384,input_mask:8x384"
    assert gpu.provider_names(providers) == [gpu.TRT_PROVIDER, gpu.CUDA_PROVIDER]
    with pytest.raises(MlrunError, match="native TensorRT"):
        gpu.ort_providers("tensorrt-ep", "int8", "/c", profiles, ["input_ids"])
    with pytest.raises(MlrunError, match="does not apply to cuda: it runs fp32 or tf32"):
        gpu.ort_providers("cuda", "fp16")
    with pytest.raises(MlrunError, match="does not apply to cpu"):
        gpu.ort_providers("cpu", "tf32")


def test_fp32_on_a_gpu_is_strict_and_tf32_is_asked_for(monkeypatch):
    """Measured on an H200 (docs/gpu.md): onnxruntime's CUDA provider uses TF32 unless told not to, and a random
    BERT-Large then gave another answer than the CPU on 165 of 200 samples; fp32 must forbid it in the provider
    and in every NVIDIA library of the process (NVIDIA_TF32_OVERRIDE), tf32 must allow it even if the
    environment forbade it."""
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    assert gpu.ort_providers("cuda", "fp32") == [(gpu.CUDA_PROVIDER, {"use_tf32": "0"})]
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    assert gpu.ort_providers("cuda", "tf32") == [(gpu.CUDA_PROVIDER, {"use_tf32": "1"})]
    assert "NVIDIA_TF32_OVERRIDE" not in os.environ
    providers = gpu.ort_providers("tensorrt-ep", "fp32", "/c", gpu.trt_profiles((384,), [1]), ["input_ids"])
    assert providers[1] == (gpu.CUDA_PROVIDER, {"use_tf32": "0"}) and os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    assert not providers[0][1]["trt_fp16_enable"]
    assert gpu.ort_providers("cpu") == ["CPUExecutionProvider"]


    with pytest.raises(gpu.GpuUnavailable, match="could not start its CUDAExecutionProvider"):
        gpu.require_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"],
                              ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_gpu_facts_in_words_and_in_the_system_description():
    facts = {"name": "NVIDIA H200", "memory_gb": 140.4, "driver": "580.159.03", "cuda": "13.0",
             "compute_capability": "9.0", "count": 1}
    assert gpu.describe(facts) == "NVIDIA H200 (140.4 GB, compute 9.0), driver 580.159.03, CUDA 13.0"
    fields = gpu.system_fields(facts)
    assert fields["accelerators_per_node"] == "1" and fields["accelerator_model_name"] == "NVIDIA H200"
    assert fields["accelerator_memory_capacity"] == "140.4 GB" and "driver 580.159.03, CUDA 13.0" in fields["sw_notes"]
    assert gpu.system_fields(None)["accelerators_per_node"] == "0"
    from submission import system
    probed = system.gpu_fields(system.probe_facts("NVIDIA H200, compute capability 9.0, 143771 MiB"))
    assert probed == {"accelerators_per_node": "1", "accelerator_model_name": "NVIDIA H200",
                      "accelerator_memory_capacity": "140.4 GB"}
    assert system.probe_facts(None) is None and system.gpu_fields(None)["accelerator_model_name"] == "N/A"


def test_submission_takes_the_gpu_facts_a_run_recorded_leaving_the_users_fields(tmp_path):
    from submission import system
    (tmp_path / "summary.json").write_text(json.dumps({"gpu": {
        "name": "NVIDIA H200", "memory_gb": 140.4, "driver": "580.159.03", "cuda": "13.0",
        "compute_capability": "9.0", "count": 1}}))
    desc = {"accelerator_model_name": "NVIDIA H200", "sw_notes": "mine", "cooling": "air"}
    out = system.with_run_gpu_facts(desc, {"cooling": "air"}, {("Offline", "performance"): {"folder": str(tmp_path)}})
    assert out["accelerator_memory_capacity"] == "140.4 GB" and out["cooling"] == "air"
    assert out["sw_notes"] == "mine; NVIDIA driver 580.159.03, CUDA 13.0, compute capability 9.0"


def test_diff_shows_the_gpu_facts():
    from engine import compare
    a = {"host": {}, "results": {"gpu": {"name": "NVIDIA H200", "driver": "580.1"}}}
    b = {"host": {}, "results": {"gpu": {"name": "NVIDIA H100", "driver": "580.1"}}}
    assert compare.host(a, b) == [("host.gpu.name", "NVIDIA H200", "NVIDIA H100")]
    assert compare.host(a, {"host": {}})[0] == ("host.gpu.driver", "580.1", None)


def _calibration(mlrun, tmp_path, text, *flags):
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / "bert_calibration_features.txt").write_text(text)
    run = with_env(mlrun, MLRUN_MIRROR=str(mirror))
    return run("get dataset squad calibration", "--json", *flags)


@pytest.mark.slow   # over 2 s on the EPYC
def test_calibration_list_is_checked_and_its_digest_recorded(mlrun, tmp_path):
    import hashlib
    text = "".join(f"{n}\n" for n in range(0, 10000, 100))
    result = _calibration(mlrun, tmp_path, text)
    assert result.returncode == 0, result.stderr
    folder = json.loads(result.stdout)["path"]
    source = json.load(open(os.path.join(folder, "source.json")))
    assert source == {"source": str(tmp_path / "mirror" / "bert_calibration_features.txt"),
                      "sha256": hashlib.sha256(text.encode()).hexdigest(), "verified": False}
    wrong = _calibration(mlrun, tmp_path, text, "--sha256=" + "0" * 64)
    assert wrong.returncode == 1 and "not the 0000" in wrong.stderr + wrong.stdout
    short = _calibration(mlrun, tmp_path, "1\n2\n", "--url=http://127.0.0.1:9/other")  # another key: built again
    assert short.returncode == 1 and "not 100 distinct" in short.stderr + short.stdout


def test_calibration_indices_are_checked_against_the_features(tmp_path):
    from mlperf_bert.trt_build import read_calibration_list
    good = tmp_path / "list.txt"
    good.write_text("3\n17\n42\n")
    assert read_calibration_list(str(good), 100) == [3, 17, 42]
    with pytest.raises(MlrunError, match="index 42 is outside the 40 features"):
        read_calibration_list(str(good), 40)
    good.write_text("3\nseventeen\n")
    with pytest.raises(MlrunError, match="not a list of feature indices"):
        read_calibration_list(str(good), 100)


@pytest.mark.parametrize("flags,message", [
    (["--backend", "tensorrt"], "--backend tensorrt needs --engine FILE"),
    (["--device", "tensorrt-ep"], "--device tensorrt-ep needs --trt-cache DIR"),
    (["--device", "cuda", "--precision", "fp16"],
     "--precision fp16 applies to --device tensorrt-ep or --backend tensorrt; cuda runs fp32 or tf32"),
    (["--precision", "tf32"], "--precision tf32 applies to --device cuda or --device tensorrt-ep or --backend "
                              "tensorrt; cpu runs fp32"),
    (["--device", "tensorrt-ep", "--trt-cache", "c", "--precision", "int8"],
     "--precision int8 applies to --backend tensorrt or --backend openvino; tensorrt-ep runs fp32 or tf32 or fp16"),
    (["--backend", "deepsparse", "--device", "cuda"], "--device cuda applies to --backend onnxruntime"),
    # the CPU backends' own (OpenVINO: tests/test_openvino_pipeline.py)
    (["--backend", "openvino", "--spin"], "--spin applies to --backend onnxruntime"),
    (["--backend", "deepsparse", "--instances", "2"], "--instances applies to --backend onnxruntime or openvino"),
    (["--precision", "bf16"], "--precision bf16 applies to --backend openvino; cpu runs fp32"),
    (["--backend", "openvino", "--precision", "fp16"],
     "--precision fp16 applies to --device tensorrt-ep or --backend tensorrt; openvino runs fp32 or int8 or bf16"),
    (["--backend", "openvino", "--device", "cuda"], "--device cuda applies to --backend onnxruntime"),
])
def test_harness_refuses_device_and_backend_flags_that_do_not_go_together(flags, message, capsys):
    """(--device cuda --precision tf32 is taken: the first test below)"""
    from mlperf_bert import harness
    with pytest.raises(SystemExit) as caught:
        harness.parse_args(["--features", "f", "--model", "m", "--out", "o", "--scenario", "Offline",
                            "--mode", "accuracy", *flags])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_the_harness_stops_before_the_benchmark_when_it_cannot_read_the_gpu(tmp_path):
    """The CPU venv has no nvidia-ml-py, this machine no NVML: either way the harness exits 78 (mlrun: 2)
    before the model loads or LoadGen starts."""
    import subprocess
    import sys
    from conftest import ROOT
    from mlperf_bert import squad_features
    squad_features.build(os.path.join(SHARED_DATA, "squad", "dev-v1.1.json"),
                         os.path.join(SHARED_DATA, "bert-vocab", "vocab.txt"), tmp_path / "features", max_examples=2)
    result = subprocess.run([sys.executable, "-m", "mlperf_bert.harness", "--features", str(tmp_path / "features"),
                             "--model", str(tmp_path / "absent.onnx"), "--out", str(tmp_path / "run"),
                             "--scenario", "Offline", "--mode", "performance", "--device", "cuda"],
                            env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert re.search(r"error: (nvidia-ml-py is not installed|NVML cannot start)", result.stderr), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "mlperf_log_summary.txt").exists()


def test_tensorrt_missing_is_a_clear_error_not_a_traceback(tmp_path):
    """A venv without tensorrt (here: the CPU one) is told so, exit 78 (mlrun: 2); it was a ModuleNotFoundError
    traceback, as seen on a GPU machine without TensorRT."""
    import subprocess
    import sys
    from conftest import ROOT
    from mlperf_bert import random_model
    import onnx
    onnx.save(random_model.build(layers=1, hidden=32, heads=2, seq="dynamic"), str(tmp_path / "m.onnx"))
    result = subprocess.run([sys.executable, "-m", "mlperf_bert.trt_build", "--model", str(tmp_path / "m.onnx"),
                             "--out", str(tmp_path / "e.plan"), "--precision", "fp16"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "error: TensorRT's Python package cannot be loaded here" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_gpu_check_says_a_hung_nvidia_smi(tmp_path, monkeypatch):
    """A hung driver: a TimeoutExpired traceback after 30 s and no report (gpu.md: it stops at once saying why)."""
    import importlib.util
    import types
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "bench", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    hung = tmp_path / "bin"
    hung.mkdir()
    (hung / "nvidia-smi").write_text("#!/bin/sh\nexec sleep 30\n")
    (hung / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{hung}:{os.environ['PATH']}")
    monkeypatch.setattr(gpu_check, "SMI_TIMEOUT", 0.5)
    why = gpu_check.preflight(types.SimpleNamespace(python=None, wheels=None))
    assert why == "nvidia-smi did not answer within 0.5 s: the driver hangs (see dmesg, or reset the GPU)"


@pytest.mark.slow
def test_gpu_check_without_mlrun_runs_the_recipes_steps_and_reports_each_row(tmp_path):
    """bench/gpu_check.py --python (how it ran on the H200, which has no package index): the CPU reference runs
    for real, and on a machine without a GPU every GPU row records the product's own refusal, not a traceback."""
    import subprocess
    import sys
    from conftest import ROOT
    env = {**os.environ, "PATH": fake_smi(tmp_path / "bin", "Fake GPU, 1.0, 1 MiB") + os.pathsep + os.environ["PATH"]}
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--python", sys.executable,
                             "--mirror", SHARED_DATA, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
                             "--shapes", "tiny", "--samples", "2", "--offline-count", "4", "--singlestream-count", "2"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {(row["backend"], row["precision"]): row for row in report["rows"]}
    assert list(rows) == [("onnxruntime _cpu", "fp32"), ("onnxruntime _cuda", "fp32"), ("onnxruntime _cuda", "tf32"),
                          ("tensorrt", "fp16"), ("onnxruntime _tensorrt-ep", "fp16"), ("tensorrt", "int8")]
    assert rows[("onnxruntime _cpu", "fp32")]["error"] is None
    summary = json.loads((tmp_path / "runs" / "01-tiny-onnxruntime-cpu-fp32-accuracy-Offline" / "summary.json")
                         .read_text())
    assert summary["samples_completed"] == 2 and summary["device"] == "cpu"
    for key in (("onnxruntime _cuda", "fp32"), ("onnxruntime _cuda", "tf32")):
        assert re.match(r"exit 78: error: (nvidia-ml-py is not installed|NVML cannot start)", rows[key]["error"])
    assert "TensorRT's Python package cannot be loaded here" in rows[("tensorrt", "fp16")]["error"]
    assert "TensorrtExecutionProvider" in rows[("onnxruntime _tensorrt-ep", "fp16")]["error"]
    assert "needs --calibration-list" in rows[("tensorrt", "int8")]["error"]
    assert "Traceback" not in json.dumps(report) + result.stdout
    assert "| tiny | onnxruntime _cuda | tf32 |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_an_engine_tensorrt_cannot_load_is_said_with_tensorrts_version(tmp_path, monkeypatch):
    """With TensorRT's and cuda-python's modules stood in for (this machine has neither): an engine whose
    runtime gives nothing back (another GPU or TensorRT) is a GpuUnavailable naming both; a NameError here
    had made every native TensorRT run fail."""
    import sys
    import types
    from mlperf_bert import trt_backend

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass
    fake = types.SimpleNamespace(__version__="10.fake", Runtime=Runtime, Logger=Logger)
    for name, module in (("tensorrt", fake), ("cuda", types.ModuleType("cuda")),
                         ("cuda.bindings", types.ModuleType("cuda.bindings")),
                         ("cuda.bindings.runtime", types.ModuleType("cuda.bindings.runtime"))):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_backend, "_LOGGER", None)
    engine = tmp_path / "engine.plan"
    engine.write_bytes(b"not an engine")
    with pytest.raises(gpu.GpuUnavailable, match=r"TensorRT 10.fake cannot load .*engine.plan"):
        trt_backend.TrtBackend(str(engine))


def test_the_providers_engine_cache_gets_the_profiles_the_harness_asks(monkeypatch, capsys):
    """--buckets 128,256: the harness runs 128, 256 and 384 (seq_plan adds it); the cache was built for 128 and
    256 only, so onnxruntime would have built the third engine in the middle of the benchmark."""
    from mlperf_bert import seq_plan
    asked = []
    monkeypatch.setattr(gpu, "warm_ort_trt_cache", lambda model, out, precision, buckets, batches:
                        asked.append((buckets, batches)))
    assert gpu.main(["ort-trt-cache", "--model", "m", "--out", "o", "--buckets", "256,128", "--batch-sizes", "8"]) == 0
    assert asked == [(seq_plan.parse_buckets("128,256"), (8,))] and asked[0][0] == (128, 256, 384)
    assert gpu.main(["ort-trt-cache", "--model", "m", "--out", "o", "--buckets", "exact"]) == 2
    assert "--buckets must list lengths for TensorRT profiles" in capsys.readouterr().err


@pytest.mark.parametrize("query", ["app mlperf bert _tensorrt", "app mlperf bert _tensorrt-ep"])
def test_tensorrt_takes_a_model_file_not_a_zoo_or_hub_source(mlrun, tmp_path, query):
    """zoo: and hf: planned no engine (its deps take the official model or a file), and the harness stopped on
    'needs --engine FILE' after the multi-GB TensorRT venv (a user's trial)."""
    run = with_env(mlrun, PATH=f"{fake_smi(tmp_path / 'bin')}:{os.environ['PATH']}")
    for source in ("hf:org/tiny", "zoo:bert-base-wikipedia_bookcorpus-pruned90"):
        assert_user_error(run("plan", query, f"--model={source}"), 2, f"--model={source} cannot go with _tensorrt")
