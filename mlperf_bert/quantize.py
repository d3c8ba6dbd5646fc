"""python -m mlperf_bert.quantize: int8 dynamic quantisation of a BERT QA ONNX model (any source).

onnxruntime's dynamic quantiser turns each MatMul into an int8 one whose activations are quantised
at run time. It runs on the dynamic-axis copy of a fixed-384 model (made first, or found in the
source's --dynamic-cache), so the int8 model keeps the real-length axis.

Settings ("auto" chooses for the CPU's int8 instructions, read from /proc/cpuinfo):
- weight type QInt8 (signed weights: onnxruntime's u8s8 kernels, the fast path on x86);
- per-channel weight scales (one per output column: closer to fp32 at no run-time cost);
- reduce_range: 7-bit weights, needed on x86 CPUs without VNNI (AVX2/AVX-512 u8s8 multiply-adds
  saturate 16-bit sums with full 8-bit ranges); off where avx512_vnni, avx_vnni or amx_int8 exist.
What was chosen, and why, is written to quantization.json beside the model.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

from engine.errors import MlrunError, StepError, UsageError
from mlperf_bert import model_adapter, seq_plan

# The operators of a model quantised already, in QDQ, dynamic or QOperator form
QUANTISED = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
             "DynamicQuantizeMatMul", "QAttention")


class QuantisedAlready(UsageError):
    """The source given is int8 already: the person's input, not the step, is at fault."""
    exit_code = 78   # sysexits EX_CONFIG, as gpu.GpuUnavailable: the runner makes it mlrun's exit 2


def quantised_ops(model):
    """How many of an ONNX model's (a ModelProto's) operators are int8 ones."""
    return sum(node.op_type in QUANTISED for node in model.graph.node)


def refuse_quantised(model, quantiser, as_it_is):
    """Quantising an int8 model again made an int8 model recorded as made from an fp32 one (or failed late)."""
    if count := quantised_ops(model):
        raise QuantisedAlready(f"the source model is quantised already ({count} int8 operators): {quantiser} makes "
                               "int8 of an fp32 model",
                               hint=f"give the fp32 model, or run this one as it is: {as_it_is}")


VNNI_FLAGS = frozenset(("avx512_vnni", "avx_vnni", "amx_int8"))
WEIGHT_TYPES = ("QInt8", "QUInt8")
# Lengths the written model is run at against the fp32 source (the check that the axis stayed dynamic).
CHECK_LENGTHS = (37, 200)


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (the first `flags` line), or an empty set where none can be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def choose(flags, per_channel="auto", reduce_range="auto", weight_type="auto"):
    """{setting: value} and {setting: why} for these CPU flags; "auto" values are chosen, others kept."""
    vnni = sorted(VNNI_FLAGS & set(flags))
    settings, why = {}, {}
    if weight_type == "auto":
        settings["weight_type"], why["weight_type"] = "QInt8", "auto: signed int8 weights (u8s8 kernels)"
    else:
        settings["weight_type"], why["weight_type"] = weight_type, "given"
    if per_channel == "auto":
        settings["per_channel"], why["per_channel"] = True, "auto: a scale per output column"
    else:
        settings["per_channel"], why["per_channel"] = _bool(per_channel), "given"
    if reduce_range == "auto":
        settings["reduce_range"] = not vnni
        why["reduce_range"] = (f"auto: the CPU has {', '.join(vnni)}" if vnni else
                               "auto: no VNNI/AMX on this CPU, so 7-bit weights avoid u8s8 saturation")
    else:
        settings["reduce_range"], why["reduce_range"] = _bool(reduce_range), "given"
    if settings["weight_type"] not in WEIGHT_TYPES:
        raise MlrunError(f"weight type {weight_type!r}: expected auto, {' or '.join(WEIGHT_TYPES)}")
    return settings, why


def _bool(text):
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise MlrunError(f"expected auto, true or false, not {text!r}")


def quantize(src, dst, settings, dynamic_cache=None):
    """Write the int8 model of `src` to `dst`; return facts for quantization.json."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as scratch:
        # The source's dynamic-axis copy, from its entry when it made one, else made here.
        cache = dynamic_cache if dynamic_cache and os.path.isdir(dynamic_cache) else scratch
        fp32, plan = seq_plan.prepare(src, "auto", cache)
        refuse_quantised(onnx.load(fp32, load_external_data=False), "onnxruntime's dynamic quantiser",
                         "--model=FILE without _int8-dynamic runs its int8 operators as they are")
        try:
            quantize_dynamic(fp32, dst, per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                             weight_type=getattr(QuantType, settings["weight_type"]),
                             # fused graphs (Attention...) carry tensors whose type the quantiser cannot infer
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        except Exception as error:  # the quantiser raises whatever its graph passes raise
            raise StepError(f"onnxruntime's quantiser failed on {src}: {type(error).__name__}: {error}",
                            hint="it needs an fp32 model (an int8 or QAT one is quantised already)") from None
        made_here = plan.description.replace(scratch, "the build folder")
        return {"source": os.path.abspath(src), "quantized_from": made_here,
                "seq_axis": "dynamic" if model_adapter.inspect(dst).seq_len is None else "fixed",
                "vs_fp32": compare(fp32, dst)}


def compare(fp32_path, int8_path, lengths=CHECK_LENGTHS):
    """Start/end logits of both models on probe inputs at each length (unpadded where the axis is
    dynamic): the largest absolute difference and how many argmaxes agree."""
    from mlperf_bert.ort_backend import OrtBackend
    fp32, int8 = OrtBackend(fp32_path, quiet=True), OrtBackend(int8_path, quiet=True)
    width = fp32.seq_len or max(lengths)
    ids, mask, segments = model_adapter.probe_inputs(lengths, width, fp32.io.input_dtype)
    max_diff, agree, total = 0.0, 0, 0
    for row, length in enumerate(lengths):
        cut = slice(row, row + 1), slice(0, length if int8.seq_len is None else width)
        want, got = fp32.run(ids[cut], mask[cut], segments[cut]), int8.run(ids[cut], mask[cut], segments[cut])
        for a, b in zip(want, got):
            a, b = a[0, :length], b[0, :length]
            max_diff = max(max_diff, float(np.abs(a - b).max()))
            agree += int(a.argmax() == b.argmax())
            total += 1
    return {"lengths": list(lengths), "max_abs_logit_diff": round(max_diff, 6), "argmax_agree": f"{agree}/{total}"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.quantize", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the fp32 source model")
    parser.add_argument("--dynamic-cache", help="the source entry's folder of dynamic-axis copies, if any")
    parser.add_argument("--out", required=True, help="folder for model.onnx and quantization.json")
    parser.add_argument("--per-channel", default="auto")
    parser.add_argument("--reduce-range", default="auto")
    parser.add_argument("--weight-type", default="auto")
    parser.add_argument("--cpuinfo", default="/proc/cpuinfo", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        flags = cpu_flags(args.cpuinfo)
        settings, why = choose(flags, args.per_channel, args.reduce_range, args.weight_type)
        os.makedirs(args.out, exist_ok=True)
        dst = os.path.join(args.out, "model.onnx")
        facts = quantize(args.model, dst, settings, args.dynamic_cache)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    record = {"method": "onnxruntime.quantization.quantize_dynamic", "settings": settings, "why": why,
              "cpu_int8_flags": sorted(VNNI_FLAGS & flags), **facts}
    with open(os.path.join(args.out, "quantization.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
