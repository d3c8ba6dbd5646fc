"""python -m mlperf_bert.trt_build: a TensorRT engine from a BERT QA ONNX model (fp32, tf32, fp16 or int8).

One optimisation profile per sequence-length bucket (lengths above the previous bucket up to its own, batch 1
to the largest batch size asked: mlperf_bert.gpu.trt_profiles), so every sample runs at its bucket's length
and no shape the harness uses falls outside the engine. int8 is calibrated (TensorRT's entropy calibrator)
on the official calibration features (the MLPerf list of 100 feature indices), one at a time at 384 tokens;
the calibration cache is its own cache entry (--calibrate-only writes it and no engine), so an int8 engine
for other buckets or batch sizes reuses it. The timing cache is written beside the engine.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from engine.errors import MlrunError, StepError
from mlperf_bert import gpu, model_adapter, seq_plan
from mlperf_bert.trt_backend import DeviceBuffer, tensorrt, trt_logger

WORKSPACE_BYTES = 8 << 30


def calibration_rows(features_dir, list_path):
    """The calibration features: (ids, mask, segments) int arrays [1, 384] for each index the list names."""
    from mlperf_bert import squad_features
    features = squad_features.load(features_dir)
    indices = read_calibration_list(list_path, len(features.lengths))
    return [tuple(np.asarray(array[index:index + 1]) for array in
                  (features.input_ids, features.input_mask, features.segment_ids)) for index in indices]


def read_calibration_list(path, feature_count):
    """The feature indices of an MLPerf calibration list (one integer a line), checked against the features."""
    text = open(path).read().split()
    try:
        indices = [int(word) for word in text]
    except ValueError:
        raise MlrunError(f"{path}: not a list of feature indices (one integer a line)") from None
    bad = [index for index in indices if not 0 <= index < feature_count]
    if not indices or bad:
        raise MlrunError(f"{path}: {'no indices' if not indices else f'index {bad[0]} is outside the {feature_count} features'}")
    return indices


def build(model, out, precision, buckets, batch_sizes, calibration_cache=None, rows=None, calibrate_only=False):
    # TensorRT allows TF32 by default: fp32 means strict fp32 here (gpu.DEVICE_PRECISIONS says why); the
    # variable is read when the libraries start, so before the builder exists
    gpu.set_math_mode(precision)
    trt = tensorrt()
    io = model_adapter.inspect(model)
    builder = trt.Builder(trt_logger())
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StepError(f"TensorRT cannot parse {model}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    timing_path = os.path.join(os.path.dirname(os.path.abspath(out)), "timing.cache")
    timing = config.create_timing_cache(open(timing_path, "rb").read() if os.path.isfile(timing_path) else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    profiles = [((1, seq_plan.FEATURE_WIDTH),) * 3] if calibrate_only else gpu.trt_profiles(buckets, batch_sizes)
    for low, opt, high in profiles:
        profile = builder.create_optimization_profile()
        for name in io.input_names:
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers beside fp16 ones, as NVIDIA's BERT builds do
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, io, rows or [], calibration_cache)
        calibration = builder.create_optimization_profile()
        for name in io.input_names:
            calibration.set_shape(name, *((1, seq_plan.FEATURE_WIDTH),) * 3)
        config.set_calibration_profile(calibration)
    print(f"building a {precision} TensorRT {trt.__version__} engine with {len(profiles)} profile(s) "
          f"({', '.join(f'B<={high[0]} L<={high[1]}' for _, _, high in profiles)}): minutes", flush=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StepError("TensorRT could not build the engine (its log above says why)")
    open(timing_path, "wb").write(memoryview(config.get_timing_cache().serialize()))
    if not calibrate_only:
        with open(out, "wb") as f:
            f.write(memoryview(serialized))
        print(f"engine: {out} ({os.path.getsize(out) / 2**20:.1f} MiB)")


def _calibrator(trt, io, rows, cache_path):
    class Calibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the calibration features one at a time; reads and writes the calibration cache."""

        def __init__(self):
            super().__init__()
            self.rows = iter(rows)
            width = seq_plan.FEATURE_WIDTH * np.dtype(io.input_dtype).itemsize
            self.buffers = {name: DeviceBuffer(width) for name in io.input_names}

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            row = next(self.rows, None)
            if row is None:
                return None
            by_name = dict(zip(io.input_names, row))
            for name in names:
                self.buffers[name].upload(np.ascontiguousarray(by_name[name], dtype=io.input_dtype))
            return [self.buffers[name].pointer for name in names]

        def read_calibration_cache(self):
            if cache_path and os.path.isfile(cache_path):
                return open(cache_path, "rb").read()
            return None

        def write_calibration_cache(self, cache):
            if cache_path:
                with open(cache_path, "wb") as f:
                    f.write(memoryview(cache))
    return Calibrator()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.trt_build", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BERT QA ONNX model (dynamic batch and sequence axes)")
    parser.add_argument("--out", required=True, help="engine file to write")
    parser.add_argument("--precision", choices=gpu.PRECISIONS, default="fp16")
    parser.add_argument("--buckets", default="auto", help=f"sequence-length buckets, a profile each (auto: "
                        f"{gpu.TRT_DEFAULT_BUCKETS})")
    parser.add_argument("--batch-sizes", default="1", help="batch sizes the harness runs (the largest bounds the profiles)")
    parser.add_argument("--calibration-cache", help="int8: the calibration cache to read, or to write")
    parser.add_argument("--features", help="int8 without a calibration cache: the SQuAD features folder")
    parser.add_argument("--calibration-list", help="int8 without a calibration cache: the MLPerf list of features")
    parser.add_argument("--calibrate-only", action="store_true", help="int8: write --calibration-cache, no engine")
    args = parser.parse_args(argv)
    try:
        buckets = seq_plan.parse_buckets(gpu.TRT_DEFAULT_BUCKETS if args.buckets == "auto" else args.buckets)
        if not isinstance(buckets, tuple):
            raise MlrunError(f"--buckets must list lengths for TensorRT profiles, not {args.buckets}")
        rows = None
        if args.precision == "int8" and not (args.calibration_cache and os.path.isfile(args.calibration_cache)):
            if not (args.features and args.calibration_list):
                raise MlrunError("int8 needs --calibration-cache FILE, or --features and --calibration-list to make it")
            rows = calibration_rows(args.features, args.calibration_list)
        with tempfile.TemporaryDirectory() as work:  # a fixed-384 model's dynamic-axis copy, for the profiles
            model, plan = seq_plan.prepare(args.model, buckets, work)
            if plan.buckets == (seq_plan.FEATURE_WIDTH,) and buckets != plan.buckets:
                raise MlrunError(f"{args.model}: {plan.description}", hint="build with --buckets 384")
            build(model, args.out, args.precision, buckets, gpu.parse_lengths(args.batch_sizes),
                  args.calibration_cache, rows, args.calibrate_only)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
