"""SQuAD v1.1 examples -> BERT features, exactly as the MLPerf reference QSL builds them.

Mirrors create_squad_data.py (read_squad_examples / convert_examples_to_features,
is_training=False) of the MLCommons inference repo, language/bert.

Features folder (a contract other modules code against):
  input_ids.npy, input_mask.npy, segment_ids.npy  int32 [N, 384]
  lengths.npy                                      int32 [N], real tokens per feature
  features.json  {"features": [{unique_id, example_index, doc_span_index, tokens,
                  token_to_orig_map {"<pos>": word}, token_is_max_context {"<pos>": bool}}],
                  "examples": [{qas_id, doc_tokens, answers}]}
  digest.json    {count, D_ids, D_mask, D_seg, D_all}, written last: its presence means complete.
"""

import argparse
import hashlib
import json
import sys
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from engine.errors import MlrunError
from mlperf_bert.tokenization import FullTokenizer

MAX_SEQ_LENGTH = 384
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
FIRST_UNIQUE_ID = 1000000000
ARRAYS = ("input_ids", "input_mask", "segment_ids", "lengths")


def doc_words(context):
    """Split a context on whitespace as the reference does: (words, char index -> word index)."""
    words, char_to_word = [], []
    prev_is_whitespace = True
    for c in context:
        # U+202F (narrow no-break space) is whitespace for the reference, not for str.isspace.
        if c in " \t\r\n\u202f":
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                words.append(c)
            else:
                words[-1] += c
            prev_is_whitespace = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def wordpiece_doc(words, tokenize):
    """WordPiece every word: (pieces, piece -> word index, word -> first piece index)."""
    pieces, tok_to_orig, orig_to_tok = [], [], []
    for i, word in enumerate(words):
        orig_to_tok.append(len(pieces))
        sub = tokenize(word)
        pieces.extend(sub)
        tok_to_orig.extend([i] * len(sub))
    return pieces, tok_to_orig, orig_to_tok


def doc_spans(n_tokens, room, doc_stride=DOC_STRIDE):
    """Sliding windows (start, length): start at 0, advance min(length, stride) until the end."""
    spans, start = [], 0
    while start < n_tokens:
        length = min(n_tokens - start, room)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_flags(spans, n_tokens):
    """For each span, a bool per token: is this span the token's max-context span."""
    if not spans:
        return []
    scores = np.full((len(spans), n_tokens), -np.inf)
    for i, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        scores[i, pos] = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
    # argmax returns the first maximum: the earlier span wins ties, as in the reference.
    best = np.argmax(scores, axis=0)
    return [best[start:start + length] == i for i, (start, length) in enumerate(spans)]


def read_json(path, what):
    path = Path(path)
    if not path.is_file():
        raise MlrunError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MlrunError(f"{what} is not valid JSON: {path}: {e}")


def convert(squad_json, vocab_txt, max_examples=None):
    """Return (ids [N, 384] int32, mask, seg, features, examples)."""
    dataset = read_json(squad_json, "SQuAD file")
    if not Path(vocab_txt).is_file():
        raise MlrunError(f"vocab file not found: {vocab_txt}")
    tokenizer = FullTokenizer(vocab_txt)
    # Words repeat a lot across contexts: tokenise each distinct word once.
    tokenize_word = lru_cache(maxsize=None)(tokenizer.tokenize)
    rows, features, examples = [], [], []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            # Tokenise the context once per paragraph, not once per question.
            words, _ = doc_words(paragraph["context"])
            pieces, tok_to_orig, _ = wordpiece_doc(words, tokenize_word)
            piece_ids = tokenizer.convert_tokens_to_ids(pieces)
            for qa in paragraph["qas"]:
                if max_examples is not None and len(examples) == max_examples:
                    return pack(rows), features, examples
                example_index = len(examples)
                examples.append({"qas_id": qa["id"], "doc_tokens": words,
                                 "answers": [a["text"] for a in qa["answers"]]})
                new_rows, new_features, _ = question_features(
                    tokenizer, qa["question"], (pieces, piece_ids, tok_to_orig), example_index,
                    FIRST_UNIQUE_ID + len(features))
                rows += new_rows
                features += new_features
    return pack(rows), features, examples


def question_features(tokenizer, question, doc, example_index, first_unique_id,
                      max_seq_length=MAX_SEQ_LENGTH, doc_stride=DOC_STRIDE):
    """One question over a WordPiece'd context doc = (pieces, piece ids, piece -> word index).

    Returns (rows, features, spans): (token ids, segment-0 length) per window, their metadata,
    and each window's (start, length) in doc pieces. The benchmark, training (mlperf_bert.qa_train)
    and interactive QA (mlperf_bert.qa) all window a context with this one function.
    """
    pieces, piece_ids, tok_to_orig = doc
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    query = tokenizer.tokenize(question)[:MAX_QUERY_LENGTH]
    head = ["[CLS]"] + query + ["[SEP]"]
    head_ids = [cls_id] + tokenizer.convert_tokens_to_ids(query) + [sep_id]
    # The 3 is [CLS] and the two [SEP].
    spans = doc_spans(len(pieces), max_seq_length - len(query) - 3, doc_stride)
    flags = max_context_flags(spans, len(pieces))
    rows, features = [], []
    for span_index, (start, length) in enumerate(spans):
        rows.append((head_ids + piece_ids[start:start + length] + [sep_id], len(head)))
        features.append(_feature_meta(
            first_unique_id + span_index, example_index, span_index, head,
            pieces[start:start + length], tok_to_orig[start:start + length], flags[span_index]))
    return rows, features, spans


def _feature_meta(unique_id, example_index, span_index, head, window, window_words, flags):
    # JSON object keys are strings: positions are stored as "<pos>".
    positions = [str(p) for p in range(len(head), len(head) + len(window))]
    return {
        "unique_id": unique_id,
        "example_index": example_index,
        "doc_span_index": span_index,
        "tokens": head + window + ["[SEP]"],
        "token_to_orig_map": dict(zip(positions, window_words)),
        "token_is_max_context": dict(zip(positions, flags.tolist())),
    }


def pack(rows, width=MAX_SEQ_LENGTH):
    """(token ids, segment-0 length) rows -> zero-padded int32 ids, mask, segment arrays."""
    n = len(rows)
    ids = np.zeros((n, width), np.int32)
    mask = np.zeros((n, width), np.int32)
    seg = np.zeros((n, width), np.int32)
    for i, (row, head_len) in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
        seg[i, head_len:len(row)] = 1
    return ids, mask, seg


def digest(ids, mask, seg):
    """Section 3 digests: sha256 over each feature's 384 little-endian int32 values, in order."""
    def sha(a):
        return hashlib.sha256(np.ascontiguousarray(a, dtype="<i4").tobytes()).hexdigest()
    return {"count": int(len(ids)), "D_ids": sha(ids), "D_mask": sha(mask), "D_seg": sha(seg),
            "D_all": sha(np.stack([ids, mask, seg], axis=1))}


def build(squad_json, vocab_txt, out_dir, max_examples=None):
    """Write the features folder; return its digest."""
    (ids, mask, seg), features, examples = convert(squad_json, vocab_txt, max_examples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "digest.json").unlink(missing_ok=True)
    arrays = {"input_ids": ids, "input_mask": mask, "segment_ids": seg,
              "lengths": mask.sum(axis=1, dtype=np.int32)}
    for name, array in arrays.items():
        np.save(out / f"{name}.npy", array)
    # json.dumps, not json.dump: only the former uses the C encoder (about 10x faster here).
    (out / "features.json").write_text(json.dumps(
        {"features": features, "examples": examples}, separators=(",", ":")), encoding="utf-8")
    result = digest(ids, mask, seg)
    (out / "digest.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


class FeatureSet:
    """A features folder: arrays memory-mapped now, features.json parsed on first use."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not (self.folder / "digest.json").is_file():
            raise MlrunError(f"no complete features folder at {self.folder} (digest.json missing)",
                             hint="build it with: python -m mlperf_bert.squad_features "
                                  "--squad FILE --vocab FILE --out DIR")
        for name in ARRAYS:
            setattr(self, name, np.load(self.folder / f"{name}.npy", mmap_mode="r"))

    @cached_property
    def _meta(self):
        return read_json(self.folder / "features.json", "features file")

    @property
    def features(self):
        return self._meta["features"]

    @property
    def examples(self):
        return self._meta["examples"]

    @cached_property
    def digest(self):
        return json.loads((self.folder / "digest.json").read_text())


def load(features_dir):
    return FeatureSet(features_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.squad_features",
                                     description="SQuAD v1.1 -> MLPerf BERT features folder")
    parser.add_argument("--squad", required=True, help="dev-v1.1.json")
    parser.add_argument("--vocab", required=True, help="vocab.txt (uncased)")
    parser.add_argument("--out", required=True, help="features folder to write")
    parser.add_argument("--max-examples", type=int, help="only the first N questions")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(build(args.squad, args.vocab, args.out, args.max_examples)))
    except MlrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
