"""How high can a Server target go for this model on this machine, if the machine kept its speed?

    python -m bench.server_ceiling [--backend openvino|onnxruntime] [--precision fp32|int8|bf16|int8-bf16]
                                   [--samples 96] [--repeats 3] [--layers 12 --hidden 768 --heads 12]
                                   [--seconds 600] [--loads 0.5,0.6,0.7,0.8,0.9] [--speeds FILE.npz]

Server's p99 bound (130 ms) is a few times one sample's service time on a small machine, so how far a Server
target can go below Offline's rate is a matter of queueing as much as of speed. This answers it for the model:

1. Each sample's service time, measured: --samples real SQuAD dev features, spread evenly over the lengths
   (sorted by length, at even steps: the longest included), run one per call at their real lengths, as Server's
   queries run, in both Server layouts of mlperf_bert.parallelism: one instance per core with every instance busy
   at once (their calls share the memory and caches, as under load), and one instance on all cores. Each
   sample's median over --repeats passes, after a pass that runs every length once (OpenVINO prepares each new
   shape). A least-squares fit t(L) = a + b L + c L^2 (the weight products grow with the length L, attention with
   its square) gives each of the dev set's 10,833 features its time.
2. Offline per layout, one sample per call: cores / mean t (one per core) or 1 / mean t (all cores).
3. Server on a steady machine: Poisson queries over --seconds, each a feature drawn at random, served first come,
   first served from one queue by one worker per instance (as mlperf_bert.sut serves them; mlperf_bert.queueing,
   which a Server run also uses to say its own), the same queries (seeded) at every load: the p99 at --loads x the
   layout's Offline, and the highest target whose p99 holds the bound (bisection to 0.1% of the layout's Offline),
   as a share of the faster layout's Offline. The p99 only grows with the load for the same queries, so the
   bisection is well defined.
   With --speeds FILE.npz (written by `python -m bench.steadiness --save`), the same queries again at the speeds
   that machine's cores ran at (bench.steadiness.MeasuredCore; all cores' runs together for the one instance on
   all cores): what its slow spells cost.

A steady machine is the best case: a real one dips (docs/performance.md, bench.steadiness), and a full-length
Server run meets its dips, so a VALID target is at most the steady ceiling. From an interpreter without openvino
(the repo's .venv), --backend openvino runs itself again under the backend's interpreter, as bench.openvino_peak.
"""
import sys
import time

import numpy as np

from bench.harness import _between, fixed_model, model_args, quietly, sample_features
from bench.machine_peak import quantized
from bench.steadiness import BOUND_S, MeasuredCore
from mlperf_bert import parallelism, seq_plan
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.queueing import Queries, fit, highest_qps
from mlperf_bert.sut import QaInference, on_each, on_each_item

PRECISIONS = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "int8", "bf16", "int8-bf16")}


def layouts(backend, precision, path, features, plan, cores):
    """{name: (views, pins)}: the model in Server's two layouts (one instance per core, one on all cores), one
    sample per call."""
    n = len(cores)
    out = {}
    for name, (instances, threads) in (("one instance per core", (n, 1)), ("one instance on all cores", (1, n))):
        if name == "one instance per core" and n == 1:
            continue   # the same layout twice
        view = QaInference(None, features, plan)
        if backend == "openvino":
            from mlperf_bert.ov_backend import OvModel   # here: it imports openvino, which .venv lacks
            compiled = OvModel(path, instances, threads, precision)
            out[name] = ([view.on(compiled.request()) for _ in range(instances)], [()] * instances)
        else:
            pins = list(parallelism.split_cores(cores, instances, threads)) or [()] * instances
            out[name] = ([view.on(OrtBackend(path, threads, spin=False, cores=pin)) for pin in pins], pins)
    return out


def service_times(views, pins, indices, repeats):
    """{index: median seconds of one call} with every instance busy at once, pulling samples from one queue."""
    seconds = {index: [] for index in indices}

    def timed(view, index):
        started = time.perf_counter()
        for _ in view.responses([index]):
            pass
        seconds[index].append(time.perf_counter() - started)

    def warm(view):   # every length once on every instance, untimed
        for _ in view.responses(list(indices)):
            pass
    for view, pin in zip(views, pins):
        on_each([view], [pin], warm)
    for _ in range(repeats):
        on_each_item(views, pins, indices, timed)
    return {index: float(np.median(took)) for index, took in seconds.items()}


def speeds(saved, workers):
    """MeasuredCores from a bench.steadiness --save file (its load_saved tuple): one per core, or all cores' runs
    as one; None where it has fewer cores than workers."""
    cores, _, _, ends_per_core, _ = saved
    if workers == 1:
        return [MeasuredCore(np.sort(np.concatenate([ends[1:] for ends in ends_per_core])))]
    if len(cores) < workers:
        return None
    return [MeasuredCore(ends) for ends in ends_per_core[:workers]]


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 96, 3)
    parser.add_argument("--backend", choices=sorted(PRECISIONS), default="onnxruntime",
                        help="the app's backend (default onnxruntime)")
    parser.add_argument("--precision", default="fp32", help="fp32 or int8 (onnxruntime's _int8-dynamic, OpenVINO's "
                        "NNCF int8), or on OpenVINO bf16 or int8-bf16 (default fp32)")
    # 10^8 asked numpy for 3 TiB of queries, after the whole measurement (a traceback)
    parser.add_argument("--seconds", type=_between(1, 3600), default=600, help="simulated Server run, 1 to 3600 "
                        "(default 600 s)")
    parser.add_argument("--loads", default="0.5,0.6,0.7,0.8,0.9",
                        help="loads to print, fractions of each layout's Offline rate")
    parser.add_argument("--speeds", metavar="FILE.npz", help="also replay at the speeds of a `bench.steadiness "
                        "--save FILE.npz` run")
    args = parser.parse_args(argv)
    if args.precision not in PRECISIONS[args.backend]:
        parser.error(f"--precision {args.precision}: {args.backend} runs {', '.join(PRECISIONS[args.backend])}")
    try:
        loads = [float(value) for value in args.loads.split(",")]
    except ValueError:
        parser.error(f"--loads: fractions such as 0.6,0.7, not {args.loads!r}")
    if not all(0 < load < 1 for load in loads):   # 0 printed p99 nan, -1 a QPS of -2625
        parser.error(f"--loads: fractions above 0 and below 1, not {args.loads!r}")
    if args.samples < 4:   # one sample: a line fitted through one point, "residual 0.0%", 5x off
        parser.error(f"--samples {args.samples}: the service time's fit against length needs 4 samples at least")
    saved = None
    if args.speeds:
        from bench.steadiness import load_saved
        try:
            saved = load_saved(args.speeds)
        except ValueError as error:
            parser.error(f"--speeds {args.speeds}: {error}")
    if args.backend == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            from bench.openvino_peak import again_under_the_backend
            again_under_the_backend(sys.argv[1:] if argv is None else argv, "bench.server_ceiling")

    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)
    model, plan = seq_plan.prepare(str(fixed_model(args, cache)), "auto", cache)
    features, _, where = sample_features(args.samples, args.seed, cache)
    lengths = np.asarray(features.lengths, dtype=int)
    by_length = np.argsort(lengths, kind="stable")
    timed = sorted({int(by_length[p]) for p in np.linspace(0, len(lengths) - 1, args.samples).round().astype(int)})
    path = model
    if args.precision == "int8":
        if args.backend == "openvino":
            from bench.openvino_peak import nncf_int8
            path = nncf_int8(model, features, timed, cache, args.seed)
        else:
            path, _ = quantized(model, cache)
    elif args.precision == "int8-bf16":
        from bench.openvino_peak import nncf_int8
        path = nncf_int8(model, features, timed, cache, args.seed)
    cores = parallelism.available_cores()
    print(f"{args.backend} {args.precision}, BERT {args.layers} layers x {args.hidden} x {args.heads} heads (random "
          f"weights); {len(timed)} samples timed, lengths {lengths[timed].min()}-{lengths[timed].max()}, from "
          f"{where}; the simulated queries draw from all {len(lengths)} (mean length {lengths.mean():.1f}); "
          f"{len(cores)} cores")

    found = {}
    with quietly("compiling the model in both layouts"):
        contenders = layouts(args.backend, args.precision, path, features, plan, cores)
    for name, (views, pins) in contenders.items():
        seconds = service_times(views, pins, timed, args.repeats)
        t, residual = fit(lengths[timed], np.array([seconds[i] for i in timed]))
        times = t(lengths)
        offline = len(views) / times.mean()
        found[name] = (times, offline, len(views))
        print(f"{name} ({len(views)} x {len(cores) // len(views)} thread(s)): a sample of 384 tokens "
              f"{t(384) * 1e3:.1f} ms, of {int(np.median(lengths))} {t(np.median(lengths)) * 1e3:.1f} ms, mean over "
              f"the dev set {times.mean() * 1e3:.1f} ms (fit residual {residual:.1%}): Offline {offline:.2f} "
              f"samples/s one sample per call")
    best_offline = max(offline for _, offline, _ in found.values())
    print(f"Server on a steady machine: Poisson queries over {args.seconds} s, first come first served, "
          f"p99 against the {BOUND_S * 1e3:.0f} ms bound" + (f"; and at the speeds of {args.speeds}" if args.speeds
                                                               else ""))
    for name, (times, offline, workers) in found.items():
        queries = Queries(times, best_offline, args.seconds, args.seed)
        measured = speeds(saved, workers) if saved else None
        if args.speeds and measured is None:
            print(f"  {name}: {args.speeds} has fewer cores than its {workers} instances; steady machine only")
        for load in loads:
            line = f"  {name}, {load:.0%} of its Offline ({load * offline:.1f} QPS): p99 " \
                   f"{queries.p99(load * offline, workers) * 1e3:.0f} ms"
            if measured:
                line += f", {queries.p99(load * offline, workers, measured) * 1e3:.0f} ms at the measured speeds"
            print(line)
        ceiling = highest_qps(queries, offline, workers, BOUND_S)
        line = f"  {name}: highest target holding the bound {ceiling:.1f} QPS, {ceiling / offline:.1%} of its " \
               f"Offline, {ceiling / best_offline:.1%} of the faster layout's ({best_offline:.2f} samples/s)"
        if measured:
            at_speeds = highest_qps(queries, offline, workers, BOUND_S, measured)
            line += f"; at the measured speeds {at_speeds:.1f} QPS ({at_speeds / best_offline:.1%})"
        print(line)


if __name__ == "__main__":
    from bench.entry import run
    run(main)
