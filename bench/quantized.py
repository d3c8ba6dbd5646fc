"""Offline throughput of the harness path on a model and on its int8 (dynamic quantisation), side by side.

    python -m bench.quantized [--samples 32] [--repeats 3] [--layers 12 --hidden 768 --heads 12]
                              [--per-channel auto] [--reduce-range auto] [--weight-type auto]

The fp32 model is bench.harness's random-weight BERT with the official fixed-384 I/O; the int8 one is
made from it by mlperf_bert.quantize (what `get ml-model bert int8-dynamic` runs), settings chosen for
this CPU unless given. Both run mlperf_bert.sut.QaInference on the same samples (real SQuAD feature
lengths), each sample at its real length, shortest first, one caller on all cores. The two alternate
`--repeats` times; the median pass of each counts (min-max shown). The last line compares the answers:
the argmax start and end of each sample's logits over its real tokens (a random model: agreement says
how far int8 moves the logits, nothing about accuracy).
"""
import json
import statistics
from pathlib import Path

import numpy as np

from bench.harness import (_between, agreement, collect, fixed_model, harness_pass, model_args, sample_features,
                           written_whole)
from mlperf_bert import quantize, seq_plan
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.sut import QaInference


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 32, 3)
    parser.add_argument("--threads", type=_between(1, 4096), help="intra-op threads (default: all cores)")
    parser.add_argument("--per-channel", default="auto")
    parser.add_argument("--reduce-range", default="auto")
    parser.add_argument("--weight-type", default="auto")
    args = parser.parse_args(argv)
    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)

    features, indices, source = sample_features(args.samples, args.seed, cache)
    model_path = fixed_model(args, cache)
    fp32_path, plan = seq_plan.prepare(str(model_path), "auto", cache)
    settings, _ = quantize.choose(quantize.cpu_flags(), args.per_channel, args.reduce_range, args.weight_type)
    tag = "_".join(f"{k}-{v}" for k, v in sorted(settings.items()))
    int8_path = cache / f"{Path(model_path).stem}_int8_{tag}.onnx"
    if not int8_path.is_file():
        facts = {}
        written_whole(int8_path, lambda scratch: facts.update(quantize.quantize(str(model_path), str(scratch),
                                                                                settings, str(cache))))
        print("quantised:", json.dumps(facts["vs_fp32"]))
    paths = {"fp32": QaInference(OrtBackend(fp32_path, args.threads), features, plan),
             "int8": QaInference(OrtBackend(str(int8_path), args.threads), features, plan)}
    lengths = np.asarray(features.lengths)[indices]
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, random weights; "
          f"{paths['fp32'].backend.threads} threads; int8 settings {settings} "
          f"(CPU int8 flags: {', '.join(sorted(quantize.VNNI_FLAGS & quantize.cpu_flags())) or 'none'})")
    print(f"samples: {len(indices)} from {source}; real length mean {lengths.mean():.1f}, "
          f"median {np.median(lengths):.0f}, max {lengths.max()}; {plan.description}")
    for path in paths.values():
        harness_pass(path, indices[:1])  # first runs allocate and plan memory
    times = {key: [] for key in paths}
    for _ in range(args.repeats):
        for key, path in paths.items():
            times[key].append(harness_pass(path, indices))
    qps = {key: len(indices) / statistics.median(seconds) for key, seconds in times.items()}
    for key, seconds in times.items():
        print(f"{key}: {qps[key]:8.3f} samples/s median  (min-max {len(indices) / max(seconds):.3f}-"
              f"{len(indices) / min(seconds):.3f}; passes {', '.join(f'{t:.2f}' for t in seconds)} s)")
    print(f"int8 over fp32: {qps['int8'] / qps['fp32']:.2f}x")
    same, worst = agreement(collect(paths["fp32"], indices), collect(paths["int8"], indices),
                            np.asarray(features.lengths))
    print(f"answers: same argmax start and end on {same}/{len(indices)} samples "
          f"(largest logit difference {worst:.3g})")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
