"""python -m mlperf_bert.harness: run a BERT QA ONNX model under MLPerf LoadGen and report.

Backends: onnxruntime (one session, any length the model allows), openvino (on the CPU, fp32, int8 or bf16, one
stream per instance, any length) or deepsparse (an engine per sequence-length bucket, compiled before LoadGen
starts; Server runs DeepSparse's multi-stream scheduler with a worker per stream); tensorrt on a GPU. All give
the same responses: float32 (L, 2) per sample.
Writes into RUN_DIR: user.conf (the settings chosen here, then the user's own lines),
LoadGen's mlperf_log_* files, accuracy.txt (accuracy mode) and summary.json.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import mlperf_loadgen as lg

from engine.errors import MlrunError, StepError, UsageError
from engine.oserrors import explain
from mlperf_bert import (accuracy, batching, gpu, heldout, loadgen_summary, machine_load, model_adapter, parallelism,
                         queueing, seq_plan, shared_cores, squad_features, warmup)
from mlperf_bert.sut import LoadGenSut, QaInference, on_each, run_on_instances
from mlperf_bert.user_conf import check as check_user_conf, conflicts as conf_conflicts, values_set as conf_values_set

MODEL_KEY = "bert"  # LoadGen's mlperf.conf key for bert-99 and bert-99.9
SCENARIOS = {name: getattr(lg.TestScenario, name) for name in ("Offline", "SingleStream", "MultiStream", "Server")}
MODES = {"accuracy": lg.TestMode.AccuracyOnly, "performance": lg.TestMode.PerformanceOnly}
BACKENDS = ("onnxruntime", "deepsparse", "tensorrt", "openvino")
INSTANCE_BACKENDS = ("onnxruntime", "openvino")   # instances and threads by mlperf_bert.parallelism's rule
# What each device (or CPU backend) runs: the GPU's from mlperf_bert.gpu; OpenVINO on the CPU fp32, int8 or bf16.
DEVICE_PRECISIONS = {**gpu.DEVICE_PRECISIONS, "openvino": ("fp32", "int8", "bf16", "int8-bf16")}
OFFICIAL_SAMPLE_COUNT = 10833  # mlperf.conf's performance_sample_count for bert
MULTISTREAM_SAMPLES_PER_QUERY = 8
ONE_SAMPLE_SCENARIOS = ("SingleStream", "Server")   # LoadGen's queries carry one sample: nothing to batch
# --count N runs exactly N samples: no minimum duration, so the query count alone ends the test (a
# duration would make LoadGen issue target_qps x duration samples in Offline, not N).
SHORT_RUN_MIN_DURATION_MS = 0
SERVER_LATENCY_BOUND_MS = 130  # mlperf.conf's bert Server p99 bound
# --find-peak's search runs last 20 s (2 s for a --count run, whose own length is short): a target above
# what the machine sustains builds its backlog slowly. Measured (2 cores, 2-layer model): 2-s runs at 433 QPS
# were VALID (p99 84 ms); the full-length run at that target had p99 23.7 s, the machine completing 379/s.
PEAK_TRIAL_MS, PEAK_TRIAL_MS_SHORT, PEAK_MIN_QUERIES = 20000, 2000, 256
PEAK_MOST = 2   # the highest target find-peak searches, times Offline's rate at one sample per call
RATE_PASS_S = 0.5   # Offline's rate pass (_offline_rate), twice
# Offline's target over the rate pass: OpenVINO's pass reads lower than what LoadGen then measures (0.85-0.95x,
# onnxruntime's 0.96-1.03x, six and five --count=100 runs of the tiny model; 0.61-0.93x before a pass of few samples
# was repeated), and a target read low ends the run before its minimum duration: INVALID. A target read high only
# lengthens the run by as much.
RATE_MARGIN = {"openvino": 1.1}
# LoadGen's memory per query it generates (Offline: per sample of its one query): 330-650 bytes measured
# with LoadGen 6.0.17 (SingleStream 340, Offline 480, Server 610, MultiStream 660); the largest, rounded up.
SCHEDULE_BYTES_PER_QUERY = 700
NOTHING_TO_SEARCH = {   # why --find-peak is for Server only (LoadGen 6.0: loadgen.cc GenerateQueries)
    "Offline": "its result is the rate it measures, and the expected rate that sizes its query is measured "
               "before LoadGen starts (1.1 x a rate pass)",
    "SingleStream": "its result is the latency it measures; the expected latency only sizes the queries "
                    "LoadGen generates (for twice min_duration), so half the warm-up's estimate is VALID up to 4x "
                    "the real latency",
}
# SingleStream's and MultiStream's expected latency over the warm-up's: LoadGen generates queries for twice
# min_duration at it and stops at min_duration, so an underestimate costs only the schedule's memory, while an
# estimate over twice the real latency ends the run early (INVALID: "Decrease the expected latency"). A warm-up on
# a busy machine read it over 2x slow, and short runs were INVALID; halved, it may be 4x off.
LATENCY_MARGIN = 2
NOTHING_TO_SEARCH["MultiStream"] = NOTHING_TO_SEARCH["SingleStream"]
SERVER_LOAD_FRACTION = 0.5  # default Server target: half the measured throughput, to meet the latency bound
WARMUP_SAMPLES = 4
SHAPE_WARM_MAX_S = 30   # _warm_shapes: at most this long (BERT-Base int8-bf16, 173 lengths: 4.5-7 s)
WARMUP_PASSES, WARMUP_MAX_PASSES = 3, 12   # timed passes over them: settled ones, and at most
RUN_OUTPUTS = ("user.conf", "mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
               "mlperf_log_trace.json", "accuracy.txt", "summary.json")
TARGET_F1 = 0.99 * 90.874  # bert-99: 99% of the fp32 reference model's F1


def _count(minimum):
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


def _positive(text):
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="features folder (mlperf_bert.squad_features)")
    parser.add_argument("--model", required=True, help="BERT QA ONNX model")
    parser.add_argument("--out", required=True, help="run folder for user.conf, LoadGen logs and summary")
    parser.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    parser.add_argument("--mode", required=True, choices=list(MODES))
    parser.add_argument("--count", type=_count(1), help="short run: the first N samples are loaded and exactly "
                        "N are issued (MultiStream: whole queries of 8, so N rounded up to a multiple of 8; with "
                        "--min-duration, at least N: LoadGen adds queries to fill the duration); never valid "
                        "for a submission")
    parser.add_argument("--batch-size", type=_count(1), help="samples per session run, of one run length or within "
                        "--batch-pad tokens (default: by the scenario's rule, mlperf_bert.batching)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="inference runtime "
                        "(default: onnxruntime)")
    parser.add_argument("--device", default="cpu", choices=list(gpu.DEVICE_PROVIDERS), help="onnxruntime: "
                        "the CPU, or the GPU through the CUDA or the TensorRT provider (default: cpu)")
    parser.add_argument("--precision", default="fp32", choices=tuple(dict.fromkeys(p for ps in DEVICE_PRECISIONS.values() for p in ps)),
                        help="fp32 (strict: no TF32 on a GPU), tf32 (onnxruntime's CUDA provider, TensorRT), fp16 "
                        "(TensorRT), int8 (native TensorRT; OpenVINO on a model quantised by NNCF), bf16 (OpenVINO on a "
                        "CPU with AMX or AVX512_BF16), int8-bf16 (OpenVINO: NNCF's int8, the rest bf16); onnxruntime on "
                        "the CPU runs the model's own (default: fp32)")
    parser.add_argument("--engine", help="native TensorRT: the engine file (get-tensorrt-engine-bert)")
    parser.add_argument("--trt-cache", help="TensorRT provider: its engine cache folder "
                        "(get-onnxruntime-trt-cache-bert), built for --buckets and --batch-size")
    parser.add_argument("--threads", type=_count(1), help="onnxruntime intra-op threads per instance, "
                        "deepsparse cores (default: by the scenario's rule, mlperf_bert.parallelism)")
    parser.add_argument("--instances", type=_count(1), help="onnxruntime sessions run at once, each pinned to "
                        "its own cores; openvino streams (default: by the scenario's rule)")
    parser.add_argument("--spin", action=argparse.BooleanOptionalAction, help="onnxruntime intra-op threads "
                        "spin between operators (default: off; measured in mlperf_bert.parallelism)")
    parser.add_argument("--batch-pad", type=_count(0), metavar="TOKENS", help="with --batch-size: "
                        "pad a sample by up to TOKENS masked tokens to join a batch of nearby lengths (default 0: "
                        "only equal run lengths batch; without --batch-size, the rule's)")
    parser.add_argument("--streams", type=_count(1), help="deepsparse Server: requests run at once by the "
                        "multi-stream scheduler, one worker each (default: 2, or one per 4 cores)")
    parser.add_argument("--target-qps", type=_positive, help="Offline expected / Server target QPS "
                        "(default: Offline 1.1 x a rate pass over a spread of the samples; Server half the "
                        "warm-up's rate)")
    parser.add_argument("--target-latency", type=_positive, metavar="MS", help="SingleStream/MultiStream "
                        "expected latency, Server latency bound (default: warm-up estimate; Server mlperf.conf)")
    parser.add_argument("--min-duration", type=_count(0), metavar="MS", help=f"minimum test duration "
                        f"(default: mlperf.conf; {SHORT_RUN_MIN_DURATION_MS} with --count)")
    parser.add_argument("--random-weights", action=argparse.BooleanOptionalAction, default=False,
                        help="the model's weights are random (or quantised from random ones): its score means nothing")
    parser.add_argument("--questions", help="run and score only these questions' features: a model's heldout.json "
                        "(mlperf_bert.heldout) or a JSON list of question ids")
    parser.add_argument("--model-heldout", help="the questions the model was not trained on (its heldout.json): "
                        "--questions in accuracy mode must be among them")
    parser.add_argument("--user-conf", help="LoadGen user.conf lines to append (they win over this harness's)")
    # find-peak's full-length check of a --count run: the queries its search learned early stopping asks for (it
    # was a user.conf of its own, recorded as the user's settings and blamed for the count)
    parser.add_argument("--min-queries", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--audit-config", help="a compliance audit.config (e.g. TEST01) to run with; "
                        "none is used otherwise")
    parser.add_argument("--squad", help="dev-v1.1.json, to score accuracy mode")
    parser.add_argument("--buckets", default="auto", help="sequence lengths to run at: exact (each sample at "
                        "its real length), lengths such as 384 or 128,256,384 (each at the smallest that holds "
                        "it), or auto (default: exact when the model allows it, else 384; deepsparse: "
                        "128,192,256,384, an engine each)")
    parser.add_argument("--find-peak", action="store_true", help="Server: search for the highest target QPS that "
                        "is VALID over short runs (mlperf_bert.tuning), then run this run's length at it")
    # --find-peak's own runs of each layout it tries (INSTANCESxTHREADS): not the person's --instances/--threads
    parser.add_argument("--searched-layout", help=argparse.SUPPRESS)
    parser.add_argument("--peak-tolerance", type=float, default=0.05, help="--find-peak: stop when the highest "
                        "valid and lowest invalid targets are this close (default 0.05: 5%%)")
    parser.add_argument("--peak-trial-ms", type=_count(0), metavar="MS", help=f"--find-peak: minimum duration "
                        f"of each search run (default {PEAK_TRIAL_MS}; {PEAK_TRIAL_MS_SHORT} with --count)")
    parser.add_argument("--peak-min-queries", type=_count(1), default=PEAK_MIN_QUERIES, help="--find-peak: "
                        f"queries of a search run, more when early stopping asks (default {PEAK_MIN_QUERIES})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the performance result is not VALID "
                        "or the accuracy misses its target (the run folder and summary are still written)")
    parser.add_argument("--dynamic-model-cache", help="folder that keeps the dynamic-axis copy of a fixed-384 "
                        "model between runs (default: the run folder)")
    args = parser.parse_args(argv)
    if args.target_qps is not None and args.scenario not in ("Offline", "Server"):
        parser.error("--target-qps applies to Offline and Server")
    if args.target_latency is not None and args.scenario == "Offline":
        parser.error("--target-latency applies to SingleStream, MultiStream and Server")
    if args.streams is not None and (args.backend, args.scenario) != ("deepsparse", "Server"):
        parser.error("--streams applies to --backend deepsparse in the Server scenario")
    if args.find_peak and args.mode != "performance":
        parser.error("--find-peak applies to performance mode")
    if args.find_peak and args.scenario != "Server":
        parser.error(f"--find-peak searches the Server target QPS; {args.scenario} has none to search: "
                     + NOTHING_TO_SEARCH[args.scenario])
    if not 0 < args.peak_tolerance < 1:
        parser.error(f"--peak-tolerance must be between 0 and 1, not {args.peak_tolerance}")
    if args.find_peak and args.target_qps is not None:
        parser.error("--find-peak finds the target QPS: leave out --target-qps")
    if args.backend not in INSTANCE_BACKENDS and args.instances is not None:
        parser.error("--instances applies to --backend onnxruntime or openvino")
    if args.backend != "onnxruntime" and args.spin is not None:
        parser.error("--spin applies to --backend onnxruntime")
    if args.backend != "onnxruntime" and args.device != "cpu" and args.backend != "tensorrt":
        parser.error(f"--device {args.device} applies to --backend onnxruntime")
    if args.backend == "tensorrt" and not args.engine:
        parser.error("--backend tensorrt needs --engine FILE")
    if args.device == "tensorrt-ep" and not args.trt_cache:
        parser.error("--device tensorrt-ep needs --trt-cache DIR")
    device = args.backend if args.backend in ("tensorrt", "openvino") else args.device
    if args.precision not in DEVICE_PRECISIONS[device]:
        where = [f"--device {d}" if d not in ("tensorrt", "openvino") else f"--backend {d}"
                 for d, runs in DEVICE_PRECISIONS.items() if args.precision in runs]
        parser.error(f"--precision {args.precision} applies to {' or '.join(where)}; {device} runs "
                     f"{' or '.join(DEVICE_PRECISIONS[device])}")
    for option in ("user_conf", "audit_config", "squad", "questions"):
        path = getattr(args, option)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{option.replace('_', '-')} {path}: no such file")
    return args


def _dtype_name(dtype):
    """'int64' of np.int64 or np.dtype('int64')."""
    return getattr(dtype, "name", None) if not isinstance(dtype, type) else dtype.__name__


def _write_text(path, text):
    """Path.write_text, whose OSError names the file even when write() fails (a full disk names none)."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        e.filename = e.filename or str(path)
        raise


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.scenario == "Server" and args.target_latency is not None and args.target_latency != int(
                args.target_latency):   # LoadGen reads it in whole ms: 100.7 ran at 101, the rule judged by 100.7
            raise UsageError(f"--target_latency {args.target_latency:g}: LoadGen reads Server's target_latency in "
                             "whole milliseconds", hint=f"give {math.ceil(args.target_latency)}" if args.target_latency < 1
                             else f"give {math.floor(args.target_latency)} or {math.ceil(args.target_latency)}")
        if args.user_conf:   # before the model loads: LoadGen drops a misspelt key or `key=value` unsaid
            check_user_conf(args.user_conf)
            both = conf_conflicts(_user_lines(args), args.scenario, args)
            if both:
                raise UsageError(f"{'; '.join(both)}: give each setting one way",
                                 hint="the user.conf's line would win unsaid" + (
                                     " (find-peak's every trial ran at its rate, and never ended)"
                                     if args.find_peak else ""))
        with _inspected_once():
            summary = find_peak(args) if args.find_peak else run(args)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        # the person's request refused (a schedule LoadGen cannot hold, a bad user.conf): mlrun's exit 2, through
        # the runner's EX_CONFIG (a step's own exit 2 reads as a failed step, exit 1)
        return 78 if isinstance(error, UsageError) and error.exit_code == UsageError.exit_code else error.exit_code
    except OSError as error:   # a full disk writing summary.json was a traceback and "exited with code 1"
        print(f"error: {explain(error, 'cannot use')}", file=sys.stderr)
        return 78   # sysexits EX_CONFIG: this machine's trouble, mlrun's exit 2 (engine.runner.EX_CONFIG)
    except (MemoryError, RuntimeError) as error:
        # ulimit -v or a container's limit: a traceback, twice, said nothing of memory; LoadGen's threads that
        # cannot start raise RuntimeError "Resource temporarily unavailable"
        if isinstance(error, RuntimeError) and "Resource temporarily unavailable" not in str(error):
            raise
        print("error: out of memory (or of threads) while it ran\nhint: fewer --instances, a smaller --batch_size, "
              "or more memory for the run (ulimit -v, the container's or the job's limit)", file=sys.stderr)
        return 78
    print(format_summary(summary))
    if summary.get("error"):
        print(f"error: {summary['error']}", file=sys.stderr)
        return StepError.exit_code
    if args.strict and (failed := strict_failure(summary)):
        print(f"error: --strict: {failed}", file=sys.stderr)
        return StepError.exit_code
    return 0


@contextlib.contextmanager
def _inspected_once():
    """model_adapter.inspect once per model file in this run: seq_plan, the harness and each onnxruntime session
    asked for it, each parsing the whole file again (0.5 s of a 13 s BERT-Base run, 4 of them; BERT-Large's 1.3 GB
    is 3x that). Keyed by the file's identity and state, so a file changed meanwhile is read again."""
    plain, seen = model_adapter.inspect, {}

    def inspect(path):
        try:
            state = os.stat(path)
        except OSError:   # no such file: inspect's own error says so
            return plain(path)
        key = (os.path.realpath(path), state.st_ino, state.st_size, state.st_mtime_ns)
        if key not in seen:
            seen[key] = plain(path)   # a frozen ModelIO: a few names, not the model
        return seen[key]
    model_adapter.inspect = inspect
    try:
        yield
    finally:
        model_adapter.inspect = plain


def strict_failure(summary):
    """Why --strict fails this run (an INVALID performance result, an accuracy below target), or None."""
    if summary["mode"] == "performance" and summary["loadgen"]["result"] != "VALID":
        why = "; ".join(f"{item['why']} ({item['fix']})" for item in summary["loadgen"]["explanation"])
        return f"the performance result is {summary['loadgen']['result'] or 'missing'}" + (f": {why}" if why else "")
    accuracy = summary.get("accuracy")
    if summary["mode"] == "accuracy" and accuracy and not accuracy["met"]:
        return f"F1 {accuracy['f1']:.3f} is below the target {accuracy['target_f1']}"
    return None


def run(args):
    # read before any session is made: its whole model in memory beside the sessions raised the run's peak by the
    # model's size (a 1.6 GB limit killed a run of one 415 MB model's two sessions)
    int8_operators, dynamic = _int8_operators(args.model)
    if dynamic and args.backend in ("openvino", "deepsparse"):   # as the recipe refuses _int8-dynamic there: a
        # --model file of the same graph ran in OpenVINO at a fifth of its speed, recorded int8; DeepSparse crashed
        why = "OpenVINO runs it at a fifth of its onnxruntime speed" if args.backend == "openvino" else \
            "DeepSparse cannot run it (its engine crashes)"
        raise UsageError(f"{args.model} is onnxruntime's dynamic int8 graph ({dynamic} DynamicQuantizeLinear/"
                         f"MatMulInteger nodes): {why}",
                         hint="run it with _onnxruntime, or give this backend the fp32 model" + (
                             " (--precision=int8 quantises it for OpenVINO)" if args.backend == "openvino" else ""))
    # find-peak's short runs choose their own (each its scenario's): the flags stay as the person gave them
    args.batching = batching.choose(args.scenario, args.backend, args.precision, size=args.batch_size,
                                    pad=args.batch_pad, quantised=bool(int8_operators))
    if args.model_heldout and args.questions and args.mode == "accuracy":
        _refuse_learned_questions(args.questions, args.model_heldout)
    features = heldout.restrict(_load_features(args.features), args.questions)
    available = len(features.lengths)
    if args.count and args.count > available:
        raise UsageError(f"--count {args.count} is more than the {available} features in {args.features}")
    total = args.count or available
    run_dir = Path(args.out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "audit.config").exists():
        raise UsageError(f"{run_dir} holds an audit.config, which would silently turn this run into a "
                         "compliance test", hint="remove it, or pass it with --audit-config")
    # A run folder describes one run: no accuracy.txt of an earlier run beside this one's logs.
    for stale in RUN_OUTPUTS:
        (run_dir / stale).unlink(missing_ok=True)
    gpu_used = args.backend == "tensorrt" or args.device != "cpu"
    gpu_facts = gpu.facts() if gpu_used else None  # before the model loads: a missing GPU stops the run here
    if gpu_used and args.buckets == "auto":
        args.buckets = gpu.TRT_DEFAULT_BUCKETS if (args.backend == "tensorrt" or args.device == "tensorrt-ep") \
            else args.buckets
    buckets = seq_plan.parse_buckets(args.buckets)
    work_dir = args.dynamic_model_cache or run_dir
    if args.backend in INSTANCE_BACKENDS:
        inference, views, pins, chosen_parallelism, measured_qps = _instances(args, features, buckets,
                                                                              work_dir, total)
        workers = len(views)
    else:
        backend, plan, workers = _backend(args, buckets, work_dir)
        inference = QaInference(backend, features, plan, *_per_call(args))
        views, pins, chosen_parallelism = [inference] * workers, [()] * workers, None
        measured_qps = _warm_up(inference, total, views, pins)
    plan = inference.plan
    shapes = _warm_shapes(args, views, pins, total, measured_qps)
    rate_pass, warmup_qps = None, measured_qps   # the warm-up's own: the rate pass below replaces the target's base
    sized_by_target = args.min_duration != 0 and (args.min_duration is not None or not args.count)
    if args.scenario == "Offline" and args.mode == "performance" and args.target_qps is None and sized_by_target:
        measured_qps, samples = _offline_rate(views, pins, total, measured_qps)
        rate_pass = {"samples": samples, "samples_per_second": round(measured_qps, 3)}
        if args.backend in RATE_MARGIN:
            rate_pass["margin"] = RATE_MARGIN[args.backend]
    inference.stats.reset()
    conf_lines, chosen = settings_lines(args, total, measured_qps * ((rate_pass or {}).get("margin") or 1))
    user_conf = run_dir / "user.conf"
    _write_text(user_conf, "\n".join(conf_lines) + "\n")

    # Server's latency tail: where each sample's time in the SUT went (queue or run), said beside LoadGen's
    sut = LoadGenSut(inference, total, total, workers, views, pins,
                     timed=args.scenario == "Server" and args.mode == "performance")
    # another measurement on the same cores (a second user's run) halves both: announced and looked for while LoadGen
    # measures (not in accuracy mode, whose figures no other run slows)
    sharing = shared_cores.Announce(run_dir, args.scenario) if args.mode == "performance" else contextlib.nullcontext()
    try:
        with machine_load.OtherLoad() as other_load, sharing:   # how quiet the machine was while LoadGen measured
            _start_test(sut, args, user_conf, run_dir, total)
    finally:
        sut.close()
    loadgen = loadgen_summary.parse(run_dir / "mlperf_log_summary.txt", features=available,
                                    user_settings=conf_values_set(_user_lines(args), args.scenario))
    summary = {
        "scenario": args.scenario, "mode": args.mode, "model": os.path.abspath(args.model),
        "features": os.path.abspath(args.features), "run_dir": str(run_dir), "samples_completed": sut.completed,
        "sequence_handling": plan.description + _added_width(args.buckets, plan),
        # what ran (SingleStream and Server one sample per call whatever --batch_size said; `batching` holds what was
        # asked or chosen): a sweep's table and `runs --where` read the rule's choice here
        "batch_size": inference.batch_size, "batch_pad": inference.batch_pad if inference.batch_size > 1 else 0,
        "threads": inference.backend.threads,
        "backend": args.backend, "workers": workers, "device": args.device if args.backend != "tensorrt" else "cuda",
        "precision": batching.ran_precision(args.backend, args.precision, bool(int8_operators)), "gpu": gpu_facts,
        # a model fed int32 says so (measurements.json); int64, the official model's, is left unsaid: a diff with a
        # run recorded before showed no "absent -> int64"
        **({"input_dtype": dtype} if (dtype := _dtype_name(inference.backend.io.input_dtype)) != "int64" else {}),
        "parallelism": chosen_parallelism.record() if chosen_parallelism else None,
        # what ran, beside threads: a sweep's table and `runs --where` read an input left to the rule from here
        "instances": chosen_parallelism.instances if chosen_parallelism else None,
        "batching": {**args.batching.record(), **inference.stats.record()},
        "warmup_qps": round(warmup_qps, 3), "shape_warm_up": shapes, "rate_pass": rate_pass, "settings": chosen,
        # what the user.conf set, apart: diff compares these whatever their type (a chosen target is a measurement)
        **({"user_settings": conf_values_set(_user_lines(args), args.scenario)} if args.user_conf else {}),
        "loadgen": loadgen, "other_load": other_load.record(),
        **({"shared_cores": sharing.record()} if args.mode == "performance" else {}),
        "sut_times": _sut_times(sut, args, total, workers, loadgen),
    }
    summary["random_weights"] = args.random_weights
    summary[args.backend] = inference.backend.describe()
    summary["model_int8_operators"] = int8_operators
    summary["model_source"] = model_source(args.model)
    summary["model_fusion"] = model_fusion(args.model)
    if sut.error is not None:
        summary["error"] = f"inference failed: {sut.error}"
    elif args.mode == "accuracy":
        try:
            summary["accuracy"] = _score(args, run_dir)
        except MlrunError as error:
            summary["error"] = f"accuracy scoring failed: {error}"
    # Short: below what a submission needs (a --count run always is); the reasons are in loadgen.short_because.
    summary["count"] = args.count
    summary["short"] = bool(summary["loadgen"]["short_because"]) if args.mode == "performance" else \
        total < available
    _write_summary(run_dir / "summary.json", summary)
    return summary


def _write_summary(path, summary):
    """summary.json, with the summary's lines of how the run ran (`mlrun runs show` prints them)."""
    summary["how_it_ran"] = how_lines(summary)
    _write_text(path, json.dumps(summary, indent=1) + "\n")


def find_peak(args):
    """--find-peak: the search (mlperf_bert.tuning) over short runs in RUN_DIR/find-peak/, from the rate of
    a short Offline run, then this run (its own length) at the target found, stepping down if that is not
    VALID; the search and its runs are recorded in summary.json under "find_peak".

    A short SingleStream run first tells whether any load can be VALID: its p99 is the latency of the
    slowest 1% of samples run one at a time, which no Server load can beat. Over the bound, the search
    would only halve the target, each run longer than the last (early stopping's queries at a lower
    rate), so it stops there and says why."""
    from mlperf_bert import tuning
    run_dir = Path(args.out).resolve()
    folder = run_dir / "find-peak"
    bound_ms = server_bound_ms(args)
    if args.peak_trial_ms is None:
        args.peak_trial_ms = PEAK_TRIAL_MS_SHORT if args.count else PEAK_TRIAL_MS
    alone = tuning.short_run(args, folder / "singlestream", "SingleStream", args.peak_min_queries,
                             args.peak_trial_ms, target_latency=None, target_qps=None)["loadgen"]
    alone_p99 = alone["latency_ms"].get("p99")
    if alone_p99 is None or alone_p99 > bound_ms:
        took = "an unknown number of" if alone_p99 is None else f"{alone_p99:.1f}"
        raise StepError(f"--find-peak: no Server target can be VALID: the slowest 1% of samples take {took} ms "
                        f"each even one at a time (SingleStream p99, {folder / 'singlestream'}), over the "
                        f"{bound_ms:g} ms bound",
                        hint=(f"--target_latency={args.target_latency:g} is the bound you set: raise it, or " if
                              args.target_latency else "")
                        + f"run {_faster_model(args)}on more cores")
    # at one sample per call, as Server's queries run: Offline batched by the rule (OpenVINO on AMX) started the
    # search at a rate Server cannot reach, and its first three runs were spent coming down from it
    offline = tuning.short_run(args, folder / "offline", "Offline", args.peak_min_queries, args.peak_trial_ms,
                               target_latency=None, batch_size=1, batch_pad=None)
    start_qps = offline["loadgen"]["metric"].get("Samples per second") or offline["warmup_qps"]
    # each layout its own search (the rule's estimate chose one instance on both cores for OpenVINO's int8-bf16
    # BERT-Base, where one per core held the bound at 52 QPS against a p99 of 223 ms: docs/performance.md)
    # The next layout starts at the best target found so far, and stops there when that run is not VALID: its whole
    # search (341-827 s on the Xeon) decided only which layout is faster. Where every check of the faster misses,
    # a layout stopped so goes on searching then (below).
    most = PEAK_MOST * start_qps   # no Server target is sustained above Offline's rate: the search goes no higher

    def peak_search(run_fn, **how):   # each layout's, and a stopped one's resumed
        return tuning.find_server_peak(run_fn, start_qps, tolerance=args.peak_tolerance,
                                       min_queries=args.peak_min_queries, most=most, **how)
    searches, best = [], None
    for layout in _peak_layouts(args, alone_p99, bound_ms):
        changes = {"searched_layout": f"{layout[0]}x{layout[1]}"} if layout else {}
        runs = folder / changes["searched_layout"] if layout else folder
        run_fn = tuning.harness_run_fn(args, runs, args.peak_trial_ms, **changes)
        searches.append((layout, changes, runs, peak_search(run_fn, challenge=best), run_fn))
        best = max(best or 0, searches[-1][3].qps or 0) or None
    # the faster search's target is checked first; where none of its checks is VALID, the next layout's (short runs'
    # p99s are noisy: a search found 62.3 QPS one per core against 50.2 on both cores, and its checks missed down
    # to 51.5)
    ranked = sorted((item for item in searches if item[3].qps), key=lambda item: -item[3].qps)   # the first on a tie
    if not ranked:
        raise StepError(f"--find-peak: {searches[0][3].note} (runs in {folder})")
    done = max((trial.get("completed_qps") or 0 for item in searches for trial in item[3].trials), default=0)
    if ranked[0][3].upper is None and ranked[0][3].qps >= most and done < most / (1 + args.peak_tolerance):
        # VALID at twice the rate the machine serves: the bound held no load back (a backlog is VALID under it), so
        # the search has no peak, and a full-length check there would only queue what the machine cannot serve.
        # Runs that completed what they were sent (Offline's short run read low) are a peak at the search's top.
        raise StepError(f"--find-peak: every target up to {ranked[0][3].qps:.3f} QPS, {PEAK_MOST:g}x Offline's "
                        f"{start_qps:.3f} samples/s, was VALID at the {bound_ms:g} ms bound: the bound never held the "
                        f"load back (the runs completed at most {done:.3f} samples/s), so there is no peak to find "
                        f"(runs in {folder})",
                        hint=(f"--target_latency={args.target_latency:g} is the bound you set: give one the machine's "
                              f"latency can reach (the rules' is {SERVER_LATENCY_BOUND_MS:g} ms), or "
                              if args.target_latency else "") + "run at a target of your own: --target_qps=N")
    changes = {}   # the layout being checked: every check writes the run folder, kept in check-NN in turn
    check_fn = tuning.kept_checks(lambda qps, queries: tuning.check_run(args, run_dir, qps, queries, **changes),
                                  run_dir, folder)
    checking = list(ranked)
    while checking:
        layout, own, runs, search, _ = checking.pop(0)
        changes.clear()
        changes.update(own)
        tuning.check_peak(search, check_fn)
        if search.checked_valid:
            break
        if not checking:   # the layouts stopped at the faster one's target: their own search, then their check
            for item in searches:
                if item[3].lost_challenge:
                    peak_search(item[4], resume=item[3])
                    if item[3].qps:
                        checking.append(item)
            checking.sort(key=lambda item: -item[3].qps)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["find_peak"] = {**search.record(), "offline_samples_per_second": round(start_qps, 3),
                            "singlestream_p99_ms": alone_p99,
                            # of the target the run ran at: a check stepped down from the search's found, or missed
                            "server_vs_offline": round((search.checked_qps or search.qps) / start_qps, 4),
                            "runs": str(folder),
                            "layouts": [{"instances": item[0][0], "threads": item[0][1], "qps": item[3].qps,
                                         "found": item[3].found,
                                         "upper": item[3].upper, "short_runs": len(item[3].trials),
                                         "aimed_runs": sum(trial.get("aimed_at") is not None
                                                           for trial in item[3].trials),
                                         "checks": len(item[3].checks), "checked_valid": item[3].checked_valid,
                                         "challenge": item[3].challenge, "lost_challenge": item[3].lost_challenge,
                                         "note": item[3].note, "runs": str(item[2])}
                                        for item in searches if item[0]]}
    if layout:   # the check's rule said "a layout the search tries": what chose it
        # the searches' own targets, which ranked them (a check's step-down of the faster read as "found" less
        # than the other, beside "the faster layout")
        found = "; ".join(f"{_layout_words(item[0])} " + (
            f"{item[3].found:.3f}" if item[3].found else f"not VALID at the other's {item[3].challenge:.3f}, searched "
            "no further" if item[3].lost_challenge else "none VALID") for item in searches)
        why = "the faster layout in --find-peak's search" if layout == ranked[0][0] else \
            f"--find-peak's checks of {_layout_words(ranked[0][0])} found none VALID"
        summary["parallelism"]["rule"] = (f"Server: {_layout_words(layout)}, {why} (QPS found: {found})"
                                          + ("; OpenVINO places its streams" if args.backend == "openvino" else ""))
    _write_summary(summary_path, summary)
    return summary


def _peak_layouts(args, alone_p99_ms=None, bound_ms=None):
    """The layouts --find-peak searches, [(instances, threads)]: one instance on all cores and one per core (the two
    the Server rule chooses between by an estimate), where the person left both to the rule on a CPU of several
    cores; else [None], the run's own. One per core first where the slowest 1% of samples, at about `cores` times
    their SingleStream p99 on all cores, keep within the rule's share of the bound: the second layout only
    challenges the first's target (one run where it is slower), and one per core was the faster layout in every
    search measured (OpenVINO int8-bf16 BERT-Base on the Xeon, 35.2 QPS against 29.8; onnxruntime on a small model
    on the EPYC, 157.0 against 85.7)."""
    if args.instances is not None or args.threads is not None or args.backend not in INSTANCE_BACKENDS \
            or args.device != "cpu":
        return [None]
    cores = len(parallelism.available_cores())
    if cores < 2:
        return [None]
    fit = parallelism.instances_in_memory(os.path.getsize(args.model), parallelism.memory_available()) \
        if args.backend == "onnxruntime" else None   # each session its own weights
    layouts = [(1, cores)] + ([(cores, 1)] if fit is None or fit >= cores else [])
    if len(layouts) > 1 and alone_p99_ms and bound_ms and \
            alone_p99_ms * cores <= parallelism.SERVER_BOUND_SHARE * bound_ms:
        layouts.reverse()
    return layouts


def _layout_words(layout):
    instances, threads = layout
    return f"{instances} instance(s) x {threads} thread(s)"


def _per_call(args):
    """(batch size, pad) the inference runs at: the run's batching (args.batching), but one sample per call where
    LoadGen's queries carry one (SingleStream, Server): a warm-up batched by --batch_size set Server's target from
    a rate its one-sample queries never reach."""
    if args.scenario in ONE_SAMPLE_SCENARIOS or args.batching.size == 1:
        return 1, 0
    return args.batching.size, args.batching.pad


def _load_features(folder):
    if not Path(folder).is_dir():
        raise UsageError(f"features folder not found: {folder}",
                         hint="build it with: python -m mlperf_bert.squad_features --squad FILE --vocab FILE --out DIR")
    return squad_features.load(folder)


# onnxruntime's own int8 operators (its dynamic quantiser's graph), which the other CPU runtimes cannot run well
ORT_INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention")


def _refuse_learned_questions(questions, model_heldout):
    """A model trained on part of the dev set scored on a list holding questions it learned: a figure that means
    nothing (F1 21.3 for 7.5 held out), with no word but "chosen questions"."""
    asked, _ = heldout.read(questions)
    kept, _ = heldout.read(model_heldout)
    if learned := len(asked - kept):
        raise UsageError(f"--questions {questions}: {learned} of its {len(asked)} questions are among those the model "
                         "was trained on: its score there means nothing",
                         hint=f"choose among its held-out questions ({model_heldout}), or leave --questions out")


def _faster_model(args):
    """find-peak's advice where even one sample at a time is over the bound: an int8 model this backend runs, where
    the run's is not one (it named _int8-dynamic to DeepSparse and OpenVINO, which refuse it, and to int8 runs)."""
    if args.precision in ("int8", "int8-bf16") or (_int8_operators(args.model)[0] or 0):
        return ""
    if args.backend == "tensorrt" or getattr(args, "device", "cpu") != "cpu":   # a GPU: _int8-dynamic is refused there
        return "a TensorRT int8 engine (_tensorrt --precision=int8) or "
    return {"onnxruntime": "an int8 model (_int8-dynamic) or ", "openvino": "an int8 model (--precision=int8) or ",
            "deepsparse": "a sparse or int8 model (--model=zoo:...) or "}.get(args.backend, "")


def _int8_operators(path):
    """(the model file's int8 operators (0: fp32), so a submission can tell int8 weights it was given as a file,
    how many of them are onnxruntime's own); None, 0 where the model cannot be read as ONNX here (a TensorRT engine's
    venv without onnx)."""
    try:
        import onnx
        from mlperf_bert.quantize import quantised_ops
        model = onnx.load(path, load_external_data=False)
        return quantised_ops(model), sum(node.op_type in ORT_INT8_OPS for node in model.graph.node)
    except Exception:   # a fact for the record, never a reason to fail a finished run
        return None, 0


def _added_width(requested, plan):
    """The note for a --buckets list without 384: seq_plan adds it, so the longest samples have a bucket."""
    asked = str(requested).split(",")
    if plan.buckets is None or not asked[0].strip().isdigit() or str(seq_plan.FEATURE_WIDTH) in \
            [part.strip().lstrip("0") for part in asked]:
        return ""
    return (f"; {seq_plan.FEATURE_WIDTH} added to --buckets {requested}: the samples longer than "
            f"{max(map(int, asked))} run there")


def _instances(args, features, buckets, work_dir, total):
    """(inference, views, pins, Parallelism, warm-up samples/s): onnxruntime sessions or OpenVINO streams by the
    scenario's rule (mlperf_bert.parallelism), warmed up. Server's rule needs a measurement: one instance on all
    cores is warmed up first, and the instances are made again when its estimate of a full-length sample allows
    more."""
    model_path, plan = seq_plan.prepare(args.model, buckets, work_dir)
    inference = QaInference(None, features, plan, *_per_call(args))
    overrides = {"instances": args.instances, "threads": args.threads, "spin": args.spin}
    layout = tuple(map(int, args.searched_layout.split("x"))) if args.searched_layout else None
    if layout:   # a layout --find-peak tries (or found faster): its own, said as such, not the person's
        overrides["instances"], overrides["threads"] = layout
    if args.device != "cpu":  # one session feeds the GPU; its CPU threads only launch work
        overrides["instances"] = 1
    elif args.backend == "onnxruntime":   # each session its own weights (OpenVINO's streams share theirs)
        overrides["fit"] = _sessions_that_fit(model_path, overrides["instances"])
    if args.backend == "openvino":
        start = _ov_start(args, model_path, inference, total)
    else:
        start = _ort_start(args, model_path, plan, inference, total)

    def placed(choice):   # OpenVINO's streams, not our pins (recorded so: no cores listed)
        return choice if args.backend != "openvino" else dataclasses.replace(
            choice, cores=(), rule=choice.rule + "; OpenVINO places its streams")
    chosen = parallelism.choose(args.scenario, **overrides)
    if layout:
        chosen = dataclasses.replace(chosen, overridden=(), rule=f"Server: {_layout_words(layout)}, a layout "
                                     "--find-peak's search tries")
    chosen = placed(chosen)
    if args.device != "cpu":  # the one session is this rule's, not the person's --instances
        chosen = dataclasses.replace(chosen, rule="GPU: one session feeds it", overridden=tuple(
            name for name in chosen.overridden if name != "instances" or args.instances is not None))
    views, pins, measured_qps = start(chosen)
    # --threads alone keeps the measured rule: as many instances of that many threads as the load allows
    if args.scenario == "Server" and args.instances is None and not layout:
        bound_s = server_bound_ms(args) / 1000
        indices = _warm_up_indices(total, len(views))
        tokens = sum(plan.run_length(inference.lengths[index]) for index in indices)
        seconds_per_token = len(indices) / measured_qps / tokens  # one instance on all cores: one sample at a time
        tuned = parallelism.choose("Server", server_slowest_s=seconds_per_token * seq_plan.FEATURE_WIDTH,
                                   latency_bound_s=bound_s, **overrides)
        if (tuned.instances, tuned.threads) != (chosen.instances, chosen.threads):
            views, pins, measured_qps = start(tuned)
        chosen = placed(tuned)
    return views[0], views, pins, chosen, measured_qps


def _sessions_that_fit(model_path, asked):
    """How many onnxruntime sessions of the model the memory holds (None: unknown); more --instances refused
    here, before any is made, rather than the kernel killing the run part-way."""
    size, available = os.path.getsize(model_path), parallelism.memory_available()
    fit = parallelism.instances_in_memory(size, available)
    if asked and fit is not None and asked > fit:
        raise UsageError(
            f"--instances={asked}: each onnxruntime session holds its own copy of the model's weights (about "
            f"{parallelism.session_bytes(size) / 1e6:,.0f} MB with {model_path}), so {asked} need about "
            f"{asked * parallelism.session_bytes(size) / 1e9:,.1f} GB; {available / 1e9:,.1f} GB of memory "
            f"is available, {parallelism.MEMORY_KEPT:.0%} of it kept for the run: {fit} fit",
            hint=f"--instances={fit} or fewer, or leave --instances out (the rule keeps to what fits)",
            exit_code=78)   # sysexits EX_CONFIG, as ov_backend.CpuCannot: the runner makes it mlrun's exit 2
    return fit


def _ort_start(args, model_path, plan, inference, total):
    """start(Parallelism) -> (views, pins, warm-up samples/s): a pinned onnxruntime session per instance."""
    from mlperf_bert.ort_backend import OrtBackend
    providers = gpu.ort_providers(args.device, args.precision, args.trt_cache,
                                  gpu.trt_profiles(plan.buckets or (seq_plan.FEATURE_WIDTH,), [args.batching.size]),
                                  model_adapter.inspect(model_path).input_names)

    gpu.before_session(providers)

    def start(chosen):
        pins = list(chosen.cores) or [()] * chosen.instances
        views = [inference.on(OrtBackend(model_path, chosen.threads, providers=providers, spin=chosen.spin,
                                         cores=pin)) for pin in pins]
        for view in views:  # onnxruntime falls back to the CPU with only a log line: never run so silently
            gpu.check_session(view.backend.session, providers)
        return views, pins, _warm_up(views[0], total, views, pins)
    return start


def _ov_start(args, model_path, inference, total):
    """start(Parallelism) -> (views, pins, warm-up samples/s): the model compiled for one OpenVINO stream per
    instance, an infer request each; the workers stay unpinned (OpenVINO pins its streams' threads)."""
    from mlperf_bert.ov_backend import OvModel

    def start(chosen):
        cores = len(os.sched_getaffinity(0))
        if chosen.instances * chosen.threads > cores:   # OpenVINO grants no more: refused after the compile (a
            from mlperf_bert.ov_backend import CpuCannot   # BERT-Large's takes its while), so said before it
            raise CpuCannot(f"OpenVINO runs at most one thread per core this run may use ({cores}), not "
                            f"the {chosen.instances} x {chosen.threads} asked for",
                            hint=f"--instances and --threads within the cores (instances x threads <= {cores} "
                                 "here), or leave them out for the scenario's rule")
        model = OvModel(model_path, chosen.instances, chosen.threads, args.precision)
        views = [inference.on(model.request()) for _ in range(chosen.instances)]
        pins = [()] * chosen.instances
        return views, pins, _warm_up(views[0], total, views, pins)
    return start


def _backend(args, buckets, work_dir):
    """(backend, SeqPlan, SUT workers) for --backend deepsparse (its engines are compiled here, each once,
    with a line of progress, and each run once) or tensorrt (the engine built by its recipe)."""
    if args.backend == "tensorrt":
        from mlperf_bert import trt_backend
        backend = trt_backend.TrtBackend(args.engine)
        return backend, backend.plan(buckets), 1
    from mlperf_bert import ds_backend
    model_path, plan = ds_backend.prepare(args.model, buckets, work_dir)
    scheduler = "multi_stream" if args.scenario == "Server" else "single_stream"
    backend = ds_backend.DeepSparseBackend(model_path, plan.buckets, ds_backend.batch_sizes_for(
        args.scenario, args.batching.size), args.threads, scheduler, args.streams, progress=ds_backend.progress_line)
    backend.warm_up(ds_backend.progress_line)
    return backend, plan, backend.streams


def _warm_up_indices(total, workers):
    return list(range(min(max(WARMUP_SAMPLES, 2 * workers), total)))


def _warm_up(inference, total, views=None, pins=None):
    """Run a few samples once untimed (first-run allocations), then again until the pass time settles;
    return samples/s of the settled passes, run by the SUT's workers at once (`views`, pinned to `pins`;
    default: `inference` alone).

    Also the first place a model that loads but cannot run fails, before LoadGen starts.
    """
    views, pins = views or [inference], pins or [()] * len(views or [inference])
    indices = _warm_up_indices(total, len(views))
    for _ in inference.responses(indices):
        pass
    settling = warmup.until_settled(lambda: run_on_instances(views, pins, indices), window=WARMUP_PASSES,
                                    max_calls=WARMUP_MAX_PASSES)
    return len(indices) / max(settling.seconds, 1e-9)


def _warm_shapes(args, views, pins, total, measured_qps):
    """OpenVINO prepares its kernels for an input shape the first time it meets it: 1.4x to 2.8x that call's later
    time on a shared machine; on a quiet one a first pass over 512 samples of 173 lengths ran 20.8 ms a call, the
    second 17.1 (BERT-Base int8-bf16 on the Xeon with AMX, December 6; +6% in f32). A full-length run meets each length in its first seconds; a short one
    (find-peak's search runs, each a process of its own, a --count run) met them all while LoadGen timed it: a
    search run at 37.3 QPS missed the bound (p99 181 ms) that 34.5 QPS met warmed up (91-106 ms;
    docs/performance.md). So each run length among the loaded samples runs once on every instance before LoadGen
    starts, where one sample runs per call (a batch's shape depends on the queries that form it), unless that
    would take over SHAPE_WARM_MAX_S (the warm-up's rate says how long: a slow model, whose first calls cost it
    relatively little). Performance runs only: accuracy runs each sample once anyway.
    Returns {"lengths": N, "seconds": S}, {"lengths": N, "skipped": why}, or None."""
    if args.backend != "openvino" or args.mode != "performance" or views[0].batch_size != 1:
        return None
    plan, lengths = views[0].plan, views[0].lengths
    first = {}
    for index in range(total):
        first.setdefault(plan.run_length(lengths[index]), index)
    indices = list(first.values())
    warmed = _warm_up_indices(total, len(views))
    mean_tokens = sum(plan.run_length(lengths[i]) for i in warmed) / max(len(warmed), 1)
    per_token = len(views) / max(measured_qps, 1e-9) / max(mean_tokens, 1)   # one instance's seconds per token
    estimate = 2 * per_token * sum(first)   # each instance runs every length, its first calls up to twice as long
    if estimate > SHAPE_WARM_MAX_S:
        return {"lengths": len(indices), "skipped": f"it would take about {estimate:.0f} s"}
    started = time.perf_counter()
    on_each(views, pins, lambda view: [None for _ in view.responses(indices)])   # every instance, all at once
    return {"lengths": len(indices), "seconds": round(time.perf_counter() - started, 2)}


def _offline_rate(views, pins, total, settled_qps):
    """(samples/s, samples timed) for Offline's target. LoadGen issues target x min_duration x 1.1 samples in
    one query, so a rate 10% under the real one ends the run early: INVALID, after the whole run. The warm-up's
    few first samples are not the run: on a tiny model they gave 1113-1167/s against LoadGen's 1580-1585/s
    (thread start-up per pass weighs on 4 samples), and a 20-s run was INVALID. So: loaded samples spread
    over their lengths (the lengths LoadGen draws from), in blocks of a batch of neighbouring lengths (LoadGen's
    one query of thousands fills batches; a spread of single samples would not: batch 8 read 945/s against
    1055/s), about RATE_PASS_S long, run twice through the instances; the faster pass counts (the first meets
    lengths the warm-up did not, either may meet another process: a rate read too high only lengthens the run)."""
    lengths, batch = views[0].lengths, views[0].batch_size
    count = min(total, max(4 * len(views), math.ceil(settled_qps * RATE_PASS_S)))
    by_length = sorted(range(total), key=lambda index: lengths[index])
    blocks = max(1, count // batch)
    starts = {block * max(total - batch, 0) // max(blocks - 1, 1) for block in range(blocks)}
    indices = sorted({by_length[i] for start in starts for i in range(start, min(start + batch, total))})
    # a few samples (a --count run's) timed again until the pass lasts about RATE_PASS_S: 100 samples of a tiny
    # model took 0.1 s, the threads' start-up weighed on it, and OpenVINO's read 0.61x of LoadGen's rate
    indices *= min(20, max(1, math.ceil(settled_qps * RATE_PASS_S / len(indices))))
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        run_on_instances(views, pins, indices)
        seconds.append(time.perf_counter() - started)
    return len(indices) / max(min(seconds), 1e-9), len(indices)


def settings_lines(args, total, measured_qps):
    """(user.conf lines, {key: value} chosen here) for this scenario.

    A key the user's --user-conf sets for this model and scenario is left to the user's line.
    """
    chosen = {}
    per_query = MULTISTREAM_SAMPLES_PER_QUERY if args.scenario == "MultiStream" else 1  # Offline: one query
    if args.count or total < OFFICIAL_SAMPLE_COUNT:
        chosen["performance_sample_count_override"] = total
    if args.count:
        chosen["min_query_count"] = max(total if args.scenario == "Offline" else math.ceil(total / per_query),
                                        getattr(args, "min_queries", None) or 0)
    if args.min_duration is not None or args.count:
        chosen["min_duration"] = args.min_duration if args.min_duration is not None else SHORT_RUN_MIN_DURATION_MS
    if args.scenario in ("Offline", "Server"):
        margin = SERVER_LOAD_FRACTION if args.scenario == "Server" else loadgen_summary.OFFLINE_MARGIN
        default_qps = measured_qps * margin
        chosen["target_qps"] = round(args.target_qps or default_qps, 3)
    # LoadGen reads SingleStream's and MultiStream's target_latency as a real number of ms, Server's as whole ms.
    if args.target_latency is not None:
        chosen["target_latency"] = math.ceil(args.target_latency) if args.scenario == "Server" \
            else round(args.target_latency, 3)
    elif args.scenario in ("SingleStream", "MultiStream"):
        chosen["target_latency"] = round(1000 * per_query / measured_qps / LATENCY_MARGIN, 3)

    user_lines = _user_lines(args)
    users = conf_values_set(user_lines, args.scenario)
    chosen = {key: value for key, value in chosen.items() if key not in users}
    lines = ["# chosen by mlperf_bert.harness"]
    lines += [f"{MODEL_KEY}.{args.scenario}.{key} = {value}" for key, value in chosen.items()]
    if user_lines:
        lines += [f"# from {args.user_conf}"] + user_lines
    # recorded whole: what the user.conf set too (diff showed only its digest, the record left its values out)
    return lines, {**chosen, **users}


def server_bound_ms(args):
    """The p99 bound LoadGen will hold a Server run to: --target_latency, else the user.conf's (the rule and
    find-peak's pre-check used 130 ms where a user.conf said 10), else the benchmark's."""
    users = conf_values_set(_user_lines(args), "Server").get("target_latency")
    return args.target_latency or (users if isinstance(users, (int, float)) and users > 0 else None) \
        or SERVER_LATENCY_BOUND_MS


def _user_lines(args):
    return Path(args.user_conf).read_text().splitlines() if args.user_conf else []


def _start_test(sut, args, user_conf, run_dir, total):
    settings = lg.TestSettings()
    # Once per process: a second FromConfig call logs an error that invalidates a submission.
    if settings.FromConfig(str(user_conf), MODEL_KEY, args.scenario) != 0:
        raise UsageError(f"LoadGen rejected {user_conf}")
    settings.scenario = SCENARIOS[args.scenario]
    settings.mode = MODES[args.mode]
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(run_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    # LoadGen reads audit.config from the working directory; run_dir has none (checked above),
    # so without --audit-config no compliance settings can slip in.
    audit_config = os.path.abspath(args.audit_config) if args.audit_config else "audit.config"
    _check_schedule(settings, args.scenario, args.mode == "accuracy")
    from mlperf_bert import progress  # a bar for a person watching; in logs, a line a minute
    expected = progress.expected_samples(settings, args.scenario, args.mode == "accuracy", total)
    with contextlib.chdir(run_dir), progress.Bar(progress.stream(), lambda: sut.completed, expected,
                                                 f"{args.scenario} {args.mode}", log=sys.stdout):
        lg.StartTestWithLogSettings(sut.sut, sut.qsl, settings, log_settings, audit_config)


def _check_schedule(settings, scenario, accuracy):
    """Refuse settings for which LoadGen would build a query schedule larger than half the free memory.

    LoadGen generates every query before the run starts (loadgen.cc GenerateQueries): Offline one query of
    1.1 x min_duration x expected QPS samples, Server min_duration x target QPS queries, SingleStream and
    MultiStream queries for twice min_duration at the expected latency. A tiny expected latency or a huge
    QPS (a typo, a unit slip) would have it allocate until the kernel kills the run."""
    if accuracy:
        return
    min_s = settings.min_duration_ms / 1000
    if scenario == "Offline":
        entries, why = 1.1 * min_s * settings.offline_expected_qps, f"expected QPS {settings.offline_expected_qps:g}"
    elif scenario == "Server":
        entries, why = min_s * settings.server_target_qps, f"target QPS {settings.server_target_qps:g}"
    else:
        latency_ns = (settings.multi_stream_expected_latency_ns if scenario == "MultiStream"
                      else settings.single_stream_expected_latency_ns)
        entries = 2 * settings.min_duration_ms * 1e6 / max(latency_ns, 1)
        why = f"expected latency {latency_ns / 1e6:.6g} ms ({latency_ns:g} ns), queries for twice min_duration"
    if settings.max_query_count:
        entries = min(entries, settings.max_query_count)
    entries = max(entries, settings.min_query_count)
    need, available = entries * SCHEDULE_BYTES_PER_QUERY, _available_memory()
    if available is not None and need > available / 2:
        raise UsageError(
            f"{scenario}: LoadGen would generate {entries:,.0f} "
            f"{'samples (its one query)' if scenario == 'Offline' else 'queries'} before it starts ({why}, min_duration "
            f"{settings.min_duration_ms} ms), about {need / 2**30:.1f} GiB: more than half of the "
            f"{available / 2**30:.1f} GiB of memory free",
            hint="give the rate or latency this system really has (--target_qps, --target_latency or the --user_conf "
                 "line that sets it; left out, they are measured), or a shorter --min_duration")


def _available_memory():
    """Bytes of memory free for new work (MemAvailable), or None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _score(args, run_dir):
    """{"exact_match", "f1", "met"} of the accuracy log, also written to accuracy.txt; None without --squad."""
    if not args.squad:
        return None
    log_path = run_dir / "mlperf_log_accuracy.json"
    # A short run (--count) answers a subset: the questions it fully covers are scored, and it says so.
    result = accuracy.score(args.features, args.squad, str(log_path), questions=args.questions)
    figures = {"exact_match": result["exact_match"], "f1": result["f1"]}
    log_hash = hashlib.sha256(log_path.read_bytes()).hexdigest()
    _write_text(run_dir / "accuracy.txt", f"{json.dumps(figures)}\nhash={log_hash}\n")
    return {**figures, "questions": result["questions"], "of": result["of"], "subset": result["subset"],
            **({"note": result["note"]} if "note" in result else {}),
            "target_f1": round(TARGET_F1, 5), "met": result["f1"] >= TARGET_F1}


def model_source(model_path):
    """Where a Hugging Face model came from (its entry's source.json: repo, revision asked, commit got), or None."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(model_path)), "source.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("source") != "huggingface":
        return None
    return {key: record.get(key) for key in ("repo", "revision", "commit", "from")}


def model_fusion(model_path):
    """Which fusions a fused model's entry applied (its fusion.json), or None: a fused run said so nowhere but in
    its model entry's name."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(model_path)), "fusion.json")) as f:
            facts = json.load(f)
        return {"fused_operators": {name: count for name, count in facts["fused_operators"].items() if count},
                "fully_optimized": bool(facts["fully_optimized"]), "check": facts.get("check")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):   # no fused model's entry
        return None


def model_source_line(source):
    """The line that says which commit of a Hugging Face repo ran: unpinned, it is the first fetch's for good."""
    commit = source.get("commit") or "unknown"
    line = f"  model: hf:{source['repo']}@{source['revision']}, commit {commit} (from {source['from']})"
    if not re.fullmatch(r"[0-9a-f]{40}", source.get("revision") or ""):
        # a mirror's copy names no commit: pinning "@unknown" failed, so the mirror's own folder is the pin
        pin = f"pin it (--model=hf:{source['repo']}@{commit})" if source.get("commit") else \
            f"pin it (a commit, --model=hf:{source['repo']}@REV, with the mirror's copy in huggingface/{source['repo']}@REV/)"
        line += (f"\n    not pinned: its cache entry keeps the commit its first fetch resolved, whatever the repo "
                 f"holds now; {pin} for the same model on every machine, or `mlrun rm cache` the entry to fetch the "
                 "newest")
    return line


def count_note(summary):
    """Why a --count run did more samples than asked (MultiStream's whole queries, --min-duration), or ""."""
    count, done = summary.get("count"), summary["samples_completed"]
    if not count or done <= count:
        return ""
    asked = (summary.get("user_settings") or {}).get("min_query_count")
    if isinstance(asked, int) and asked > count:   # it said "LoadGen added queries to fill --min-duration"
        return f" (--count {count}: your user.conf's min_query_count {asked})"
    why = (f"whole MultiStream queries of {MULTISTREAM_SAMPLES_PER_QUERY}" if summary["scenario"] == "MultiStream"
           and done == math.ceil(count / MULTISTREAM_SAMPLES_PER_QUERY) * MULTISTREAM_SAMPLES_PER_QUERY
           # its check runs at least the queries early stopping asked for in the search (tuning.check_run)
           else "--find-peak's check ran the queries early stopping asked for in its search"
           if summary.get("find_peak") else "LoadGen added queries to fill --min-duration")
    return f" (--count {count}: {why})"


def format_summary(summary):
    loadgen = summary["loadgen"]
    lines = [f"{summary['scenario']} {summary['mode']}: {summary['samples_completed']} samples completed"
             + count_note(summary)]
    for name, value in loadgen["metric"].items():
        lines.append(f"  {name}: {value:.3f}")
    if loadgen["latency_ms"] and summary["scenario"] != "Offline":  # Offline latencies mean nothing
        lines.append("  latency (ms): " + ", ".join(f"{pct} {ms:.2f}" for pct, ms in loadgen["latency_ms"].items()))
    if times := summary.get("sut_times"):
        lines.append("  " + sut_times_line(times))
        if ceiling := times.get("steady_ceiling"):
            lines.append("  " + steady_ceiling_line(ceiling, (summary.get("settings") or {}).get("target_qps")))
    if summary.get("error"):
        lines.append("  result: FAILED (the error follows)")
    elif summary["mode"] == "performance":
        lines.append(f"  result: {loadgen_summary.verdict(loadgen)}")
        for item in loadgen["explanation"]:
            lines.append(f"    why: {item['why']}\n    fix: {item['fix']}")
        if loadgen["short_because"]:
            lines.append(f"    short: {'; '.join(loadgen['short_because'])}")
    if summary["mode"] == "performance" and summary.get("other_load"):
        lines.append(f"  machine: {machine_load.describe(summary['other_load'])}")
    if summary["mode"] == "performance" and summary.get("shared_cores") and (
            shared := shared_cores.describe(summary["shared_cores"])):
        lines.append(f"  shared cores: {shared}")
    if summary["mode"] == "accuracy":
        scored = summary.get("accuracy")
        if scored:
            figures = json.dumps({"exact_match": scored["exact_match"], "f1": scored["f1"]})
            lines.append(f"  accuracy: {figures}  " + (
                "(a random-weight model: plumbing only, its score means nothing)" if summary.get("random_weights")
                else f"target F1 >= {TARGET_F1:.3f}: {'met' if scored['met'] else 'not met'}"))
            lines.append(f"  ({accuracy.coverage_note(scored)})")
        elif not summary.get("error"):
            lines.append("  accuracy: not scored (pass --squad FILE)")
    lines += ["  " + line for line in how_lines(summary)]
    lines.append(f"  logs: {summary['run_dir']}")
    return "\n".join(lines)


def _sut_times(sut, args, total, workers, loadgen):
    """Where a Server run's samples spent their time in the SUT (mlperf_bert.sut.QueryTimes), and what its own run
    times allow on a machine that never slows down: its workers serving the loaded samples first come, first
    served (mlperf_bert.queueing; about half a second), and on one slowed just enough to give the p99 LoadGen
    measured (what --find-peak aims its next run by)."""
    times = sut.times.record() if sut.times else None
    if times:
        bound_ms, p99_ms = server_bound_ms(args), loadgen["latency_ms"].get("p99")
        ceiling = queueing.steady_ceiling(sut.times.rows, sut.times.lengths, range(total), workers, bound_ms / 1000,
                                          (loadgen["metric"].get("Scheduled samples per second"),
                                           p99_ms and p99_ms / 1000))
        times["steady_ceiling"] = ceiling and {**ceiling, "bound_ms": bound_ms, "workers": workers}
    return times


def sut_times_line(times):
    """Where Server's latency went inside the SUT: the queue or the run, and which of them made its slowest 1%."""
    waited, ran, slowest = times["waited_ms"], times["ran_ms"], times["slowest_1pct"]
    return (f"in the SUT (ms): waited for a worker p50 {waited['p50']:.1f}, p99 {waited['p99']:.1f}; ran p50 "
            f"{ran['p50']:.1f}, p99 {ran['p99']:.1f}, max {ran['max']:.1f}; its slowest 1% waited "
            f"{slowest['waited_share']:.0%} of their time and ran {slowest['ran_ms_mean']:.1f} ms on average "
            f"(mean length {slowest['mean_length']:.0f} tokens, all {times['mean_length']:.0f})")


def steady_ceiling_line(ceiling, target):
    """What the run's own run times allow on a steady machine: how far its target could go by queueing alone."""
    held = (f"would hold the {ceiling['bound_ms']:g} ms bound to {ceiling['qps']:.3f} QPS"
            if ceiling["qps"] else f"would hold the {ceiling['bound_ms']:g} ms bound at no target")
    return (f"queueing: with these run times, a machine that never slowed down {held} ({ceiling['workers']} "
            f"worker(s) first come, first served, {ceiling['capacity_qps']:.3f} samples/s flat out"
            + (f"; this run's target {target:g}" if isinstance(target, (int, float)) else "") + ")"
            + (f"; one running every sample {matched['slower']:.3f}x slower, as this run's p99 says, to "
               f"{matched['qps']:.3f} QPS"
               if (matched := ceiling.get("matched")) else ""))


def how_lines(summary):
    """How the run ran, as its summary says it (sequence handling, model, runtime, parallelism, batching,
    find-peak): kept in summary.json as "how_it_ran", which `mlrun runs show` prints (it showed the settings
    asked for and the figures, not the instances, streams or batches a rule chose)."""
    lines = []
    lines.append(f"  sequence handling: {summary['sequence_handling']}")
    if summary.get("model_source"):
        lines.append(model_source_line(summary["model_source"]))
    if fusion := summary.get("model_fusion"):
        from mlperf_bert.fusion import describe
        lines.append(f"  model: {describe(fusion)}")
    if summary.get("gpu"):
        lines.append(f"  GPU: {gpu.describe(summary['gpu'])}; {summary['device']}, {summary['precision']}")
    if summary.get("backend") == "openvino" and (ov := summary.get("openvino")):
        # a quantised model runs its int8 operators int8 whatever the precision asked for the rest (as onnxruntime)
        # two counts, told apart: what OpenVINO compiled int8 of the model file's quantised nodes (15 of 42)
        quantised = summary.get("model_int8_operators")
        int8 = f" ({ov['int8_operators']} operators compiled int8" \
            + (f" of the model's {quantised} quantised nodes" if quantised else "") \
            + f", the rest {ov['inference_precision_hint']})" if ov.get("int8_operators") else ""
        warmed = summary.get("shape_warm_up")
        warmed = "" if not warmed else \
            f"; each of the {warmed['lengths']} input lengths run once first ({warmed['seconds']:.1f} s)" \
            if "seconds" in warmed else f"; its {warmed['lengths']} input lengths not run first ({warmed['skipped']})"
        lines.append(f"  OpenVINO {ov['version'].split('-')[0]}: {summary['precision']}{int8}, {ov['streams']} "
                     f"stream(s), {ov['threads']} thread(s) in all{warmed}")
    elif summary.get("model_int8_operators"):   # onnxruntime's int8 (_int8-dynamic, a QDQ file): said nowhere
        lines.append(f"  model: int8, {summary['model_int8_operators']} quantised nodes run int8 "
                     f"(the rest {summary['precision']})")
    if par := summary.get("parallelism"):
        ort = summary.get("backend", "onnxruntime") == "onnxruntime"   # spinning is onnxruntime's
        spinning = f", spinning {'on' if par['spin'] else 'off'}" if ort else ""
        lines.append(f"  parallelism: {_layout_words((par['instances'], par['threads']))}{spinning} "
                     f"(rule: {par['rule']}"
                     # --threads alone: the instances are as many as fit, not the rule's: its text says so
                     + (f"; set by --{', --'.join(par['overridden'])}" if par["overridden"] else "") + ")")
        if par["instances"] * par["threads"] > par.get("available", 0) > 0:
            lines.append(f"    {par['instances'] * par['threads']} threads on the {par['available']} cores this run "
                         "may use: not pinned, they take turns on the cores")
    batching = summary["batching"]
    asked = batching.get("batch_size", summary["batch_size"])
    if summary["scenario"] in ONE_SAMPLE_SCENARIOS and asked > 1:   # accepted (a sweep may cross scenarios), not silently
        lines.append(f"  batching: {summary['scenario']} sends one sample per query, run as it comes: "
                     f"--batch_size={asked} does nothing there")
    elif summary["batch_size"] == 1 and "batch_pad" in batching.get("overridden", ()) and batching["pad_tokens"]:
        why = "at --batch_size=1" if batching["rule"] == "given" else f"rule: {batching['rule']}"
        lines.append(f"  batching: --batch_pad={batching['pad_tokens']} does nothing here ({why})")
    elif summary["batch_size"] == 1 and summary["scenario"] == "Offline" and summary.get("backend") == "openvino":
        # where the rule may batch, why it did not (an ISA cap, fp32, or the person's --batch_size=1)
        lines.append("  batching: " + (batching["rule"] if batching.get("rule", "given") != "given" else
                                       "one sample per call (--batch_size=1)"))
    if summary["batch_size"] > 1:
        lines.append(f"  batching: mean batch {batching['mean_batch']} of {batching['batch_size']}, padding "
                     f"{batching['padding_fraction']:.1%} of the tokens run (pad <= {batching['pad_tokens']}; "
                     + ("set by --batch_size" if batching.get("rule", "given") == "given" else
                        f"rule: {batching['rule']}") + ")")
    if peak := summary.get("find_peak"):
        lines.append(find_peak_line(peak, summary.get("short")))
    return [line[2:] if line.startswith("  ") else line for line in lines]


def find_peak_line(peak, short):
    """The summary's find-peak line. A --count run's check is as short as the run (it said "full-length check
    VALID" of 2 s); a Server target above Offline's own rate is no steady state: said, not left as a figure to
    trust."""
    above = " (above Offline's rate: a short or noisy measure)" if peak["server_vs_offline"] > 1 else ""
    check = "check of the run's own short length" if short else "full-length check"
    ran = peak.get("checked_qps") or peak["qps"]   # it printed the search's 950.7 of a run at 458.2
    return (f"  find-peak: target {ran:.3f} QPS ({peak['server_vs_offline']:.1%} of Offline "
            f"{peak['offline_samples_per_second']:.3f} samples/s at one sample per call{above}) after "
            + (f"{sum(item['short_runs'] for item in peak['layouts'])} short runs over {len(peak['layouts'])} layouts"
               if peak.get("layouts") else f"{len(peak['trials'])} short runs")
            + (f" ({aimed} aimed by the queue model)" if (aimed := _aimed_runs(peak)) else "")
            + (f" found {found:.3f} and its checks stepped down"   # not of a rounding alone: re-runs at one target
               if round(ran, 3) < round(found := peak.get("found") or peak["qps"], 3) else "")
            + f"; {check} {'VALID' if peak['checked_valid'] else 'not VALID'}"
            + (f" ({peak['note']})" if peak["note"] else ""))


def _aimed_runs(peak):
    """How many of a find-peak's short runs the queue model aimed (mlperf_bert.tuning.next_target)."""
    if peak.get("layouts"):
        return sum(item.get("aimed_runs") or 0 for item in peak["layouts"])
    return sum(trial.get("aimed_at") is not None for trial in peak["trials"])


if __name__ == "__main__":
    sys.exit(main())
