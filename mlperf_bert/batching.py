"""How many samples one inference call takes, and how far their lengths may differ, chosen per scenario, backend,
precision and CPU when --batch_size is left out.

The rule (measured through the app, `bin/mlrun "app mlperf bert _openvino _cpu _random" --precision=P
--count=512` with and without `--batch_size=4 --batch_pad=16`: BERT-Base shape, real SQuAD lengths, Offline, the
Xeon with AMX, 2 cores, December 6, three alternating rounds; docs/performance.md, "The batch rule"):
  Offline, OpenVINO, a precision AMX multiplies (int8, bf16, int8-bf16) on a CPU with AMX for it: batches of up
      to SIZE samples whose lengths differ by at most PAD tokens (padded, masked: the same answers). AMX
      multiplies tiles of 16 rows; one short sample gives a weight product few rows for each pass over its
      weights, and a batch gives it more: at 4 within 16 tokens bf16 ran 1.34-1.52x its batch-1 runs, int8
      1.07-1.17x, int8-bf16 1.15-1.29x; 8 ran int8 1.08-1.24x and bf16 1.02-1.14x 4's (int8-bf16 0.96-1.12x, and
      1.09-1.26x in another run).
  Anything else: one sample per call.
      fp32 gained nothing (OpenVINO 0.98-1.09x in the same rounds; onnxruntime within noise, bench.parallelism);
      SingleStream and Server send one sample per query, run as it comes; MultiStream's query of 8 samples runs
      on one instance, latency first (not measured batched: left at one); a CPU without AMX (AVX512_BF16 or
      VNNI alone) or under an ISA cap below it was not measured batched; DeepSparse compiles an engine per
      batch size, and TensorRT engines are built for theirs (their recipes' default, 1).
--batch_size (with --batch_pad, 0 unless given) overrides the rule; --batch_pad alone replaces the rule's pad where
the rule batches (a sweep over precisions may give one pad to all) and does nothing where it runs one sample per
call, which the run says. What was chosen and why is recorded in the run's summary.json ("batching") and said in its
summary.
"""
import os
from dataclasses import dataclass, field

# the quantiser's reader (an empty set where there is no /proc/cpuinfo: the rule then batches nothing)
from mlperf_bert.quantize import cpu_flags

# measured against batch 1 (4 within 16) and 8 against 4 (within 16 tokens; within 32 no better): docs/performance.md
SIZE, PAD = 8, 16
AMX_FLAGS = {"int8": {"amx_int8"}, "bf16": {"amx_bf16"}, "int8-bf16": {"amx_int8", "amx_bf16"}}
# a model with int8 operators of its own runs them int8 whatever --precision says of the rest
QUANTISED_AS = {"fp32": "int8", "bf16": "int8-bf16"}
# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA, which OpenVINO's CPU kernels honour): the values that leave AMX in reach
UNCAPPED = ("", "ALL", "DEFAULT")


def ran_precision(backend, precision, quantised):
    """The precision a run is recorded at: an int8 model (the official _int8, a --model file) runs its int8 operators
    int8 on OpenVINO whatever --precision says of the rest (int8; with bf16, int8-bf16), as the rule above counts it
    (a run of one was recorded fp32, and `runs --where precision=int8` missed it)."""
    return QUANTISED_AS.get(precision, precision) if backend == "openvino" and quantised else precision


def isa_limit():
    """oneDNN's ISA cap as "NAME=VALUE" ("" where none): ONEDNN_MAX_CPU_ISA, else its older name DNNL_MAX_CPU_ISA
    (oneDNN reads both, the first winning; a cap under the second name batched "on AMX")."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return ""


@dataclass(frozen=True)
class Batching:
    size: int
    pad: int
    rule: str
    overridden: tuple = field(default=())

    def record(self):
        """What summary.json's "batching" holds (beside the run's own counts)."""
        return {"batch_size": self.size, "pad_tokens": self.pad, "rule": self.rule, "overridden": list(self.overridden)}


def choose(scenario, backend, precision, *, size=None, pad=None, quantised=False, flags=None, isa_cap=None):
    """The Batching for a run: --batch_size/--batch_pad as given (None: left to the rule above). quantised: the
    model holds int8 operators of its own (the official int8 model, an _int8-dynamic or a --model int8 file), so
    fp32 runs them int8 and bf16 is int8-bf16. flags: the CPU's (None: this machine's); isa_cap: oneDNN's ISA cap,
    "NAME=VALUE" or a bare value (None: this process's, isa_limit())."""
    overridden = (("batch_size",) if size is not None else ()) + (("batch_pad",) if pad is not None else ())
    if size is not None:
        return Batching(size, pad or 0, "given", overridden)
    label = precision
    if quantised and precision in QUANTISED_AS:
        precision = QUANTISED_AS[precision]
        label = f"{precision} (an int8 model)"
    size, rule = _rule(scenario, backend, precision, label, cpu_flags() if flags is None else flags,
                       isa_limit() if isa_cap is None else isa_cap)
    if size == 1:   # a pad given alone is recorded, and said to do nothing
        return Batching(1, pad or 0, rule, overridden)
    # a pad given alone: the rule's batch size, within the pad given
    within = f"within {PAD} tokens" if pad is None else f"within {pad} tokens (--batch_pad)"
    return Batching(size, PAD if pad is None else pad, f"{rule} {within}", overridden)


def _rule(scenario, backend, precision, label, flags, isa_cap):
    """(samples per call, why) by the rule above; label: the precision as the run's words say it."""
    one = f"{scenario}, {backend} {label}: one sample per call"
    if scenario != "Offline":
        return 1, f"{one} (Offline alone batches by the rule)"
    if backend != "openvino":
        return 1, (f"{one} (the rule batches OpenVINO's int8, bf16 and int8-bf16 on AMX alone, where batches were "
                   "measured faster)")
    if precision not in AMX_FLAGS:
        return 1, f"{one} (it ran no faster batched)"
    missing = sorted(AMX_FLAGS[precision] - flags)
    if missing:
        return 1, f"{one} (no {' or '.join(missing)} among the CPU's flags; batching was measured on AMX only)"
    name, _, value = isa_cap.rpartition("=")   # a bare value (tests, callers of old) is ONEDNN_MAX_CPU_ISA's
    if value.upper() not in UNCAPPED and "AMX" not in value.upper():
        return 1, (f"{one} ({name or 'ONEDNN_MAX_CPU_ISA'}={value} keeps the kernels below AMX; batching was "
                   "measured on AMX only)")
    return SIZE, f"Offline, OpenVINO {label} on AMX: batches of up to {SIZE} samples"
