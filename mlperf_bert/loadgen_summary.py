"""Read LoadGen's mlperf_log_summary.txt into the figures a person looks at first, and say in words why a
result is INVALID (and what to change) and whether a run was too short to be submitted."""
import math
import re

from engine.errors import StepError

# The headline metric per scenario, as LoadGen names it in the summary.
METRIC_KEYS = {
    "Offline": ("Samples per second",),
    "Server": ("Completed samples per second", "Scheduled samples per second"),
    "SingleStream": ("90.0th percentile latency (ns)",),
    "MultiStream": ("99.0th percentile latency (ns)",),
}
PERCENTILE_KEY = re.compile(r"^(\d+)\.(\d+) percentile latency \(ns\)$")
NS_SUFFIX = " (ns)"
ALL = ("Offline", "Server", "SingleStream", "MultiStream")

# What a bert-99/bert-99.9 submission needs of a performance run's "Test Parameters Used" (round v6.1: the
# submission checker's performance_sample_count, TEST_DURATION_MS and OFFLINE_MIN_SPQ_SINCE_V4). Below any of
# these a run is short: fine for a look, never for a submission. (parameter, scenarios, minimum, what it is)
SUBMISSION_MINIMUMS = (
    ("performance_sample_count", ALL, 10833, "samples loaded (performance_sample_count)"),
    ("min_duration (ms)", ALL, 600000, "minimum duration (ms)"),
    ("samples_per_query", ("Offline",), 10833, "samples in the Offline query"),
)

# Why LoadGen says INVALID, in words, and the flag that fixes it: (the check that said NO, scenarios, why, fix).
# {names} come from the summary (its numbers, its notes) through _facts().
# The harness's Offline target is its measured rate x OFFLINE_MARGIN, and an Offline run INVALID for min
# duration is told the same factor: with LoadGen's own 1.1 the run stays VALID up to 21% faster than measured
# (measured: the rate pass read within 7% of LoadGen's samples/s, either way, 2 models, batch 1 and 8), at the
# cost of a run up to 21% over min_duration. An overestimate only lengthens the run; an underestimate voids it.
OFFLINE_MARGIN = 1.1
# A Server schedule capped at max_query_count queries spans cap / target_qps seconds on average, random either way:
# the target advised to fill min_duration is this fraction of cap / min_duration
SHORT_MARGIN = 0.8
INVALID_REASONS = (
    ("Performance constraints satisfied", ("Server",),
     "the p{percentile} latency {latency_ms} ms is over the {bound_ms} ms bound: the target load is more than "
     "this system answers in time", "lower --target-qps (now {target_qps}), or let --find-peak search for it"),
    ("Min duration satisfied", ("Offline",),
     "the run ended before its minimum duration ({min_duration_ms} ms): LoadGen issues target_qps x min_duration "
     "samples, and they took less than that", "raise --target-qps (now {target_qps}) to {offline_target}"),
    ("Min duration satisfied", ("SingleStream", "MultiStream"),
     "the run ended before its minimum duration ({min_duration_ms} ms): LoadGen generates queries for twice "
     "min_duration at target_latency each, and they ran more than twice as fast",
     "lower --target-latency (now {target_latency_ms} ms)"),
    # Server schedules max(min_query_count, target_qps x min_duration) queries: short of min_duration only where a
    # user.conf cap stops it (a higher target QPS, LoadGen's own advice and once ours, makes it shorter still)
    ("Min duration satisfied", ("Server",),
     "the queries were scheduled over less than the minimum duration ({min_duration_ms} ms){server_short_why}",
     "{server_short_fix}"),
    ("Min queries satisfied", ALL,
     "the test ended before min_query_count queries were issued{few_queries_why}", "{few_queries_fix}"),
    ("Early stopping satisfied", ("SingleStream", "MultiStream"),
     "early stopping needs at least {need} queries to bound the p{percentile} latency; this run issued {queries}",
     "{longer}{uncap}"),
    ("Early stopping satisfied", ("Server",),
     "early stopping needs {more} more queries, all within the bound, to show the p{percentile} latency is met",
     "a longer run ({longer}){uncap}{or_lower_qps}"),
)


COUNT_MOST = 10833   # the features of the SQuAD dev set: --count's most


def parse(path, features=COUNT_MOST, user_settings=()):
    """{"scenario", "mode", "result", "reasons", "explanation", "metric": {name: value}, "latency_ms": {"p50": ms,
    ...}, "short_because"}.

    Latencies are in ms (a metric named "... (ns)" in LoadGen is renamed "... (ms)").
    reasons: for an INVALID result, the checks that said NO and LoadGen's notes below them; explanation: the
    same in words with the flag to change (explain); short_because: why the run is too short to submit.
    features: how many the run could load (a --questions subset has fewer): --count's most, in the advice.
    user_settings: the settings the run's --user_conf gave: the advice names its line, not the flag (which the
    harness refuses beside it).
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise StepError(f"LoadGen wrote no summary ({error})") from None
    values, failed_checks, notes = {}, [], []
    for line in lines:
        key, sep, value = (part.strip() for part in line.partition(":"))
        if line.startswith(" * "):
            notes.append(line[3:].strip())
        elif line.startswith(" ") and notes and not sep:
            notes[-1] += " " + line.strip()  # a note wrapped onto the next line
        elif sep and value.upper() == "NO":
            failed_checks.append(f"{key}: NO")
        elif sep:
            values.setdefault(key, value)
    scenario, result = values.get("Scenario", ""), values.get("Result is", "")
    metric = {}
    for key in METRIC_KEYS.get(scenario, ()):
        if key in values:
            value = float(values[key])
            metric[key.replace(NS_SUFFIX, " (ms)")] = value / 1e6 if key.endswith(NS_SUFFIX) else value
    latency_ms = {}
    for key, value in values.items():
        if match := PERCENTILE_KEY.match(key):
            decimals = match.group(2).rstrip("0")
            latency_ms[f"p{match.group(1)}{'.' + decimals if decimals else ''}"] = int(value) / 1e6
    return {"scenario": scenario, "mode": values.get("Mode", ""), "result": result,
            "reasons": failed_checks + notes if result != "VALID" else [],
            "explanation": explain(scenario, failed_checks, notes, values, latency_ms, features, user_settings)
            if result != "VALID" else [],
            "metric": metric, "latency_ms": latency_ms,
            "short_because": short_because(scenario, values)}


def short_because(scenario, values):
    """What makes a run too short to submit: a line per parameter of "Test Parameters Used" below what a
    submission needs (SUBMISSION_MINIMUMS); none for a full-length run."""
    lines = []
    for name, scenarios, minimum, what in SUBMISSION_MINIMUMS:
        try:
            value = int(float(values[name]))
        except (KeyError, ValueError):
            continue
        if scenario in scenarios and value < minimum:
            lines.append(f"{what}: {value}, a submission needs {minimum}")
    return lines


# The flags the advice names, and the user.conf setting each is ("--min-duration=N" reads "min_duration = N").
FLAG_SETTINGS = {"--target-qps": "target_qps", "--target-latency": "target_latency", "--min-duration": "min_duration"}


def explain(scenario, failed_checks, notes, values, latency_ms, features=COUNT_MOST, user_settings=()):
    """[{"check", "why", "fix"}] for each check LoadGen said NO to (INVALID_REASONS), in words."""
    facts = _facts(scenario, notes, values, latency_ms, features)
    out = []
    for failed in failed_checks:
        check = failed.rsplit(":", 1)[0].strip()
        for name, scenarios, why, fix in INVALID_REASONS:
            if name == check and scenario in scenarios:
                fix = _fill(fix, facts)
                for flag, key in FLAG_SETTINGS.items():
                    if key in user_settings:
                        fix = re.sub(re.escape(flag) + "(=?)", lambda m, key=key: f"your --user_conf's {key}"
                                     + (" = " if m.group(1) else ""), fix)
                out.append({"check": check, "why": _fill(why, facts), "fix": fix})
                break
        else:
            out.append({"check": check, "why": f"LoadGen's check '{check}' said NO", "fix": "see the notes"})
    return out


def _facts(scenario, notes, values, latency_ms, features=COUNT_MOST):
    """The numbers INVALID_REASONS speak of, from the summary's parameters and notes (absent ones stay out)."""
    text = " ".join(notes)
    facts = {}
    percentile = {"SingleStream": 90, "MultiStream": 99, "Server": 99}.get(scenario)
    if percentile:
        facts["percentile"] = percentile
        if f"p{percentile}" in latency_ms:
            facts["latency_ms"] = f"{latency_ms[f'p{percentile}']:.2f}"
    for name, key, scale in (("min_duration (ms)", "min_duration_ms", 1), ("target_qps", "target_qps", 1),
                             ("target_latency (ns)", "bound_ms", 1e-6)):
        try:
            facts[key] = f"{float(values[name]) * scale:g}"
        except (KeyError, ValueError):
            pass
    # Offline: the rate this run reached, with the margin the harness's own target adds.
    try:
        rate = float(values["Samples per second"])
        facts["offline_target"] = f"{math.ceil(rate * OFFLINE_MARGIN * 1000) / 1000:g} or above ({OFFLINE_MARGIN} " \
                                  f"x the {rate:g} samples/s this run measured)"
    except (KeyError, ValueError):
        facts["offline_target"] = "the real samples/s or above"
    # SingleStream and MultiStream carry their expected latency as target_qps (queries per second, one at a time).
    if scenario in ("SingleStream", "MultiStream") and float(facts.get("target_qps", 0)):
        facts["target_latency_ms"] = f"{1000 / float(facts['target_qps']):.3g}"
    for pattern, key in ((r"Need to process at least (\d+) queries", "need"), (r"Only processed (\d+) queries", "queries"),
                         (r"Would need to run at least (\d+) more queries", "more"), (r"Processed (\d+) queries", "queries")):
        if (match := re.search(pattern, text)) and key not in facts:
            facts[key] = int(match.group(1))
    # Server: a lower load helps early stopping only where queries were late (a short run with every query
    # within the bound was told "a lower --target-qps so fewer are late")
    try:
        none_late = float(values["Max latency (ns)"]) <= float(values["target_latency (ns)"])
    except (KeyError, ValueError):
        none_late = False
    facts["or_lower_qps"] = "" if none_late else \
        f", or a lower --target-qps (now {facts.get('target_qps', '?')}) so fewer are late"
    # The --count that gives those queries: Server queries are one sample, MultiStream ones samples_per_query.
    if "more" in facts and "queries" in facts:
        facts["count"] = facts["queries"] + facts["more"]
    elif "need" in facts:
        facts["count"] = facts["need"] * int(float(values.get("samples_per_query", 1)))
    _capped(facts, values)
    if "count" in facts:   # --count stops at the features there are: past it, a longer --min-duration (it said
        count = facts["count"]   # --count=607114, which is refused)
        qps = float(facts.get("target_qps", 0) or 0)
        also = " (with --min-duration, a longer run)" if scenario != "Server" else ""   # Server's says "a longer run"
        facts["longer"] = f"--count={count} or more{also}" if count <= features else (
            f"--min-duration={math.ceil(count / qps * 1000)} or more: {count} queries at {qps:g}/s" if qps else
            f"a longer --min-duration: {count} queries, past the {features} features --count can take")
    return facts


def _capped(facts, values):
    """What a user.conf's max_query_count (or max_duration) did to a run: the "why" and "fix" the Server
    min-duration, min-queries and early-stopping reasons add (the harness itself sets neither)."""
    def number(name):
        try:
            return float(values[name])
        except (KeyError, ValueError):
            return 0
    cap, least, qps = int(number("max_query_count")), int(number("min_query_count")), number("target_qps")
    min_ms, max_ms = number("min_duration (ms)"), number("max_duration (ms)")
    facts.update(server_short_why="", server_short_fix="see mlperf_log_detail.txt for why the schedule was short",
                 few_queries_why=" (mlperf_log_detail.txt says why)", few_queries_fix="look for errors in "
                 "mlperf_log_detail.txt", uncap="")
    if cap and qps and min_ms and cap * SHORT_MARGIN <= qps * min_ms / 1000:
        # Poisson arrivals: cap / min_duration itself fell short 6 times in 6 (20/s for 20 queries in 1 s); a fifth
        # below it held. A run short of min_duration at a rate within that margin of the edge is the cap's doing too.
        facts["server_short_why"] = f": max_query_count {cap} stops the schedule at {cap} queries, " \
                                    f"{cap / qps * 1000:.0f} ms at {qps:g}/s"
        lower = math.floor(SHORT_MARGIN * cap / min_ms * 1e6) / 1000
        facts["server_short_fix"] = "raise or remove max_query_count (your --user_conf), or lower --target-qps " + (
            f"(now {qps:g}) to {lower:g} or below" if qps > lower else f"(now {qps:g}) further")
    elif max_ms and min_ms and max_ms < min_ms:
        facts["server_short_why"] = f": max_duration {max_ms:g} ms ends it first"
        facts["server_short_fix"] = f"raise or remove max_duration (your --user_conf) to {min_ms:g} ms or more"
    if cap and least and cap < least:
        facts["few_queries_why"] = f": max_query_count {cap} is below min_query_count {least}"
        facts["few_queries_fix"] = f"raise max_query_count (your --user_conf) to {least} or more, or remove it"
    wanted = facts["queries"] + facts["more"] if "more" in facts and "queries" in facts else facts.get("need", 0)
    if cap and wanted > cap:   # a longer --count or --min-duration alone still stops at the cap
        facts["uncap"] = f", with max_query_count {wanted} or more (your --user_conf stops it at {cap})"


def _fill(template, facts):
    """The template with the facts it names; one that is unknown reads "?" rather than failing."""
    return re.sub(r"\{(\w+)\}", lambda m: str(facts.get(m.group(1), "?")), template)


def verdict(loadgen):
    """One line: LoadGen's result, "(short: not for submission)" when short, and why it is INVALID."""
    result = loadgen.get("result") or "none in the LoadGen summary"
    if loadgen.get("short_because"):
        result += " (short: not valid for submission)"
    return result
