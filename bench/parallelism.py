"""Offline samples/s of this harness per threads/instances/spinning and batching choice, side by side.

    python -m bench.parallelism [--samples 48] [--repeats 3] [--layers 12 --hidden 768 --heads 12]

One BERT-Base-shaped random model (dynamic axis), the same samples (real SQuAD feature lengths when
../shared/data holds them, else the documented length distribution), the harness's inference path
(mlperf_bert.sut.QaInference on instances, as its SUT runs them). The configurations alternate
`--repeats` times; each line gives the median samples/s, min-max, and the ratio to the old default
(one instance on all cores, onnxruntime's default spinning, batch 1). The last lines compare each
batched configuration's answers with batch 1's (argmax start and end over the real tokens).
"""
import statistics
import time

import numpy as np

from bench.harness import agreement, collect, fixed_model, model_args, sample_features
from mlperf_bert import parallelism, seq_plan
from mlperf_bert.ort_backend import OrtBackend
from mlperf_bert.sut import QaInference, run_on_instances


def configurations(cores):
    count = len(cores)
    yield "old default: 1 instance x all cores, batch 1", dict(instances=1, threads=count, spin=None)
    yield "1 instance x all cores, no spinning", dict(instances=1, threads=count, spin=False)
    if count > 1:
        yield f"{count} instances x 1 core (Offline rule)", dict(instances=count, threads=1, spin=False)
    yield "Offline rule, batch 4, exact lengths", dict(instances=count, threads=1, spin=False, batch=4)
    for pad in (4, 16):
        yield f"Offline rule, batch 4, pad <= {pad} tokens", dict(instances=count, threads=1, spin=False,
                                                                  batch=4, pad=pad)


def build(model, features, plan, cores, config):
    instances, threads = config["instances"], config["threads"]
    pins = parallelism.split_cores(cores, instances, threads) or [()] * instances
    base = QaInference(None, features, plan, config.get("batch", 1), config.get("pad", 0))
    views = [base.on(OrtBackend(model, threads, spin=config["spin"], cores=pin)) for pin in pins]
    return views, pins


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], 48, 3)
    args = parser.parse_args(argv)
    cache = args.scratch
    cache.mkdir(parents=True, exist_ok=True)
    features, indices, source = sample_features(args.samples, args.seed, cache)
    model, plan = seq_plan.prepare(str(fixed_model(args, cache)), "auto", cache)
    cores = parallelism.available_cores()
    lengths = np.asarray(features.lengths)[indices]
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}; {len(cores)} cores; "
          f"{len(indices)} samples from {source}, mean length {lengths.mean():.1f}")
    built = {name: build(model, features, plan, cores, config) for name, config in configurations(cores)}
    for views, pins in built.values():
        run_on_instances(views, pins, indices[:4])  # first-run allocations, untimed
    rates = {name: [] for name in built}
    for _ in range(args.repeats):
        for name, (views, pins) in built.items():
            views[0].stats.reset()
            started = time.perf_counter()
            run_on_instances(views, pins, indices)
            rates[name].append(len(indices) / (time.perf_counter() - started))
    baseline = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        median = statistics.median(values)
        stats = built[name][0][0].stats.record()
        print(f"{name:48s} {median:7.2f} samples/s ({min(values):.2f}-{max(values):.2f})  {median / baseline:.2f}x  "
              f"mean batch {stats['mean_batch']}, padding {stats['padding_fraction']:.1%}")
    reference = collect(next(iter(built.values()))[0][0], indices)
    for name, (views, _) in built.items():
        if views[0].batch_size > 1:
            same, worst = agreement(reference, collect(views[0], indices), features.lengths)
            print(f"answers of {name!r} vs batch 1: {same}/{len(indices)} same, largest logit difference {worst:.2e}")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
