"""SQuAD -> features must reproduce the MLPerf reference QSL (docs: mlperf-bert.md, section 3)."""

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import MlrunError
from mlperf_bert import squad_features
from mlperf_bert.tokenization import BasicTokenizer, FullTokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUAD = DATA / "squad" / "dev-v1.1.json"
VOCAB = DATA / "bert-vocab" / "vocab.txt"
needs_data = pytest.mark.skipif(not (SQUAD.is_file() and VOCAB.is_file()),
                                reason=f"SQuAD dev set and vocab not in {DATA}")

REFERENCE_DIGEST = {
    "count": 10833,
    "D_ids": "b75291371c078f3114d60dfd077a761037b5869761c0414a49cdc7e8b051605c",
    "D_mask": "9634bbdf85592ffd5aab26166a5ec089638e9641bd30cb4e3116faaecd394cee",
    "D_seg": "e3923a65eeb01663acb1500587984717b638ff0148421191b79eec1042d4ef87",
    "D_all": "70301e8f3a10ddb5465dea354cb6809673a0baeb248a247548cddfab7363792a",
}


@pytest.fixture(scope="module")
def full(features_dir):
    return squad_features.load(features_dir)


# ---- full dev set against the reference figures

@pytest.mark.slow
def test_digest_matches_reference(full):
    assert full.digest == REFERENCE_DIGEST
    # And the arrays on disk are what the digest says.
    assert squad_features.digest(full.input_ids, full.input_mask, full.segment_ids) == REFERENCE_DIGEST


@pytest.mark.slow
def test_arrays_contract(full):
    for name in ("input_ids", "input_mask", "segment_ids"):
        array = getattr(full, name)
        assert array.dtype == np.int32 and array.shape == (10833, 384)
    assert full.lengths.dtype == np.int32 and full.lengths.shape == (10833,)
    assert np.array_equal(full.lengths, full.input_mask.sum(axis=1))
    assert len(full.features) == 10833 and len(full.examples) == 10570


@pytest.mark.slow
def test_first_and_last_feature(full):
    first, last = full.features[0], full.features[-1]
    assert (first["unique_id"], first["example_index"], first["doc_span_index"]) == (1000000000, 0, 0)
    assert full.lengths[0] == 171
    assert full.input_ids[0, :7].tolist() == [101, 2029, 5088, 2136, 3421, 1996, 10511]
    assert first["tokens"][:4] == ["[CLS]", "which", "nfl", "team"]
    assert len(first["tokens"]) == 171 and first["tokens"][-1] == "[SEP]"
    # Query "which nfl team represented the afc at super bowl 50 ?" is 11 pieces: doc starts at 13.
    assert first["token_to_orig_map"]["13"] == 0 and "12" not in first["token_to_orig_map"]
    assert full.segment_ids[0, 12] == 0 and full.segment_ids[0, 13] == 1
    assert full.segment_ids[0, 170] == 1 and full.segment_ids[0, 171] == 0
    assert all(first["token_is_max_context"].values())
    assert full.examples[0]["qas_id"] == "56be4db0acb8001400a502ec"
    assert full.examples[0]["answers"] == ["Denver Broncos", "Denver Broncos", "Denver Broncos"]
    assert (last["unique_id"], last["example_index"]) == (1000010832, 10569)
    assert full.lengths[-1] == 198


@pytest.mark.slow
def test_feature_fields_agree_with_arrays(full):
    ids = FullTokenizer(VOCAB).vocab
    for i in (0, 1, 5000, 10832):
        feature = full.features[i]
        n = len(feature["tokens"])
        assert full.lengths[i] == n
        assert full.input_ids[i, :n].tolist() == [ids[t] for t in feature["tokens"]]
        assert not full.input_ids[i, n:].any()
        assert set(feature["token_to_orig_map"]) == set(feature["token_is_max_context"])


@pytest.mark.slow
def test_windows_per_question(full):
    windows = collections.Counter(f["example_index"] for f in full.features)
    assert collections.Counter(windows.values()) == {1: 10387, 2: 127, 3: 36, 4: 16, 5: 4}
    # Every document piece is max-context in exactly one window of its question.
    example = next(e for e, n in windows.items() if n == 5)
    flags = collections.Counter()
    for f in full.features:
        if f["example_index"] == example:
            first = int(next(iter(f["token_to_orig_map"])))
            start = 128 * f["doc_span_index"]
            for pos, is_max in f["token_is_max_context"].items():
                flags[start + int(pos) - first] += is_max
    assert set(flags.values()) == {1}


@pytest.mark.slow
def test_length_stats(full):
    lengths = np.asarray(full.lengths)
    assert round(lengths.mean(), 1) == 178.5
    assert np.median(lengths) == 164 and np.percentile(lengths, 90) == 272 and lengths.max() == 384


# ---- windows and max context on small cases

def _reference_is_max_context(spans, cur, position):
    """create_squad_data._check_is_max_context, verbatim in logic."""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if start <= position <= end:
            score = min(position - start, end - position) + 0.01 * length
            if best_score is None or score > best_score:
                best_score, best_index = score, index
    return cur == best_index


@pytest.mark.parametrize("n_tokens,room", [(10, 400), (300, 200), (700, 250), (1000, 129), (385, 128)])
def test_spans_and_max_context(n_tokens, room):
    spans = squad_features.doc_spans(n_tokens, room)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == n_tokens
    assert all(b[0] - a[0] == min(a[1], 128) for a, b in zip(spans, spans[1:]))
    flags = squad_features.max_context_flags(spans, n_tokens)
    for index, (start, length) in enumerate(spans):
        expected = [_reference_is_max_context(spans, index, start + i) for i in range(length)]
        assert flags[index].tolist() == expected


def test_empty_document_has_no_windows():
    assert squad_features.doc_spans(0, 300) == []
    assert squad_features.max_context_flags([], 0) == []


def test_doc_words_splits_like_reference():
    words, char_to_word = squad_features.doc_words(" Super\u202fBowl  50\n(2016).")
    assert words == ["Super", "Bowl", "50", "(2016)."]
    assert char_to_word[:7] == [-1, 0, 0, 0, 0, 0, 0] and char_to_word[7] == 1


# ---- tokenizer

def test_basic_tokenizer():
    tokenizer = BasicTokenizer()
    assert tokenizer.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert tokenizer.tokenize("Café Ünïcode\u00ad\x00") == ["cafe", "unicode"]
    assert tokenizer.tokenize("ah博推zz") == ["ah", "博", "推", "zz"]
    assert tokenizer.tokenize("$5.00 e-mail") == ["$", "5", ".", "00", "e", "-", "mail"]


@needs_data
def test_full_tokenizer_wordpiece():
    tokenizer = FullTokenizer(VOCAB)
    # Greedy longest match: "##ffa" wins over "##ff".
    assert tokenizer.tokenize("unaffable Broncos") == ["una", "##ffa", "##ble", "broncos"]
    assert tokenizer.tokenize("a" * 101) == ["[UNK]"]
    assert tokenizer.tokenize("\u2603") == ["[UNK]"]
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]"]) == [101, 102, 0]


# ---- build, load, CLI

@pytest.mark.slow
def test_small_build_is_prefix_of_full(tmp_path, full):
    result = squad_features.build(SQUAD, VOCAB, tmp_path, max_examples=3)
    small = squad_features.load(tmp_path)
    assert result == small.digest and result["count"] == 3 == len(small.examples)
    assert np.array_equal(small.input_ids, full.input_ids[:3])
    assert small.features == full.features[:3]


@needs_data
def test_load_parses_json_lazily(tmp_path):
    squad_features.build(SQUAD, VOCAB, tmp_path, max_examples=1)
    loaded = squad_features.load(tmp_path)
    assert loaded.lengths.tolist() == [171] and "_meta" not in vars(loaded)
    assert loaded.features[0]["unique_id"] == 1000000000


@needs_data
def test_cli_prints_digest(tmp_path, capsys):
    code = squad_features.main(["--squad", str(SQUAD), "--vocab", str(VOCAB),
                                "--out", str(tmp_path), "--max-examples", "2"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "digest.json").read_text())


def test_missing_inputs_raise_mlrun_error(tmp_path):
    with pytest.raises(MlrunError, match="SQuAD file not found"):
        squad_features.build(tmp_path / "nope.json", VOCAB, tmp_path / "out")
    (tmp_path / "squad.json").write_text('{"data": []}')
    with pytest.raises(MlrunError, match="vocab file not found"):
        squad_features.build(tmp_path / "squad.json", tmp_path / "nope.txt", tmp_path / "out")
    with pytest.raises(MlrunError, match="digest.json missing"):
        squad_features.load(tmp_path)
    assert squad_features.main(["--squad", "nope", "--vocab", "nope", "--out", str(tmp_path)]) == 2
