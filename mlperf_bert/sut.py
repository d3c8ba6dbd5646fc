"""The inference path (features -> responses) and the LoadGen QSL/SUT around it.

Unlike the reference SUT (a thread per sample, each padded to 384), one worker thread runs
every sample through one session that uses all cores, at the length the SeqPlan picks,
shortest first. LoadGen callbacks only queue work, so they return at once. A backend that runs
several requests at once (DeepSparse's multi-stream scheduler, for Server) gets one worker per
stream, each taking the next query from the same queue.
"""
import queue
import threading

import numpy as np


class QaInference:
    """Runs feature rows through a backend, each at its planned length."""

    def __init__(self, backend, features, plan, batch_size=1):
        self.backend = backend
        self.plan = plan
        self.batch_size = batch_size
        self.lengths = np.asarray(features.lengths)
        self._arrays = (features.input_ids, features.input_mask, features.segment_ids)
        self._loaded = {}  # sample index -> inputs cut to its run length

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
        for batch in self.plan.batches(self.lengths[list(indices)], self.batch_size):
            rows = [self._loaded.get(indices[position]) or self._cut(indices[position]) for position in batch]
            start, end = self.backend.run(*(np.stack(column) for column in zip(*rows)))
            yield [(position, np.stack([start[row], end[row]], axis=-1)) for row, position in enumerate(batch)]


class LoadGenSut:
    """A LoadGen QSL and SUT whose queries are queued to `workers` worker threads (default one).

    If inference fails, the error is kept in `error` and the remaining samples are completed
    empty, so LoadGen ends the test instead of waiting forever.
    """

    def __init__(self, inference, total_count, performance_count, workers=1):
        import mlperf_loadgen as lg  # here: QaInference alone (bench/harness.py) runs without LoadGen
        self._lg = lg
        self.inference = inference
        self.completed = 0
        self.error = None
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        self._workers = [threading.Thread(target=self._work, name=f"sut-worker-{n}", daemon=True)
                         for n in range(max(1, workers))]
        self.qsl = lg.ConstructQSL(total_count, performance_count, inference.load, inference.unload)
        self.sut = lg.ConstructSUT(self._issue, self._flush)
        for worker in self._workers:
            worker.start()

    def _issue(self, query_samples):
        self._queue.put([(sample.id, sample.index) for sample in query_samples])

    def _flush(self):
        pass  # nothing is held back: the worker runs whatever is queued

    def _work(self):
        while (samples := self._queue.get()) is not None:
            pending = dict(enumerate(samples))  # position -> (sample id, index), not yet completed
            if self.error is None:
                try:
                    for batch in self.inference.responses([index for _, index in samples]):
                        lg = self._lg
                        lg.QuerySamplesComplete([lg.QuerySampleResponse(samples[position][0], response.ctypes.data,
                                                                        response.nbytes)
                                                 for position, response in batch])
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
