"""DeepSparse engines for a BERT QA model: one per sequence-length bucket (and batch size), compiled up front.

DeepSparse compiles static shapes, so this backend never runs exact lengths: each sample is cut
(its features are zero-padded to 384) to the smallest bucket that holds it, runs through that
bucket's engine, and its response has the bucket's length (the accuracy step pads it to 384).
384 is always a bucket. A batch of B rows runs on the engines compiled for the batch sizes asked
for (1 always among them): as many full batches as fit, then smaller ones, never padded rows.

Engines are compiled once, before LoadGen starts, with a line of progress for each; asking for a
shape that was not compiled is an error, never a compile in the middle of a timed run.
"""
import os
import sys
import tempfile
import time

import numpy as np

from engine.errors import StepError, UsageError
from mlperf_bert import model_adapter, seq_plan, warmup
from mlperf_bert.seq_plan import FEATURE_WIDTH

# --buckets auto: four engines get 1.86x of a fixed 384's throughput on the SQuAD dev lengths
# (cost ~ L + attention), against 1.56x for the reference harness's {192, 384} and 2.29x exact.
DEFAULT_BUCKETS = (128, 192, 256, FEATURE_WIDTH)
SCHEDULERS = ("single_stream", "multi_stream")
# A fresh engine's first ~8 calls take ~270 ms, later ones 2-5 ms: never counted as settled.
SLOW_START_CALLS = 10
WEIGHTS = "weights.bin"  # the static copies' shared external data


def import_deepsparse():
    # DeepSparse and SparseZoo report usage over the network unless told not to.
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    try:
        import deepsparse
    except ImportError as error:
        raise UsageError(f"--backend deepsparse needs the deepsparse package ({error})",
                         hint='run with the interpreter of: bin/mlrun "get backend deepsparse"') from None
    return deepsparse


def prepare(model_path, request, work_dir):
    """(model path to compile, SeqPlan with buckets) for a parsed --buckets request.

    auto means DEFAULT_BUCKETS, or a fixed 384 when the model's 384 axis cannot be made dynamic;
    exact is refused (an engine per length is not what DeepSparse is for).
    """
    if request == "exact":
        raise UsageError("--backend deepsparse compiles an engine per sequence length, so it runs buckets, "
                         "not exact lengths", hint=f"use --buckets auto ({','.join(map(str, DEFAULT_BUCKETS))}) "
                                                   "or a list such as 192,384")
    if request != "auto":
        return seq_plan.prepare(model_path, request, work_dir)
    try:
        return seq_plan.prepare(model_path, DEFAULT_BUCKETS, work_dir)
    except UsageError:  # a fixed-384 model that cannot be made dynamic: auto falls back to 384
        return seq_plan.prepare(model_path, "auto", work_dir)


def split_batch(rows, batch_sizes):
    """[(first row, size)] covering `rows` rows with the compiled batch sizes, largest first.

    batch_sizes must hold 1, so every count is covered without padding rows.
    """
    sizes = sorted(set(batch_sizes), reverse=True)
    if sizes[-1] != 1:
        raise ValueError(f"batch sizes {sizes} lack 1")
    parts, first = [], 0
    while first < rows:
        size = next(size for size in sizes if size <= rows - first)
        parts.append((first, size))
        first += size
    return parts


class EngineCache:
    """Compiled engines by shape (length, batch), each compiled once by compile_fn(length, batch)."""

    def __init__(self, compile_fn):
        self._compile = compile_fn
        self._engines = {}
        self.seconds = {}  # shape -> compile time

    def compile(self, shapes, progress=None):
        """Compile the shapes not compiled yet, shortest first; progress(line) after each."""
        todo = sorted({tuple(shape) for shape in shapes} - set(self._engines))
        for number, (length, batch) in enumerate(todo, 1):
            started = time.perf_counter()
            self._engines[length, batch] = self._compile(length, batch)
            self.seconds[length, batch] = time.perf_counter() - started
            if progress:
                progress(f"  engine {number}/{len(todo)}: length {length}, batch {batch}: "
                         f"compiled in {self.seconds[length, batch]:.1f} s")
        return todo

    def get(self, length, batch):
        try:
            return self._engines[length, batch]
        except KeyError:
            compiled = ", ".join(f"{n}x{b}" for n, b in sorted(self._engines)) or "none"
            raise StepError(f"no deepsparse engine was compiled for length {length}, batch {batch} "
                            f"(compiled length x batch: {compiled})") from None

    @property
    def shapes(self):
        return sorted(self._engines)

    def __len__(self):
        return len(self._engines)


def _load_graph(model_path):
    import onnx
    return onnx.load(model_path)


def _save_static(model, shape, path):
    """Save `model` (a graph loaded in memory, changed here) with every input of rank len(shape) fixed to `shape`."""
    import onnx
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and len(dims) == len(shape):
            for dim, size in zip(dims, shape):
                dim.dim_value = size  # clears dim_param (a oneof)
    onnx.save(model, path)


class StaticCopies:
    """Static-shape copies of one model for DeepSparse to compile, in a scratch folder that close() deletes.

    The weights are written once, as ONNX external data (WEIGHTS) that every copy points to, so each
    further shape costs a graph of a few KB, not another copy of the whole model (1.3 GB for BERT-Large:
    about 5 s of writing per engine). DeepSparse reads external data (checked: the same outputs).
    """

    def __init__(self, model_path):
        from onnx import external_data_helper
        self.graph = _load_graph(model_path)
        external_data_helper.convert_model_to_external_data(self.graph, all_tensors_to_one_file=True,
                                                            location=WEIGHTS, size_threshold=1024)
        self._scratch = tempfile.TemporaryDirectory(prefix="mlrun-deepsparse-")

    def path(self, shape):
        """A copy with its inputs fixed to `shape` ([batch, length]); the first one also writes the weights."""
        path = os.path.join(self._scratch.name, f"len{shape[1]}_batch{shape[0]}.onnx")
        _save_static(self.graph, shape, path)
        return path

    def close(self):
        self._scratch.cleanup()


def _graph_names(model_path):
    import onnx
    model = onnx.load(model_path, load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers], [v.name for v in model.graph.output]


class DeepSparseBackend:
    """Engines for every (bucket, batch size), run by one caller at a time (single_stream) or by
    up to `streams` callers at once (multi_stream, for Server).

    Runs like OrtBackend: run(ids, mask, segments) with int arrays [B, L] returns float32 start and
    end logits [B, L]; L must be one of `lengths`.
    compile_fn(model_path, length, batch): the compiler (tests pass a fake one); default DeepSparse's.
    """

    def __init__(self, model_path, lengths, batch_sizes=(1,), threads=None, scheduler="single_stream",
                 streams=None, progress=None, compile_fn=None):
        if scheduler not in SCHEDULERS:
            raise UsageError(f"deepsparse scheduler must be one of {', '.join(SCHEDULERS)}, not {scheduler!r}")
        self.io = model_adapter.inspect(model_path)
        self.seq_len = self.io.seq_len
        self.model_path = model_path
        self.lengths = tuple(sorted(set(lengths)))
        self.batch_sizes = tuple(sorted(set(batch_sizes) | {1}))
        # DeepSparse counts physical cores; without --threads it picks all of them itself.
        self.threads = threads or len(os.sched_getaffinity(0))
        self._num_cores = threads
        self.scheduler = scheduler
        inputs, outputs = _graph_names(model_path)
        feeds = (self.io.ids, self.io.mask, self.io.segments)
        self._feed_order = [feeds.index(name) for name in inputs]  # graph input i <- our array
        self._outputs = [outputs.index(self.io.start)] + ([] if self.io.end is None else [outputs.index(self.io.end)])
        asked = streams if scheduler == "multi_stream" else None
        if scheduler == "multi_stream" and not streams:
            streams = default_streams(self.threads)
        if compile_fn is None:
            compile_fn = self._deepsparse_compiler(len(inputs), streams)
        self.engines = EngineCache(lambda length, batch: compile_fn(model_path, length, batch))
        self.warmup = {}  # (length, batch) -> warmup.Settling
        shapes = [(length, batch) for length in self.lengths for batch in self.batch_sizes]
        if progress:
            progress(f"deepsparse: compiling {len(shapes)} engine{'s' * (len(shapes) != 1)} of "
                     f"{os.path.basename(model_path)} (lengths {','.join(map(str, self.lengths))}; "
                     f"batch {','.join(map(str, self.batch_sizes))}; {scheduler})")
        started = time.perf_counter()
        try:
            self.engines.compile(shapes, progress)
        finally:
            getattr(compile_fn, "close", lambda: None)()  # the static copies are needed only to compile
        self.compile_seconds = time.perf_counter() - started
        first = self.engines.get(*shapes[0])
        self.threads = getattr(first, "num_cores", None) or self.threads
        if progress and self.supported_ops() is not None:
            progress(f"deepsparse: {len(shapes)} engines compiled in {self.compile_seconds:.1f} s, {self.threads} "
                     f"cores; {self.supported_ops():.0%} of the graph's operators run on DeepSparse's own kernels")
        self.streams = (getattr(first, "num_streams", None) or streams) if scheduler == "multi_stream" else 1
        if asked and self.streams < asked:   # DeepSparse caps them at its cores, with a warning of its own only: the
            # run went on with fewer, recorded as run, the number asked nowhere (OpenVINO's streams are refused so)
            raise UsageError(f"--streams {asked}: DeepSparse runs {self.streams} stream(s) on the {self.threads} "
                             f"core(s) it was given", hint=f"give --streams={self.streams} or fewer, or more cores "
                             "(--threads)")

    def _deepsparse_compiler(self, n_inputs, streams):
        deepsparse = import_deepsparse()
        copies = {}

        def compile_engine(model_path, length, batch):
            # Not compile_model(input_shapes=...): DeepSparse rewrites the model file itself with those
            # shapes (in place), and the file may be a cache entry. Static copies in a scratch folder instead.
            try:
                if model_path not in copies:
                    copies[model_path] = StaticCopies(model_path)
                return deepsparse.compile_model(copies[model_path].path([batch, length]), batch_size=batch,
                                                num_cores=self._num_cores, num_streams=streams,
                                                scheduler=self.scheduler)
            except Exception as error:  # the engine raises RuntimeError and others
                raise StepError(f"deepsparse cannot compile {model_path} for length {length}, batch {batch}: "
                                f"{error}") from None
        compile_engine.close = lambda: [copy.close() for copy in copies.values()]
        return compile_engine

    def warm_up(self, progress=None):
        """Run every engine until its call time settles (its first ~8 calls are ~100x slower), untimed.

        Returns {(length, batch): Settling}, also kept for describe().
        """
        for length, batch in self.engines.shapes:
            arrays = model_adapter.probe_inputs([max(length - 1, 1)] * batch, length, self.io.input_dtype)
            settling = warmup.until_settled(lambda: self.run(*arrays), skip=SLOW_START_CALLS)
            self.warmup[length, batch] = settling
            if progress:
                progress(f"  engine length {length}, batch {batch}: {settling.seconds * 1000:.1f} ms a call after "
                         f"{len(settling.times)} warm-up calls" + ("" if settling.settled else " (not settled)"))
        return self.warmup

    def run(self, ids, mask, segments):
        """Return (start, end) float32 [B, L] for int arrays [B, L]."""
        arrays = tuple(np.asarray(array, dtype=self.io.input_dtype) for array in (ids, mask, segments))
        rows, length = arrays[0].shape
        starts, ends = [], []
        for first, size in split_batch(rows, self.batch_sizes):
            engine = self.engines.get(length, size)
            feeds = [np.ascontiguousarray(arrays[i][first:first + size]) for i in self._feed_order]
            try:
                outputs = engine.run(feeds)
            except Exception as error:
                raise StepError(f"deepsparse failed on a batch of shape {[size, length]}: {error}") from None
            if self.io.end is None:
                pair = outputs[self._outputs[0]]
                starts.append(pair[..., 0])
                ends.append(pair[..., 1])
            else:
                starts.append(outputs[self._outputs[0]])
                ends.append(outputs[self._outputs[1]])
        start = starts[0] if len(starts) == 1 else np.concatenate(starts)
        end = ends[0] if len(ends) == 1 else np.concatenate(ends)
        return np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32)

    def supported_ops(self):
        """DeepSparse's fraction of the graph's operators it runs with its own kernels (None if unknown)."""
        fractions = [getattr(self.engines.get(*shape), "fraction_of_supported_ops", None)
                     for shape in self.engines.shapes]
        fractions = [f for f in fractions if isinstance(f, (int, float))]
        return round(min(fractions), 4) if fractions else None

    def describe(self):
        return {"lengths": list(self.lengths), "batch_sizes": list(self.batch_sizes), "scheduler": self.scheduler,
                "streams": self.streams, "compile_s": round(self.compile_seconds, 2),
                "supported_ops": self.supported_ops(),
                "engines": [{"length": n, "batch": b, "compile_s": round(self.engines.seconds.get((n, b), 0.0), 2)}
                            | self._warmup_facts(n, b) for n, b in self.engines.shapes]}

    def _warmup_facts(self, length, batch):
        settling = self.warmup.get((length, batch))
        if settling is None:
            return {}
        return {"warmup_calls": len(settling.times), "warmup_settled": settling.settled,
                "call_ms": round(settling.seconds * 1000, 3)}


def default_streams(cores):
    """Concurrent requests for the multi-stream scheduler: 2 on small machines (DeepSparse's own default
    gives 1 on 2 cores, which is no multi-stream at all), a stream per 4 cores on larger ones."""
    return min(cores, max(2, cores // 4))


def batch_sizes_for(scenario, batch_size):
    """Batch sizes to compile: Offline and MultiStream batch within a bucket; the others run one sample."""
    return (1, batch_size) if scenario in ("Offline", "MultiStream") else (1,)


def progress_line(text):
    print(text, flush=True, file=sys.stdout)
