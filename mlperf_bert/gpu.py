"""GPU facts and checks for the GPU backends: the CUDA and TensorRT providers of onnxruntime, native TensorRT.

A GPU variation either runs on the GPU or stops before the benchmark with the reason (exit 78, which mlrun
reports as exit 2: this machine cannot run it); never a silent fallback to the CPU. The facts (NVML through
nvidia-ml-py: model, memory, driver, CUDA, compute capability) go into summary.json, so run records, `mlrun
diff` and the submission's system description carry them.
"""
import os
import sys

from engine.errors import MlrunError

CUDA_PROVIDER, TRT_PROVIDER = "CUDAExecutionProvider", "TensorrtExecutionProvider"
# onnxruntime providers each --device runs on, first choice first (TensorRT hands what it cannot run to CUDA).
DEVICE_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": [CUDA_PROVIDER],
                    "tensorrt-ep": [TRT_PROVIDER, CUDA_PROVIDER]}
PRECISIONS = ("fp32", "tf32", "fp16", "int8")
# What each device runs: fp32 is strict IEEE fp32 (no TF32: on an H200 ORT's default TF32 gave another answer
# than the CPU on 82.5% of 200 samples of a random BERT-Large, strict fp32 on none); tf32 lets the tensor cores
# round fp32 products to 10-bit mantissas (about 3x faster there). docs/gpu.md has the measurements.
DEVICE_PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "tf32"), "tensorrt-ep": ("fp32", "tf32", "fp16"),
                     "tensorrt": PRECISIONS}
TRT_DEFAULT_BUCKETS = "128,192,256,384"  # --buckets auto for TensorRT: an optimisation profile each


class GpuUnavailable(MlrunError):
    """This machine cannot run a GPU variation (no GPU, driver, provider or library)."""
    exit_code = 78  # sysexits EX_CONFIG: the runner turns it into mlrun's exit 2 (engine.runner.EX_CONFIG)


def facts(index=0):
    """{"name", "memory_gb", "driver", "cuda", "compute_capability", "count"} of GPU `index` from NVML;
    GpuUnavailable when NVML cannot answer."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        raise GpuUnavailable("nvidia-ml-py is not installed in this backend's venv") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise GpuUnavailable(f"NVML cannot start ({error}): no NVIDIA GPU or driver here") from None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        return {"name": _text(pynvml.nvmlDeviceGetName(handle)),
                "memory_gb": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30, 1),
                "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}", "compute_capability": f"{major}.{minor}",
                "count": pynvml.nvmlDeviceGetCount()}
    except pynvml.NVMLError as error:
        raise GpuUnavailable(f"NVML cannot describe GPU {index}: {error}") from None
    finally:
        pynvml.nvmlShutdown()


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def describe(gpu):
    """One line for a person: 'NVIDIA H200 (143.8 GB, compute 9.0), driver 580.1, CUDA 13.0'."""
    return (f"{gpu['name']} ({gpu['memory_gb']} GB, compute {gpu['compute_capability']}), driver {gpu['driver']}, "
            f"CUDA {gpu['cuda']}" + (f", {gpu['count']} GPUs" if gpu.get("count", 1) > 1 else ""))


def system_fields(gpu):
    """The MLPerf system description's accelerator fields for the GPU facts of a run (None: no GPU used)."""
    if not gpu:
        return {"accelerators_per_node": "0", "accelerator_model_name": "N/A", "accelerator_memory_capacity": "N/A",
                "accelerator_memory_configuration": "N/A", "accelerator_host_interconnect": "N/A",
                "accelerator_interconnect": "N/A", "accelerator_interconnect_topology": "",
                "accelerator_frequency": "", "accelerator_on-chip_memories": "", "cooling": ""}
    return {"accelerators_per_node": "1", "accelerator_model_name": gpu["name"],
            "accelerator_memory_capacity": f"{gpu['memory_gb']} GB",
            "accelerator_memory_configuration": "", "accelerator_host_interconnect": "",
            "accelerator_interconnect": "", "accelerator_interconnect_topology": "", "accelerator_frequency": "",
            "accelerator_on-chip_memories": "", "cooling": "",
            "sw_notes": f"NVIDIA driver {gpu['driver']}, CUDA {gpu['cuda']}, compute capability "
                        f"{gpu['compute_capability']}" if "driver" in gpu else ""}


def require_providers(wanted, session_providers, available):
    """The session must run on wanted[0]: onnxruntime falls back to the CPU with only a log line when a
    provider cannot start (a missing CUDA or cuDNN library), so this is checked, never assumed."""
    if session_providers and session_providers[0] == wanted[0]:
        return
    missing = wanted[0] not in available
    raise GpuUnavailable(
        f"onnxruntime {'has no' if missing else 'could not start its'} {wanted[0]} (the session would run on "
        f"{', '.join(session_providers) or 'nothing'}); providers this onnxruntime reports: {', '.join(available)}",
        hint="an NVIDIA GPU, its driver and the CUDA and cuDNN libraries this onnxruntime was built for (the "
             "recipes' 1.23.2: CUDA 12, cuDNN 9), and TensorRT's for TensorrtExecutionProvider, must be loadable; "
             "onnxruntime's log above names the library it missed")


def provider_names(providers):
    return [p if isinstance(p, str) else p[0] for p in providers]


def before_session(providers):
    """Before an onnxruntime session on a GPU provider: load the CUDA libraries, and refuse at once a provider
    this onnxruntime does not have."""
    import onnxruntime as ort
    wanted = provider_names(providers)
    if wanted[0] == "CPUExecutionProvider":
        return
    preload_cuda_libraries()
    if wanted[0] not in ort.get_available_providers():
        require_providers(wanted, [], ort.get_available_providers())


def check_session(session, providers):
    """After: the session really runs on the provider asked (see require_providers)."""
    import onnxruntime as ort
    require_providers(provider_names(providers), session.get_providers(), ort.get_available_providers())


def trt_profiles(buckets, batch_sizes):
    """TensorRT optimisation profiles, one per sequence-length bucket: [(min (B, L), opt, max)], each taking
    the lengths above the previous bucket up to its own, and 1 to the largest batch size asked."""
    batch = max(batch_sizes)
    profiles, low = [], 1
    for bucket in buckets:
        profiles.append(((1, low), (batch, bucket), (batch, bucket)))
        low = bucket + 1
    return profiles


def ort_trt_options(cache_dir, precision, profiles, input_names):
    """TensorrtExecutionProvider options: fp32, tf32 or fp16 engines cached (with the timing cache) in cache_dir,
    built for exactly these profiles, so no shape the harness runs triggers a rebuild."""
    if precision not in DEVICE_PRECISIONS["tensorrt-ep"]:
        raise MlrunError(f"onnxruntime's TensorRT provider runs fp32, tf32 or fp16 here, not {precision}",
                         hint="int8 with calibration: the native TensorRT backend (_tensorrt --precision=int8)")

    def shapes(which):
        return ",".join(f"{name}:{dims[which][0]}x{dims[which][1]}" for dims in profiles for name in input_names)
    return {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir), "trt_profile_min_shapes": shapes(0),
            "trt_profile_opt_shapes": shapes(1), "trt_profile_max_shapes": shapes(2)}


def check_precision(device, precision):
    if precision not in DEVICE_PRECISIONS[device]:
        raise MlrunError(f"--precision {precision} does not apply to {device}: it runs "
                         f"{' or '.join(DEVICE_PRECISIONS[device])}",
                         hint="tf32: onnxruntime's CUDA provider or TensorRT; fp16: TensorRT (_tensorrt or "
                              "_tensorrt-ep); int8 with calibration: the native TensorRT backend (_tensorrt)")


def set_math_mode(precision):
    """fp32 forbids TF32 in every NVIDIA library of this process (cuBLAS, cuDNN, TensorRT read
    NVIDIA_TF32_OVERRIDE when they start); other precisions allow it, whatever the caller's environment said."""
    if precision == "fp32":
        os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    else:
        os.environ.pop("NVIDIA_TF32_OVERRIDE", None)


def ort_providers(device, precision="fp32", cache_dir=None, profiles=None, input_names=()):
    """providers= for onnxruntime.InferenceSession on `device` (cpu, cuda, tensorrt-ep); set_math_mode too."""
    if device not in DEVICE_PROVIDERS:
        raise MlrunError(f"unknown device {device!r}: one of {', '.join(DEVICE_PROVIDERS)}")
    check_precision(device, precision)
    if device == "cpu":
        return list(DEVICE_PROVIDERS[device])
    set_math_mode(precision)
    cuda = (CUDA_PROVIDER, {"use_tf32": "0" if precision == "fp32" else "1"})
    if device == "cuda":
        return [cuda]
    return [(TRT_PROVIDER, ort_trt_options(cache_dir, precision, profiles, input_names)), cuda]


def preload_cuda_libraries():
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels in this venv (onnxruntime >= 1.21 finds them),
    so the CUDA provider starts without a system CUDA install."""
    import onnxruntime
    if hasattr(onnxruntime, "preload_dlls"):
        try:
            onnxruntime.preload_dlls()
        except Exception as error:  # a library it cannot load: the provider check then says what runs
            print(f"warning: onnxruntime.preload_dlls: {error}", file=sys.stderr)


def warm_ort_trt_cache(model, out, precision, buckets, batch_sizes):
    """Build the TensorRT provider's engines and timing cache for every profile into `out` (a cache entry),
    by running one batch at each profile's largest shape."""
    import numpy as np
    import onnxruntime as ort
    from mlperf_bert import model_adapter
    io = model_adapter.inspect(model)
    profiles = trt_profiles(buckets, batch_sizes)
    os.makedirs(out, exist_ok=True)
    providers = ort_providers("tensorrt-ep", precision, out, profiles, io.input_names)
    before_session(providers)
    session = ort.InferenceSession(model, providers=providers)
    check_session(session, providers)
    for _, _, (batch, length) in profiles:
        feeds = {name: np.ones((batch, length), dtype=io.input_dtype) for name in io.input_names}
        session.run(None, feeds)
        print(f"engine for batch <= {batch}, length <= {length}: built", flush=True)


def main(argv=None):
    """python -m mlperf_bert.gpu facts | ort-trt-cache --model M --out DIR --precision P --buckets B --batch-sizes S"""
    import argparse
    import json
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.gpu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("facts", help="print the GPU facts (JSON)")
    cache = sub.add_parser("ort-trt-cache", help="build onnxruntime's TensorRT engine cache for these profiles")
    cache.add_argument("--model", required=True)
    cache.add_argument("--out", required=True)
    cache.add_argument("--precision", choices=DEVICE_PRECISIONS["tensorrt-ep"], default="fp16")
    cache.add_argument("--buckets", default="auto", help=f"sequence-length buckets (auto: {TRT_DEFAULT_BUCKETS})")
    cache.add_argument("--batch-sizes", default="1", help="batch sizes the harness runs, e.g. 1,8")
    args = parser.parse_args(argv)
    try:
        if args.verb == "facts":
            print(json.dumps(facts(), indent=1))
        else:
            from mlperf_bert import seq_plan   # the harness's parser: 384 added, so the profiles are the same
            buckets = seq_plan.parse_buckets(TRT_DEFAULT_BUCKETS if args.buckets == "auto" else args.buckets)
            if not isinstance(buckets, tuple):
                raise MlrunError(f"--buckets must list lengths for TensorRT profiles, not {args.buckets}")
            warm_ort_trt_cache(args.model, args.out, args.precision, buckets, parse_lengths(args.batch_sizes))
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def parse_lengths(text):
    """'128,256,384' -> (128, 256, 384), sorted; a usage error otherwise."""
    try:
        values = sorted({int(part) for part in str(text).split(",")})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise MlrunError(f"expected positive integers separated by commas, not {text!r}")
    return tuple(values)


if __name__ == "__main__":
    sys.exit(main())
