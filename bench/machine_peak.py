"""How close the harness gets to this machine: GEMM peak against the model work it achieves.

    python -m bench.machine_peak [--samples 256] [--repeats 2] [--layers 12 --hidden 768 --heads 12]
                                 [--threads N] [--reference] [--quick]

1. The machine's peak, measured with onnxruntime on all cores (or --threads): a one-node graph,
   MatMul (fp32) or MatMulInteger (uint8 x int8 -> int32, what dynamic quantisation runs), on
   large square-ish shapes; best of several runs of each shape, the best shape counts. It is measured
   before the model passes and again after each round of them, and the best counts, so that load from
   other processes on a shared machine does not lower the peak alone.
   A multiply-add is 2 operations: 2*M*K*N per GEMM.
2. The harness's achieved model GFLOP/s on a BERT-shaped random model (the random model has the
   official graph structure, see mlperf_bert/random_model.py), the same samples as bench/harness.py
   (real SQuAD dev feature lengths), run through mlperf_bert.sut.QaInference (each sample at its real
   length, shortest first, batch 1, one caller, all cores), for:
     fp32 unfused: the model as built (its fixed 384 axis made dynamic, as the harness does);
     fp32 fused:   mlperf_bert.fusion (onnxruntime's transformer optimiser), as the fused recipe makes it;
     int8 unfused, int8 fused: each of those quantised here with onnxruntime.quantization.quantize_dynamic
                   (weights int8 per tensor, activations uint8; reduce_range off where the CPU has VNNI).
   They alternate sample by sample (each sample runs on every model in turn, so a burst of load from
   other processes lands on all alike), in --repeats passes. samples/s and GFLOP/s are of each one's best
   pass (load only slows a pass down), the median pass is shown beside it.

Model FLOPs of one sample of real length L (H hidden, F feed-forward width, N layers; the matrix
products only: embeddings, LayerNorm, softmax, GELU and bias adds are left out, they are < 1%):
    per layer: Q, K, V projections  3 * 2*L*H*H
               scores Q K^T         2*L*L*H
               context P V          2*L*L*H
               output projection    2*L*H*H
               feed-forward         2 * 2*L*H*F
    QA head:                        2*L*H*2
    total = N * (8*L*H*H + 4*L*L*H + 4*L*H*F) + 4*L*H
achieved GFLOP/s = sum of the samples' FLOPs / the pass's seconds; fp32 passes are compared with the
fp32 GEMM peak, the int8 passes with the int8 GEMM peak (their projections run as int8 ops; the
attention products QK^T and PV stay fp32 inside the quantised graph).
--reference adds, in the same rounds, the reference SUT design of bench/harness.py (a thread per sample,
batch 1, every sample padded to 384, one session of the fixed-384 model, default threads) and a "vs reference"
column: the issue's "25x the reference harness" is read there, from passes that met the same load.
"Same answers": samples whose argmax start and end over their real tokens equal the fp32 unfused model's
(on a random model the logits are near ties, so int8 noise flips many: that says nothing of accuracy).
"""
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.harness import agreement, fixed_model, model_args, reference_pass, sample_features
from mlperf_bert import fusion, seq_plan
from mlperf_bert.ort_backend import OrtBackend, available_cores
from mlperf_bert.sut import QaInference

PEAK_SHAPES = ((1024, 1024, 1024), (2048, 1024, 2048), (384, 768, 3072), (384, 3072, 768))  # M, K, N
QUICK_SHAPES = ((128, 128, 128), (256, 128, 256))


def model_flops(length, layers, hidden, ffn):
    """Matrix-product FLOPs of one sample of `length` real tokens (the formula in the docstring)."""
    per_layer = (3 * 2 * length * hidden * hidden + 2 * length * length * hidden + 2 * length * length * hidden
                 + 2 * length * hidden * hidden + 2 * 2 * length * hidden * ffn)
    return layers * per_layer + 2 * length * hidden * 2


def _gemm_session(m, k, n, int8, threads):
    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "b")
        a_zero = numpy_helper.from_array(np.array(128, np.uint8), "a_zero")
        b_zero = numpy_helper.from_array(np.array(0, np.int8), "b_zero")
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
        inits, a_type, y_type = [weight, a_zero, b_zero], TensorProto.UINT8, TensorProto.INT32
        feed = rng.integers(0, 256, (m, k), dtype=np.uint8)
    else:
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "b")
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        inits, a_type, y_type = [weight], TensorProto.FLOAT, TensorProto.FLOAT
        feed = rng.standard_normal((m, k), dtype=np.float32)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", a_type, [m, k])],
                              [helper.make_tensor_value_info("y", y_type, [m, n])], inits)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, {"a": feed}


def gemm_peak(int8, threads, shapes, seconds_per_shape):
    """(best GFLOP/s or GOP/s, its shape): each shape run for about seconds_per_shape, best run counts."""
    best, best_shape = 0.0, None
    for m, k, n in shapes:
        session, feed = _gemm_session(m, k, n, int8, threads)
        session.run(None, feed)  # first run: allocation, packing
        deadline = time.perf_counter() + seconds_per_shape
        fastest = float("inf")
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feed)
            fastest = min(fastest, time.perf_counter() - started)
        rate = 2 * m * k * n / fastest / 1e9
        if rate > best:
            best, best_shape = rate, (m, k, n)
    return best, best_shape


def quantized(fused_path, out_path):
    """fused_path quantised dynamically (int8 weights, uint8 activations), VNNI-aware."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    if not out_path.is_file():
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        vnni = any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))
        # The fused graph's com.microsoft ops defeat ONNX shape inference: tensors of unknown type are float.
        quantize_dynamic(str(fused_path), str(out_path), weight_type=QuantType.QInt8, reduce_range=not vnni,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return out_path


def interleaved_pass(runs, indices, lengths):
    """({name: seconds}, {name: {index: response}}) of one pass over indices, shortest first, each sample
    run by every model in turn: a burst of load from other processes lands on all of them alike."""
    seconds = {name: 0.0 for name in runs}
    responses = {name: {} for name in runs}
    for index in sorted(indices, key=lambda i: lengths[i]):
        for name, inference in runs.items():
            started = time.perf_counter()
            for batch in inference.responses([index]):
                responses[name][index] = batch[0][1]
            seconds[name] += time.perf_counter() - started
    return seconds, responses


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 256, 2)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--peak-seconds", type=float, default=1.5, help="time spent on each GEMM shape, each time")
    parser.add_argument("--reference", action="store_true", help="also time the reference SUT design each round "
                        "(slow: about 1.4 samples/s on 2 cores for BERT-Base)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 2-layer hidden-64 model, 8 samples of "
                        "the documented length distribution, small GEMMs, one repeat (figures mean nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats, args.layers, args.hidden, args.heads = 8, 1, 2, 64, 2
        args.peak_seconds = 0.2
    threads = args.threads or available_cores()
    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)
    ffn = 4 * args.hidden

    shapes = QUICK_SHAPES if args.quick else PEAK_SHAPES
    peaks = {False: (0.0, None), True: (0.0, None)}  # int8? -> (best rate, its shape)

    def measure_peaks():
        """Once before the passes and again after each round of them, so that the peak meets the same load."""
        for int8 in peaks:
            peaks[int8] = max(peaks[int8], gemm_peak(int8, threads, shapes, args.peak_seconds), key=lambda p: p[0])

    measure_peaks()
    features, indices, source = sample_features(args.samples, args.seed, cache, real=not args.quick)
    lengths = np.asarray(features.lengths)
    flops = sum(model_flops(int(lengths[index]), args.layers, args.hidden, ffn) for index in indices)
    fixed_path = fixed_model(args, cache)
    unfused_path, plan = seq_plan.prepare(str(fixed_path), "exact", cache)
    fused_path = Path(unfused_path).with_suffix(".fused.onnx")
    if not fused_path.is_file():
        facts = fusion.fuse(unfused_path, fused_path, work_dir=cache / "fusion-work")
        print(fusion.describe(facts))
    models = {"fp32 unfused": unfused_path, "fp32 fused": str(fused_path),
              "int8 unfused": str(quantized(Path(unfused_path), Path(unfused_path).with_suffix(".int8.onnx"))),
              "int8 fused": str(quantized(fused_path, Path(unfused_path).with_suffix(".fused.int8.onnx")))}
    runs = {name: QaInference(OrtBackend(path, threads), features, plan) for name, path in models.items()}
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, FFN {ffn}, random weights; "
          f"samples: {len(indices)} from {source}; real length mean {lengths[indices].mean():.1f}; "
          f"{flops / len(indices) / 1e9:.2f} GFLOP per sample on average")

    reference_backend = OrtBackend(str(fixed_path), args.threads) if args.reference else None
    interleaved_pass(runs, indices[:1], lengths)  # first runs allocate and plan memory
    if reference_backend:
        reference_pass(reference_backend, features, indices[:1])
    times = {name: [] for name in runs}
    reference_times = []
    for _ in range(args.repeats):
        seconds, answers = interleaved_pass(runs, indices, lengths)
        for name in runs:
            times[name].append(seconds[name])
        if reference_backend:
            reference_times.append(reference_pass(reference_backend, features, indices))
        measure_peaks()
    (peak_fp32, shape_fp32), (peak_int8, shape_int8) = peaks[False], peaks[True]
    print(f"machine peak, onnxruntime {ort.__version__}, {threads} threads, best of shapes M,K,N in {list(shapes)}, "
          f"measured before the passes and after each round:")
    print(f"  fp32 MatMul:        {peak_fp32:8.1f} GFLOP/s  (at {shape_fp32})")
    print(f"  int8 MatMulInteger: {peak_int8:8.1f} GOP/s    (at {shape_int8}; {peak_int8 / peak_fp32:.2f}x fp32)")
    reference = answers["fp32 unfused"]
    best = {name: len(indices) / min(seconds) for name, seconds in times.items()}
    print(f"{'':14s} {'samples/s':>9s} {'median':>8s} {'vs fp32':>8s} {'GFLOP/s':>8s} {'of peak':>8s} "
          f"{'same answers':>13s}")
    for name, seconds in times.items():
        rate = flops / min(seconds) / 1e9
        peak = peak_int8 if name.startswith("int8") else peak_fp32
        same, worst = agreement(reference, answers[name], lengths)
        print(f"{name:14s} {best[name]:9.3f} {len(indices) / statistics.median(seconds):8.3f} "
              f"{best[name] / best['fp32 unfused']:7.2f}x {rate:8.1f} {100 * rate / peak:7.1f}% "
              f"{same:>6d}/{len(indices):<6d} (passes {', '.join(f'{t:.2f}' for t in seconds)} s; "
              f"largest logit difference {worst:.2e})")
    if reference_times:
        reference_rate = len(indices) / min(reference_times)
        print(f"reference design (thread per sample, batch 1, 384, {reference_backend.threads} threads): "
              f"{reference_rate:.3f} samples/s (passes {', '.join(f'{t:.2f}' for t in reference_times)} s)")
        print("vs reference: " + ", ".join(f"{name} {best[name] / reference_rate:.1f}x" for name in runs))
    print(f"fusion speed-up: fp32 {best['fp32 fused'] / best['fp32 unfused']:.2f}x, "
          f"int8 {best['int8 fused'] / best['int8 unfused']:.2f}x (best passes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
