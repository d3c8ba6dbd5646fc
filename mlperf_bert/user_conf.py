"""A user's LoadGen user.conf: read as LoadGen reads it, refused where LoadGen would drop a line unsaid.

LoadGen's parser (TestSettings::FromConfig, LoadGen 6.0) splits each line at whitespace and wants
`MODEL.SCENARIO.KEY = NUMBER`. Without a word it ignores `key=value` written without spaces, `key =` with no
value, a key it does not know (`target_qsp`), a scenario spelt otherwise (`offline`), a key the scenario does not
read (Offline's `target_latency`), another model's line (`bert-99.`: the harness names the model `bert`), and in
a user.conf the seeds it takes from mlperf.conf only; it rejects `#note` and a comment after a value with
"LoadGen rejected user.conf", no line named. Each of those is refused here, with the user's file and line, before
the model loads; and a run records the values LoadGen will really use (`values_set`).
"""
import difflib
import math
import re
import unicodedata
from pathlib import Path

from engine.errors import UsageError

MODEL = "bert"  # the model name the harness gives LoadGen
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
# key: the scenarios LoadGen reads it for (None: every scenario)
KEYS = {
    **dict.fromkeys(("min_duration", "max_duration", "min_query_count", "max_query_count",
                     "performance_sample_count_override", "accuracy_sample_count_override", "print_timestamps",
                     "performance_issue_unique", "performance_issue_same", "performance_issue_same_index",
                     "sample_concatenate_permutation", "accuracy_log_rng_seed", "accuracy_log_sampling_target",
                     "use_token_latencies", "infer_token_latencies", "token_latency_scaling_factor")),
    "target_qps": ("Server", "Offline"),
    "target_latency": ("SingleStream", "MultiStream", "Server"),
    "target_latency_percentile": ("SingleStream", "MultiStream", "Server"),
    "samples_per_query": ("MultiStream",),
    "coalesce_queries": ("Server",), "max_async_queries": ("Server",),
    "ttft_latency": ("Server",), "tpot_latency": ("Server",),
}
# read from mlperf.conf only: a user.conf's line is ignored
MLPERF_CONF_ONLY = ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed", "accuracy_log_probability",
                    "test05", "test05_qsl_rng_seed", "test05_sample_index_rng_seed", "test05_schedule_rng_seed",
                    "target_duration")   # mlperf.conf's own; a user.conf's changed nothing (LoadGen 6.0.17)
SET_BY_MLRUN = {"mode": "--mode"}  # the harness sets it after reading the file: the line would do nothing
# Read by C's strtoull (a whole number; "5e1" is 5, "1.5" is 1); Server's target_latency too (whole ms), the rest by
# strtod.
WHOLE = {"min_duration", "max_duration", "min_query_count", "max_query_count", "performance_sample_count_override",
         "accuracy_sample_count_override", "print_timestamps", "performance_issue_unique", "performance_issue_same",
         "performance_issue_same_index", "sample_concatenate_permutation", "coalesce_queries", "max_async_queries",
         "samples_per_query", "accuracy_log_sampling_target", "accuracy_log_rng_seed", "use_token_latencies",
         "infer_token_latencies", "token_latency_scaling_factor", "ttft_latency", "tpot_latency"}
# The harness's options that LoadGen reads as these keys: given both ways, one of them was silently dropped.
OPTION_KEYS = {"target_qps": "--target_qps", "target_latency": "--target_latency", "min_duration": "--min_duration"}


# LoadGen splits a line with C's isspace: ASCII white space only (a no-break space is part of a word there).
_SPACES = re.compile(r"[ \t\n\v\f\r]+")


def _words(line):
    return [word for word in _SPACES.split(line) if word]


def problems(text):
    """What LoadGen would ignore or reject in a user.conf's text, one 'line N: ...' each."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = _words(line)
        if not words or words[0] == "#":
            continue
        problem = _problem(words)
        odd = sorted({f"U+{ord(c):04X}" for c in line
                      if c.isspace() and not _SPACES.match(c) or unicodedata.category(c) == "Cf"})
        if problem and odd:   # invisible (a no-break space, a byte-order mark): say what LoadGen saw
            problem += (f" (it holds {', '.join(odd)}, an invisible character LoadGen reads as part of a word: "
                        "write plain text and spaces)")
        if problem:
            found.append(f"line {number} ({line.strip()[:80]}): {problem}")
    return found


def _problem(words):
    if words[0].startswith("#"):
        return "LoadGen takes a comment only after a lone '#' and a space ('# note')"
    if len(words) == 2 and words[1] == "=":
        return "no value after '=' (LoadGen ignores the line)"
    if len(words) < 3 or words[1] != "=":
        return "LoadGen reads 'MODEL.SCENARIO.KEY = VALUE', spaces around the '=' (this line would be ignored)" \
            if "=" in "".join(words) else "not 'MODEL.SCENARIO.KEY = VALUE'"
    if len(words) > 3:
        return "one value after '=', nothing after it (LoadGen refuses a comment there)"
    if number(words[2]) is None:
        return f"{words[2]!r} is not a number (LoadGen refuses the file)"
    parts = words[0].split(".")
    if len(parts) != 3:
        return "the key must be MODEL.SCENARIO.KEY"
    model, scenario, key = parts
    if model not in (MODEL, "*"):
        return f"model {model!r}: this harness's LoadGen reads lines of model '{MODEL}' or '*' only " \
               f"(write {MODEL}.{scenario}.{key})"
    if scenario not in SCENARIOS + ("*",):
        return f"no scenario {scenario!r}{_did_you_mean(scenario, SCENARIOS)} (or '*')"
    if key in SET_BY_MLRUN:
        return f"mlrun sets LoadGen's {key}: give {SET_BY_MLRUN[key]}"
    if key in MLPERF_CONF_ONLY:
        return f"LoadGen reads {key} from mlperf.conf only: in a user.conf it is ignored"
    if key not in KEYS:
        return f"LoadGen has no setting {key!r}{_did_you_mean(key, list(KEYS))}"
    if scenario != "*" and KEYS[key] and scenario not in KEYS[key]:
        return f"LoadGen reads {key} for {', '.join(KEYS[key])} only: for {scenario} it is ignored"
    whole = key in WHOLE or key == "target_latency" and scenario in ("Server", "*")
    value = words[2]
    if key in ("target_qps", "target_latency"):   # LoadGen takes nan, inf, 0, -5: the harness then failed or lied
        read = number(value, whole)
        if not (isinstance(read, (int, float)) and math.isfinite(read) and 0 < read) or value.startswith("-"):
            return f"{value} is no {'rate' if key == 'target_qps' else 'latency'}: give a positive number"
        if read >= 2 ** 63:   # a positive number, called "no positive number"
            return f"{value} is past what LoadGen holds for {key} (below 2**63)"
    if whole and re.fullmatch(r"-(0[xX][0-9a-fA-F]+|[0-9]+)", value):   # strtoull wraps it round
        return f"LoadGen reads {key} as a number of no sign: {value} would be {number(value, True)}"
    if whole and WHOLE_WORD.fullmatch(value) and number(value, True) == MOST:   # strtoull's ceiling
        return f"LoadGen reads {key} as at most {MOST}: {value} would be {MOST}" if _whole_part(value, clamp=False) \
            > MOST else None
    if whole and re.fullmatch(r"\+?0[0-7]+", value):   # C's base 0: a leading zero is octal
        return f"LoadGen reads {value} as an octal number: {key} would be {int(value, 8)} (write it without the 0)"
    if whole and not WHOLE_WORD.fullmatch(value):
        return (f"LoadGen reads {key}" + (" for Server" if key == "target_latency" else "") + " as a whole number: "
                f"{words[2]} would be {_whole_part(words[2])}")
    return None


WHOLE_WORD = re.compile(r"\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


MOST = 2 ** 64 - 1   # strtoull's ERANGE value: a larger number is read as this


def _whole_part(text, clamp=True):
    """What C's strtoull makes of text: the digits it starts with (5e1 -> 5, 1.5 -> 1, 1_000 -> 1), at most MOST."""
    match = WHOLE_WORD.match(text)
    if not match:
        return 0
    digits = match.group(1)
    value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 8) if digits.startswith("0") else int(digits)
    return min(value, MOST) if clamp else value


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) \
        or [c for c in choices if c.lower() == word.lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def check(path):
    """Refuse a user.conf LoadGen would read otherwise than it says (exit 2, every line named)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"user.conf {path} is not UTF-8 text") from None
    found = problems(text)
    if found:
        raise UsageError(f"user.conf {path}: " + "; ".join(found),
                         hint="LoadGen would drop, misread or refuse these lines (docs/results.md: your own LoadGen "
                              "settings; its keys are those of mlperf.conf)")


def values_set(lines, scenario):
    """{setting: value} the user.conf lines set for this scenario, as LoadGen looks them up: MODEL.SCENARIO.
    first, then *.SCENARIO., then MODEL.*., then *.*. (a scenario's line beats the model's wildcard line);
    for one key, the last line."""
    found = {}
    for line in lines:
        words = _words(line)
        if len(words) != 3 or words[1] != "=" or words[0].startswith("#"):
            continue   # a line LoadGen would not read (check() refuses those in a user's file)
        parts = words[0].split(".")
        if len(parts) == 3 and parts[0] in (MODEL, "*") and parts[1] in (scenario, "*"):
            rank = (parts[1] == scenario) * 2 + (parts[0] == MODEL)
            if rank >= found.get(parts[2], (-1, None))[0]:
                whole = parts[2] in WHOLE or parts[2] == "target_latency" and scenario == "Server"
                value = number(words[2], whole)
                found[parts[2]] = (rank, words[2] if value is None else value)
    return {key: value for key, (_, value) in found.items()}


def number(text, whole=False):
    """The number LoadGen reads in text, else None (LoadGen refuses a word C's strtod does not read whole).
    whole: a key read by strtoull with base 0 (010 is 8, 0x10 16, 5e1 5, -5 2**64-5); else by strtod (010 is 10,
    0x1p4 16)."""
    if not text.isascii() or "_" in text:   # Python reads 1_000 and Arabic digits; C does not
        return None
    try:
        value = float.fromhex(text) if re.match(r"[+-]?0[xX]", text) else float(text)
    except ValueError:
        return None
    if whole:
        part = _whole_part(text.lstrip("+-"), clamp=False)
        if part > MOST:   # out of range: ULLONG_MAX, whatever the sign
            return MOST
        return (-part) % 2 ** 64 if text.startswith("-") else part
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else value


def conflicts(lines, scenario, args):
    """What a harness option and the user.conf both set for this scenario (the user.conf's line won unsaid), and
    find-peak beside a user.conf target_qps (every trial ran at the file's rate: the search never ended)."""
    values = values_set(lines, scenario)
    out = [f"{flag} and the user.conf's {key} = {values[key]}" for key, flag in OPTION_KEYS.items()
           if getattr(args, key, None) is not None and key in values]
    if getattr(args, "find_peak", False) and "target_qps" in values:
        out.append(f"--find_peak searches target_qps, which the user.conf sets ({values['target_qps']})")
    return out

