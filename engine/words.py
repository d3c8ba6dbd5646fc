"""Words in messages: counts with the right plural, sizes, and the nearest right word for a typo.

One place for both, so every message says "1 entry", "2 entries" and every "did you mean" is chosen
the same way (edit distance, not similarity of unrelated words).
"""
import math
import re

# Plurals that are not the word + s (the last word of a phrase is the one that changes).
IRREGULAR = {"entry": "entries", "dependency": "dependencies", "recipe query": "recipe queries",
             "unused entry": "unused entries", "run without a record": "runs without a record",
             "is": "are", "was": "were", "download": "downloads", "match": "matches", "this": "these"}


def plural(n, word):
    """'1 entry', '3 entries', '0 nodes': the count and the word in the form the count needs."""
    return f"{n} {word if n == 1 else plural_form(word)}"


def plural_form(word):
    if word in IRREGULAR:
        return IRREGULAR[word]
    head, _, last = word.rpartition(" ")
    if last in IRREGULAR:
        return f"{head} {IRREGULAR[last]}".strip()
    if last.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def size_words(n):
    """'512 B', '3.4 MB', '1.2 GB' (1024-based)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def distance(a, b):
    """Edit distance counting a swap of two neighbours as one edit (optimal string alignment)."""
    a, b = a.lower(), b.lower()
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def nearest(word, choices, most=3):
    """The choices closest to word by edit distance, only those within a third of its length (at least 1,
    at most 3 edits), the closest first: no suggestion is better than an unrelated one."""
    limit = min(3, max(1, len(word) // 3))
    # a length further off than the limit is further off in edits too: a 100,000-character word took minutes
    scored = sorted((distance(word, c), c) for c in set(choices) if c != word and abs(len(c) - len(word)) <= limit)
    best = [(d, c) for d, c in scored if d <= limit]
    if not best:   # a prefix is a near word too: "onnx" for onnxruntime
        best = [(0, c) for c in sorted(set(choices)) if len(word) >= 3 and c.startswith(word)]
    return [c for _, c in best[:most]]


def did_you_mean(word, choices):
    """' (did you mean X?)', ' (did you mean X or Y?)', or '' when nothing is near."""
    close = nearest(word, choices)
    if not close:
        return ""
    return f" (did you mean {' or '.join(close) if len(close) <= 2 else ', '.join(close[:-1]) + ' or ' + close[-1]}?)"


def duration_seconds(value):
    """A timeout's seconds: a number of seconds, or text such as 90, 90s, 30m, 2h, 1d; None if it is none."""
    if isinstance(value, bool) or value is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", str(value).strip())
    seconds = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]] if m else 0
    return seconds if 0 < seconds < math.inf else None   # 400 digits are an infinite float: no duration
