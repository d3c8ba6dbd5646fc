"""An onnxruntime session for a BERT QA model: batches [B, L] in, start/end logits [B, L] out."""
import os

import numpy as np
import onnxruntime as ort

from engine.errors import StepError, UsageError
from mlperf_bert import model_adapter


def available_cores():
    return len(os.sched_getaffinity(0))


def session_config(threads, spin, cores):
    """Session config entries for a session whose caller's thread is pinned to cores[0] (by the caller)."""
    config = {} if spin is None else {"session.intra_op.allow_spinning": "1" if spin else "0"}
    if cores and threads > 1:
        # One entry per pool thread (threads - 1); onnxruntime numbers logical processors from 1.
        config["session.intra_op_thread_affinities"] = ";".join(str(core + 1) for core in cores[1:threads])
    return config


class OrtBackend:
    """One session, run by one caller at a time, using `threads` cores inside each run.

    seq_len: the model's fixed sequence length, or None when any length runs.
    providers: onnxruntime execution providers, CPU unless told otherwise (e.g. CUDA).
    quiet: log nothing below fatal (for probes that expect some runs to fail).
    profile_prefix: write onnxruntime's profile (file name prefix; session.end_profiling() returns its path).
    spin: intra-op threads spin between operators (onnxruntime's default) or sleep; None: the default.
    cores: pin the intra-op pool threads to these cores (see mlperf_bert.parallelism), the caller's
    thread being pinned to the first by the caller.
    """

    def __init__(self, model_path, threads=None, providers=None, quiet=False, spin=None, cores=(), profile_prefix=None):
        self.io, self.model_path = model_adapter.inspect(model_path), model_path
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
        if profile_prefix:
            options.enable_profiling, options.profile_file_prefix = True, str(profile_prefix)
        if spin is not None or cores:
            for key, value in session_config(self.threads, spin, cores).items():
                options.add_session_config_entry(key, value)
        try:
            self.session = ort.InferenceSession(model_path, options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types share no public base
            raise StepError(f"onnxruntime cannot load {model_path}: {error}") from None
        self._outputs = [self.io.start] if self.io.end is None else [self.io.start, self.io.end]

    def describe(self):
        """The runtime as it ran: a venv may hold another onnxruntime than the recipe's (--dep.python.packages)."""
        return {"version": ort.__version__, "providers": self.session.get_providers()}

    def run(self, ids, mask, segments):
        """Return (start, end) float32 [B, L] for int arrays [B, L]."""
        if self.io.batch is not None and len(ids) != self.io.batch:   # onnxruntime's "invalid dimensions", exit 1
            raise UsageError(f"{self.model_path} takes batches of exactly {self.io.batch} sample"
                             f"{'s' if self.io.batch != 1 else ''} (its batch axis is fixed), and this run gave it "
                             f"{len(ids)}", hint="run it with --batch_size=1" if self.io.batch == 1 else
                             "export the model with a dynamic batch axis (mlrun's batches vary in size)")
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
