"""How long each sample runs, and in which order and batches.

A sample runs at its real length (the model's sequence axis is dynamic), at the smallest
bucket that holds it, or at the model's fixed length. The choice depends on the sample alone,
never on its neighbours, so its response bytes are the same in every mode and scenario; the one
exception is batching of nearby lengths (a batch pad above 0), where a sample may be padded up
to its batch's longest (masked tokens: the same answer, logits equal within float noise), and
its response is cut back to its own run length.
"""
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.digests import file_digest
from engine.errors import MlrunError, UsageError
from mlperf_bert import model_adapter

FEATURE_WIDTH = 384  # every feature is padded to this many tokens


def parse_buckets(text):
    """--buckets value -> "auto", "exact", or a sorted tuple of lengths ending at FEATURE_WIDTH."""
    if text in ("auto", "exact"):
        return text
    try:
        lengths = {int(part) for part in text.split(",")}
    except ValueError:
        lengths = set()
    if not lengths or not all(0 < n <= FEATURE_WIDTH for n in lengths):
        raise UsageError(f"--buckets must be auto, exact, or lengths in 1..{FEATURE_WIDTH} separated by commas, "
                         f"not {text!r}")
    # Samples longer than every bucket still need somewhere to run.
    return tuple(sorted(lengths | {FEATURE_WIDTH}))


@dataclass(frozen=True)
class SeqPlan:
    """buckets: the run lengths to round up to, or None to run each sample at its real length."""
    buckets: tuple | None
    description: str

    def run_length(self, length):
        if self.buckets is None:
            return max(int(length), 1)
        return next(bucket for bucket in self.buckets if bucket >= length)

    def batches(self, lengths, batch_size, pad=0):
        """Positions into `lengths` (real lengths of the samples to run), grouped in batches of at
        most batch_size whose run lengths differ by at most `pad` tokens (0: one run length),
        shortest first; ties keep their order. A batch runs at its longest run length."""
        run_lengths = [self.run_length(length) for length in lengths]
        batches = []
        for position in sorted(range(len(lengths)), key=run_lengths.__getitem__):
            last = batches[-1] if batches else None
            if last and len(last) < batch_size and run_lengths[position] - run_lengths[last[0]] <= pad:
                last.append(position)
            else:
                batches.append([position])
        return batches


def fixed_plan(seq_len, why):
    return SeqPlan((seq_len,), f"fixed {seq_len} ({why})")


def _plan_for_dynamic(request, how):
    if request in ("auto", "exact"):
        return SeqPlan(None, f"exact lengths ({how})")
    return SeqPlan(request, f"buckets {','.join(map(str, request))} ({how})")


def prepare(model_path, request, work_dir):
    """Return (model path to run, SeqPlan) for a parsed --buckets request.

    A model with a fixed 384 axis is relabelled to a dynamic one in work_dir (reused there when
    it was made from the same model bytes). If that cannot be done, "auto" falls back to 384 and
    the plan's description says so; "exact" or a bucket list is refused.
    """
    io = model_adapter.inspect(model_path)
    if io.seq_len is None:
        return model_path, _plan_for_dynamic(request, "the model's sequence axis is dynamic")
    if io.seq_len != FEATURE_WIDTH:
        # the person's choice of model (mlrun's exit 2), not a failed run
        raise UsageError(f"{model_path} has a fixed sequence length {io.seq_len}; the features are "
                         f"{FEATURE_WIDTH} long, so it cannot run them",
                         hint=f"use a model whose sequence axis is {FEATURE_WIDTH} or dynamic (the random model: "
                              f"--dep.model.seq={FEATURE_WIDTH} or leave --dep.model.seq out)")
    if request == (FEATURE_WIDTH,):
        return model_path, fixed_plan(FEATURE_WIDTH, "as requested")
    dynamic_path, reason = _dynamic_copy(model_path, Path(work_dir))
    if dynamic_path:
        return str(dynamic_path), _plan_for_dynamic(request, f"fixed 384 axis made dynamic: {dynamic_path}")
    if request != "auto":
        raise UsageError(f"{model_path}: the 384 axis {reason}, so it cannot run shorter lengths",
                         hint="use --buckets auto (falls back to 384) or --buckets 384")
    return model_path, fixed_plan(FEATURE_WIDTH, f"FALLBACK: the fixed 384 axis {reason}; every sample is "
                                                 "padded to 384")


def _dynamic_copy(model_path, work_dir):
    """(path of a dynamic-axis copy of the model, or None if the graph does not allow one; why).

    Both outcomes are remembered under the model's sha256 (a refusal with its reason), so a folder
    shared between runs probes each model once and never serves a copy made from other bytes.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    key = file_digest(model_path)[:16]
    dynamic_path, refused_marker = work_dir / f"{key}.dynamic.onnx", work_dir / f"{key}.not-dynamic"
    if dynamic_path.is_file():
        return dynamic_path, "made dynamic earlier"
    if refused_marker.is_file():
        return None, refused_marker.read_text().strip() or "cannot be made dynamic"
    verdict = model_adapter.seq_dynamic_verdict(model_path, str(dynamic_path))
    if verdict.dynamic:
        return dynamic_path, verdict.reason
    refused_marker.write_text(verdict.reason + "\n")
    return None, verdict.reason


def main(argv=None):
    """Make (or rule out) the dynamic-axis copy of a model ahead of time, e.g. in its cache entry."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.seq_plan", description=main.__doc__)
    parser.add_argument("--model", required=True, help="an ONNX model")
    parser.add_argument("--cache", required=True, help="folder for the copy (the harness's --dynamic-model-cache)")
    parser.add_argument("--out", help="also write the model to run here: the dynamic-axis copy (moved out of "
                        "--cache), else a copy of --model")
    args = parser.parse_args(argv)
    try:
        _prepare_ahead(args)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        # the person's request refused: mlrun's exit 2 through the runner's EX_CONFIG (a step's exit 2 is a failure)
        return 78 if isinstance(error, UsageError) and error.exit_code == UsageError.exit_code else error.exit_code
    return 0


def _prepare_ahead(args):
    io = model_adapter.inspect(args.model)
    made = None
    if io.seq_len is None:
        print(f"{args.model}: the sequence axis is already dynamic")
    else:
        made, reason = _dynamic_copy(args.model, Path(args.cache))
        print(f"{args.model}: {reason}" + (f"; dynamic copy {made}" if made else "; runs will pad to 384"))
    if args.out and made:
        os.replace(made, args.out)
    elif args.out:
        shutil.copyfile(args.model, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
