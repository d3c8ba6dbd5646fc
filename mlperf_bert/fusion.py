"""python -m mlperf_bert.fusion: fuse a BERT QA model's graph with onnxruntime's transformer optimiser.

The optimiser (onnxruntime.transformers.optimizer, model_type "bert") replaces the op patterns of
a PyTorch export by onnxruntime's fused kernels: EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu (exact GELU: no approximation is enabled), LayerNormalization.
Only its Python fusions run (opt_level 0): the written graph holds standard and com.microsoft ops
that any onnxruntime CPU session runs, and the session applies its own graph optimisations at load.

A model with a fixed 384 axis is made dynamic first (as the harness would), so the fused model
always runs at real lengths. The fused model is then checked against its source on padded
batches at two lengths and two batch sizes (largest logit difference at most TOLERANCE), keeps the
source's input and output names, and fusion.json records which fusions applied.
"""
import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from engine.errors import MlrunError, StepError
from mlperf_bert import model_adapter, seq_plan

TOLERANCE = 1e-3  # largest |fused - unfused| logit over real and padded positions
CHECK_SHAPES = ((1, 37), (3, 200))  # (batch, length): the rows of the batch of 3 hold 200, 130 and 80 real tokens
REPORTED = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
            "LayerNormalization")


def fuse(source, out_path, num_heads=0, hidden_size=0, work_dir=None):
    """Write the fused model to out_path; return the facts fusion.json holds."""
    import onnxruntime
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    io = model_adapter.inspect(source)
    work_dir = Path(work_dir or Path(out_path).parent / ".fusion-work")
    axis = "dynamic"
    unfused = source
    if io.seq_len is not None:
        unfused, plan = seq_plan.prepare(source, "auto", work_dir)
        axis = (f"fixed {io.seq_len}, made dynamic before fusing" if plan.buckets is None
                else f"fixed {io.seq_len}: {plan.description}")
    options = FusionOptions("bert")  # exact GELU kept: enable_gelu_approximation stays off
    # The optimiser warns that our producer is not "pytorch"; the fusions below say what matched.
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
        optimized = optimizer.optimize_model(unfused, model_type="bert", num_heads=num_heads,
                                             hidden_size=hidden_size, opt_level=0, optimization_options=options,
                                             use_gpu=False)
    except Exception as error:  # the optimiser raises assorted errors on graphs it cannot read
        raise StepError(f"onnxruntime's transformer optimiser failed on {unfused}: {error}") from None
    statistics = {name: int(count) for name, count in optimized.get_fused_operator_statistics().items()}
    # onnxruntime's own verdict: embeddings fused, one Attention and one GELU per layer, two LayerNorms per layer.
    fully = bool(optimized.is_fully_optimized(statistics))
    optimized.save_model_to_file(str(out_path), use_external_data_format=False)
    fused_io = model_adapter.inspect(str(out_path))
    source_io = model_adapter.inspect(unfused)
    if (fused_io.input_names, fused_io.start, fused_io.end) != (source_io.input_names, source_io.start, source_io.end):
        raise StepError(f"the fused model renamed its inputs or outputs: {fused_io} against {source_io}")
    check = compare(unfused, str(out_path))
    if check["max_abs_diff"] > TOLERANCE:
        raise StepError(f"the fused model's logits differ from the unfused model's by {check['max_abs_diff']:.2e} "
                        f"(more than {TOLERANCE:g}) at batch x length {check['shapes']}")
    shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "source": os.path.abspath(source), "sequence_axis": axis,
        "optimizer": {"model_type": "bert", "opt_level": 0, "num_heads": num_heads, "hidden_size": hidden_size,
                      "gelu_approximation": False, "onnxruntime": onnxruntime.__version__},
        "fused_operators": {name: statistics.get(name, 0) for name in REPORTED}, "fully_optimized": fully,
        "all_statistics": statistics,
        "check": check,
    }


def compare(first, second, shapes=CHECK_SHAPES):
    """Largest logit difference between two models on the same padded probe batches (real and padded
    positions alike), and whether every row's argmax start and end agree over its real tokens.
    shapes: (batch, length) pairs; a model with a fixed axis gets each batch padded to it."""
    from mlperf_bert.ort_backend import OrtBackend

    a, b = OrtBackend(first), OrtBackend(second)
    worst, same = 0.0, True
    for batch, length in shapes:
        lengths = [max(length - 50 * row - 20 * (row > 0), 1) for row in range(batch)]
        inputs = model_adapter.probe_inputs(lengths, a.seq_len or length, a.io.input_dtype)  # a fixed axis: padded
        for got, want in zip(b.run(*inputs), a.run(*inputs)):
            worst = max(worst, float(np.abs(got - want).max()))
            same &= all(got[row, :n].argmax() == want[row, :n].argmax() for row, n in enumerate(lengths))
    return {"shapes": [list(shape) for shape in shapes], "max_abs_diff": worst, "tolerance": TOLERANCE,
            "same_argmax": bool(same)}


def describe(facts):
    """One line: the fusions that applied, or that none did."""
    applied = [f"{name} {count}" for name, count in facts["fused_operators"].items() if count]
    verdict = "fully fused" if facts["fully_optimized"] else "partly fused (onnxruntime's verdict)"
    return "fused: " + (f"{', '.join(applied)}; {verdict}" if applied
                        else "nothing (no pattern of onnxruntime's BERT fusions matched)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the unfused ONNX model")
    parser.add_argument("--out", required=True, help="folder for model.onnx and fusion.json")
    parser.add_argument("--num-heads", type=int, default=0, help="attention heads (0: read from the graph)")
    parser.add_argument("--hidden-size", type=int, default=0, help="hidden size (0: read from the graph)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        facts = fuse(args.model, out / "model.onnx", args.num_heads, args.hidden_size)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    (out / "fusion.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(describe(facts))
    print(f"sequence axis: {facts['sequence_axis']}; against the unfused model: largest logit difference "
          f"{facts['check']['max_abs_diff']:.2e} (tolerance {TOLERANCE:g}), same answers: {facts['check']['same_argmax']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
