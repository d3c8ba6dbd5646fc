"""Run the official MLPerf submission checker on a tree, sort what it says, and tabulate the results.

The checker runs as it is (`python -m inference.tools.submission.submission_checker.main`), with none of
its --skip options. Its log is parsed into errors and warnings. An error that only a short run causes
(durations, query and sample counts below the rules', early stopping without enough queries) is listed
apart as a short-run complaint: a `--short` rehearsal passes with those alone, a real submission does not.
Everything is saved beside the tree (never inside it: the checker would complain about extra files).
"""
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

from engine.errors import MlrunError, UsageError

CHECKER = "inference.tools.submission.submission_checker.main"
TIMEOUT = 1800
LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ (\S+?):(\d+) ([A-Z]+)\] ?(.*)$")
STARTING = re.compile(r"^Starting (.+) for: (.*)$")
# Lines that only repeat that something above failed.
FOLLOW_ON = re.compile(r"^(Some .+ Checks failed for: |NoResults |SUMMARY: submission has errors)")
# The checker's complaints (v6.1, tools/submission/submission_checker/checks/*.py) that come only from a
# run shorter or smaller than the rules': a --short rehearsal makes every one of them.
SHORT_RUN = [re.compile(p) for p in (
    r"performance_sample_count, found \d+, needs to be >= \d+",                          # performance_check
    r"Required minimum Query Count not met by user config",                               # performance_check
    r"Required minimum samples per query not met by user config",                         # performance_check
    r"Test duration less than 600s in user config",                                       # performance_check
    r"^Early stopping condition was not met",                                             # performance_check
    r"^Not enough samples were processed for early stopping",                             # performance/utils
    r"accur\w* run does not cover all dataset",                                           # accuracy_check
)]
# TEST01's verify_performance.py fails a run LoadGen calls INVALID (too few queries for early stopping) and
# compares timings within 10-20 %, which a run of seconds cannot hold: short-run only in a result whose
# runs the checker also found short, a real error anywhere else.
SHORT_RUN_IF_SHORT = [re.compile(r"^Compliance test performance check in .* failed")]      # compliance_check
# The checker's accuracy verdict (checks/accuracy_check.py), logged as a WARNING before its ERROR line.
ACCURACY_NOT_MET = re.compile(r"accuracy not met")
SCENARIO_DIR = re.compile(r"(?:^|/)(closed|open|network)/([^/]+)/results/([^/]+)/([^/]+)/([^/]+)(?:/|$)")
# The metric the checker reports per scenario (constants.RESULT_FIELD_NEW, v6.1) and its unit.
METRICS = {"Offline": ("result_samples_per_second", 1, "samples/s"),
           "Server": ("result_completed_samples_per_sec", 1, "queries/s"),
           "SingleStream": ("early_stopping_latency_ss", 1e-6, "latency ms"),
           "MultiStream": ("early_stopping_latency_ms", 1e-6, "latency ms")}


@dataclasses.dataclass
class CheckResult:
    ok: bool
    errors: list
    short_run_errors: list
    warnings: list
    table: list
    log: str
    summary: str
    out_dir: str = ""
    short: bool = False
    version: str = ""

    def to_dict(self):
        return dataclasses.asdict(self)


def default_out_dir(tree_dir):
    """`<tree>-check/` beside the tree: the checker must not find extra files inside it."""
    tree_dir = os.path.abspath(tree_dir)
    return os.path.join(os.path.dirname(tree_dir), os.path.basename(tree_dir) + "-check")


def need_folder(tree_dir):
    """tree_dir made absolute, if it is a folder (a usage error saying what it is, if not)."""
    tree_dir = os.path.abspath(tree_dir)
    if not os.path.isdir(tree_dir):
        raise UsageError(f"{tree_dir}: " + ("a file, not a folder" if os.path.exists(tree_dir) else "no such folder"),
                         hint="give the submission tree: the folder holding closed/, open/ or network/")
    return tree_dir


def check(src_dir, tree_dir, version="v6.1", short=False, out_dir=None):
    """Run the official checker of src_dir (an `inference/` tree) on tree_dir; save and return what it found."""
    tree_dir = need_folder(tree_dir)
    src_dir = os.path.abspath(src_dir)
    if not os.path.isfile(os.path.join(src_dir, *CHECKER.split(".")[1:]) + ".py"):
        raise UsageError(f"{src_dir} holds no submission checker (tools/submission/submission_checker/main.py)")
    out_dir = os.path.abspath(out_dir or default_out_dir(tree_dir))
    if out_dir == tree_dir or out_dir.startswith(tree_dir + os.sep):
        raise UsageError(f"{out_dir} is inside the tree {tree_dir}",
                         hint="the checker would find the files saved there: choose a folder outside it")
    os.makedirs(out_dir, exist_ok=True)
    log_path, csv_path = os.path.join(out_dir, "checker.log"), os.path.join(out_dir, "summary.csv")
    for stale in (log_path, csv_path):
        if os.path.exists(stale):
            os.remove(stale)
    code = _run(src_dir, tree_dir, version, log_path, csv_path, out_dir)
    with open(log_path, errors="replace") as f:
        text = f.read()
    if code == 2 and "usage:" in text:   # the checker's own argparse refused an option (an unknown --version)
        raise UsageError(f"the submission checker refused the command line: {text.strip().splitlines()[-1]}")
    result = interpret(text, code, short)
    # named first: the checker's words hid them
    result.errors = missing_files(tree_dir) + other_mode_logs(tree_dir) + result.errors
    result.ok = result.ok and not result.errors
    failed = []
    failures = open_compliance_failures(tree_dir, failed)   # the open division's checker skips compliance: said here
    result.table = table(tree_dir, result.table)
    # an INVALID performance run: the v6.1 checker passes it (its validity check is True either way), and the
    # table mlrun shows beside an OK verdict read INVALID
    invalid = [r for r in result.table if r["valid"] == "INVALID"]
    failures += [f"{r['division']}/{r['system']}/{r['benchmark']}/{r['scenario']}: its performance run is INVALID "
                 "(result_validity in its mlperf_log_detail.txt; the official checker passes it, the rules do not)"
                 for r in invalid]
    failed += [_result_of(r) for r in invalid]
    if short:
        result.short_run_errors += failures
    elif failures:
        result.errors += failures
        result.ok = False
        for row in result.table:   # its verdict read "short-run" beside a real error of that result
            if _result_of(row) in failed:
                row["checker"] = "errors"
    result.log, result.out_dir, result.short, result.version = log_path, out_dir, short, version
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(format_table(result.table) + "\n")
    with open(os.path.join(out_dir, "check.json"), "w") as f:
        json.dump(dict(result.to_dict(), tree=tree_dir, sources=src_dir), f, indent=1)
        f.write("\n")
    return result


def _result_of(row):
    """A table row's result folder, as the checker's verdicts name it (division, submitter, system, benchmark,
    scenario)."""
    return tuple(row[k] for k in ("division", "submitter", "system", "benchmark", "scenario"))


def open_compliance_failures(tree_dir, where=None):
    """TEST01 performance verifications that failed in the open division, whose checker skips compliance
    ("Compliance tests not needed for open division"): it said OK over a TEST01 run 33% faster than the
    performance run (the machine's load changed between them). where: a list that gets each failure's result
    (division, submitter, system, benchmark, scenario)."""
    import glob
    out = []
    pattern = os.path.join(tree_dir, "open", "*", "results", "*", "*", "*", "TEST01", "verify_performance.txt")
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if any(line.strip() == "TEST PASS" for line in lines):
            continue
        submitter, _, system, benchmark, scenario = path.split(os.sep)[-7:-2]
        if where is not None:
            where.append(("open", submitter, system, benchmark, scenario))
        said = "; ".join(line.strip() for line in lines if line.startswith(("Reference score", "Test score",
                                                                             "TEST FAIL"))) or "no verdict in it"
        # the cause as the script gives it: an INVALID run was blamed on speed too
        why = ("a run it compares is INVALID (its detail log says why)" if "Invalid results" in said else
               "the verification wrote no verdict" if said == "no verdict in it" else
               "the TEST01 run's speed is not within 10% of the performance run's")
        out.append(f"TEST01 {benchmark}-{scenario} ({system}): the performance check failed ({said}): {why}")
    return out


def missing_files(tree_dir):
    """Files a tree's results need that are missing, named: the checker then said "AttributeError: 'NoneType'
    object has no attribute 'get'" (no system file) or "Execution occurred in running check" (no accuracy log)."""
    import glob
    out = []
    for results in sorted(p for p in glob.glob(os.path.join(tree_dir, "*", "*", "results", "*")) if os.path.isdir(p)):
        division, submitter, _, system = results.split(os.sep)[-4:]
        described = os.path.join(tree_dir, division, submitter, "systems", f"{system}.json")
        if not os.path.isfile(described):
            out.append(f"{os.path.relpath(described, tree_dir)} is missing: the results of system {system} need "
                       "its description")
        else:   # the checker stopped with "JSONDecodeError", naming no file
            try:
                with open(described) as f:
                    if not isinstance(json.load(f), dict):
                        raise ValueError("not an object")
            except (OSError, ValueError) as e:
                out.append(f"{os.path.relpath(described, tree_dir)} is no JSON object ({e})")
        for folder in sorted(glob.glob(os.path.join(results, "*", "*"))):
            for rel in ("accuracy/mlperf_log_accuracy.json", "accuracy/accuracy.txt",
                        "performance/run_1/mlperf_log_summary.txt", "performance/run_1/mlperf_log_detail.txt"):
                if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, rel)):
                    out.append(f"{os.path.relpath(os.path.join(folder, rel), tree_dir)} is missing")
    return out


# Where each mode's LoadGen logs go in a result folder (submission_structure.md), and the mode LoadGen logs for them
MODE_FOLDERS = (("accuracy", "AccuracyOnly"), ("performance/run_1", "PerformanceOnly"),
                ("TEST01/performance/run_1", "PerformanceOnly"))


def other_mode_logs(tree_dir):
    """Detail logs of the other mode than their folder's, named: an accuracy run's logs copied into
    performance/run_1 made the checker say only "Execution occurred in running check", and a performance run's in
    accuracy/ it passed (it reads the score from accuracy.txt, the sample count from the log)."""
    import glob
    out = []
    for folder in sorted(glob.glob(os.path.join(tree_dir, "*", "*", "results", "*", "*", "*"))):
        for rel, mode in MODE_FOLDERS:
            path = os.path.join(folder, *rel.split("/"), "mlperf_log_detail.txt")
            found = _detail(path).get("effective_test_mode") if os.path.isfile(path) else None
            if found is not None and found != mode:
                out.append(f"{os.path.relpath(path, tree_dir)} is the log of a run in {_text(found)} mode "
                           f"(effective_test_mode); {rel}/ is for {mode} logs")
    return out


def _once(messages):
    """Each message once, with how many times it came (the checker says some once per scenario)."""
    counts = {}
    for m in messages:
        counts[m] = counts.get(m, 0) + 1
    return [m + (f" (x{n})" if n > 1 else "") for m, n in counts.items()]


def _run(src_dir, tree_dir, version, log_path, csv_path, cwd):
    with tempfile.TemporaryDirectory(prefix="mlrun-checker-") as tmp:
        parent = os.path.dirname(src_dir)
        if os.path.basename(src_dir) != "inference":  # the module path needs that name
            os.symlink(src_dir, os.path.join(tmp, "inference"))
            parent = tmp
        env = dict(os.environ, PYTHONPATH=parent, PYTHONDONTWRITEBYTECODE="1")  # no __pycache__ in the entry
        argv = [sys.executable, "-B", "-m", CHECKER, "--input", tree_dir, "--version", version, "--csv", csv_path]
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            try:
                return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                raise MlrunError(f"the submission checker did not finish within {TIMEOUT} s",
                                 hint=f"its output so far: {log_path}") from None


def parse_log(text):
    """[(level, message)] of the checker's log lines; a line without the log prefix continues the last message."""
    out = []
    for raw in text.splitlines():
        m = LINE.match(raw)
        if m:
            out.append([m[3], m[4]])
        elif out and raw.strip():
            out[-1][1] += "\n" + raw
    return [tuple(x) for x in out]


def is_short_run(message):
    return any(p.search(message) for p in SHORT_RUN)


def interpret(text, code, short):
    """A CheckResult from the checker's log; its `table` holds {result folder: verdict} until rows replace it."""
    errors, short_errors, warnings, summary, results = [], [], [], "", None
    pending = []             # (result folder, message) short-run only if that result's runs were short
    short_seen = set()       # result folders with a short-run complaint
    verdicts = {}            # result folder (division, submitter, system, benchmark, scenario) -> verdict
    block = None             # [the result folder whose checks run now, its specific errors so far]
    for level, message in parse_log(text):
        m = STARTING.match(message)
        if level == "INFO" and m:
            where = SCENARIO_DIR.search(m[2])
            if m[1] == "performance checks" or block is None:   # every result's checks start with these
                block = [where.groups() if where else None, 0]
                verdicts.setdefault(block[0], "passed")
            block[1] = 0
            continue
        if message.startswith("SUMMARY: "):
            summary = message
        r = re.match(r"^Results=(\d+), NoResults=(\d+)", message)
        if r:
            results = int(r[1]) + int(r[2])
        where = SCENARIO_DIR.search(message)
        division = where[1] if where else block[0][0] if block and block[0] else None
        if level == "WARNING" and ACCURACY_NOT_MET.search(message) and division == "open":
            # the open division takes any accuracy (checks/accuracy_check.py returns True there): a warning, as
            # the checker says it (mlrun failed open trees the checker accepted: a random or SparseZoo model's)
            warnings.append(message)
            continue
        if level == "WARNING" and ACCURACY_NOT_MET.search(message):
            # the cause of its "Some accuracy checks failed" (a warning in the checker's log): listed with the
            # errors (a rehearsal's short score with the short-run complaints), never hidden among the warnings
            (short_errors if short else errors).append(message)
            if block:
                block[1] += 1
                if not short:
                    verdicts[block[0]] = "errors"
            continue
        if level == "WARNING":
            warnings.append(message)
        if level not in ("ERROR", "CRITICAL"):
            continue
        if FOLLOW_ON.match(message):
            if not (message.startswith("Some ") and block and block[1] == 0):
                continue   # its cause is listed
            verdict = "errors"   # a check that failed without saying why: only this line tells
            errors.append(message)
        elif block and any(p.search(message) for p in SHORT_RUN_IF_SHORT):
            pending.append((block[0], message))
            block[1] += 1
            continue
        else:
            verdict = "short-run" if is_short_run(message) else "errors"
            (short_errors if verdict == "short-run" else errors).append(message)
            if verdict == "short-run" and block:
                short_seen.add(block[0])
        if block:
            block[1] += 1
            if verdicts.get(block[0]) != "errors":
                verdicts[block[0]] = verdict
    for where, message in pending:
        if where in short_seen:
            short_errors.append(message)
        else:   # the runs met the rules' durations and counts: the comparison failed on its own
            errors.append(message)
            verdicts[where] = "errors"
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        errors.append(f"the checker stopped with an exception: {last.strip()}")
        if block:
            verdicts[block[0]] = "errors"
    elif code not in (0, 1):
        errors.append(f"the checker exited with code {code}")
    elif code == 1 and not errors and not short_errors:
        errors.append(f"the checker reported errors it did not describe ({summary or 'no summary'})")
    if results == 0 and not errors:
        errors.append("the checker found no results in this tree (an empty tree is no submission): "
                      "expected DIVISION/SUBMITTER/results/SYSTEM/BENCHMARK/SCENARIO/")
    ok = not errors and (short or not short_errors)
    errors, short_errors, warnings = _once(errors), _once(short_errors), _once(warnings)
    return CheckResult(ok=ok, errors=errors, short_run_errors=short_errors, warnings=warnings,
                       table=verdicts, log="", summary=summary)


def _detail(path):
    """{key: value} of a LoadGen mlperf_log_detail.txt (`:::MLLOG {json}` lines); the first value of a key wins."""
    out = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith(":::MLLOG"):
                    try:
                        item = json.loads(line[len(":::MLLOG"):])
                    except ValueError:
                        continue
                    if isinstance(item, dict):   # (a line of another shape in a hand-edited log: passed over)
                        out.setdefault(item.get("key"), item.get("value"))
    except OSError:
        pass
    return out


def _accuracy(path):
    """The score line of an accuracy.txt, compacted as the checker's CSV writes it."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("hash="):
                    return re.sub(r'[{}"]', "", line).replace(",", "").strip()
    except OSError:
        pass
    return ""


def table(tree_dir, verdicts):
    """One row per result folder of the tree: benchmark, scenario, metric, value, valid, accuracy, checker."""
    rows = []
    for division in ("closed", "open", "network"):
        results = os.path.join(tree_dir, division)
        for submitter in _dirs(results):
            for system in _dirs(os.path.join(results, submitter, "results")):
                base = os.path.join(results, submitter, "results", system)
                for benchmark in _dirs(base):
                    for scenario in _dirs(os.path.join(base, benchmark)):
                        folder = os.path.join(base, benchmark, scenario)
                        perf = os.path.join(folder, "performance", "run_1", "mlperf_log_detail.txt")
                        detail = _detail(perf)
                        key, scale, unit = METRICS.get(scenario, (None, 1, ""))
                        value = detail.get(key)
                        if key and key.startswith("early_stopping") and detail.get("early_stopping_met") is False:
                            # LoadGen logs 0 for the estimate it could not make: show the plain percentile
                            percentile = "90.00" if scenario == "SingleStream" else "99.00"
                            value = detail.get(f"result_{percentile}_percentile_latency_ns")
                            unit = f"latency ms (p{percentile[:2]}: early stopping not met)"
                        checker = verdicts.get((division, submitter, system, benchmark, scenario),
                                               "not checked")
                        rows.append({"division": division, "submitter": submitter, "system": system,
                                     "benchmark": benchmark, "scenario": scenario, "metric": unit,
                                     "value": round(value * scale, 3) if isinstance(value, (int, float)) else None,
                                     "valid": _text(detail.get("result_validity", "missing")),
                                     "accuracy": _accuracy(os.path.join(folder, "accuracy", "accuracy.txt")),
                                     "checker": checker})
    return rows


def _text(value):
    """A logged value as the table shows it (a hand-edited log's 5 for VALID ended the check 'unexpected TypeError')."""
    return value if isinstance(value, str) else json.dumps(value)


def _dirs(path):
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def format_table(rows):
    """The results table as aligned text."""
    if not rows:
        return "(no results in the tree)"
    head = ("SYSTEM", "BENCHMARK", "SCENARIO", "METRIC", "VALUE", "VALID", "ACCURACY", "CHECKER")
    body = [(r["system"], r["benchmark"], r["scenario"], r["metric"], "-" if r["value"] is None else str(r["value"]),
             r["valid"], r["accuracy"] or "-", r["checker"]) for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head] + body)
