"""python -m mlperf_bert.nncf_quantize: static int8 of a BERT QA ONNX model by NNCF, calibrated on real features.

NNCF's post-training quantisation (nncf.quantize, ModelType.TRANSFORMER: SmoothQuant, then int8 inputs to the
MatMuls with weights, scales from the calibration statistics, then fast bias correction; the attention's MatMuls of
two activations stay f32) over the dynamic-axis copy of the
source (made first, or found in the source's --dynamic-cache), so the int8 model keeps the real-length axis. The
calibration samples are the features the MLPerf calibration list names, each at its real length; for a model
that names held-out questions (--heldout), only those of its other questions. The written model is ONNX with
QuantizeLinear/DequantizeLinear pairs: OpenVINO compiles them into int8 kernels (VNNI, AMX-INT8).
quantization.json records the settings, the calibration features and the int8-vs-fp32 logits on probe inputs.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import MlrunError, StepError, UsageError
from mlperf_bert import heldout, model_adapter, quantize, seq_plan, squad_features


SETTINGS = {"model_type": "TRANSFORMER", "preset": "PERFORMANCE (symmetric activations and weights)",
            "fast_bias_correction": True}


def overflow_fix(flags):
    """(NNCF's overflow_fix for a CPU of these flags, why). Without VNNI/AMX, x86's u8s8 multiply-adds saturate
    their 16-bit sums (onnxruntime's and OpenVINO's int8 kernels alike): NNCF's default halves only the first layer's
    weight range, and on a Zen 3 (AVX2) the tiny test model's logits came 0.62 from fp32 (0.86 on OpenVINO), 0.09
    with every weight at half range."""
    vnni = sorted(quantize.VNNI_FLAGS & set(flags))
    if vnni:
        return "first_layer_only", f"NNCF's default: the CPU has {', '.join(vnni)}"
    return "enable", "no VNNI/AMX on this CPU: every weight at half the 8-bit range, as u8s8 sums saturate"


def calibration_rows(features, list_path, heldout_path=None):
    """(feature rows to calibrate on, rows of the list left out because their question is held out)."""
    try:
        rows = [int(word) for word in open(list_path).read().split()]
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the calibration list {list_path}: {error}")
    if not rows or max(rows) >= len(features.lengths) or min(rows) < 0:
        raise UsageError(f"the calibration list {list_path} names features outside 0..{len(features.lengths) - 1}")
    if not heldout_path:
        return rows, []
    held, _ = heldout.read(heldout_path)
    # a held-out question is scored: none of its features may shape the scales (no labels are used, but still)
    examples, meta = features.examples, features.features
    out = [row for row in rows if examples[meta[row]["example_index"]]["qas_id"] in held]
    keep = [row for row in rows if row not in set(out)]
    if not keep:
        raise UsageError(f"every feature of the calibration list {list_path} belongs to a held-out question",
                         hint="this model cannot be calibrated on the list without seeing what it is scored on")
    return keep, out


def quantize_model(src, dst, features, rows, dynamic_cache=None, fix=None):
    """Write the int8 model of `src` to `dst`; return facts for quantization.json. fix: NNCF's overflow_fix (None:
    this CPU's, overflow_fix())."""
    import nncf
    import onnx
    fix = fix or overflow_fix(quantize.cpu_flags())[0]

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as scratch:
        cache = dynamic_cache if dynamic_cache and os.path.isdir(dynamic_cache) else scratch
        fp32, plan = seq_plan.prepare(src, "auto", cache)
        model = onnx.load(fp32)
        # NNCF would calibrate for minutes, then fail on it with an AttributeError
        quantize.refuse_quantised(model, "NNCF", "_openvino without --precision=int8 runs its int8 operators int8")
        io = model_adapter.inspect(fp32)
        width = io.seq_len   # None: each sample at its real length; a model that cannot be made dynamic: 384

        def sample(row):
            n = width or int(features.lengths[row])
            arrays = (features.input_ids, features.input_mask, features.segment_ids)
            return {name: np.asarray(array[row:row + 1, :n], dtype=io.input_dtype)
                    for name, array in zip(io.input_names, arrays)}
        try:
            int8 = nncf.quantize(model, nncf.Dataset(rows, sample), model_type=nncf.ModelType.TRANSFORMER,
                                 preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(rows),
                                 fast_bias_correction=True, advanced_parameters=nncf.AdvancedQuantizationParameters(
                                     overflow_fix=nncf.OverflowFix(fix)))
        except Exception as error:   # NNCF raises whatever its graph passes and onnxruntime raise
            raise StepError(f"NNCF could not quantise {src}: {type(error).__name__}: {str(error)[:400]}",
                            hint="it needs an fp32 model (an int8 or QAT one is quantised already)") from None
        onnx.save(int8, dst)
        made_here = plan.description.replace(scratch, "the build folder")
        ops = [node.op_type for node in int8.graph.node]
        return {"source": os.path.abspath(src), "quantized_from": made_here,
                "seq_axis": "dynamic" if model_adapter.inspect(dst).seq_len is None else "fixed",
                "quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear"),
                "vs_fp32": quantize.compare(fp32, dst)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.nncf_quantize", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the fp32 source model")
    parser.add_argument("--dynamic-cache", help="the source entry's folder of dynamic-axis copies, if any")
    parser.add_argument("--features", required=True, help="the SQuAD features folder")
    parser.add_argument("--calibration-list", required=True, help="bert_calibration_features.txt")
    parser.add_argument("--heldout", help="the source's held-out questions (heldout.json), if it names any")
    parser.add_argument("--out", required=True, help="folder for model.onnx and quantization.json")
    args = parser.parse_args(argv)
    try:
        try:
            import nncf
        except ImportError as error:
            raise UsageError(f"NNCF cannot be imported here ({error})",
                             hint='bin/mlrun "get ml-model bert int8-nncf" runs this with NNCF\'s layer on the path')
        features = squad_features.load(args.features)
        rows, left_out = calibration_rows(features, args.calibration_list, args.heldout)
        os.makedirs(args.out, exist_ok=True)
        fix, why = overflow_fix(quantize.cpu_flags())   # the recipe's probe keys the entry by these flags
        facts = quantize_model(args.model, os.path.join(args.out, "model.onnx"), features, rows, args.dynamic_cache,
                               fix)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    with open(args.calibration_list, "rb") as f:
        list_sha = hashlib.sha256(f.read()).hexdigest()
    lengths = [int(features.lengths[row]) for row in rows]
    record = {"method": "nncf.quantize", "nncf": nncf.__version__,
              "settings": {**SETTINGS, "overflow_fix": fix}, "why": {"overflow_fix": why},
              "calibration": {"list": os.path.abspath(args.calibration_list), "list_sha256": list_sha,
                              "features": len(rows), "mean_length": round(float(np.mean(lengths)), 1),
                              "left_out_held_out": len(left_out)},
              **facts}
    text = json.dumps(record, indent=1) + "\n"
    Path(args.out, "quantization.json").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
