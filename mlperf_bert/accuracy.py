"""SQuAD v1.1 accuracy of a LoadGen accuracy log, as the MLPerf BERT reference computes it.

Mirrors accuracy-squad.py (load_loadgen_log, write_predictions, get_final_text) and
evaluate_v1.1.py of the MLCommons inference repo, language/bert.
"""

import argparse
import collections
import json
import re
import string
import sys
from pathlib import Path

import numpy as np

from engine.errors import MlrunError, UsageError
from mlperf_bert import heldout
from mlperf_bert.squad_features import MAX_SEQ_LENGTH, load, read_json
from mlperf_bert.tokenization import BasicTokenizer

N_BEST = 20
MAX_ANSWER_LENGTH = 30
PAD_LOGIT = -10000.0
NO_ANSWER = "empty"
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)

_basic_tokenizer = BasicTokenizer(do_lower_case=True)


# ---- LoadGen log -> logits

def read_log(log_path, n_features):
    """qsl_idx -> float32 [384, 2] (start, end) logits; short responses padded with -10000."""
    entries = read_json(log_path, "LoadGen accuracy log")
    if not isinstance(entries, list):
        raise MlrunError(f"{log_path}: expected a JSON array of LoadGen responses")
    responses = {}
    for entry in entries:
        if not isinstance(entry, dict) or "qsl_idx" not in entry or "data" not in entry:
            raise MlrunError(f"{log_path}: every response needs qsl_idx and data, got {entry!r:.80}")
        idx = entry["qsl_idx"]
        if not 0 <= idx < n_features:
            raise MlrunError(f"{log_path}: qsl_idx {idx} out of range for {n_features} features",
                             hint="was the log made with another features folder?")
        # A sample logged twice keeps its first response.
        if idx not in responses:
            responses[idx] = response_logits(entry["data"], log_path, idx)
    return responses


def response_logits(hex_data, log_path="", idx=None):
    try:
        raw = bytes.fromhex(hex_data)
    except (TypeError, ValueError):
        raise MlrunError(f"{log_path}: response of qsl_idx {idx} is not hex data")
    if len(raw) % 8 or len(raw) > MAX_SEQ_LENGTH * 8:
        raise MlrunError(f"{log_path}: response of qsl_idx {idx} has {len(raw)} bytes, expected "
                         f"float32 (L, 2) with L <= {MAX_SEQ_LENGTH}")
    return padded(np.frombuffer(raw, "<f4").reshape(-1, 2))


def padded(rows):
    """float32 (L, 2) response -> (384, 2), the missing rows -10000."""
    logits = np.full((MAX_SEQ_LENGTH, 2), PAD_LOGIT, np.float32)
    logits[:len(rows)] = rows
    return logits


# ---- logits -> predicted answer text

def _top_indexes(logits):
    # Stable descending sort: equal logits keep index order, like sorted(..., reverse=True).
    return np.argsort(-logits, kind="stable")[:N_BEST]


def best_span(feature, logits):
    """(score, start, end) of the feature's best valid span, or None.

    The reference ranks all pairs of the top-20 starts x top-20 ends that lie in the document
    part of the window, start at a max-context token, and are 1..30 tokens long. Only its first
    n-best entry becomes the prediction, so only the best pair is kept (the first on ties).
    """
    # Document positions are contiguous keys, the same in both maps.
    doc = feature["token_is_max_context"]
    first = int(next(iter(doc)))
    ok_end = np.zeros(MAX_SEQ_LENGTH, bool)
    ok_end[first:first + len(doc)] = True
    ok_start = np.zeros(MAX_SEQ_LENGTH, bool)
    ok_start[first:first + len(doc)] = np.fromiter(doc.values(), bool, len(doc))
    # Start-major pair order, as the reference's nested loops.
    starts = np.repeat(_top_indexes(logits[:, 0]), N_BEST)
    ends = np.tile(_top_indexes(logits[:, 1]), N_BEST)
    valid = ok_start[starts] & ok_end[ends] & (ends >= starts) & (ends - starts < MAX_ANSWER_LENGTH)
    if not valid.any():
        return None
    starts, ends = starts[valid], ends[valid]
    # float64 sums, as the reference adds Python floats.
    scores = logits[starts, 0].astype(np.float64) + logits[ends, 1].astype(np.float64)
    best = int(np.argmax(scores))
    return float(scores[best]), int(starts[best]), int(ends[best])


def span_text(feature, example, start, end):
    """WordPieces start..end projected back onto the original context words."""
    tok_text = " ".join(feature["tokens"][start:end + 1])
    tok_text = tok_text.replace(" ##", "").replace("##", "")
    tok_text = " ".join(tok_text.split())
    word_start = feature["token_to_orig_map"][str(start)]
    word_end = feature["token_to_orig_map"][str(end)]
    orig_text = " ".join(example["doc_tokens"][word_start:word_end + 1])
    return get_final_text(tok_text, orig_text)


def get_final_text(pred_text, orig_text):
    """Cut orig_text to the characters of pred_text by aligning both without spaces.

    pred_text is lower-cased, accent-stripped and split on punctuation; orig_text is the raw
    words (e.g. "Steve Smith's" for "steve smith"). When the alignment fails, orig_text is kept.
    """
    tok_text = " ".join(_basic_tokenizer.tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    orig_ns_to_s = _non_space_positions(orig_text)
    tok_ns_to_s = _non_space_positions(tok_text)
    if len(orig_ns_to_s) != len(tok_ns_to_s):
        return orig_text
    tok_s_to_ns = {s: ns for ns, s in enumerate(tok_ns_to_s)}
    if start not in tok_s_to_ns or end not in tok_s_to_ns:
        return orig_text
    return orig_text[orig_ns_to_s[tok_s_to_ns[start]]:orig_ns_to_s[tok_s_to_ns[end]] + 1]


def _non_space_positions(text):
    """Position in text of each non-space character (only " " counts as space here)."""
    return [i for i, c in enumerate(text) if c != " "]


def predict(features_set, responses):
    """qas_id -> predicted text for every question of the features folder, in order."""
    by_example = collections.defaultdict(list)
    for qsl_idx, feature in enumerate(features_set.features):
        by_example[feature["example_index"]].append((qsl_idx, feature))
    predictions = collections.OrderedDict()
    for example_index, example in enumerate(features_set.examples):
        found = best_answer(example, [(feature, responses[qsl_idx]) for qsl_idx, feature in by_example[example_index]
                                      if qsl_idx in responses])
        predictions[example["qas_id"]] = found[1] if found else NO_ANSWER
    return predictions


def best_answer(example, scored):
    """(score, text) of a question's answer over its features' logits [(feature, (384, 2))], or None.

    The one path from logits to answer text: the accuracy step and interactive QA (mlperf_bert.qa) use it.
    """
    best = None
    for feature, logits in scored:
        span = best_span(feature, logits)
        # Strictly greater: the earlier feature wins ties.
        if span and (best is None or span[0] > best[0]):
            best = (*span, feature)
    return (best[0], span_text(best[3], example, best[1], best[2])) if best else None


# ---- official SQuAD v1.1 evaluation

def normalize_answer(s):
    """Lower-case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower().translate(_DROP_PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def evaluate(gold, predictions):
    """gold: [(qas_id, [answer texts])] in dataset order. Missing predictions score 0."""
    if not gold:
        raise MlrunError("no questions to score")
    exact_match = f1 = 0
    for qas_id, answers in gold:
        if qas_id not in predictions:
            continue
        prediction = predictions[qas_id]
        exact_match += max(exact_match_score(prediction, a) for a in answers)
        f1 += max(f1_score(prediction, a) for a in answers)
    return {"exact_match": 100.0 * exact_match / len(gold), "f1": 100.0 * f1 / len(gold)}


def gold_answers(squad_json, qas_ids):
    """[(qas_id, answers)] of the dataset's questions that are in qas_ids, in dataset order."""
    dataset = read_json(squad_json, "SQuAD file")["data"]
    gold = [(qa["id"], [a["text"] for a in qa["answers"]])
            for article in dataset for paragraph in article["paragraphs"]
            for qa in paragraph["qas"] if qa["id"] in qas_ids]
    if len(gold) != len(qas_ids):
        raise MlrunError(f"{squad_json} lacks {len(qas_ids) - len(gold)} questions of the features",
                         hint="the features folder was built from another SQuAD file")
    return gold


def score(features_dir, squad_json, log_path, predictions_path=None, questions=None):
    """{"exact_match", "f1", "questions", "of", "subset"}: the official figure over all `of` questions of the
    features folder (10570 for dev) when the log answers every feature.

    A log that answers only some features (a --count run, a TEST01 log) is scored over the questions it
    covers fully, `subset` true: over all of them the missing answers would count as wrong, a figure that
    says nothing. A log with no response, or none that covers a whole question, is an error.

    questions: a heldout.json (or JSON list of ids): the log answers only these questions' features, in
    order (mlperf_bert.heldout); the result then holds its "note" (never the official metric).
    """
    features_set = heldout.restrict(load(features_dir), questions)
    responses = read_log(log_path, len(features_set.lengths))
    if not responses:
        raise MlrunError(f"{log_path} holds no responses: nothing to score",
                         hint="was the run interrupted, or run in performance mode without an accuracy log?")
    predictions = predict(features_set, responses)
    total = len(predictions)
    subset = len(responses) < len(features_set.lengths)
    if subset:
        answered = collections.defaultdict(lambda: True)
        for qsl_idx, feature in enumerate(features_set.features):
            answered[feature["example_index"]] &= qsl_idx in responses
        covered = {features_set.examples[i]["qas_id"] for i, ok in answered.items() if ok}
        predictions = collections.OrderedDict((q, t) for q, t in predictions.items() if q in covered)
        if not predictions:
            raise MlrunError(f"{log_path} answers {len(responses)} of {len(features_set.lengths)} features but no "
                             "question fully (each of its features): nothing to score")
    if predictions_path:
        Path(predictions_path).write_text(json.dumps(predictions, indent=4) + "\n")
    result = {**evaluate(gold_answers(squad_json, set(predictions)), predictions), "questions": len(predictions),
              "of": total, "subset": subset}
    return {**result, "note": features_set.note} if questions else result


def coverage_note(result):
    """The line that says which questions a score is over."""
    if result.get("note"):  # a model trained on part of the dev set: scored on the rest only
        # (a --count run scored 200 of them: it said "scored 200 questions (... 4874 questions ...)")
        of = f" of {result['of']}" if result.get("subset") else ""
        return f"scored {result['questions']}{of} questions ({result['note']})"
    if result["subset"]:
        return (f"scored {result['questions']} of {result['of']} questions: the log covers only these "
                "(not an official figure)")
    return f"scored all {result['questions']} questions"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.accuracy",
                                     description="SQuAD v1.1 EM/F1 of a LoadGen accuracy log")
    parser.add_argument("--features", required=True, help="features folder (squad_features)")
    parser.add_argument("--squad", required=True, help="dev-v1.1.json")
    parser.add_argument("--log", required=True, help="mlperf_log_accuracy.json")
    parser.add_argument("--predictions", help="write qas_id -> answer text here")
    parser.add_argument("--summary", help='write {"accuracy": {exact_match, f1, questions, of, subset}, "short"} '
                                          "here (the shape of the harness's summary.json, for run records)")
    parser.add_argument("--questions", help="the run answered only these questions (a model's heldout.json)")
    args = parser.parse_args(argv)
    try:
        if args.questions is None:
            _refuse_a_subsets_log(args.log)
        result = score(args.features, args.squad, args.log, args.predictions, args.questions)
        print(json.dumps({"exact_match": result["exact_match"], "f1": result["f1"]}))
        if args.summary:
            Path(args.summary).write_text(json.dumps({"accuracy": result, "short": result["subset"]}) + "\n")
        print(coverage_note(result), file=sys.stderr)
    except MlrunError as e:
        print(f"error: {e}", file=sys.stderr)
        # the person's request refused: mlrun's exit 2 through the runner's EX_CONFIG (a step's exit 2 is a failure)
        return 78 if isinstance(e, UsageError) and e.exit_code == UsageError.exit_code else e.exit_code
    return 0


def _refuse_a_subsets_log(log):
    """A log of a run over some questions only (a trained model's held-out ones) counts its samples within them:
    scored against the whole dev set, it gave another figure (F1 4.05 for 7.48), exit 0. Its summary.json says."""
    try:
        with open(Path(log).parent / "summary.json") as f:
            accuracy = (json.load(f).get("accuracy") or {})
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(accuracy, dict) and accuracy.get("note"):
        raise UsageError(f"{log} is of a run over chosen questions only ({accuracy['note']}): its samples count "
                         "within them, and against the whole dev set they score other questions",
                         hint="give the same question list: --questions=FILE (a trained model's heldout.json, in its "
                              "cache entry)")


if __name__ == "__main__":
    sys.exit(main())
