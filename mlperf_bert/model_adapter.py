"""Map a BERT QA ONNX model's inputs and outputs to ids/mask/segments and start/end logits.

Exported models name their tensors differently (the fp32 MLPerf model says input_mask and
segment_ids, the int8 one attention_mask and token_type_ids; some emit one [..., 2] output),
so the harness asks this module instead of assuming names.
"""
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from engine.errors import MlrunError, StepError

INPUT_ALIASES = {
    "ids": ("input_ids",),
    "mask": ("input_mask", "attention_mask"),
    "segments": ("segment_ids", "token_type_ids"),
}
OUTPUT_ALIASES = {
    "start": ("output_start_logits", "start_logits"),
    "end": ("output_end_logits", "end_logits"),
}
SEQ_DIM_NAME = "seq"
# Probe lengths for make_seq_dynamic: short, odd, and one full window, all against 384 padding.
PROBE_LENGTHS = (37, 200)
PROBE_TOLERANCE = 1e-3
# A cut-vs-padded difference up to this many times the model's own padding noise is that noise
# (a dynamically quantised BERT: both about 0.03-0.08), not a graph that depends on its length.
NOISE_FACTOR = 2.0
NOISE_PADDINGS = 2
# ... in a graph that quantises activations at run time (dynamic quantisation): nowhere else is there noise.
RUN_TIME_QUANTISERS = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM")


@dataclass(frozen=True)
class ModelIO:
    """Tensor names and the sequence axis of a BERT QA model."""
    ids: str
    mask: str
    segments: str
    start: str
    end: str | None  # None: `start` names a single [..., 2] output holding both
    seq_len: int | None  # None when the sequence axis is symbolic
    input_dtype: np.dtype
    batch: int | None = None  # None when the batch axis is symbolic; else the only batch size the model runs

    @property
    def input_names(self):
        return self.ids, self.mask, self.segments


def _dims(value_info):
    """Shape as a list of ints (fixed) and None (symbolic or unknown)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _describe(values):
    """input_ids[batch, 384], ... as a person reads shapes."""
    def shape(value):
        return ", ".join(str(d.dim_value or d.dim_param or "?") for d in value.type.tensor_type.shape.dim)
    return ", ".join(f"{v.name}[{shape(v)}]" for v in values) or "(none)"


def _pick(values, aliases):
    by_name = {v.name: v for v in values}
    return next((by_name[name] for name in aliases if name in by_name), None)


def _graph_io(model):
    initializers = {init.name for init in model.graph.initializer}
    # Old exporters list weights among the graph inputs; they are not feeds.
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return inputs, list(model.graph.output)


def _load_header(path):
    if not os.path.isfile(path):
        raise MlrunError(f"model file not found: {path}")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others for a non-model file
        raise MlrunError(f"{path} is not a readable ONNX model: {error}") from None


def inspect(path):
    """Return the ModelIO of the model at `path`; MlrunError if it is not a BERT QA model."""
    model = _load_header(path)
    inputs, outputs = _graph_io(model)
    picked = {role: _pick(inputs, aliases) for role, aliases in INPUT_ALIASES.items()}
    missing = [role for role, value in picked.items() if value is None]
    if missing:
        expected = "; ".join(f"{role}: {' or '.join(INPUT_ALIASES[role])}" for role in INPUT_ALIASES)
        raise MlrunError(f"cannot map the inputs of {path}: it has {_describe(inputs)}; expected {expected}",
                         hint=f"no input found for {', '.join(missing)}")
    start, end = _pick(outputs, OUTPUT_ALIASES["start"]), _pick(outputs, OUTPUT_ALIASES["end"])
    if start is None or end is None:
        start, end = _single_pair_output(outputs, path), None
    ids = picked["ids"]
    dims = _dims(ids)
    if len(dims) != 2:
        raise MlrunError(f"{path}: input {ids.name} has shape {dims}, expected [batch, seq]")
    elem_type = ids.type.tensor_type.elem_type
    if elem_type not in (TensorProto.INT64, TensorProto.INT32):
        raise MlrunError(f"{path}: input {ids.name} is {TensorProto.DataType.Name(elem_type)}, expected int64 or int32")
    return ModelIO(ids.name, picked["mask"].name, picked["segments"].name, start.name,
                   end.name if end is not None else None, dims[1],
                   np.dtype(np.int64 if elem_type == TensorProto.INT64 else np.int32), dims[0])


def _single_pair_output(outputs, path):
    pairs = [v for v in outputs if _dims(v)[-1:] == [2]]
    if len(pairs) != 1:
        expected = (f"{' or '.join(OUTPUT_ALIASES['start'])} and {' or '.join(OUTPUT_ALIASES['end'])}, "
                    "or one output of shape [..., 2]")
        raise MlrunError(f"cannot map the outputs of {path}: it has {_describe(outputs)}; expected {expected}")
    return pairs[0]


def probe_inputs(lengths, width, dtype=np.int64, seed=0):
    """A padded batch shaped like SQuAD features: [CLS] query [SEP] doc [SEP], zeros after."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), dtype)
    mask = np.zeros_like(ids)
    segments = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1000, 2000, length)
        ids[row, 0] = 101  # [CLS]: a token every BERT vocabulary has
        mask[row, :length] = 1
        segments[row, length // 3:length] = 1
    return ids, mask, segments


@dataclass(frozen=True)
class SeqVerdict:
    """Whether a fixed-length model was made dynamic, and why (the measured differences)."""
    dynamic: bool
    reason: str


def make_seq_dynamic(src, dst):
    """Write to `dst` a copy of the fixed-length model `src` with a symbolic sequence axis.

    Returns True if that copy is kept (see seq_dynamic_verdict), False otherwise (the graph
    hard-codes the length somewhere, e.g. in a Reshape), in which case `dst` is not left behind.
    """
    return seq_dynamic_verdict(src, dst).dynamic


def seq_dynamic_verdict(src, dst):
    """make_seq_dynamic, returning a SeqVerdict whose reason says what was measured.

    The copy is kept when, run at shorter lengths, it gives the logits of the original padded to
    its fixed length (on the real positions) within PROBE_TOLERANCE; or, for a graph that quantises
    activations at run time (dynamic quantisation: its scales see the padding too), within
    NOISE_FACTOR times its own noise: how far its logits move when only the masked-out padding
    changes. An exact graph has no such noise, so a larger difference means the graph depends on
    its fixed length (e.g. a Reshape, or a mean over all positions).
    """
    io = inspect(src)
    if io.seq_len is None:
        raise MlrunError(f"{src} already has a dynamic sequence axis")
    model = onnx.load(src)
    fixed = io.seq_len
    inputs, outputs = _graph_io(model)
    for value in inputs + outputs:
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].dim_value == fixed:
            dims[1].dim_param = SEQ_DIM_NAME  # setting dim_param clears dim_value (a oneof)
    # Inferred intermediate shapes would still say `fixed`; let onnxruntime infer them again.
    del model.graph.value_info[:]
    folder = os.path.dirname(os.path.abspath(dst))
    handle, candidate = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    os.chmod(candidate, 0o644)  # mkstemp makes it private; the copy is an ordinary model file
    try:
        onnx.save(model, candidate)
        ops = {node.op_type for node in model.graph.node}
        verdict = _judge_cut_logits(src, candidate, fixed, io.input_dtype, ops)
        if verdict.dynamic:
            os.replace(candidate, dst)
        return verdict
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)


def _max_diff(a, b, lengths):
    return max(float(np.abs(a[row, :n] - b[row, :n]).max()) for row, n in enumerate(lengths))


def _judge_cut_logits(fixed_path, dynamic_path, fixed, dtype, ops):
    from mlperf_bert.ort_backend import OrtBackend  # imported here: ort_backend imports this module

    lengths = [n for n in PROBE_LENGTHS if n < fixed]
    ids, mask, segments = probe_inputs(lengths, fixed, dtype)
    original = OrtBackend(fixed_path)
    padded = _run_rows(original, ids, mask, segments)
    cannot = f"cannot be made dynamic: the graph hard-codes its {fixed} sequence length"
    try:
        dynamic = OrtBackend(dynamic_path, quiet=True)
        # At the full length the relabelled graph must compute what the original does.
        full = _max_diff(_run_rows(dynamic, ids, mask, segments)[0], padded[0], [fixed] * len(lengths))
    except StepError as error:  # it fails to load or to run: the length is baked in
        return SeqVerdict(False, f"{cannot} (relabelled, it fails at length {fixed}: {_first_line(error)})")
    if full > PROBE_TOLERANCE:
        return SeqVerdict(False, f"{cannot} (relabelled, it gives other logits even at length {fixed}: "
                                 f"max difference {full:.3g})")
    diff, argmax_same = 0.0, True
    for row, length in enumerate(lengths):
        cut = slice(row, row + 1), slice(0, length)
        try:
            got = dynamic.run(ids[cut], mask[cut], segments[cut])
        except StepError as error:  # e.g. a Reshape to a constant 384 at run time
            return SeqVerdict(False, f"{cannot} (it fails at length {length}: {_first_line(error)})")
        for cut_logits, padded_logits in zip(got, padded):
            want = padded_logits[row, :length]
            diff = max(diff, float(np.abs(cut_logits[0] - want).max()))
            argmax_same = argmax_same and cut_logits[0].argmax() == want.argmax()
    measured = f"lengths {', '.join(map(str, lengths))} vs padded to {fixed}: max logit difference {diff:.3g}"
    if diff <= PROBE_TOLERANCE and argmax_same:
        return SeqVerdict(True, f"made dynamic: same logits ({measured})")
    noise = _padding_noise(original, ids, mask, segments, padded, lengths)
    quantiser = next((op for op in RUN_TIME_QUANTISERS if op in ops), None)
    if quantiser is None:
        return SeqVerdict(False, f"{cannot}: {measured} (an exact graph: nothing in it is quantised at run time; "
                                 f"its logits move by {noise:.3g} when only the masked-out padding changes)")
    if diff <= NOISE_FACTOR * max(noise, PROBE_TOLERANCE):
        return SeqVerdict(True, f"made dynamic: {measured}, within the model's own noise: it quantises "
                                f"activations at run time ({quantiser}, scales over the padding too) and its logits "
                                f"move by {noise:.3g} when only the masked-out padding changes")
    return SeqVerdict(False, f"{cannot}: {measured}, beyond the model's own noise ({quantiser}: {noise:.3g} when "
                             f"only the masked-out padding changes)")


def _run_rows(backend, ids, mask, segments):
    """backend.run of the probe batch; row by row for a model whose batch axis is fixed at 1 (it ran the two
    probe rows at once and failed with onnxruntime's words, though it runs at --batch_size=1)."""
    if backend.io.batch != 1 or len(ids) == 1:
        return backend.run(ids, mask, segments)
    rows = [backend.run(ids[r:r + 1], mask[r:r + 1], segments[r:r + 1]) for r in range(len(ids))]
    return tuple(np.concatenate(parts) for parts in zip(*rows))


def _first_line(error, limit=160):
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _padding_noise(backend, ids, mask, segments, padded, lengths):
    """How far the logits on the real positions move when only the masked-out padding tokens change
    (the largest over NOISE_PADDINGS other paddings)."""
    noise = 0.0
    for seed in range(1, NOISE_PADDINGS + 1):
        rng, other = np.random.default_rng(seed), ids.copy()
        for row, length in enumerate(lengths):
            other[row, length:] = rng.integers(1000, 2000, other.shape[1] - length)
        moved = _run_rows(backend, other, mask, segments)
        noise = max(noise, *(_max_diff(a, b, lengths) for a, b in zip(moved, padded)))
    return noise
