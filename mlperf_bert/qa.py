"""python -m mlperf_bert.qa: answer questions about a passage with a BERT QA model (interactive QA).

The passage is split into windows by the benchmark's feature code (squad_features.question_features:
384 tokens, doc stride 128, questions cut to 64 tokens), each window runs through the benchmark's
inference path (sut.QaInference on an onnxruntime or DeepSparse backend), and the answer text comes
from the accuracy step's code (accuracy.best_answer): one path from logits to text, not a copy.

--question (or --question-file, one question a line) answers those; otherwise questions are read from
standard input one per line until EOF, with a prompt only when standard input is a terminal.
Each answer is printed with its score (start + end logit of the best span) and latency.
"""
import argparse
import json
import os
import re
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.errors import MlrunError, UsageError
from mlperf_bert import accuracy, progress, squad_features
from mlperf_bert.sut import QaInference
from mlperf_bert.tokenization import FullTokenizer

PROMPT = "question> "
# Windowing holds a float per WordPiece and window (squad_features.max_context_flags): 50,000 pieces (about 240 KB
# of English text, 390 windows) take 0.7 s and 270 MB; 83,000 took 2.8 s and 930 MB, a 1-MB text 3.4 GB.
MAX_PIECES = 50_000
BAR_FROM = 16   # windows: a question over more shows a progress bar at a terminal
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Passage:
    """A passage tokenised once; features(question) windows it for one question."""

    def __init__(self, text, tokenizer):
        self.tokenizer = tokenizer
        # control characters would reach the printed answer (a NUL to the terminal); they are no words
        if len(text) > 40 * MAX_PIECES:   # surely too long (English runs about 5 characters a piece): say so now
            raise _too_long(f"{len(text):,} characters")
        words, _ = squad_features.doc_words(CONTROL.sub(" ", text))
        if not words:
            raise UsageError("the passage is empty", hint="give the text with --passage=TEXT or --passage-file=FILE")
        pieces, tok_to_orig, _ = squad_features.wordpiece_doc(words, lru_cache(maxsize=None)(tokenizer.tokenize))
        if not pieces:
            raise UsageError("the passage has no words the model reads", hint="give it text")
        if len(pieces) > MAX_PIECES:
            raise _too_long(f"{len(pieces):,} WordPieces")
        self.doc = (pieces, tokenizer.convert_tokens_to_ids(pieces), tok_to_orig)
        self.example = {"doc_tokens": words}

    def features(self, question):
        """(arrays like a features folder's, feature metadata) of the question's windows."""
        rows, features, _ = squad_features.question_features(self.tokenizer, question, self.doc, 0, 0)
        ids, mask, seg = squad_features.pack(rows)
        return Windows(ids, mask, seg), features


def _too_long(size):
    return UsageError(f"the passage is too long for the QA app: {size}; it takes at most {MAX_PIECES:,} WordPieces "
                      "(about 240 KB of English text, 390 windows of 384 tokens)",
                      hint="give the part of the text that holds the answer: every question runs all its windows")


class Windows:
    """The arrays QaInference reads (as squad_features.FeatureSet holds them)."""

    def __init__(self, ids, mask, seg):
        self.input_ids, self.input_mask, self.segment_ids = ids, mask, seg
        self.lengths = mask.sum(axis=1, dtype=np.int32)


class Answerer:
    def __init__(self, model, vocab, backend="onnxruntime", threads=None, work_dir=".", precision="fp32"):
        self.tokenizer = FullTokenizer(vocab)
        self.backend, self.plan = make_backend(model, backend, threads, work_dir, precision)

    def answer(self, passage, question):
        """{"question", "answer", "score", "latency_ms", "windows"} for one question."""
        if not question.strip():
            raise UsageError("the question is empty")
        if not self.tokenizer.tokenize(question):   # a zero-width space: no word to ask about
            raise UsageError(f"the question {question!r} has no words the model reads")
        started = time.perf_counter()
        windows, features = passage.features(question)
        inference = QaInference(self.backend, windows, self.plan)
        responses = {}
        out = progress.stream() if len(features) >= BAR_FROM else None   # a terminal's only: never the log
        with progress.Bar(out, lambda: len(responses), lambda done, elapsed: len(features),
                          f"{len(features)} windows", leave=False, unit="window"):
            for batch in inference.responses(list(range(len(features)))):
                responses.update((position, accuracy.padded(rows)) for position, rows in batch)
        found = accuracy.best_answer(passage.example, [(f, responses[i]) for i, f in enumerate(features)])
        latency_ms = (time.perf_counter() - started) * 1000
        return {"question": question, "answer": found[1] if found else accuracy.NO_ANSWER,
                "score": round(found[0], 3) if found else None, "latency_ms": round(latency_ms, 2),
                "windows": len(features)}


def make_backend(model, backend, threads, work_dir, precision="fp32"):
    """(backend, SeqPlan): the benchmark's backends, each sample at its own length where the model allows."""
    from mlperf_bert import seq_plan
    if backend == "deepsparse":
        from mlperf_bert import ds_backend
        model_path, plan = ds_backend.prepare(model, "auto", work_dir)
        engine = ds_backend.DeepSparseBackend(model_path, plan.buckets, (1,), threads, "single_stream", None,
                                              progress=ds_backend.progress_line)
        engine.warm_up(ds_backend.progress_line)
        return engine, plan
    model_path, plan = seq_plan.prepare(model, "auto", work_dir)
    if backend == "openvino":   # one stream on all cores (or --threads): one question's windows at a time
        from mlperf_bert.ort_backend import available_cores
        from mlperf_bert.ov_backend import OvModel
        return OvModel(model_path, 1, threads or available_cores(), precision).request(), plan
    from mlperf_bert.ort_backend import OrtBackend
    return OrtBackend(model_path, threads), plan


def questions_from(args):
    """The questions to answer: an iterator (stdin is read lazily, line by line)."""
    if args.question is not None:
        if not args.question.strip():
            raise UsageError("the question is empty", hint='ask something: --question="Who ...?"')
        return iter([args.question])
    if args.question_file:   # a line that is not UTF-8 is skipped, as from a pipe (it ended the whole session)
        text = read_text(args.question_file, "question file", errors="surrogateescape")
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise UsageError(f"no questions in {args.question_file}", hint="one question a line")
        return (line for line in lines if _utf8(line, sys.stderr))
    return stdin_questions(args.terminal)


def _utf8(line, out):
    """Whether a line read with surrogateescape is UTF-8 text; one that is not is said skipped on `out`."""
    try:
        line.encode("utf-8")
        return True
    except UnicodeEncodeError:   # bytes that are not UTF-8 (surrogate-escaped): as --question refuses them
        print(f"skipped: not UTF-8 text: {line.strip()!a}", file=out, flush=True)
        return False


def stdin_questions(prompt=None):
    """Lines of standard input (blank ones skipped) until EOF; a prompt on `prompt` (the terminal) if given."""
    while True:
        if prompt:
            prompt.write(PROMPT)
            prompt.flush()
        line = sys.stdin.readline()
        if not line:
            if prompt:
                prompt.write("\n")
            return
        if _utf8(line, prompt or sys.stderr) and line.strip():
            yield line.strip()


def _terminal():
    """A stream to the terminal stdin reads from (our stdout may be a log pipe), or None off a terminal."""
    if sys.stdin is None:   # started with stdin closed: nothing to read, as from /dev/null
        sys.stdin = open(os.devnull)
    if not sys.stdin.isatty():
        return None
    try:
        return open(os.ttyname(sys.stdin.fileno()), "w")
    except OSError:
        return sys.stderr


def read_text(path, what, errors="strict"):
    try:
        return Path(path).read_text(encoding="utf-8", errors=errors)
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the {what} {path}: {error}")


def save(args, answers):
    """qa.json (the run's results), replaced whole: a reader never sees half of it."""
    if args.out:
        path = Path(args.out, "qa.json")
        facts = {"answers": answers, "model": args.model, "model_name": args.model_name, "backend": args.backend,
                 # what ran: _int8-dynamic's model is int8 whatever the backend was asked for
                 "precision": "int8" if args.model_name == "int8-dynamic" else args.precision,
                 "random_weights": args.random or args.model_name == "bert-random",
                 "openvino": getattr(args, "openvino", None)}
        # headline: the line `mlrun runs` shows for this run (it has no accuracy nor LoadGen figures to show)
        said = f"{len(answers)} answer{'s' if len(answers) != 1 else ''}" + (", random weights" if facts["random_weights"]
                                                                             else "")
        path.with_suffix(".tmp").write_text(json.dumps({"qa": facts, "headline": said}, indent=1) + "\n")
        os.replace(path.with_suffix(".tmp"), path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.qa", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a BERT QA ONNX model")
    parser.add_argument("--vocab", required=True, help="the uncased BERT vocab.txt")
    parser.add_argument("--passage", help="the passage text")
    parser.add_argument("--passage-file", help="a file holding the passage")
    parser.add_argument("--question", help="one question (else --question-file, else standard input)")
    parser.add_argument("--question-file", help="questions, one a line")
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "deepsparse", "openvino"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8", "bf16", "int8-bf16"), help="openvino: "
                        "int8 (a model quantised by NNCF), or bf16 on a CPU with AMX or AVX512_BF16, or int8-bf16 (both: "
                        "the int8 model's other operators bf16) (default: fp32)")
    parser.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    parser.add_argument("--out", help="write the answers here as JSON (qa.json: the run's results)")
    parser.add_argument("--dynamic-model-cache", help="where a fixed-384 model's dynamic-axis copy is kept")
    parser.add_argument("--model-name", help="what the model is, as its recipe names it (bert-random: said first)")
    parser.add_argument("--random", action="store_true", help="the model's weights are random, or quantised from "
                        "random ones (said first)")
    args = parser.parse_args(argv)
    if args.precision != "fp32" and args.backend != "openvino":
        parser.error(f"--precision {args.precision} applies to --backend openvino")
    try:
        if (args.passage is None) == (args.passage_file is None):
            raise UsageError(("no passage given" if args.passage is None else "the passage is given twice")
                             + ": --passage=TEXT or --passage-file=FILE, one of them")
        if args.question is not None and args.question_file:
            raise UsageError("give --question or --question-file, not both")
        text = args.passage if args.passage is not None else read_text(args.passage_file, "passage file")
        # At a terminal, prompts and answers go to it directly: through mlrun's log pipe the next prompt
        # could overtake the answer. Off a terminal, answers go to stdout (and the step's log).
        args.terminal = _terminal() if args.question is None and not args.question_file else None
        out = args.terminal or sys.stdout
        questions = questions_from(args)
        answerer = Answerer(args.model, args.vocab, args.backend, args.threads,
                            work_dir=args.dynamic_model_cache or args.out or ".", precision=args.precision)
        passage = Passage(text, answerer.tokenizer)
        if args.backend == "openvino":   # what OpenVINO compiled, as the benchmark says it (stderr: not an answer)
            args.openvino = answerer.backend.describe()
            int8 = args.openvino["int8_operators"]
            print(f"OpenVINO {args.openvino['version'].split('-')[0]}: {args.precision}"
                  + (f", {int8} operators int8" if int8 else ""), file=sys.stderr, flush=True)
        if args.random or args.model_name == "bert-random":   # answers that look like answers: what they are worth
            print("note: a random-weight model (_random): plumbing only, its answers and scores mean nothing",
                  file=out, flush=True)
        answers = []
        from_stdin = args.question is None and not args.question_file
        # Several questions read from a file or a pipe: each answer says its question (a person at the
        # terminal has just typed it; --question is one)
        echo = args.question is None and args.terminal is None
        for question in questions:
            try:
                result = answerer.answer(passage, question)
            except UsageError as error:
                if args.question is not None:
                    raise
                # one bad line ends no session, from a file as from standard input (a file's ended it, exit 2, with
                # the questions after it unanswered and the run an error)
                print(f"skipped: {error.message}", file=out, flush=True)
                continue
            answers.append(result)
            if echo:
                print(f"question: {question}", file=out)
            print(f"answer: {result['answer']}\n  score {result['score']}, {result['latency_ms']:.1f} ms"
                  f" ({result['windows']} window{'' if result['windows'] == 1 else 's'})", file=out, flush=True)
            save(args, answers)   # after each: Ctrl-C keeps the answers given (was: all lost)
        if from_stdin and not answers:
            raise UsageError("no question was read from standard input",
                             hint="type questions, one a line; or --question=TEXT / --question-file=FILE")
        if args.question_file and not answers:
            raise UsageError(f"no question of {args.question_file} could be answered (each was skipped, above)")
        save(args, answers)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
