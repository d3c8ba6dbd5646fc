"""OpenVINO beside onnxruntime: the machine's GEMM peak per precision, and the model work each backend achieves.

    python -m bench.openvino_peak [--samples 64] [--repeats 3] [--layers 12 --hidden 768 --heads 12]
                                  [--batch-size N --batch-pad TOKENS]

From an interpreter without openvino (the repo's .venv) it runs itself again under the OpenVINO backend's: the
onnxruntime venv with the backend entry's site folder and NNCF's first on PYTHONPATH (`bin/mlrun "get backend
openvino"` and `bin/mlrun "get nncf"` build or find them).

1. GEMM peak on all cores, best of the shapes of bench.machine_peak: onnxruntime MatMul (fp32), OpenVINO MatMul
   compiled for f32, int8 (NNCF's QDQ form) and bf16 (on a CPU with AMX or AVX512_BF16: what --precision=bf16
   multiplies with).
2. The same random BERT-shaped model (bench.harness's, made dynamic as the app does) over the same real SQuAD
   samples, each at its real length, shortest first, as the app's Offline layout (one instance per core:
   onnxruntime sessions pinned to their core, OpenVINO streams; each backend and precision batched as the app
   batches it with --batch_size left out (mlperf_bert.batching's rule: on AMX OpenVINO's int8, bf16 and int8-bf16
   by 8 within 16 tokens), or by --batch-size/--batch-pad as the app's --batch_size/--batch_pad do) and as one
   instance on all cores (one sample per call):
   onnxruntime fp32, onnxruntime int8 (quantised as _int8-dynamic does on this CPU), OpenVINO f32, OpenVINO int8
   (NNCF's static int8 as `_openvino --precision=int8` runs it, calibrated on 100 other features), OpenVINO bf16,
   OpenVINO int8-bf16 (the same int8 model, its other operators bf16: `--precision=int8-bf16`, against int8's peak);
   and the reference SUT design (bench.harness.reference_pass: a thread per sample, each padded to 384, the
   fixed-384 model, default threads) for the "vs ref" column. Passes alternate, --repeats rounds, best pass
   counts. Achieved GFLOP/s by bench.machine_peak.model_flops (its docstring has the formula), against the peak
   of the precision the pass multiplies in, measured with the pass's own runtime ("of peak") and with
   onnxruntime's MatMul / MatMulInteger ("of ort": issue 10's "measured GEMM peak (onnxruntime, all cores)"; on
   AMX onnxruntime's int8 kernel runs about twice OpenVINO's, so an OpenVINO int8 pass is a smaller share of it).
3. Answers: the share of samples whose argmax start and end equal onnxruntime fp32's, and the largest logit
   difference (a random model's logits are near ties: bf16 flips many; that says nothing of accuracy, which
   docs/performance.md gives for a trained model).
4. Where OpenVINO's time goes (--profile, on by default): its per-node counters (PERF_COUNT) over 16 of the
   samples, one stream on all cores, for each precision: the share of the time per node type and the kernel
   that ran it (its name ends in the precision it multiplied in), how much of the pass's wall time the counters
   cover, and the rate the weight products (FullyConnected: the model's MatMuls with weights, whose FLOPs are the
   formula's less attention's two products) reached inside their own kernels, against the GEMM peak of their
   precision measured again right after the pass: how much of the distance to the peak is the products
   themselves, how much the other nodes, and how much the time between nodes.
"""
import collections
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:
    import openvino as ov
except ImportError:   # the repo's venv: main() runs this again under the backend's interpreter
    ov = None

from bench.harness import _between, fixed_model, model_args, quietly, reference_pass, sample_features
from bench.machine_peak import PEAK_SHAPES, gemm_peak, model_flops, quantized
from mlperf_bert import batching, parallelism, seq_plan
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.sut import QaInference, run_on_instances

REPO = Path(__file__).resolve().parent.parent


def again_under_the_backend(argv, module="bench.openvino_peak"):
    """Run this script again with the OpenVINO backend's interpreter and site folder, and NNCF's (for the int8
    model), as mlrun builds them: both are layers over the same venv."""
    paths = []
    for query in ("get backend openvino", "get nncf"):
        plan = subprocess.run([str(REPO / "bin" / "mlrun"), query, "--json"], capture_output=True, text=True)
        if plan.returncode != 0:
            sys.exit(f"{module}: `bin/mlrun \"{query}\"` failed (exit {plan.returncode}):\n"
                     + plan.stderr[-2000:])
        result = json.loads(plan.stdout)
        paths.append(result["exports"]["PYTHONPATH"])
    venv = next(step["path"] for step in result["steps"] if step["recipe"] == "get-python-venv")
    python = os.path.join(venv, "bin", "python")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, str(REPO)]))
    os.execve(python, [python, "-m", module, *argv], env)


def nncf_int8(model, features, timed, cache, seed):
    """NNCF's static int8 of the model as `get ml-model bert int8-nncf` makes it, calibrated on 100 features the
    timed samples are not among (the official calibration list is not offline); its path."""
    from mlperf_bert import nncf_quantize, quantize
    # named by the timed samples too (those are left out of its calibration), and by the features drawn from; and
    # by NNCF's overflow fix, which this CPU's int8 instructions choose (a cache copied from another machine)
    fix = nncf_quantize.overflow_fix(quantize.cpu_flags())[0]
    timed_digest = hashlib.sha256(json.dumps([sorted(timed), len(features.lengths)]).encode()).hexdigest()[:8]
    out = Path(cache) / f"{Path(model).stem}.int8-nncf-seed{seed}-{timed_digest}-{fix}.onnx"
    if not out.is_file():
        others = sorted(set(range(len(features.lengths))) - set(timed))
        if others:
            rng = np.random.default_rng(seed + 1)
            calibration, rows = features, sorted(rng.choice(others, min(100, len(others)), replace=False).tolist())
        else:   # no SQuAD data: every feature is timed; 100 others of the same length distribution
            calibration, rows, _ = sample_features(100, seed + 1, cache, real=False)
        scratch = out.with_name(f".{out.name}.{os.getpid()}")   # written whole, then renamed
        with quietly(f"NNCF int8 of {Path(model).name}, calibrated on {len(rows)} features (a few minutes), once "
                     f"into {cache}"):
            nncf_quantize.quantize_model(model, str(scratch), calibration, rows, fix=fix)
        os.replace(scratch, out)
    return str(out)


def ov_gemm_peak(precision, threads, seconds_per_shape):
    """Best GFLOP/s (GOP/s for int8) of an OpenVINO MatMul over bench.machine_peak's shapes: f32 or bf16 compute,
    or int8 (the QuantizeLinear/DequantizeLinear pairs NNCF writes around a MatMul, which OpenVINO compiles into
    an int8 kernel, as in the int8 model)."""
    from mlperf_bert.ov_backend import int8_ops
    core, best = ov.Core(), 0.0
    for m, k, n in PEAK_SHAPES:
        feed = {"a": np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)}
        with tempfile.TemporaryDirectory() as scratch:   # the one-node graph onnxruntime's peak runs
            path = os.path.join(scratch, "gemm.onnx")
            onnx.save(_matmul_model(m, k, n) if precision != "int8" else _int8_matmul_model(m, k, n), path)
            compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision.replace("int8", "f32"),
                                                        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if ran != precision.replace("int8", "f32"):   # OpenVINO runs f32 where the CPU does not multiply bf16
            raise RuntimeError(f"OpenVINO compiled the GEMM for {ran}: this CPU does not multiply {precision}")
        if precision == "int8" and not int8_ops(compiled):
            raise RuntimeError("OpenVINO compiled the int8 GEMM without an int8 kernel")
        request = compiled.create_infer_request()
        request.infer(feed)
        deadline, fastest = time.perf_counter() + seconds_per_shape, float("inf")
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            request.infer(feed)
            fastest = min(fastest, time.perf_counter() - started)
        best = max(best, 2 * m * k * n / fastest / 1e9)
    return best


def _int8_matmul_model(m, k, n):
    """y = a @ b with a quantised to int8 on the way in and b stored int8, in NNCF's QDQ form."""
    weight = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 128, (k, n), dtype=np.int8), "b")
    scales = [numpy_helper.from_array(np.array(value, dtype=np.float32), name) for name, value in
              (("sa", 0.05), ("sb", 0.01))]
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "sa", "z"], ["ad"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "z"], ["bd"]),
             helper.make_node("MatMul", ["ad", "bd"], ["y"])]
    graph = helper.make_graph(nodes, "gemm_int8", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [weight, zero, *scales])
    opsets = [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def _matmul_model(m, k, n):
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n), dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    opsets = [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def contenders(model, int8_model, ov_int8_model, features, plan, cores, batch_size=None, batch_pad=None):
    """({name: (views, pins)}, {name: Batching}): each backend and precision in the Offline layout, batched as the
    app batches it (mlperf_bert.batching: the rule's, or `batch_size` samples within `batch_pad` tokens of each
    other as the app's --batch_size/--batch_pad), and on all cores (one sample per call)."""
    from mlperf_bert.ov_backend import OvModel   # here: the module imports openvino, which .venv lacks
    offline = parallelism.choose("Offline", cores)
    out, batched = {}, {}
    for layout, (instances, threads) in {"Offline": (offline.instances, offline.threads),
                                         "all cores": (1, len(cores))}.items():
        pins = list(parallelism.split_cores(cores, instances, threads)) or [()] * instances

        def base(backend, precision):   # (the samples batched as the app would, how)
            chosen = batching.choose("Offline", backend, precision, size=batch_size, pad=batch_pad) \
                if layout == "Offline" else batching.Batching(1, 0, "one sample per call")
            return QaInference(None, features, plan, chosen.size, chosen.pad if chosen.size > 1 else 0), chosen
        for precision, path in (("fp32", model), ("int8", int8_model)):
            name = f"onnxruntime {precision}, {layout}"
            view, batched[name] = base("onnxruntime", precision)
            out[name] = ([view.on(OrtBackend(path, threads, spin=False, cores=pin)) for pin in pins], pins)
        for precision, path in (("fp32", model), ("int8", ov_int8_model), ("bf16", model),
                                ("int8-bf16", ov_int8_model)):
            try:
                compiled = OvModel(path, instances, threads, precision)
            except Exception as error:   # bf16 on a CPU without it: said, and left out
                print(f"OpenVINO {precision}: {error}")
                continue
            name = f"OpenVINO {precision}, {layout}"
            view, batched[name] = base("openvino", precision)
            out[name] = ([view.on(compiled.request()) for _ in range(instances)], [()] * instances)
    return out, batched


def ov_profile(path, precision, features, plan, indices, threads):
    """({(node type, kernel): seconds}, the pass's wall seconds) of OpenVINO running `path` over `indices` on one
    stream of `threads`: its per-node counters (compiled with PERF_COUNT: a pass of its own, not a timed one)."""
    from mlperf_bert.ov_backend import OvBackend, OvModel
    spent = collections.Counter()

    class Counted(OvBackend):   # each batch's counters are read before the next infer replaces them
        def run(self, *arrays):
            out = super().run(*arrays)
            for node in self._request.profiling_info:
                if node.status == node.Status.EXECUTED:
                    spent[node.node_type, node.exec_type] += node.real_time.total_seconds()
            return out

    model = OvModel(path, 1, threads, precision, profile=True)
    inference = QaInference(Counted(model), features, plan)
    for _ in inference.responses(indices):   # warm: OpenVINO prepares each new shape on its first inference
        pass
    spent.clear()
    started = time.perf_counter()
    for _ in inference.responses(indices):
        pass
    return spent, time.perf_counter() - started


def timed(views, pins, indices):
    started = time.perf_counter()
    run_on_instances(views, pins, indices)
    return time.perf_counter() - started


def answers(view, indices):
    return {indices[p]: r for batch in view.responses(indices) for p, r in batch}


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 64, 3)
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="seconds per GEMM shape, above 0 (default 2)")
    parser.add_argument("--batch-size", type=_between(1, 64), help="the Offline layout's batch size for every "
                        "backend and precision (default: the app's rule per precision, mlperf_bert.batching: on AMX "
                        "OpenVINO's int8, bf16 and int8-bf16 by 8, the others 1; docs/performance.md)")
    parser.add_argument("--batch-pad", type=_between(0, 384), help="tokens a sample may be padded by to join a "
                        "batch (default 0 with --batch-size, else the rule's)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="leave out where OpenVINO's "
                        "time goes")
    args = parser.parse_args(argv)
    if args.batch_pad and args.batch_size == 1:   # ignored unsaid; the app refuses it too
        parser.error("--batch-pad applies only with --batch-size above 1 (a pad joins samples into a batch)")
    if not args.peak_seconds > 0:   # 0 printed a peak of 0.0 GFLOP/s and no shares
        parser.error(f"--peak-seconds must be above 0, not {args.peak_seconds}")
    if math.isinf(args.peak_seconds):   # each shape timed until a deadline of inf: a run that never ended
        parser.error(f"--peak-seconds must be finite, not {args.peak_seconds}")
    if ov is None:
        again_under_the_backend(sys.argv[1:] if argv is None else argv)
    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)
    fixed = str(fixed_model(args, cache))
    model, plan = seq_plan.prepare(fixed, "auto", cache)
    int8_model, _ = quantized(model, cache)
    features, indices, where = sample_features(args.samples, args.seed, cache)
    cores = parallelism.available_cores()
    lengths = [int(features.lengths[i]) for i in indices]
    work = sum(model_flops(length, args.layers, args.hidden, 4 * args.hidden) for length in lengths)
    print(f"OpenVINO {ov.get_version()}; {len(indices)} samples, {where}, mean real length "
          f"{np.mean(lengths):.1f}, {work / len(indices) / 1e9:.2f} GFLOP each; {len(cores)} cores")
    # onnxruntime's are the issue's "measured GEMM peak (onnxruntime, all cores)"; OpenVINO's are its own kernels'
    peaks = {"onnxruntime fp32": gemm_peak(False, len(cores), PEAK_SHAPES, args.peak_seconds)[0],
             "onnxruntime int8": gemm_peak(True, len(cores), PEAK_SHAPES, args.peak_seconds)[0],
             "OpenVINO fp32": ov_gemm_peak("f32", len(cores), args.peak_seconds)}
    for precision in ("int8", "bf16"):
        try:
            peaks[f"OpenVINO {precision}"] = ov_gemm_peak(precision, len(cores), args.peak_seconds)
        except Exception as error:
            print(f"OpenVINO {precision} GEMM: {error}")
    for name, value in peaks.items():
        print(f"GEMM peak, {name}: {value:.1f} {'GOP/s' if 'int8' in name else 'GFLOP/s'}")
    ov_int8 = nncf_int8(model, features, indices, cache, args.seed)
    runs, batched = contenders(model, int8_model, ov_int8, features, plan, cores, args.batch_size, args.batch_pad)
    for name, chosen in batched.items():   # what the app would batch (or the flags): said beside the figures
        if chosen.size > 1:
            by = "--batch-size" if chosen.rule == "given" else "the app's batch rule"
            print(f"{name}: batches of up to {chosen.size} samples within {chosen.pad} tokens of each other ({by})")
    for views, pins in runs.values():   # warm: every length once (OpenVINO prepares each new shape)
        timed(views, pins, indices)
    reference = OrtBackend(fixed)
    reference_pass(reference, features, indices[:2])
    seconds = {name: [] for name in runs}
    seconds["reference SUT design"] = []
    for _ in range(args.repeats):
        for name, (views, pins) in runs.items():
            seconds[name].append(timed(views, pins, indices))
        seconds["reference SUT design"].append(reference_pass(reference, features, indices))
    reference_rate = len(indices) / min(seconds["reference SUT design"])
    fp32 = answers(runs["onnxruntime fp32, all cores"][0][0], indices)
    print(f"{'backend, layout':32} {'samples/s':>10} {'vs ref':>7} {'GFLOP/s':>9} {'of peak':>8} {'of ort':>7} "
          f"{'same':>7} {'max diff':>9}")
    for name in seconds:
        best = min(seconds[name])
        same = diff = "-"
        if name in runs:   # the reference pads to 384: its logits are of other lengths
            got = answers(runs[name][0][0], indices)
            agree = sum(int(np.argmax(got[i][:, 0]) == np.argmax(fp32[i][:, 0])
                            and np.argmax(got[i][:, 1]) == np.argmax(fp32[i][:, 1])) for i in indices)
            same = f"{agree}/{len(indices)}"
            diff = f"{max(float(np.abs(got[i] - fp32[i]).max()) for i in indices):.2g}"
        # int8-bf16 against the int8 peak: its FLOPs counted as int8 operations, as int8's are
        runtime, precision = (name.split(",")[0].split() + ["", ""])[:2]
        precision = precision.replace("int8-bf16", "int8")
        share, of_ort = (f"{work / best / 1e9 / peak:.1%}" if peak else "-"
                         for peak in (peaks.get(f"{runtime} {precision}"), peaks.get(f"onnxruntime {precision}")))
        print(f"{name:32} {len(indices) / best:10.3f} {len(indices) / best / reference_rate:6.1f}x "
              f"{work / best / 1e9:9.1f} {share:>8} {of_ort:>7} {same:>7} {diff:>9}   passes "
              f"{[round(len(indices) / s, 2) for s in seconds[name]]}")
    if args.profile:
        report_profile(args, models={"fp32": model, "int8": ov_int8, "bf16": model, "int8-bf16": ov_int8},
                       peaks=peaks, features=features, plan=plan, sample=indices[::max(1, len(indices) // 16)][:16],
                       threads=len(cores))


def report_profile(args, models, peaks, features, plan, sample, threads):
    print(f"where OpenVINO's time goes (its per-node counters, one stream on all cores, {len(sample)} samples, a pass "
          "of its own: counting costs time, most on a small model; the GEMM peak measured again right after each "
          "pass, as this machine's speed drifts):")
    # the weight products' FLOPs: the formula's, less attention's QK^T and its product with V
    lengths = [int(features.lengths[i]) for i in sample]
    work = sum(model_flops(n, args.layers, args.hidden, 4 * args.hidden) for n in lengths)
    weights = work - sum(args.layers * 2 * 2 * n * n * args.hidden for n in lengths)
    for precision, path in models.items():
        if f"OpenVINO {precision.split('-')[-1]}" not in peaks:   # bf16 where the CPU has none: said above
            continue
        spent, wall = ov_profile(path, precision, features, plan, sample, threads)
        multiplies = precision.split("-")[0].replace("fp32", "f32")   # int8-bf16's weight products are int8
        peak = ov_gemm_peak(multiplies, threads, args.peak_seconds)
        counted = sum(spent.values()) or 1.0
        unit = "GOP/s" if multiplies == "int8" else "GFLOP/s"
        print(f"  {precision}: the pass at {work / wall / 1e9:.1f} {unit}, {work / wall / 1e9 / peak:.1%} of the peak "
              f"({peak:.1f}); by node type and kernel, share of the counted time:")
        print("    " + ", ".join(f"{op} {kind} {100 * s / counted:.1f}%"
                                 for (op, kind), s in sorted(spent.items(), key=lambda item: -item[1])
                                 if s / counted >= 0.005))
        # FullyConnected, FullyConnectedQuantizedLegacy (int8): the products with weights, QA head included
        products = sum(s for (op, _), s in spent.items() if op.startswith("FullyConnected"))
        rate = weights / products / 1e9 if products else 0.0
        at = f"(at {rate:.1f} {unit} in their kernels, {rate / peak:.1%} of the peak)"
        if counted <= wall:
            print(f"    the pass's wall time: the weight products {100 * products / wall:.1f}% {at}, the other nodes "
                  f"{100 * (counted - products) / wall:.1f}%, outside the nodes' counters "
                  f"{100 * (wall - counted) / wall:.1f}%")
        else:   # seen on a 2-layer model: the counters overlap, and "outside" came out negative
            print(f"    the nodes' counters sum to {counted / wall:.0%} of the pass's wall time (they overlap), so "
                  f"of the counted time: the weight products {100 * products / counted:.1f}% {at}, the other nodes "
                  f"{100 * (counted - products) / counted:.1f}%")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
