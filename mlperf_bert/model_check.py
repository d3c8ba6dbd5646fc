"""python -m mlperf_bert.model_check --path FILE: a --model file that is not a BERT question-answering model (inputs or
outputs the harness cannot map to ids/mask/segments and start/end logits) is the person's mistake, refused by the
step that first reads the file (get ml-model bert _file) as a usage error: mlrun's exit 2, as a file that is not
ONNX is (model_sources file). It failed as a step (exit 1) in the next command, seq_plan, with the same words.

A module of its own: model_sources.py is a source of the MiniLM recipe too, whose entry (a training run) an edit
there would have rebuilt."""
import argparse
import sys

from engine.errors import MlrunError, UsageError
from mlperf_bert import model_adapter
from mlperf_bert.model_sources import NOT_ONNX_HINT


def refuse_unmappable(path):
    """UsageError with model_adapter's own words when the harness could not feed the model or read its answers."""
    try:
        model_adapter.inspect(path)
    except MlrunError as error:
        raise UsageError(error.message, hint=f"{error.hint}; {NOT_ONNX_HINT}" if error.hint else NOT_ONNX_HINT) \
            from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.model_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="the model file")
    args = parser.parse_args(argv)
    try:
        refuse_unmappable(args.path)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 78   # sysexits EX_CONFIG: the runner makes it mlrun's exit 2 (a step's own exit 2 is a failed step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
