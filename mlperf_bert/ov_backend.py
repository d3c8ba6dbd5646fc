"""OpenVINO on the CPU for a BERT QA model: one compiled model, a stream per instance, each instance its own
infer request; batches [B, L] in, start/end logits [B, L] out.

Precision is explicit: OpenVINO's own default on a CPU with AMX or AVX512_BF16 is bf16, so fp32 is asked for as
f32 (the same answers as onnxruntime within 4e-6), and bf16 only where the CPU multiplies bf16 (elsewhere OpenVINO
would run f32 and the run would say bf16). int8 is a model quantised by NNCF (get ml-model bert int8-nncf),
compiled f32 outside its int8 operators (int8-bf16: bf16 there, where the CPU multiplies bf16), and refused when
OpenVINO compiles none of them int8. What ran is read back from the compiled model and recorded.
"""

import numpy as np
import openvino as ov

from engine.errors import MlrunError, StepError
from mlperf_bert import batching, model_adapter

# mlrun's word: OpenVINO's INFERENCE_PRECISION_HINT. int8 is the model's (NNCF's Quantize/Dequantize pairs, which
# OpenVINO compiles into int8 kernels); the operators left outside them run f32, as --precision=fp32's do.
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8-bf16": "bf16"}
# int8-bf16: the int8 model with the rest bf16 (on AMX 0.98-1.14x int8 with the rest f32 at batch 4, 0.94-1.22x at
# batch 1; docs/performance.md)
QUANTISED = ("int8", "int8-bf16")
INT8 = ("i8", "u8")
COMPUTE = ("FullyConnected", "MatMul", "Convolution", "Subgraph")   # what multiplies, in OpenVINO's runtime graph


class CpuCannot(MlrunError):
    """This CPU cannot run what was asked (bf16 without AMX or AVX512_BF16)."""
    exit_code = 78   # sysexits EX_CONFIG, as gpu.GpuUnavailable: the runner makes it mlrun's exit 2


class OvModel:
    """The model compiled once for `instances` streams of `threads` threads each; request() gives each
    instance its infer request (OpenVINO places the streams on the cores itself)."""

    def __init__(self, model_path, instances, threads, precision="fp32", profile=False):
        self.io = model_adapter.inspect(model_path)
        core = ov.Core()
        self.capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        if PRECISIONS[precision] == "bf16" and "BF16" not in self.capabilities:
            quantised = precision in QUANTISED
            would = "run the operators outside its int8 ones fp32" if quantised else "run fp32"
            raise CpuCannot(f"--precision {precision}: this CPU does not multiply bf16 (no AMX or AVX512_BF16; "
                            f"OpenVINO reports {', '.join(self.capabilities)}), so OpenVINO would {would} instead",
                            hint=("use --precision=int8 (the rest fp32)" if quantised else
                                  "leave out --precision (fp32)") + ", or run on a CPU with AMX or AVX512_BF16")
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "NUM_STREAMS": instances,
                  "INFERENCE_NUM_THREADS": instances * threads,
                  "PERFORMANCE_HINT": "LATENCY" if instances == 1 else "THROUGHPUT",
                  "PERF_COUNT": profile}   # per-node counters (bench.openvino_peak's profile); off: they cost time
        try:
            self.compiled = core.compile_model(str(model_path), "CPU", config)
        except Exception as error:   # OpenVINO raises RuntimeError for anything it cannot read or compile
            # an ISA cap below what was asked (bf16 under AVX2) fails here too; get cpu bf16 refuses that at plan time
            cap = batching.isa_limit()   # oneDNN's cap, by either of its names
            capped = f"--env.{cap} is set: without it OpenVINO may compile it; else " if cap else ""
            raise StepError(f"OpenVINO cannot compile {model_path}: {_reason(error)}",
                            hint=f"{capped}_onnxruntime may run it (OpenVINO's ONNX reader lacks some operators)") \
                from None
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        # OpenVINO grants at most the cores it may use: 4 instances asked for on 2 cores ran as 2 streams, and the
        # run said 4 (onnxruntime's extra sessions take turns on the cores; OpenVINO's requests would wait)
        if (self.streams, self.threads) != (instances, instances * threads):
            raise CpuCannot(f"OpenVINO compiled {self.streams} stream(s) with {self.threads} thread(s) in all, not "
                            f"the {instances} x {threads} asked for: it uses at most the cores this run may use",
                            hint=f"--instances and --threads within the cores (instances x threads <= "
                                 f"{max(self.threads, 1)} here), or leave them out for the scenario's rule")
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT")   # an ov.Type: f32, bf16
        self.precision = ran.to_string() if hasattr(ran, "to_string") else str(ran)
        if self.precision != PRECISIONS[precision]:   # never a run that says one precision and ran another
            raise StepError(f"OpenVINO compiled the model for {self.precision}, not the {precision} asked for")
        # int8 only where OpenVINO compiled int8 kernels: an fp32 model would run fp32 and the run would say int8
        self.int8_ops = int8_ops(self.compiled)
        if precision in QUANTISED and not self.int8_ops:
            raise StepError(f"--precision {precision}: {model_path} has no int8 operators OpenVINO runs (it is not "
                            "quantised), so it would run fp32",
                            hint=f"_openvino --precision={precision} quantises the chosen model with NNCF first "
                                 "(get ml-model bert int8-nncf); a --model file must be the fp32 one")
        self.asked = precision
        self._outputs = [self.io.start] if self.io.end is None else [self.io.start, self.io.end]

    def request(self):
        return OvBackend(self)

    def describe(self):
        return {"version": ov.get_version(), "precision": self.asked, "inference_precision_hint": self.precision,
                "int8_operators": self.int8_ops,
                "streams": self.streams, "threads": self.threads, "cpu_capabilities": self.capabilities}


class OvBackend:
    """One instance: its own infer request on the shared compiled model, run by one caller at a time."""

    def __init__(self, model):
        self.model = model
        self.io = model.io
        self.threads = max(1, model.threads // max(model.streams, 1))   # per instance, as onnxruntime's
        self._request = model.compiled.create_infer_request()
        self._outputs = [model.compiled.output(name) for name in model._outputs]

    def describe(self):
        return self.model.describe()

    def run(self, ids, mask, segments):
        """Return (start, end) float32 [B, L] for int arrays [B, L]."""
        feeds = {name: np.asarray(array, dtype=self.io.input_dtype)
                 for name, array in zip(self.io.input_names, (ids, mask, segments))}
        try:
            results = self._request.infer(feeds)
        except Exception as error:
            raise StepError(f"OpenVINO failed on a batch of shape {list(np.shape(ids))}: {_reason(error)}") from None
        outputs = [results[output] for output in self._outputs]
        # as OrtBackend.run does; not shared from there: ort_backend.py is a source of the model recipes, and
        # editing it would change every model entry's key
        if self.io.end is None:
            start, end = outputs[0][..., 0], outputs[0][..., 1]
        else:
            start, end = outputs
        return (np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32))


def int8_ops(compiled):
    """How many of the compiled model's multiplying operators run in int8 (OpenVINO's runtime graph says)."""
    count = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and "runtimePrecision" in info and info["layerType"].astype(str) in COMPUTE \
                and info["runtimePrecision"].astype(str) in INT8:
            count += 1
    return count


def _reason(error, limit=400):
    """What OpenVINO says went wrong, without where in its sources: its messages open with 'Exception from
    FILE:LINE:' and 'Check '...' failed at FILE:LINE:' lines, and the reason follows them."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith("Exception from")
            and not (line.startswith("Check '") and " failed at " in line)]
    return " ".join(told or lines or [type(error).__name__])[:limit]
