"""A BERT question-answering ONNX graph with random weights, built with `onnx` alone.

No real SQuAD-tuned weights can be had offline, so plumbing and speed are tested on
graphs with the official shapes and I/O names. Weights are drawn from one seeded
generator in a fixed order, so the same arguments give the same bytes.
"""
import argparse
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB_SIZE = 30522
MAX_POSITIONS = 512
TYPE_VOCAB_SIZE = 2
OPSET = 17  # first opset with LayerNormalization; onnxruntime 1.23 runs it natively

INPUT_NAMES = {
    "mlperf": ("input_ids", "input_mask", "segment_ids"),
    "hf": ("input_ids", "attention_mask", "token_type_ids"),
}
OUTPUT_NAMES = ("output_start_logits", "output_end_logits")


class _GraphBuilder:
    """Collects nodes and initializers; weights come from one seeded generator."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name, shape, std):
        values = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        return self.const(name, values)

    def op(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def linear(self, prefix, x, fan_in, fan_out):
        # std 1/sqrt(fan_in) keeps activations near unit scale, so attention is not
        # uniform and the QA logits differ from token to token.
        w = self.weight(f"{prefix}.weight", (fan_in, fan_out), 1.0 / math.sqrt(fan_in))
        b = self.weight(f"{prefix}.bias", (fan_out,), 0.02)
        return self.op("Add", [self.op("MatMul", [x, w], f"{prefix}.matmul"), b], f"{prefix}.out")

    def layer_norm(self, prefix, x, hidden):
        gamma = self.const(f"{prefix}.gamma", np.ones(hidden, np.float32))
        beta = self.const(f"{prefix}.beta", np.zeros(hidden, np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], f"{prefix}.out", axis=-1, epsilon=1e-12)


def _embeddings(g, ids, segments, hidden):
    """Hugging Face BertEmbeddings as torch exports it: word + token_type, then + position, LayerNorm.

    Position ids are a [1, 512] buffer sliced to the runtime sequence length, so the graph runs at
    any length (and onnxruntime's optimiser recognises the pattern as EmbedLayerNormalization).
    """
    word = g.weight("embeddings.word", (VOCAB_SIZE, hidden), 0.02)
    position = g.weight("embeddings.position", (MAX_POSITIONS, hidden), 0.02)
    token_type = g.weight("embeddings.token_type", (TYPE_VOCAB_SIZE, hidden), 0.02)
    seq_len = g.op("Gather", [g.op("Shape", [ids], "embeddings.ids_shape"), g.const("axis1", np.array(1, np.int64))],
                   "embeddings.seq_len")
    seq_end = g.op("Unsqueeze", [seq_len, g.const("embeddings.axes0", np.array([0], np.int64))], "embeddings.seq_end")
    position_ids = g.op("Slice", [g.const("embeddings.position_ids", np.arange(MAX_POSITIONS, dtype=np.int64)[None]),
                                  g.const("embeddings.zero", np.array([0], np.int64)), seq_end,
                                  g.const("embeddings.axes1", np.array([1], np.int64)),
                                  g.const("embeddings.step", np.array([1], np.int64))], "embeddings.positions")
    with_types = g.op("Add", [g.op("Gather", [word, ids], "embeddings.word_out"),
                              g.op("Gather", [token_type, segments], "embeddings.token_type_out")], "embeddings.sum1")
    summed = g.op("Add", [with_types, g.op("Gather", [position, position_ids], "embeddings.position_out")],
                  "embeddings.sum")
    return g.layer_norm("embeddings.ln", summed, hidden)


def _additive_mask(g, mask):
    """(1 - mask) * -10000 shaped [batch, 1, 1, seq] (mask[:, None, None, :]), added to the attention scores."""
    expanded = g.op("Unsqueeze", [g.op("Unsqueeze", [mask, g.const("mask.axis1", np.array([1], np.int64))],
                                       "mask.unsqueezed"), g.const("mask.axis2", np.array([2], np.int64))],
                    "mask.expanded")
    as_float = g.op("Cast", [expanded], "mask.float", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("mask.one", np.array(1.0, np.float32)), as_float], "mask.inverted")
    return g.op("Mul", [inverted, g.const("mask.neg", np.array(-10000.0, np.float32))], "mask.additive")


def _attention(g, prefix, x, mask, hidden, heads, head_shape):
    """Self-attention: Q/K/V projections split into heads, softmax(QK^T / sqrt(d) + mask) V, merged, projected."""
    head_dim = hidden // heads

    def split_heads(name, perm):
        projected = g.linear(f"{prefix}.{name}", x, hidden, hidden)
        return g.op("Transpose", [g.op("Reshape", [projected, head_shape], f"{prefix}.{name}.heads")],
                    f"{prefix}.{name}.t", perm=perm)

    q = split_heads("query", [0, 2, 1, 3])
    k_t = split_heads("key", [0, 2, 3, 1])  # torch folds transpose_for_scores and .transpose(-1, -2) into one
    v = split_heads("value", [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k_t], f"{prefix}.qk"),
                          g.const(f"{prefix}.scale", np.array(math.sqrt(head_dim), np.float32))],
                  f"{prefix}.scores")
    probs = g.op("Softmax", [g.op("Add", [scores, mask], f"{prefix}.masked")], f"{prefix}.probs", axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v], f"{prefix}.context")], f"{prefix}.context.t",
                   perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [context, g.const(f"{prefix}.merge_shape", np.array([0, 0, hidden], np.int64))],
                  f"{prefix}.merged")
    return g.linear(f"{prefix}.output", merged, hidden, hidden)


def _gelu(g, prefix, x):
    """Exact GELU as torch exports F.gelu: (x * (1 + erf(x / sqrt(2)))) * 0.5."""
    erf = g.op("Erf", [g.op("Div", [x, g.const(f"{prefix}.sqrt2", np.array(math.sqrt(2.0), np.float32))],
                             f"{prefix}.scaled")], f"{prefix}.erf")
    one_plus = g.op("Add", [erf, g.const(f"{prefix}.one", np.array(1.0, np.float32))], f"{prefix}.one_plus")
    x_times = g.op("Mul", [x, one_plus], f"{prefix}.x_times")
    return g.op("Mul", [x_times, g.const(f"{prefix}.half", np.array(0.5, np.float32))], f"{prefix}.out")


def _encoder_layer(g, index, x, mask, hidden, heads, ffn, head_shape):
    prefix = f"layer{index}"
    attended = _attention(g, f"{prefix}.attention", x, mask, hidden, heads, head_shape)
    x = g.layer_norm(f"{prefix}.attention.ln", g.op("Add", [attended, x], f"{prefix}.attention.residual"), hidden)
    inner = _gelu(g, f"{prefix}.gelu", g.linear(f"{prefix}.intermediate", x, hidden, ffn))
    out = g.linear(f"{prefix}.ffn_output", inner, ffn, hidden)
    return g.layer_norm(f"{prefix}.ffn.ln", g.op("Add", [out, x], f"{prefix}.ffn.residual"), hidden)


def _positive_int(value, what):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"{what} must be a positive integer or 'dynamic', not {value!r}")
    return number


def build(layers=12, hidden=768, heads=12, ffn=None, seq=384, seed=0, input_names="mlperf",
          opset=OPSET, hardcode_seq_reshape=False):
    """Return an onnx.ModelProto of a BERT QA model with random weights.

    seq: an int for a fixed sequence axis, or None / "dynamic" for a symbolic one.
    hardcode_seq_reshape: bake seq into the attention Reshape constants (as some exported
    models do), so the graph only runs at that length even if its inputs are relabelled.
    """
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    if input_names not in INPUT_NAMES:
        raise ValueError(f"input_names must be one of {sorted(INPUT_NAMES)}, not {input_names!r}")
    seq = None if seq in (None, "dynamic") else _positive_int(seq, "seq")
    if hardcode_seq_reshape and seq is None:
        raise ValueError("hardcode_seq_reshape needs a fixed seq")
    ffn = ffn or 4 * hidden

    g = _GraphBuilder(seed)
    ids_name, mask_name, segments_name = INPUT_NAMES[input_names]
    heads_dims = [-1, seq] if hardcode_seq_reshape else [0, 0]
    head_shape = g.const("head_shape", np.array(heads_dims + [heads, hidden // heads], np.int64))
    x = _embeddings(g, ids_name, segments_name, hidden)
    mask = _additive_mask(g, mask_name)
    for index in range(layers):
        x = _encoder_layer(g, index, x, mask, hidden, heads, ffn, head_shape)
    logits = g.linear("qa_outputs", x, hidden, 2)
    start, end = OUTPUT_NAMES
    g.nodes.append(helper.make_node("Split", [logits], ["qa.start", "qa.end"], name="qa.split", axis=-1))
    last_axis = g.const("qa.last_axis", np.array([-1], np.int64))
    g.op("Squeeze", ["qa.start", last_axis], start)
    g.op("Squeeze", ["qa.end", last_axis], end)

    seq_dim = seq if seq is not None else "seq"
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", seq_dim])
              for name in (ids_name, mask_name, segments_name)]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", seq_dim]) for name in OUTPUT_NAMES]
    graph = helper.make_graph(g.nodes, "bert_qa_random", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version for the opset: onnx 1.19 would otherwise write IR 12,
    # newer than onnxruntime 1.23 accepts.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="mlperf_bert.random_model",
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the .onnx file")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=None, help="FFN width (default 4 x hidden)")
    parser.add_argument("--seq", default="384", help="fixed sequence length, or 'dynamic'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", choices=sorted(INPUT_NAMES), default="mlperf", help="input naming style")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--hardcode-seq-reshape", action="store_true",
                        help="bake the fixed seq into Reshape constants (graph cannot be made dynamic)")
    args = parser.parse_args(argv)
    try:
        model = build(args.layers, args.hidden, args.heads, args.ffn, args.seq, args.seed, args.names,
                      args.opset, args.hardcode_seq_reshape)
    except ValueError as error:
        parser.error(str(error))
    onnx.save(model, args.out)
    print(f"wrote {args.out}: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, "
          f"seq {args.seq}, inputs {', '.join(INPUT_NAMES[args.names])}")


if __name__ == "__main__":
    main()
