"""Uncased BERT tokenisation: BasicTokenizer, WordpieceTokenizer, FullTokenizer.

Port of google-research/bert tokenization.py (Apache-2.0, Copyright 2018 The Google AI Language Team).
The only change: words over 100 characters become [UNK], as in the tokenizer the MLPerf
reference QSL uses (transformers.BertTokenizer); Google's default is 200.
"""

import unicodedata


def load_vocab(vocab_file):
    """Token -> id, ids counted by line."""
    vocab = {}
    with open(vocab_file, encoding="utf-8") as reader:
        for index, line in enumerate(reader):
            vocab[line.strip()] = index
    return vocab


def whitespace_tokenize(text):
    return text.split()


class BasicTokenizer:
    """Cleans text, spaces out CJK characters, lower-cases, strips accents, splits punctuation."""

    def __init__(self, do_lower_case=True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text):
        text = _tokenize_chinese_chars(_clean_text(text))
        split_tokens = []
        for token in whitespace_tokenize(text):
            if self.do_lower_case:
                token = _strip_accents(token.lower())
            split_tokens.extend(_split_on_punc(token))
        return whitespace_tokenize(" ".join(split_tokens))


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece with '##' continuation pieces."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text):
        output_tokens = []
        for token in whitespace_tokenize(text):
            output_tokens.extend(self._word_pieces(token))
        return output_tokens

    def _word_pieces(self, word):
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:
                # No prefix of the rest is in the vocab: the whole word is unknown.
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces


class FullTokenizer:
    """Basic tokenisation then WordPiece, with id lookup."""

    def __init__(self, vocab_file, do_lower_case=True):
        self.vocab = load_vocab(vocab_file)
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)

    def tokenize(self, text):
        return [piece for token in self.basic_tokenizer.tokenize(text)
                for piece in self.wordpiece_tokenizer.tokenize(token)]

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab[token] for token in tokens]


def _clean_text(text):
    """Drop NUL, U+FFFD and control characters; turn any whitespace into a space."""
    output = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            continue
        output.append(" " if _is_whitespace(char) else char)
    return "".join(output)


def _tokenize_chinese_chars(text):
    output = []
    for char in text:
        if _is_chinese_char(ord(char)):
            output.extend((" ", char, " "))
        else:
            output.append(char)
    return "".join(output)


def _strip_accents(text):
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def _split_on_punc(text):
    """Every punctuation character becomes its own token."""
    output = []
    start_new_word = True
    for char in text:
        if _is_punctuation(char):
            output.append([char])
            start_new_word = True
        else:
            if start_new_word:
                output.append([])
            start_new_word = False
            output[-1].append(char)
    return ["".join(x) for x in output]


def _is_chinese_char(cp):
    """CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_whitespace(char):
    # \t, \n and \r are control characters but count as whitespace here.
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    # All non-letter/number ASCII counts as punctuation (e.g. "^", "$", "`"), as in BERT.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")
