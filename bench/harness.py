"""Offline throughput of this harness's inference path against the reference SUT design, per backend.

    python -m bench.harness [--samples 32] [--repeats 2] [--layers 12 --hidden 768 --heads 12]
                            [--backends onnxruntime,deepsparse] [--ds-buckets 128,192,256,384]

Both backends in one process needs an interpreter that has both: the deepsparse venv has
onnxruntime too (the same version as the onnxruntime recipe's), so run it with that one:
    $(bin/mlrun "get python venv _deepsparse" --json | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["exports"]["MLRUN_PYTHON"])') -m bench.harness

All run a random-weight BERT model with the official fixed-384 I/O, in this process, on the
same samples (real SQuAD feature lengths):
  reference: a thread per sample, one shared session, batch 1, every sample padded to 384;
  harness:   mlperf_bert.sut.QaInference, the model made dynamic, each sample at its real
             length, shortest first, one caller using all cores;
  and, to tell the two gains apart, the harness path with every sample padded to 384.
With deepsparse among --backends (an engine per length bucket, compiled before timing, untimed):
  deepsparse at a fixed 384: one engine, every sample padded to 384;
  deepsparse buckets:        mlperf_bert.ds_backend through the same QaInference path, each sample at
                             the smallest of --ds-buckets that holds it, shortest first.
They alternate `--repeats` times and the best pass of each counts, so that load from other
processes on a shared machine hurts all alike. The last lines compare the backends' answers: the
argmax start and end of each sample's logits over its real tokens.
"""
import argparse
import contextlib
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx

from bench.args import between as _between   # (openvino_peak, machine_peak and server_ceiling take it from here)
from engine.digests import file_digest
from mlperf_bert import model_adapter, random_model, seq_plan, squad_features
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.sut import QaInference

REPO = Path(__file__).resolve().parent.parent


def default_scratch():
    """Where bench scripts keep their models and features between runs: outside the checkout's cache/ (which
    holds only cache entries the cache verbs manage), in $MLRUN_BENCH_SCRATCH or $XDG_CACHE_HOME/mlrun-bench."""
    if os.environ.get("MLRUN_BENCH_SCRATCH"):
        return Path(os.environ["MLRUN_BENCH_SCRATCH"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlrun-bench"
# The data as mlrun's mirror lays it out: $MLRUN_MIRROR where set (a checkout anywhere), else ../shared/data
DATA = Path(os.environ.get("MLRUN_MIRROR") or REPO.parent / "shared/data")
SQUAD = DATA / "squad/dev-v1.1.json"
VOCAB = DATA / "bert-vocab/vocab.txt"
FEATURES = 10833   # SQuAD v1.1 dev features at 384 (docs/mlperf-bert.md): no sample set is larger
# Section 3 of docs/mlperf-bert.md: real lengths have median 164 and p90 272; a log-normal
# with those two quantiles (mean 177 against the documented 178.5) stands in without the data.
DOCUMENTED_MEDIAN, DOCUMENTED_P90, Z90 = 164, 272, 1.2816


@contextlib.contextmanager
def quietly(what):
    """Say `what` on one line (stderr), and keep a library's own progress bars and warnings (NNCF's rich bars, the
    quantiser's "consider pre-processing") out of the figures; shown whole only when it fails."""
    print(f"{what}...", file=sys.stderr, flush=True)   # a note, not a figure: stdout holds those
    said = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            yield
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise
    finally:
        logging.disable(logging.NOTSET)


def sample_features(count, seed, cache, real=True):
    """(features, indices, where the lengths came from) for `count` samples drawn with `seed`
    (real=False: the documented length distribution even where the SQuAD data is found)."""
    rng = np.random.default_rng(seed)
    if real and SQUAD.is_file() and VOCAB.is_file():
        folder = cache / "features"
        if not (folder / "digest.json").is_file():
            squad_features.build(SQUAD, VOCAB, folder)
        features = squad_features.load(folder)
        indices = sorted(rng.choice(len(features.lengths), count, replace=False).tolist())
        return features, indices, f"real SQuAD dev features ({folder})"
    sigma = np.log(DOCUMENTED_P90 / DOCUMENTED_MEDIAN) / Z90
    lengths = np.clip(rng.lognormal(np.log(DOCUMENTED_MEDIAN), sigma, count), 16, seq_plan.FEATURE_WIDTH).astype(int)
    ids, mask, segments = model_adapter.probe_inputs(lengths, seq_plan.FEATURE_WIDTH, seed=seed)
    features = SimpleNamespace(input_ids=ids, input_mask=mask, segment_ids=segments, lengths=lengths)
    why = "not asked for" if not real else f"no SQuAD data in {DATA}: set MLRUN_MIRROR to a mirror of it"
    return features, list(range(count)), f"documented length distribution ({why})"


def fixed_model(args, cache):
    # Named by the builder's code too: a cache made by an older random_model must not be reused.
    builder = file_digest(random_model.__file__)[:8]
    path = cache / f"bert_{args.layers}x{args.hidden}x{args.heads}_seq384_seed{args.seed}_{builder}.onnx"
    if path.is_file():
        try:
            onnx.load(str(path), load_external_data=False)
            return path
        except Exception:   # a save cut short (Ctrl-C, a full disk) left it unreadable: made again
            pass
    return written_whole(path, lambda scratch: onnx.save(
        random_model.build(args.layers, args.hidden, args.heads, seq=384, seed=args.seed), scratch))


def written_whole(path, write):
    """`path`, made by write(scratch) beside it and renamed: a write cut short (Ctrl-C, a full disk, a check that
    failed after the file was written) leaves no file at `path` for the next run to take as made."""
    path = Path(path)
    scratch = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    try:
        write(scratch)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return path


def reference_pass(backend, features, indices):
    """The reference onnxruntime SUT: a thread per sample, batch 1, padded to 384, one session."""
    def infer(index):
        rows = (array[index:index + 1] for array in (features.input_ids, features.input_mask, features.segment_ids))
        backend.run(*rows)

    threads = [threading.Thread(target=infer, args=(index,)) for index in indices]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def harness_pass(inference, indices):
    started = time.perf_counter()
    for _ in inference.responses(indices):
        pass
    return time.perf_counter() - started


def collect(inference, indices):
    """{index: response} of one pass (for comparing backends, untimed)."""
    return {indices[p]: r for batch in inference.responses(indices) for p, r in batch}


def agreement(first, second, lengths):
    """Samples whose argmax start and end over their real tokens are the same in both, and the largest
    logit difference there."""
    same, worst = 0, 0.0
    for index, a in first.items():
        n = int(lengths[index])
        b = second[index]
        same += bool((a[:n].argmax(axis=0) == b[:n].argmax(axis=0)).all())
        worst = max(worst, float(np.abs(a[:n] - b[:n]).max()))
    return same, worst


class BenchParser(argparse.ArgumentParser):
    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if parsed.hidden % parsed.heads:
            self.error(f"--hidden {parsed.hidden} is not a multiple of --heads {parsed.heads}")
        if parsed.scratch.exists() and not parsed.scratch.is_dir():
            self.error(f"--scratch {parsed.scratch}: not a folder")
        return parsed


def model_args(description, samples, repeats):
    """The parser every bench script starts from: how many samples and passes (None: a script that measures
    neither has no such option), and the model's shape."""
    # named as it is run (python -m bench.NAME), not as argparse guesses from the file (openvino_peak.py)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    parser = BenchParser(prog=f"python -m {spec.name}" if spec and spec.name.startswith("bench.") else None,
                         description=description)
    if samples is not None:
        parser.add_argument("--samples", type=_between(min(samples, 1), FEATURES), default=samples,
                            help=f"samples per pass (1 to {FEATURES}; default {samples})")
    if repeats is not None:
        parser.add_argument("--repeats", type=_between(1), default=repeats, help=f"passes of each (default {repeats})")
    parser.add_argument("--layers", type=_between(1), default=12, help="the random model's layers (default 12)")
    parser.add_argument("--hidden", type=_between(1), default=768, help="its hidden size (default 768)")
    parser.add_argument("--heads", type=_between(1), default=12, help="its attention heads (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="model weights and sample choice")
    parser.add_argument("--scratch", type=Path, default=default_scratch(), help="models and features kept here "
                        "between runs (default: $MLRUN_BENCH_SCRATCH, else $XDG_CACHE_HOME/mlrun-bench)")
    return parser


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 32, 2)
    parser.add_argument("--threads", type=_between(1, 4096), help="intra-op threads for both (default: all cores)")
    parser.add_argument("--backends", default="onnxruntime", help="onnxruntime, deepsparse, or both: "
                        "onnxruntime,deepsparse (default: onnxruntime)")
    parser.add_argument("--ds-buckets", default="128,192,256,384", help="deepsparse bucket lengths "
                        "(384 always added)")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    if not backends or set(backends) - {"onnxruntime", "deepsparse"}:
        parser.error(f"--backends: onnxruntime and/or deepsparse, not {args.backends!r}")
    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)

    features, indices, source = sample_features(args.samples, args.seed, cache)
    model_path = fixed_model(args, cache)
    dynamic_path, plan = seq_plan.prepare(str(model_path), "auto", cache)
    reference_backend = OrtBackend(str(model_path), args.threads)
    inference = QaInference(OrtBackend(dynamic_path, args.threads), features, plan)
    lengths = np.asarray(features.lengths)[indices]
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, random weights, fixed 384 axis; "
          f"{reference_backend.threads} threads")
    print(f"samples: {len(indices)} from {source}; real length mean {lengths.mean():.1f}, "
          f"median {np.median(lengths):.0f}, max {lengths.max()}")
    print(f"harness sequence handling: {plan.description}")

    # Same path at a fixed 384: separates what length handling gains from what threading costs.
    padded = QaInference(reference_backend, features, seq_plan.fixed_plan(384, "reference length"))
    names = {"reference": "reference design (thread per sample, batch 1, 384)",
             "ort384": "onnxruntime: harness path at a fixed 384",
             "ort": "onnxruntime: this harness (sorted, real lengths)",
             "ds384": "deepsparse: one engine at a fixed 384",
             "ds": "deepsparse: buckets (sorted, real lengths bucketed)"}
    passes, paths = {}, {}
    if "onnxruntime" in backends:
        passes["reference"] = lambda: reference_pass(reference_backend, features, indices)
        paths["ort384"], paths["ort"] = padded, inference
    if "deepsparse" in backends:
        from mlperf_bert import ds_backend
        ds_path, ds_plan = ds_backend.prepare(str(model_path), seq_plan.parse_buckets(args.ds_buckets), cache)
        print(f"deepsparse sequence handling: {ds_plan.description}")
        ds_fixed = ds_backend.DeepSparseBackend(ds_path, (384,), threads=args.threads,
                                                progress=ds_backend.progress_line)
        ds_buckets = ds_backend.DeepSparseBackend(ds_path, ds_plan.buckets, threads=args.threads,
                                                  progress=ds_backend.progress_line)
        for backend in (ds_fixed, ds_buckets):
            backend.warm_up()
        paths["ds384"] = QaInference(ds_fixed, features, seq_plan.fixed_plan(384, "reference length"))
        paths["ds"] = QaInference(ds_buckets, features, ds_plan)
    for key, path in paths.items():
        passes[key] = lambda path=path: harness_pass(path, indices)
    # One untimed sample each: first runs allocate and plan memory.
    if "reference" in passes:
        reference_pass(reference_backend, features, indices[:1])
    for path in paths.values():
        harness_pass(path, indices[:1])
    times = {key: [] for key in passes}
    for _ in range(args.repeats):
        for key, timed_pass in passes.items():
            times[key].append(timed_pass())
    qps = {key: len(indices) / min(seconds) for key, seconds in times.items()}
    for key, seconds in times.items():
        print(f"{names[key]:52s} {qps[key]:8.3f} samples/s  (passes: {', '.join(f'{t:.2f}' for t in seconds)} s)")
    if "onnxruntime" in backends:
        print(f"onnxruntime speed-up over the reference design: {qps['ort'] / qps['reference']:.2f}x "
              f"(over the same path at 384: {qps['ort'] / qps['ort384']:.2f}x)")
    if "deepsparse" in backends:
        print(f"deepsparse buckets over deepsparse at 384: {qps['ds'] / qps['ds384']:.2f}x")
    if len(backends) == 2:
        print(f"deepsparse over onnxruntime: {qps['ds384'] / qps['ort384']:.2f}x at 384, "
              f"{qps['ds'] / qps['ort']:.2f}x at real lengths (buckets against exact lengths)")
        all_lengths = np.asarray(features.lengths)
        same, worst = agreement(collect(paths["ort"], indices), collect(paths["ds"], indices), all_lengths)
        print(f"answers: same argmax start and end on {same}/{len(indices)} samples "
              f"(largest logit difference {worst:.2e})")

if __name__ == "__main__":
    from bench.entry import run
    run(main)
