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
                   np.dtype(np.int64 if elem_type == TensorProto.INT64 else np.int32))


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


def make_seq_dynamic(src, dst):
    """Write to `dst` a copy of the fixed-length model `src` with a symbolic sequence axis.

    Returns True if that copy, run at shorter lengths, gives the same logits as the original
    padded to its fixed length (on the real positions); False otherwise (the graph hard-codes
    the length somewhere, e.g. in a Reshape), in which case `dst` is not left behind.
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
        if not _same_logits_when_cut(src, candidate, fixed, io.input_dtype):
            return False
        os.replace(candidate, dst)
        return True
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)


def _same_logits_when_cut(fixed_path, dynamic_path, fixed, dtype):
    from mlperf_bert.ort_backend import OrtBackend  # imported here: ort_backend imports this module

    lengths = [n for n in PROBE_LENGTHS if n < fixed]
    ids, mask, segments = probe_inputs(lengths, fixed, dtype)
    padded_start, padded_end = OrtBackend(fixed_path).run(ids, mask, segments)
    try:
        dynamic = OrtBackend(dynamic_path, quiet=True)
    except StepError:  # the relabelled graph fails to load: the length is baked in
        return False
    for row, length in enumerate(lengths):
        cut = slice(row, row + 1), slice(0, length)
        try:
            start, end = dynamic.run(ids[cut], mask[cut], segments[cut])
        except StepError:  # e.g. a Reshape to a constant 384 at run time
            return False
        for got, want in ((start[0], padded_start[row, :length]), (end[0], padded_end[row, :length])):
            if np.abs(got - want).max() > PROBE_TOLERANCE or got.argmax() != want.argmax():
                return False
    return True
