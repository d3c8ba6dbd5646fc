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
   (real SQuAD dev feature lengths), run through mlperf_bert.sut (each sample at its real length,
   shortest first) for:
     fp32 unfused: the model as built (its fixed 384 axis made dynamic, as the harness does);
     fp32 fused:   mlperf_bert.fusion (onnxruntime's transformer optimiser), as the fused recipe makes it;
     int8 unfused, int8 fused: each of those quantised here with onnxruntime.quantization.quantize_dynamic
                   with the settings the _int8-dynamic recipe chooses for this CPU (int8 weights, a scale per
                   output column, uint8 activations; 7-bit weights only where the CPU has no VNNI/AMX).
   each in two layouts:
     all cores: one session on all cores, batch 1, one caller (SingleStream's path);
     Offline:   what the app runs for Offline (mlperf_bert.parallelism: one single-thread session per
                core, each pinned to its core, pulling runs of neighbouring lengths from one queue),
                with --batch-size/--batch-pad when given.
   Every (model, layout) runs the whole sample set as one pass, in turn, --repeats rounds. A pass keeps
   one model's weights warm in the caches as a real run does (alternating models sample by sample
   evicted them: the int8 models lost a third of their speed to the fp32 models' 435 MB). samples/s and
   GFLOP/s are of each one's best pass (load only slows a pass down), the median pass beside it.
3. The ceiling at the model's own shapes: a graph of its weight GEMMs alone (per layer QKV as one product,
   output, FFN in and out, each layer its own weights) at M = the samples' mean real length, on all cores and
   one thread's rate times the cores (the Offline layout's GEMMs; computed from one thread alone, not measured
   with every core busy at once: shared caches and memory make it an upper bound): the most a model of nothing
   but these would reach.
4. Where the time goes (--profile, on by default): onnxruntime's own profile of each model on all
   cores over 16 of the samples, the share of kernel time per operator type.
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
(on a random model the logits are near ties, so int8 noise flips many: that says nothing of accuracy), of the
layout that keeps answers: one session on all cores, unpinned; the others read "not compared".
"""
import collections
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.harness import (_between, agreement, fixed_model, model_args, quietly, reference_pass, sample_features,
                           written_whole)
from mlperf_bert import fusion, parallelism, quantize, seq_plan
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.sut import QaInference, run_on_instances

PEAK_SHAPES = ((1024, 1024, 1024), (2048, 1024, 2048), (384, 768, 3072), (384, 3072, 768))  # M, K, N
QUICK_SHAPES = ((128, 128, 128), (256, 128, 256))


def model_flops(length, layers, hidden, ffn):
    """Matrix-product FLOPs of one sample of `length` real tokens (the formula in the docstring)."""
    per_layer = (3 * 2 * length * hidden * hidden + 2 * length * length * hidden + 2 * length * length * hidden
                 + 2 * length * hidden * hidden + 2 * 2 * length * hidden * ffn)
    return layers * per_layer + 2 * length * hidden * 2


def gemm_session(m, k, n, int8, threads):
    """(session, feed) of one M x K by K x N product: MatMul (fp32) or MatMulInteger (int8)."""
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
    return _session(graph, threads), {"a": feed}


def _session(graph, threads):
    """A CPU session of `graph` (opset 17) on `threads` intra-op threads."""
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def gemm_rate(m, k, n, int8, threads, seconds):
    """GFLOP/s (GOP/s for int8) of one M x K by K x N product, the fastest of runs over about `seconds`."""
    session, feed = gemm_session(m, k, n, int8, threads)
    session.run(None, feed)  # first run: allocation, packing
    deadline = time.perf_counter() + seconds
    fastest = float("inf")
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, feed)
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * m * k * n / fastest / 1e9


def gemm_peak(int8, threads, shapes, seconds_per_shape):
    """(best GFLOP/s or GOP/s, its shape): each shape run for about seconds_per_shape, best run counts."""
    return max((gemm_rate(m, k, n, int8, threads, seconds_per_shape), (m, k, n)) for m, k, n in shapes)


def model_gemm_ceiling(length, layers, hidden, ffn, int8, threads, repeats):
    """GFLOP/s (GOP/s) of a graph of nothing but the model's weight GEMMs: per layer QKV (as one product),
    output, FFN in and FFN out at M = length, each layer with its own weights, so that the weights stream
    from beyond the core's cache as the model's do (one product run again and again keeps its weight in
    cache: in one measurement, 19 MB of weights reused ran 9% faster than 226 MB streamed). Every product
    reads a graph input of its width and is a graph output: nothing but the products runs."""
    rng = np.random.default_rng(0)
    dtype = TensorProto.UINT8 if int8 else TensorProto.FLOAT
    nodes, inits, outputs = [], [], []
    for layer in range(layers):
        for step, (k, n) in enumerate(((hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden))):
            name, out = f"w{layer}_{step}", f"y{layer}_{step}"
            if int8:
                inits.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), name))
                nodes.append(helper.make_node("MatMulInteger", [f"x{k}", name, "a_zero", "b_zero"], [out]))
            else:
                inits.append(numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), name))
                nodes.append(helper.make_node("MatMul", [f"x{k}", name], [out]))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.INT32 if int8 else dtype, [length, n]))
    if int8:
        inits += [numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
                  numpy_helper.from_array(np.array(0, np.int8), "b_zero")]
    widths = sorted({hidden, ffn})
    graph = helper.make_graph(nodes, "weights", [helper.make_tensor_value_info(f"x{k}", dtype, [length, k])
                                                 for k in widths], outputs, inits)
    session = _session(graph, threads)
    feed = {f"x{k}": rng.integers(0, 256, (length, k), dtype=np.uint8) if int8
            else rng.standard_normal((length, k), dtype=np.float32) for k in widths}
    session.run(None, feed)
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        fastest = min(fastest, time.perf_counter() - started)
    return layers * 2 * length * hidden * (3 * hidden + hidden + 2 * ffn) / fastest / 1e9


def quantized(source, cache):
    """source quantised dynamically with the settings the _int8-dynamic recipe chooses for this CPU
    (mlperf_bert.quantize.choose: per-channel int8 weights, 7-bit only without VNNI/AMX); (path, settings)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    settings, _ = quantize.choose(quantize.cpu_flags())
    tag = "-".join([settings["weight_type"]] + [name for name, on in (("pc", settings["per_channel"]),
                                                                      ("rr", settings["reduce_range"])) if on])
    out_path = Path(cache) / f"{Path(source).stem}.int8-{tag}.onnx"
    if not out_path.is_file():
        # The fused graph's com.microsoft ops defeat ONNX shape inference: tensors of unknown type are float.
        with quietly(f"onnxruntime dynamic int8 of {Path(source).name} ({tag}), once into {cache}"):
            written_whole(out_path, lambda scratch: quantize_dynamic(
                str(source), str(scratch), per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                weight_type=getattr(QuantType, settings["weight_type"]),
                extra_options={"DefaultTensorType": TensorProto.FLOAT}))
    return str(out_path), settings


def layouts(cores, batch_size, batch_pad):
    """{name: (instances, threads, batch size, pad)}: SingleStream's path and what the app runs for Offline."""
    offline = parallelism.choose("Offline", cores)
    return {"all cores": (1, len(cores), 1, 0),
            "Offline": (offline.instances, offline.threads, batch_size, batch_pad)}


def build(model, features, plan, cores, layout):
    instances, threads, batch_size, pad = layout
    pins = parallelism.split_cores(cores, instances, threads) or [()] * instances
    base = QaInference(None, features, plan, batch_size, pad)
    return [base.on(OrtBackend(model, threads, spin=False, cores=pin)) for pin in pins], pins


def timed_pass(views, pins, indices, responses):
    """Seconds of one pass over indices; a single unpinned view also fills `responses` {index: response}."""
    started = time.perf_counter()
    if len(views) == 1 and not pins[0]:
        for batch in views[0].responses(indices):
            for position, response in batch:
                responses[indices[position]] = response
    else:
        run_on_instances(views, pins, indices)
    return time.perf_counter() - started


def op_shares(model, features, plan, indices, threads, scratch):
    """[(operator type, share of kernel time)] from onnxruntime's profile of `model` over `indices`."""
    backend = OrtBackend(model, threads, profile_prefix=scratch / "profile")
    for _ in QaInference(backend, features, plan).responses(indices):
        pass
    trace = Path(backend.session.end_profiling())
    kernel = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            kernel[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(kernel.values()) or 1
    return [(op, spent / total) for op, spent in kernel.most_common()]


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 256, 2)
    # bounds said at once (a batch of 0 or a peak of 0 s ended in a ZeroDivisionError after every pass, a batch of
    # -3 ran no sample and printed 614% of the peak), as openvino_peak says them
    parser.add_argument("--threads", type=_between(1, 4096), help="intra-op threads (default: all cores)")
    parser.add_argument("--peak-seconds", type=float, default=1.5, help="time spent on each GEMM shape, each time "
                        "(above 0)")
    parser.add_argument("--batch-size", type=_between(1, 64), default=1, help="the Offline layout's batch size")
    parser.add_argument("--batch-pad", type=_between(0, 384), default=0, help="the Offline layout's pad (tokens; "
                        "with --batch-size above 1)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="leave out where the time goes")
    parser.add_argument("--reference", action="store_true", help="also time the reference SUT design each round "
                        "(slow: about 3.5 samples/s on 2 quiet cores for BERT-Base)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 2-layer hidden-64 model, 8 samples of "
                        "the documented length distribution, small GEMMs, one repeat (figures mean nothing)")
    args = parser.parse_args(argv)
    if not args.peak_seconds > 0:
        parser.error(f"--peak-seconds must be above 0, not {args.peak_seconds}")
    if math.isinf(args.peak_seconds):   # each shape timed until a deadline of inf: a run that never ended
        parser.error(f"--peak-seconds must be finite, not {args.peak_seconds}")
    if args.batch_pad and args.batch_size == 1:   # ignored unsaid; the app refuses it too
        parser.error("--batch-pad applies only with --batch-size above 1")
    if args.quick:   # the smoke run's sizes where none was given (they replaced --samples 32 and the like unsaid)
        for name, value in (("samples", 8), ("repeats", 1), ("layers", 2), ("hidden", 64), ("heads", 2),
                            ("peak_seconds", 0.2)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    cores = parallelism.available_cores()
    threads = args.threads or len(cores)
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
        facts = {}
        written_whole(fused_path, lambda scratch: facts.update(fusion.fuse(unfused_path, scratch,
                                                                           work_dir=cache / "fusion-work")))
        print(fusion.describe(facts))
    models = {"fp32 unfused": unfused_path, "fp32 fused": str(fused_path),
              "int8 unfused": quantized(unfused_path, cache)[0]}
    models["int8 fused"], int8_settings = quantized(fused_path, cache)
    chosen = layouts(cores, args.batch_size, args.batch_pad)
    if args.threads:
        chosen["all cores"] = (1, args.threads, 1, 0)
    runs = {(name, layout): build(path, features, plan, cores, chosen[layout])
            for name, path in models.items() for layout in chosen}
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, FFN {ffn}, random weights; "
          f"samples: {len(indices)} from {source}; real length mean {lengths[indices].mean():.1f}; "
          f"{flops / len(indices) / 1e9:.2f} GFLOP per sample on average")
    print(f"int8: onnxruntime dynamic quantisation, {int8_settings} (as _int8-dynamic chooses)")
    for layout, (instances, per, batch_size, pad) in chosen.items():
        print(f"layout {layout}: {instances} session(s) x {per} thread(s), batch {batch_size}, pad <= {pad}")

    reference_backend = OrtBackend(str(fixed_path), args.threads) if args.reference else None
    for views, pins in runs.values():
        run_on_instances(views, pins, indices[:2])  # first runs allocate and plan memory
    if reference_backend:
        reference_pass(reference_backend, features, indices[:1])
    times = {key: [] for key in runs}
    answers = {name: {} for name in models}
    reference_times = []
    for _ in range(args.repeats):
        for (name, layout), (views, pins) in runs.items():
            times[name, layout].append(timed_pass(views, pins, indices, answers[name]))
        if reference_backend:
            reference_times.append(reference_pass(reference_backend, features, indices))
        measure_peaks()
    (peak_fp32, shape_fp32), (peak_int8, shape_int8) = peaks[False], peaks[True]
    print(f"machine peak, onnxruntime {ort.__version__}, {threads} threads, best of shapes M,K,N in {list(shapes)}, "
          f"measured before the passes and after each round:")
    print(f"  fp32 MatMul:        {peak_fp32:8.1f} GFLOP/s  (at {shape_fp32})")
    print(f"  int8 MatMulInteger: {peak_int8:8.1f} GOP/s    (at {shape_int8}; {peak_int8 / peak_fp32:.2f}x fp32)")
    mean = round(float(lengths[indices].mean()))
    ceilings = {(int8, per): model_gemm_ceiling(mean, args.layers, args.hidden, ffn, int8, per, 3 if args.quick else 10)
                for int8 in (False, True) for per in sorted({threads, 1})}
    print(f"the model's weight GEMMs alone at the mean length (M = {mean}; per layer QKV, output, FFN in and out, "
          f"own weights each), the most a graph of nothing else would reach:")
    for (int8, per), rate in ceilings.items():
        peak = peak_int8 if int8 else peak_fp32
        scale = len(cores) // per if per == 1 else 1  # single-thread GEMMs: one per core, as the Offline layout runs
        print(f"  {'int8' if int8 else 'fp32'}, {per} thread(s)"
              f"{f' x {scale} cores (one thread measured alone, times {scale})' if scale > 1 else ''}: "
              f"{rate * scale:8.1f} {'GOP/s' if int8 else 'GFLOP/s'} ({100 * rate * scale / peak:.1f}% of peak)")
    best = {key: len(indices) / min(seconds) for key, seconds in times.items()}
    print(f"{'':25s} {'samples/s':>9s} {'median':>8s} {'vs fp32':>8s} {'GFLOP/s':>8s} {'of peak':>8s} "
          f"{'same answers':>13s}")
    # answers are kept by a single unpinned view only (the all-cores layout): a pinned or several-session layout's
    # row said "0/8, largest difference 0.00e+00" (nothing compared) or repeated the all-cores row's
    compared = {key for key, (views, pins) in runs.items() if len(views) == 1 and not pins[0]}
    for (name, layout), seconds in times.items():
        rate = flops / min(seconds) / 1e9
        peak = peak_int8 if name.startswith("int8") else peak_fp32
        if (name, layout) in compared and answers["fp32 unfused"] and answers[name]:
            same, worst = agreement(answers["fp32 unfused"], answers[name], lengths)
            said = f"{same:>6d}/{len(indices):<6d} (passes {', '.join(f'{t:.2f}' for t in seconds)} s; " \
                   f"largest logit difference {worst:.2e})"
        else:
            said = f"{'-':>6s} {'':6s} (passes {', '.join(f'{t:.2f}' for t in seconds)} s; not compared: " \
                   "this layout keeps no answers)"
        print(f"{name + ', ' + layout:25s} {best[name, layout]:9.3f} {len(indices) / statistics.median(seconds):8.3f} "
              f"{best[name, layout] / best['fp32 unfused', layout]:7.2f}x {rate:8.1f} {100 * rate / peak:7.1f}% "
              + said)
    if reference_times:
        reference_rate = len(indices) / min(reference_times)
        print(f"reference design (thread per sample, batch 1, 384, {reference_backend.threads} threads): "
              f"{reference_rate:.3f} samples/s (passes {', '.join(f'{t:.2f}' for t in reference_times)} s)")
        print("vs reference: " + ", ".join(f"{name}, {layout} {rate / reference_rate:.1f}x"
                                           for (name, layout), rate in best.items()))
    for layout in chosen:
        print(f"fusion speed-up, {layout}: fp32 {best['fp32 fused', layout] / best['fp32 unfused', layout]:.2f}x, "
              f"int8 {best['int8 fused', layout] / best['int8 unfused', layout]:.2f}x (best passes)")
    if args.profile:
        sample = indices[::max(1, len(indices) // 16)][:16]
        print(f"where the time goes (onnxruntime profile, all cores, {len(sample)} samples, share of kernel time):")
        for name, path in models.items():
            shares = op_shares(path, features, plan, sample, threads, cache)
            print(f"  {name:12s} " + ", ".join(f"{op} {100 * share:.1f}%" for op, share in shares if share >= 0.005))
    return 0


if __name__ == "__main__":
    from bench.entry import run
    run(main)
