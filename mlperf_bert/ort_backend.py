"""An onnxruntime session for a BERT QA model: batches [B, L] in, start/end logits [B, L] out."""
import os

import numpy as np
import onnxruntime as ort

from engine.errors import StepError
from mlperf_bert import model_adapter


def available_cores():
    return len(os.sched_getaffinity(0))


class OrtBackend:
    """One session, run by one caller at a time, using `threads` cores inside each run.

    seq_len: the model's fixed sequence length, or None when any length runs.
    providers: onnxruntime execution providers, CPU unless told otherwise (e.g. CUDA).
    quiet: log nothing below fatal (for probes that expect some runs to fail).
    """

    def __init__(self, model_path, threads=None, providers=None, quiet=False):
        self.io = model_adapter.inspect(model_path)
        self.seq_len = self.io.seq_len
        self.threads = threads or available_cores()
        options = ort.SessionOptions()
        # Parallelism inside each operator, none between operators: a BERT graph is a chain.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if quiet:
            options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(model_path, options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types share no public base
            raise StepError(f"onnxruntime cannot load {model_path}: {error}") from None
        self._outputs = [self.io.start] if self.io.end is None else [self.io.start, self.io.end]

    def run(self, ids, mask, segments):
        """Return (start, end) float32 [B, L] for int arrays [B, L]."""
        feeds = {name: np.asarray(array, dtype=self.io.input_dtype)
                 for name, array in zip(self.io.input_names, (ids, mask, segments))}
        try:
            outputs = self.session.run(self._outputs, feeds)
        except Exception as error:
            raise StepError(f"onnxruntime failed on a batch of shape {list(np.shape(ids))}: {error}") from None
        if self.io.end is None:
            start, end = outputs[0][..., 0], outputs[0][..., 1]
        else:
            start, end = outputs
        return (np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32))
