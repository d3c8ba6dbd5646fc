"""Find the highest Server target QPS that LoadGen calls VALID, by a search over short runs.

    find_server_peak(run_fn, start_qps, ...) -> PeakSearch

run_fn(target_qps, min_query_count) runs one short LoadGen Server run and returns its parsed
summary (mlperf_bert.loadgen_summary.parse). A run's verdict (`classify`):
  valid      "Result is : VALID".
  too high   the latency bound was missed ("Performance constraints satisfied : NO"), or early stopping
             would need more queries than the budget allows (too many queries over the bound at this load).
  too few    INVALID only for the run's length (early stopping, min queries, min duration): LoadGen says
             how many more queries it needs ("Would need to run at least N more queries"), so the same
             target is run again with that many (at most max_queries); it is never read as too high or as
             valid.
The search brackets the peak from start_qps (up by `growth` while valid, down by half while not), then
bisects (geometric middle) until the highest valid and the lowest not-valid target are within
`tolerance` of each other (never halving below floor x start_qps: a run at a low rate is long). Where a
run says where the queue model puts its peak (next_target), the next run goes just under that instead,
until two such runs came out on the other side of it; a run too short for early stopping runs again
with the queries its share of late queries needs (classify). A search that challenges another's target
(another layout's) starts there and stops when that first run is not valid.
The found target is the highest valid one. A full-length check (check_fn) follows when given: if it
misses the bound, the target steps down by `tolerance` (or to `tolerance` below the rate the check
completed, when that is lower: the machine did not sustain the target) and is checked again, at most
`check_retries` times; if it is only too short for early stopping, it runs once more with the queries early
stopping asked for, and if still undecided steps down as for a miss, each check at least as long as the last asked.
Every run is recorded in PeakSearch.trials and PeakSearch.checks; the harness keeps each check's
LoadGen logs in find-peak/check-NN (kept_checks), since every check writes the run folder's.
"""
import math
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import StepError

VALID, TOO_HIGH, TOO_FEW = "valid", "too high", "too few queries"
LATENCY_CHECK = "Performance constraints satisfied: NO"
LENGTH_CHECKS = ("Early stopping satisfied: NO", "Min queries satisfied: NO", "Min duration satisfied: NO")
NEED_MORE = re.compile(r"Would need to run at least (\d+) more queries")
PROCESSED = re.compile(r"Processed (\d+) queries")
COMPLETED = "Completed samples per second"


def classify(summary, max_queries, percentile=99.0):
    """(verdict, queries to run next for TOO_FEW or None, reason) of a parsed LoadGen summary. Where early stopping
    alone was short, the queries next are what the run's share of queries over the bound needs (queries_to_pass,
    at most max_queries), not LoadGen's least (every further query within the bound): that grew 550, 662, 838,
    1001, 1307, 1453 queries over six runs of one target, each seeing one or two more late queries. The share
    does not make a run too high: on this Xeon one run of 28 QPS had 11 of 1157 queries late (0.95%, too many
    for 4096) and the next, of 2144, was VALID; its machine's slow spells come and go within a short run."""
    if summary.get("result") == "VALID":
        return VALID, None, "VALID"
    reasons = summary.get("reasons") or []
    text = "; ".join(reasons) or f"result {summary.get('result') or 'missing'}"
    if LATENCY_CHECK in reasons:
        return TOO_HIGH, None, f"latency bound missed ({text})"
    failed = [reason for reason in reasons if reason.endswith(": NO")]
    if failed and all(reason in LENGTH_CHECKS for reason in failed):
        more = next((int(m[1]) for r in reasons if (m := NEED_MORE.search(r))), None)
        done = next((int(m[1]) for r in reasons if (m := PROCESSED.search(r))), None)
        needed = done + more if more is not None and done is not None else None
        if needed is not None and needed > max_queries:
            return TOO_HIGH, None, (f"early stopping would need {needed} queries, more than the {max_queries} "
                                    f"allowed: too many queries over the bound at this load ({text})")
        late = late_queries(done, more, percentile) if needed is not None and max_queries < math.inf else None
        if late is None:
            return TOO_FEW, needed, f"run too short to decide ({text})"
        # one more late query than seen: a share measured on a few late queries is as often low as high; and no
        # more than 4 times this run's queries (one late query of 40 is no share to run 4096 queries on)
        likely = min(queries_to_pass((late + 1) / done, late, percentile, max_queries) or max_queries, 4 * done)
        return TOO_FEW, max(needed, likely), (f"run too short to decide: {late} of its {done} queries over the "
                                              f"bound, {max(needed, likely)} queries next ({text})")
    return TOO_HIGH, None, f"INVALID ({text})"


def early_stopping_queries(late, percentile=99.0, confidence=0.99):
    """LoadGen's early stopping for Server: the fewest queries, `late` of them over the bound, that show the
    percentile's latency met at `confidence`: the least n with P(Binomial(n, 1 - percentile) <= late) <= 1 -
    confidence. Its logs agree: no late query needs 459 queries, one 662, two 838, three 1001, six 1453."""
    p = 1 - percentile / 100

    def passes(n):
        head = math.lgamma(n + 1)
        return sum(math.exp(head - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
                            + (n - k) * math.log1p(-p)) for k in range(late + 1)) <= 1 - confidence
    low, high = late, max(2 * late, 64)
    while not passes(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high


def late_queries(processed, more, percentile=99.0, most=10**5):
    """How many of a run's processed queries were over the bound, from LoadGen's "would need at least `more` more
    queries" (it asks for early_stopping_queries(late) in all); None where no count gives exactly that (another
    rule than the one early_stopping_queries follows) or it is over `most` queries."""
    total = processed + more
    if total > most:
        return None
    low, high = -1, max(1, total // 50)   # early_stopping_queries(late) > 100 late at p99
    while early_stopping_queries(high, percentile) < total:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if early_stopping_queries(middle, percentile) < total else (low, middle)
    return high if early_stopping_queries(high, percentile) == total else None


def queries_to_pass(share, late, percentile=99.0, most=4096):
    """The fewest queries early stopping passes when `share` of them are over the bound (at least `late` of them);
    None where that is more than `most` (a share near or over 1 - percentile never passes)."""
    while (queries := early_stopping_queries(late, percentile)) <= most:
        if share * queries <= late:
            return queries
        late += 1
    return None


@dataclass
class PeakSearch:
    qps: float | None               # the highest target found valid (None: none was); after checks, the VALID one
    upper: float | None             # the lowest target found not valid (None: none was)
    tolerance: float
    trials: list = field(default_factory=list)   # every short run, in order
    checks: list = field(default_factory=list)   # the full-length checks, in order
    checked_valid: bool | None = None             # None: no full-length check was run
    checked_qps: float | None = None              # the last check's target: what the run ran at (qps: the search's)
    note: str = ""
    queries: int = 0                              # the queries early stopping asked for: every later run's least
    found: float | None = None                    # the search's own highest valid target, before any check
    challenge: float | None = None                # where it started: the target another layout's search found
    lost_challenge: bool = False                  # not valid there: it stopped (resume= goes on from it)

    def record(self):
        return asdict(self)


def find_server_peak(run_fn, start_qps, *, tolerance=0.05, min_queries=64, max_queries=4096, growth=1.5,
                     max_runs=24, floor=1 / 16, check_fn=None, check_retries=3, challenge=None, resume=None,
                     most=None):
    """The PeakSearch for run_fn (see the module's doc); start_qps: a first guess, e.g. Offline samples/s.
    The target is never halved below floor x start_qps (a run at a low rate takes long: its queries / rate), nor
    raised above `most` QPS where given (a bound that never binds, --target_latency=100000000, found every target
    VALID, each run longer than the last: over 5 minutes of runs on a 2-layer model with --count=32).
    challenge: a target another search found (another layout's): the first run is there, and where it is not
    valid the search stops (`lost_challenge`): this one cannot beat it. resume: such a search, to go on from."""
    if not start_qps or start_qps <= 0:
        raise ValueError(f"start_qps must be positive, not {start_qps!r}")
    search = resume or PeakSearch(None, None, tolerance, challenge=challenge)
    search.lost_challenge, search.note = False, ""
    learned = {"queries": max(min_queries, search.queries)}  # what early stopping asked for once, later runs start with
    wrong = 0   # aimed runs that came out on the other side of their aim: after two, no more aiming

    def runs_left():
        return len(search.trials) < max_runs

    def is_valid(qps):
        queries = learned["queries"]
        while True:
            summary = run_fn(qps, queries)
            verdict, needed, reason = classify(summary, max_queries)
            ceiling = summary.get("steady_ceiling") or {}
            search.trials.append(_run_record(qps, verdict, reason, summary, min_query_count=queries,
                                             aim_qps=(ceiling.get("matched") or {}).get("qps") or None,
                                             ceiling_qps=ceiling.get("qps") or None))
            if verdict != TOO_FEW:
                return verdict == VALID
            next_queries = max(needed or 2 * queries, queries + 1)
            learned["queries"] = min(next_queries, max_queries)
            if next_queries > max_queries or not runs_left():
                search.trials[-1]["verdict"] = TOO_HIGH
                search.trials[-1]["reason"] += f"; undecided within {max_queries} queries: counted as not valid"
                return False
            queries = next_queries

    def next_one():
        last = search.trials[-1]
        return next_target(search.qps, search.upper, last["aim_qps"] if wrong < 2 else None,
                           last["ceiling_qps"], tolerance, growth, start_qps * floor)

    qps, aimed = next_one() if resume else (float(challenge or start_qps), None)
    while qps is not None:
        first = len(search.trials)
        valid = is_valid(qps)
        for trial in search.trials[first:]:
            trial["aimed_at"] = aimed   # the queue model's aim that set this target, None where plain bracketing did
        if valid:
            search.qps = qps
        else:
            search.upper = qps
        wrong += aimed is not None and valid != (qps <= aimed)   # one may be the machine's noise; two, the model
        if challenge and not resume and first == 0 and not valid:
            search.lost_challenge = True
            break
        if (search.qps and search.upper and search.upper / search.qps <= 1 + tolerance) or not runs_left():
            break
        qps, aimed = next_one()
        if most and qps is not None and qps > most:
            if search.qps is not None and search.qps >= most:
                break
            qps, aimed = most, None   # one run at the highest target searched
    if search.lost_challenge:
        search.note = f"not valid at {challenge:.3g} QPS, the other layout's target: searched no further"
    elif search.qps is None:
        search.note = f"no target down to {min(t['target_qps'] for t in search.trials):.3g} QPS was valid"
    elif search.upper is None and most and search.qps >= most:
        search.note = f"every target up to {search.qps:.3g} QPS was valid, the highest it searches"
    elif search.upper is None:
        search.note = f"every target up to {search.qps:.3g} QPS was valid (run budget spent)"
    elif search.upper / search.qps > 1 + tolerance:
        search.note = f"run budget spent before the bracket narrowed to {tolerance:.0%}"
    search.queries, search.found = learned["queries"], search.qps
    if check_fn and search.qps:
        check_peak(search, check_fn, check_retries)
    return search


def next_target(low, high, aim, ceiling, tolerance, growth, least):
    """(the next run's target, the aim it was set by or None) between the highest valid target (low) and the lowest
    not valid one (high), either None while unknown; None as the target where none is left above `least`.
    aim: where the queue model puts the last run's peak, on a machine as slow as its p99 says (the harness's
    sut_times.steady_ceiling.matched); ceiling: on a machine that never slowed down (an upper bound of sorts: it
    overshot this Xeon's VALID target by 25%).
    Without an aim: up by `growth`; down by half, or to just under the ceiling where that is lower; or the geometric
    middle. With one, just under it, inside the bracket: where the aim is at or below `low`, one tolerance step
    above `low`, whose miss ends the search; where at or above `high`, without it. On the Xeon, halving from
    Offline's 66.7 QPS went to 16.7, and six runs climbed back to the 31.9 found."""
    if aim:
        target = aim * (1 - tolerance / 2)
        if low is not None:
            target = max(target, low * (1 + tolerance))
        if high is not None:
            target = min(target, high / (1 + tolerance))
        if (low is None or target > low) and (high is None or target < high) and target >= least \
                and (low is None or high is None or high / low > (1 + tolerance) ** 2):
            return target, aim
    if high is None:
        return low * growth, None
    if low is None:
        lower = min(high / 2, ceiling * (1 - tolerance / 2)) if ceiling else high / 2
        return (max(lower, least), None) if high > least else (None, None)
    return math.sqrt(low * high), None


def check_peak(search, check_fn, check_retries=3):
    """The full-length checks of a search's found target (see the module's doc), recorded in the search."""
    queries, qps, lengthened = search.queries, search.qps, False
    for _ in range(check_retries + 1):
        summary = check_fn(qps, queries)
        verdict, needed, reason = classify(summary, max_queries=math.inf)
        search.checks.append(_run_record(qps, verdict, reason, summary))
        if verdict == VALID:
            search.qps = qps
            break
        if verdict == TOO_FEW and needed and needed > queries and not lengthened:
            # Once, the same target with the queries early stopping asked for (it counts them from this
            # run's tail, which the short search runs did not see): a lower target would run shorter still.
            queries, lengthened = needed, True
            continue
        if verdict == TOO_FEW:
            # lengthened once and still undecided: its tail sits at the bound and early stopping asks for more
            # each time (1453 queries at a p99 of 124 ms asked for 1874); a step down has fewer late queries.
            # It gave up here, "lengthen it", with a VALID target 5% lower in reach.
            queries = max(queries, needed or 0)
        qps = step_down(qps, summary, search.tolerance)
    else:
        if verdict == TOO_FEW and not search.note:   # the last check only needed more queries: it said nothing
            search.note = ("the last full-length check was too short for LoadGen's early stopping"
                           + (f" (it needs {needed} queries)" if needed else "") + " and the checks' budget was "
                           "spent: run it again with a longer --min_duration")
    search.checked_valid = verdict == VALID
    search.checked_qps = round(search.checks[-1]["target_qps"], 3)
    if verdict == TOO_HIGH:
        search.note = (search.note + "; " if search.note else "") + "no full-length check was VALID"
        busy = [str(n) for n, check in enumerate(search.checks, 1) if (check["other_load"] or {}).get("busy")]
        if busy:   # someone else's work, not the target, may have sunk them
            search.note += (f"; other processes were busy during check {', '.join(busy)} (checks[].other_load):"
                            " run it again on a quiet machine")
    search.queries = queries


def _run_record(qps, verdict, reason, summary, **extra):
    """What the search keeps of one run (a short run or a full-length check)."""
    return {"target_qps": round(qps, 3), **extra, "verdict": verdict, "reason": reason,
            "result": summary.get("result"), "p99_ms": summary.get("latency_ms", {}).get("p99"),
            "completed_qps": summary.get("metric", {}).get(COMPLETED), "other_load": summary.get("other_load")}


def step_down(qps, summary, tolerance):
    """The next full-length check's target after one that missed the bound: `tolerance` lower, or, when the
    machine completed fewer samples per second than that (a backlog grew all run long: a target it cannot
    sustain, not a tail a little over the bound), `tolerance` below what it completed."""
    completed = summary.get("metric", {}).get(COMPLETED)
    lower = qps * (1 - tolerance)
    return min(lower, completed * (1 - tolerance)) if completed else lower


# -- the harness's --find-peak: each LoadGen run in a fresh process --------------------------------

def harness_argv(args, **changes):
    """The harness command-line options of a parsed namespace, with `changes` (None drops an option)."""
    values = {**vars(args), **changes}
    argv = []
    for name, value in values.items():
        if value is None or name in ("find_peak", "strict", "batching") or name.startswith("peak_"):
            continue  # the search's runs are judged by the search; --strict judges only its outcome; batching
            # is a run's own choice (mlperf_bert.batching), not a flag: each short run makes its own
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def run_harness(argv, out_dir):
    """Run the harness once in a fresh process (LoadGen's settings are read once per process); its summary.json."""
    import json
    out_dir = Path(out_dir)
    result = subprocess.run([sys.executable, "-m", "mlperf_bert.harness", *argv, "--out", str(out_dir)],
                            capture_output=True, text=True)
    summary_path = out_dir / "summary.json"
    if not summary_path.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StepError(f"a --find-peak run in {out_dir} failed (exit {result.returncode}): {last}")
    summary = json.loads(summary_path.read_text())
    if summary.get("error"):   # samples that failed return fast: LoadGen's VALID would push the search up
        raise StepError(f"a --find-peak run in {out_dir} failed: {summary['error']}")
    return summary


TRIAL_KEYS = ("min_duration", "min_query_count", "target_qps")   # a short run's own settings


def short_run(args, out_dir, scenario, min_queries, trial_ms, **changes):
    """A harness run of `scenario` in out_dir lasting trial_ms and min_queries queries; its summary.json."""
    if scenario != "Server":   # Server's own option: the SingleStream and Offline runs refused it, and the search
        changes.setdefault("streams", None)   # of deepsparse --streams always failed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = out_dir / "search.conf"  # the user's lines, then the short run's length (later lines win)
    user_lines = Path(args.user_conf).read_text().splitlines() if args.user_conf else []
    # less what the short run sets itself: the user's min_duration made every trial as long as a full run
    kept = [line for line in user_lines if line.split("=")[0].strip().rsplit(".", 1)[-1] not in TRIAL_KEYS]
    conf.write_text("\n".join(kept) + f"\nbert.{scenario}.min_query_count = {min_queries}\n")
    return run_harness(harness_argv(args, scenario=scenario, user_conf=str(conf), min_duration=trial_ms, out=None,
                                    **changes), out_dir)


def check_run(args, run_dir, target_qps, learned_queries, **changes):
    """The full-length check: this run's own settings at target_qps, in run_dir. A short run (--count) gets at
    least the queries early stopping asked for in the search (a user.conf line of the user's still wins)."""
    # the harness's own line: a user.conf line of the user's still wins (LoadGen takes bert.Server. before a user's
    # *.Server. line, so the harness leaves out a key the user's lines set)
    learned = learned_queries if args.count and learned_queries > args.count else None
    argv = harness_argv(args, target_qps=round(target_qps, 3), min_queries=learned, out=None, **changes)
    return loadgen_and_load(run_harness(argv, run_dir))


def loadgen_and_load(summary):
    """What a search's run_fn/check_fn returns of a harness summary: LoadGen's summary, the other_load and the
    queue model's ceilings (sut_times.steady_ceiling: where the search aims next)."""
    return {**summary["loadgen"], "other_load": summary.get("other_load"),
            "steady_ceiling": (summary.get("sut_times") or {}).get("steady_ceiling")}


CHECK_LOGS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "user.conf")


def kept_checks(check_fn, run_dir, folder):
    """check_fn that also copies each full-length check's LoadGen logs to folder/check-NN: the next check
    (a step down) writes over the run folder's, and a failed check's p99 and counts are its evidence."""
    counter = iter(range(1, 10**6))

    def check(target_qps, learned_queries):
        summary = check_fn(target_qps, learned_queries)
        kept = Path(folder) / f"check-{next(counter):02d}"
        kept.mkdir(parents=True, exist_ok=True)
        for name in CHECK_LOGS:
            if (Path(run_dir) / name).is_file():
                shutil.copy2(Path(run_dir) / name, kept / name)
        return summary
    return check


def harness_run_fn(args, folder, trial_ms, **changes):
    """run_fn for find_server_peak: a short harness Server run per call, in folder/trial-NN (changes: options of
    its own, as a layout the search tries)."""
    counter = iter(range(1, 10**6))

    def run_fn(target_qps, min_queries):
        trial = Path(folder) / f"trial-{next(counter):02d}"
        return loadgen_and_load(short_run(args, trial, "Server", min_queries, trial_ms,
                                          target_qps=round(target_qps, 3), **changes))
    return run_fn
