"""The inference path (features -> responses) and the LoadGen QSL/SUT around it.

Unlike the reference SUT (a thread per sample, each padded to 384), a worker thread runs
samples through a session at the length the SeqPlan picks, shortest first: one worker on all
cores, or one per instance (mlperf_bert.parallelism), each pinned to its own cores with its own
session. LoadGen callbacks only queue work, so they return at once; with several workers a
query of many samples (Offline) is cut into runs of neighbouring lengths that the workers take
in turn. A backend that runs several requests at once (DeepSparse's multi-stream scheduler, for
Server) gets one worker per stream, each taking the next query from the same queue.
"""
import copy
import math
import queue
import threading
import time

import numpy as np

from mlperf_bert import parallelism


CHUNKS_PER_WORKER = 8


class BatchStats:
    """Batches run, samples in them, real tokens and tokens run (padding included); thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        self.batches = self.samples = self.tokens = self.run_tokens = 0

    def add(self, samples, tokens, run_tokens):
        with self._lock:
            self.batches += 1
            self.samples += samples
            self.tokens += tokens
            self.run_tokens += run_tokens

    def record(self):
        return {"batches": self.batches, "mean_batch": round(self.samples / max(self.batches, 1), 3),
                "padding_fraction": round(1 - self.tokens / max(self.run_tokens, 1), 4)}


class QaInference:
    """Runs feature rows through a backend, each at its planned length."""

    def __init__(self, backend, features, plan, batch_size=1, batch_pad=0):
        self.backend = backend
        self.plan = plan
        self.batch_size = batch_size
        self.batch_pad = batch_pad  # tokens a sample may be padded by to join a batch of nearby lengths
        self.stats = BatchStats()
        self.lengths = np.asarray(features.lengths)
        self._arrays = (features.input_ids, features.input_mask, features.segment_ids)
        self._loaded = {}  # sample index -> inputs cut to its run length

    def on(self, backend):
        """The same samples (loaded ones shared) run on another backend: an instance's view."""
        view = copy.copy(self)
        view.backend = backend
        return view

    def chunks(self, items, workers, index=lambda item: item):
        """`items` (holding sample indices) cut, in length order, into runs for `workers` pulling from one
        queue: about CHUNKS_PER_WORKER each, whole batches, so the last run to finish is short."""
        if workers <= 1 or len(items) <= 1:
            return [list(items)]
        ordered = sorted(items, key=lambda item: self.lengths[index(item)])
        # a multiple of the batch: 339 samples in batches of 8 ended every chunk in a partial batch
        size = self.batch_size * max(1, math.ceil(len(ordered) / (workers * CHUNKS_PER_WORKER * self.batch_size)))
        return [ordered[start:start + size] for start in range(0, len(ordered), size)]

    def _cut(self, index):
        run_length = self.plan.run_length(self.lengths[index])
        return tuple(np.asarray(array[index, :run_length], dtype=self.backend.io.input_dtype)
                     for array in self._arrays)

    def load(self, indices):
        """LoadGen's load_samples: cut and convert untimed, before the samples are issued."""
        for index in indices:
            self._loaded[index] = self._cut(index)

    def unload(self, indices):
        for index in indices:
            self._loaded.pop(index, None)

    def responses(self, indices):
        """Yield, batch by batch, [(position in indices, response)].

        A response is float32 (L, 2), start and end logit of each of the L positions the
        sample ran at. Repeated indices are run again: responses are never reused.
        """
        for batch in self.plan.batches(self.lengths[list(indices)], self.batch_size, self.batch_pad):
            rows = [self._loaded.get(indices[position]) or self._cut(indices[position]) for position in batch]
            own = [len(row[0]) for row in rows]
            width = max(own)
            if min(own) < width:  # nearby lengths: pad with masked tokens (id 0, mask 0, segment 0)
                rows = [tuple(np.pad(array, (0, width - len(array))) for array in row) for row in rows]
            # real tokens, not the rows' lengths: a bucket's own padding counts as padding too
            self.stats.add(len(batch), sum(int(self.lengths[indices[p]]) for p in batch), len(batch) * width)
            start, end = self.backend.run(*(np.stack(column) for column in zip(*rows)))
            yield [(position, np.stack([start[row, :own[row]], end[row, :own[row]]], axis=-1))
                   for row, position in enumerate(batch)]


def run_on_instances(views, pins, indices):
    """Run `indices` once through the instances (views, each pinned to its cores in pins) in worker
    threads pulling runs of neighbouring lengths from one queue, as the SUT does; raise the first error.
    One unpinned view runs in the calling thread."""
    if len(views) == 1 and not pins[0]:
        for _ in views[0].responses(list(indices)):
            pass
        return
    def run(view, chunk):
        for _ in view.responses(chunk):
            pass
    on_each_item(views, pins, views[0].chunks(list(indices), len(views)), run)


def on_each_item(views, pins, items, work):
    """work(view, item) for each of items, every instance (in its pinned thread, as on_each) taking the next one
    from one queue until none is left; raise the first error in the caller's thread."""
    todo = queue.SimpleQueue()
    for item in items:
        todo.put(item)

    def drain(view):
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            work(view, item)
    on_each(views, pins, drain)


def on_each(views, pins, work):
    """work(view) for every instance at once, each in a thread pinned to its cores (pins); raise the first error
    in the caller's thread."""
    errors = []

    def run(view, cores):
        parallelism.pin_current_thread(cores)
        try:
            work(view)
        except Exception as error:
            errors.append(error)
    threads = [threading.Thread(target=run, args=pair) for pair in zip(views, pins)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class QueryTimes:
    """Where each sample's time inside the SUT went: waiting in the queue for a worker, and running (its batch's
    call, from the end of the worker's previous batch of the same query, or from when the worker took it). For
    Server, whose p99 bound a tail of either can break: the cure differs (a lower target or another layout for
    waits, a faster model for long runs). LoadGen's latency also holds its own time before and after the SUT."""

    def __init__(self, lengths):
        self.lengths = lengths
        self.issued = {}   # sample id -> perf_counter when LoadGen handed it over
        self.rows = []     # (waited s, ran s, sample index); list.append is atomic under the GIL

    def issue(self, samples):
        now = time.perf_counter()
        for sample_id, _ in samples:
            self.issued[sample_id] = now

    def done(self, samples, started, ended):
        for sample_id, index in samples:
            self.rows.append((started - self.issued.pop(sample_id, started), ended - started, index))

    def record(self):
        """Percentiles in ms of waited, ran and both; and the slowest 1% (by both): the share of their time spent
        waiting, and their mean real length beside all samples'."""
        if not self.rows:
            return None
        rows = np.array(self.rows)
        waited, ran = rows[:, 0] * 1e3, rows[:, 1] * 1e3
        both = waited + ran
        lengths = self.lengths[rows[:, 2].astype(int)]
        slowest = np.argsort(both)[-max(1, len(rows) // 100):]
        share = float(waited[slowest].sum() / max(both[slowest].sum(), 1e-9))

        def percentiles(values):
            return {name: round(float(np.percentile(values, q)), 2)
                    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
        return {"samples": len(rows), "waited_ms": percentiles(waited), "ran_ms": percentiles(ran),
                "in_sut_ms": percentiles(both),
                "slowest_1pct": {"samples": len(slowest),
                                 "waited_share": round(share, 3),
                                 "ran_ms_mean": round(float(ran[slowest].mean()), 2),
                                 "mean_length": round(float(lengths[slowest].mean()), 1)},
                "mean_length": round(float(lengths.mean()), 1)}


class LoadGenSut:
    """A LoadGen QSL and SUT whose queries are queued to `workers` worker threads (default one).

    views: one QaInference per worker (instances: each on its own session), else all share `inference`;
    pins: the cores each worker pins itself to (mlperf_bert.parallelism), else none.
    If inference fails, the error is kept in `error` and the remaining samples are completed
    empty, so LoadGen ends the test instead of waiting forever.
    """

    def __init__(self, inference, total_count, performance_count, workers=1, views=None, pins=None, timed=False):
        import mlperf_loadgen as lg  # here: QaInference alone (bench/harness.py) runs without LoadGen
        self._lg = lg
        self.inference = inference
        self.times = QueryTimes(inference.lengths) if timed else None   # timed: where each sample's time went
        self.completed = 0
        self.error = None
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        workers = len(views) if views else max(1, workers)
        self._views = views or [inference] * workers
        self._pins = pins or [()] * workers
        self._workers = [threading.Thread(target=self._work, args=(n,), name=f"sut-worker-{n}", daemon=True)
                         for n in range(workers)]
        self.qsl = lg.ConstructQSL(total_count, performance_count, inference.load, inference.unload)
        self.sut = lg.ConstructSUT(self._issue, self._flush)
        for worker in self._workers:
            worker.start()

    def _issue(self, query_samples):
        samples = [(sample.id, sample.index) for sample in query_samples]
        if self.times:
            self.times.issue(samples)
        for chunk in self.inference.chunks(samples, len(self._workers), index=lambda sample: sample[1]):
            self._queue.put(chunk)

    def _flush(self):
        pass  # nothing is held back: the worker runs whatever is queued

    def _work(self, number):
        parallelism.pin_current_thread(self._pins[number])
        inference = self._views[number]
        while (samples := self._queue.get()) is not None:
            pending = dict(enumerate(samples))  # position -> (sample id, index), not yet completed
            started = time.perf_counter()
            if self.error is None:
                try:
                    for batch in inference.responses([index for _, index in samples]):
                        lg = self._lg
                        lg.QuerySamplesComplete([lg.QuerySampleResponse(samples[position][0], response.ctypes.data,
                                                                        response.nbytes)
                                                 for position, response in batch])
                        if self.times:
                            ended = time.perf_counter()
                            self.times.done([samples[position] for position, _ in batch], started, ended)
                            started = ended
                        for position, _ in batch:
                            del pending[position]
                        with self._lock:
                            self.completed += len(batch)
                except Exception as error:  # reported after the test; LoadGen must still finish
                    with self._lock:
                        self.error = self.error or error
            if pending:
                self._lg.QuerySamplesComplete([self._lg.QuerySampleResponse(sample_id, 0, 0)
                                               for sample_id, _ in pending.values()])

    def close(self):
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        self._lg.DestroySUT(self.sut)
        self._lg.DestroyQSL(self.qsl)
