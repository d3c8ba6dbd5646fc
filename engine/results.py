"""Runs as a results list: flat rows (records.flat), filters, columns, and one output code for
`mlrun runs` and `mlrun sweep show`: an aligned table that fits the terminal, CSV, Markdown or JSON.

A filter is FIELD=VALUE (also !=, >, <, >=, <=; the last four on numbers). Text compares without case, and a
variation may be written with or without its `_` (backend=_deepsparse matches backend=deepsparse).
"""
import contextlib
import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import sys
import textwrap
import time

from .errors import MlrunError, UsageError
from .shapes import seal, unseal
from .words import did_you_mean, nearest, plural

# Results worth a column when any row has them, in this order.
RESULT_FIELDS = ("result", "samples_per_second", "completed_samples_per_second", "latency_p50_ms",
                 "latency_p90_ms", "latency_p99_ms", "f1", "exact_match")
FORMATS = ("table", "csv", "markdown", "json")
WHERE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-/]*)\s*(!=|>=|<=|=|>|<)(.*)$")   # dep.A/B.KEY too
# Columns the table may shorten (with "...") to fit the terminal, most willing first; then any other
# column but these, down to NARROW.
SHRINKABLE = ("error", "reasons", "query", "query_rest", "sequence_handling", "model", "user_conf", "audit_config")
# mode_scenario: cut to 'perf/S...', SingleStream and Server read alike
KEEP_WHOLE = ("run", "point", "status", "point_status", "result", "headline", "mode_scenario")
NEVER_DROPPED = ("query", "query_rest", "mode_scenario", "error", "reasons")   # what ran and why it failed
MIN_WIDTH, QUERY_WIDTH, NARROW, READABLE = 14, 24, 6, 10
# Table headers for columns whose name says less than it could.
LABELS = {"started": "WHEN", "headline": "RESULT", "mode_scenario": "MODE", "point_status": "STATUS",
          "query_rest": "QUERY"}
HELPER_WORDS = ("get", "process")   # helper commands `runs` hides unless --all


# -- filters --------------------------------------------------------------------------------


def parse_where(texts):
    """[(field, op, value)] from FIELD=VALUE words (usage error for anything else)."""
    out = []
    for text in texts or ():
        m = WHERE_RE.match(text)
        if not m:
            raise UsageError(f"--where {text!r}: write FIELD=VALUE (or !=, >, <, >=, <=)",
                             hint="e.g. --where backend=deepsparse --where 'samples_per_second>100' (quoted: the shell takes > "
                                  "for a redirect)")
        field, op, value = m[1], m[2], m[3].strip()
        if value[:1] in ("=", "<", ">") and op in ("=", "!=", "<", ">"):   # batch_size==1, =>1: matched nothing, unsaid
            raise UsageError(f"--where {text!r}: one operator between the field and the value", hint="FIELD=VALUE, "
                             "FIELD!=VALUE, or FIELD>=N, FIELD<=N, FIELD>N, FIELD<N (quoted: the shell takes > for "
                             "a redirect)")
        if op in (">", "<", ">=", "<=") and _number(value) is None:
            raise UsageError(f"--where {text!r}: {op} compares numbers; {value!r} is not one")
        out.append((field, op, value))
    return out


# Fields docs/sweeps.md promises: no row has them until a run of that kind exists (no Offline performance run
# yet: no samples_per_second), which is an empty column, not a misspelt name.
DOCUMENTED = re.compile(r"(run|status|query|host|started|seconds|result|reasons|f1|exact_match|accuracy_\w+"
                        r"|(completed_|scheduled_)?samples_per_second|latency_p\d+(_\d+)?_ms)")


def check_fields(names, rows, what):
    """A usage error for a field no row has (with the nearest names), unless there are no rows at all or the
    field is one every benchmark run may have."""
    if not rows:
        return
    known = set().union(*rows)
    for name in names:
        if name not in known and not DOCUMENTED.fullmatch(name):
            # the column headed LAYERS is dep.model.layers: a field whose last part is the name is nearest
            near = [k for k in sorted(known) if k.rsplit(".", 1)[-1].lower() == name.lower()][:3] \
                or difflib.get_close_matches(name, sorted(known), n=3)
            raise UsageError(f"no field '{name}' in {what}",
                             hint=(f"did you mean {', '.join(near)}? " if near else "")
                             + "docs/sweeps.md lists the fields; --json shows a row's fields")


def matches(row, conditions):
    return all(_holds(row.get(field), op, value) for field, op, value in conditions)


def near_misses(rows, conditions, query=None):
    """' (did you mean scenario=Offline?)' for a --where FIELD=VALUE or a --query word that no row has, naming the
    values near it that rows have; '' when none is near (`--where scenario=Ofline` read as "no runs that match")."""
    said = []
    for field, op, value in conditions:
        if op != "=" or any(_equal(r.get(field), value) for r in rows):
            continue
        have = {str(r[field]).lower(): str(r[field]) for r in rows if isinstance(r.get(field), str) and r[field]}
        close = nearest(value.lower().lstrip("_"), list(have))
        said += [shlex.quote(f"{field}={have[c]}") for c in close]   # as --query's: a value with a space, quoted
    words = {w.lstrip("_"): w for r in rows for w in str(r.get("query") or "").lower().split()}   # _x matches x
    given = (query or "").split()
    fixed = [w if w.lower().lstrip("_") in words else
             next((words[c] for c in nearest(w.lower().lstrip("_"), list(words))), w) for w in given]
    if fixed != given:
        said.append("--query " + shlex.quote(" ".join(fixed)))
    return f" (did you mean {' or '.join(said)}?)" if said else ""


def _holds(have, op, want):
    if op in (">", "<", ">=", "<="):
        a, b = _number(have), _number(want)
        return a is not None and {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
    same = _equal(have, want)
    return same if op == "=" else not same


def _equal(have, want):
    if have is None or have == "":
        return want.lower() in ("", "none", "null", "-")
    if isinstance(have, bool):
        return want.lower() == str(have).lower()
    a, b = _number(have), _number(want)
    if a is not None and b is not None:
        return a == b
    text, want = str(have).lower(), want.lower()
    return text == want or text == want.lstrip("_") or text.lstrip("_") == want.lstrip("_")


def _number(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) else None


# -- columns --------------------------------------------------------------------------------


def present(rows, fields):
    """The fields some row has a value for, in the given order."""
    return [f for f in fields if any(r.get(f) is not None for r in rows)]


def varying(rows, fields, missing=True):
    """The fields whose values differ among the rows, in the given order; a missing value counts as one unless
    missing=False (runs of other recipes, or unfinished ones, lack fields: they do not make a setting differ)."""
    return [f for f in fields if len({_same(r.get(f)) for r in rows if missing or f in r}) > 1]


def _same(value):
    """A value as json.dumps tells values apart (1, 1.0 and true differ), without writing out each of a row's
    scalars (3,000 runs: 0.4 s)."""
    if value is None or isinstance(value, (str, int)):   # bool is an int: the type keeps true apart from 1
        return type(value), value
    if isinstance(value, float):
        return float, repr(value)
    return json.dumps(value, default=str)


def parse_columns(text):
    cols = [c.strip() for c in (text or "").split(",") if c.strip()]
    if text is not None and not cols:
        raise UsageError("--columns needs field names: --columns batch_size,threads,result")
    return cols


# -- output ---------------------------------------------------------------------------------


def json_safe(value):
    """value with each NaN or infinity as text: bare NaN (a step's summary may hold one) is not JSON, and a strict
    reader of `runs --json` refused it."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def render(rows, columns, fmt="table", width=None, whole=()):
    """rows (dicts) as text in one of FORMATS; table and markdown show values short, CSV and JSON as they are.
    whole: columns a table never cuts (a sweep's grid values: cut, two points read alike)."""
    if fmt == "json":
        return json.dumps(json_safe([{c: r.get(c) for c in columns} for r in rows]), indent=1, default=str) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else str(r[c]).lower() if isinstance(r.get(c), bool) else r.get(c)
                             for c in columns])   # true/false, as the table and the command line write them
        return out.getvalue()
    cells = [[_cell(c, r) for c in columns] for r in rows]
    if fmt == "markdown":
        def line(items):
            return "| " + " | ".join(str(x).replace("|", "\\|") for x in items) + " |"
        aligns = ["---:" if rows and all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                          for r in rows if r.get(c) is not None) and any(r.get(c) is not None
                                                                                         for r in rows)
                  else "---" for c in columns]
        return "\n".join([line(columns), line(aligns)] + [line(c) for c in cells]) + "\n"
    width = width or shutil.get_terminal_size((100, 24)).columns
    numeric = _numeric(rows, columns)
    header = [label(c, columns) for c in columns]
    widths = _fit([max(len(x) for x in col) for col in zip(header, *cells)], columns, width, list(numeric) + list(whole))
    lines = []
    for row in [header] + cells:
        lines.append("  ".join((_cut(x, w, c.startswith("query"), c == "error").rjust(w)
                                if c in numeric and row is not header
                                else _cut(x, w, c.startswith("query"), c == "error").ljust(w))
                               for x, w, c in zip(row, widths, columns)).rstrip())
    return "\n".join(lines) + "\n"


def _cell(column, row):
    text = show(column, row.get(column))
    if column == "status" and row.get("replay_of"):   # the table said nothing of which runs were replays
        return f"{text} ({'replay' if row.get('replay_exact') is not False else 'inexact replay'})"
    return text + short_mark(row) if column == "result" and row.get(column) else text


def short_mark(row):
    """What a result is not, where people read it (CSV and JSON keep LoadGen's word and the fields): a --count run's
    VALID is no figure to submit; one measured while another measurement ran on its cores is not the machine's."""
    marks = ["short"] if row.get("short") is True else []
    if row.get("shared_cores.overlapped") is True:
        marks.append("shared cores")
    return f" ({', '.join(marks)})" if marks else ""


def label(column, columns=()):
    """A table header: short, units kept (samples_per_second: SAMPLES/S, latency_p99_ms: P99 MS, dep.model.layers:
    LAYERS unless another column has that last word)."""
    if column in LABELS and not (column == "headline" and "result" in columns) and not (
            column == "point_status" and "status" in columns):   # two RESULTs, two STATUSes told apart
        return LABELS[column]
    m = re.fullmatch(r"latency_(p[0-9_]+)_ms", column)
    if m:
        return f"{m[1].replace('_', '.')} ms".upper()
    if column.endswith("samples_per_second"):
        return column[:-len("samples_per_second")].replace("_", " ").upper() + "SAMPLES/S"
    if column.startswith("dep."):
        last = column.rsplit(".", 1)[1]
        alone = sum(c.rsplit(".", 1)[-1] == last for c in columns) == 1
        return (last if alone and "/" not in column else column[4:]).upper()   # a dep of a dep: which one
    return column.upper()


def _numeric(rows, columns):
    """The columns whose values are all numbers (or missing): right-aligned, never shortened."""
    return {c for c in columns if all(_number(r.get(c)) is not None or r.get(c) is None for r in rows)}


def fit_columns(rows, columns, width):
    """(columns kept, settings left out): cutting the query and every value to a few letters says nothing, so a
    table too wide once paths and messages are short leaves out settings, the one fewest rows have first."""
    columns, dropped, numeric = list(columns), [], _numeric(rows, columns)
    widest = {c: max([len(_cell(c, r)) for r in rows], default=0) for c in columns}   # a column's cells, once
    while True:   # a header's label depends on the columns beside it: computed each round
        natural = [max(len(label(c, columns)), widest[c]) for c in columns]
        gentle = _fit(natural, columns, width, numeric, gentle=True)
        droppable = [i for i, c in enumerate(columns) if c not in KEEP_WHOLE + NEVER_DROPPED]
        if sum(gentle) + 2 * (len(gentle) - 1) <= width or not droppable:
            return columns, dropped
        i = min(reversed(droppable), key=lambda j: sum(r.get(columns[j]) not in (None, "") for r in rows))
        dropped.append(columns.pop(i))


def _fit(widths, columns, width, numeric=(), gentle=False):
    """Shorten the shrinkable columns, the widest first, until the row fits `width` (or they are all short);
    gentle: only as far as every column keeps a readable part (paths and messages MIN_WIDTH, the query
    QUERY_WIDTH, other values READABLE)."""
    widths = list(widths)
    total = sum(widths) + 2 * (len(widths) - 1)
    # numeric: columns never cut (figures, and a caller's `whole`)
    preferred = [i for name in SHRINKABLE for i, c in enumerate(columns)
                 if (c == name or c.startswith(name + ".")) and c not in numeric]
    others = [i for i, c in enumerate(columns) if i not in preferred and c not in KEEP_WHOLE and c not in numeric]
    # The query says what ran: it keeps room for its first word and its end ("app ... _cpu _random") until
    # paths, messages and the other columns are as narrow as they go.
    queries = [i for i in preferred if columns[i] in ("query", "query_rest")]
    rest = [i for i in preferred if i not in queries]
    stages = ((rest, MIN_WIDTH), (queries, QUERY_WIDTH), (rest, NARROW), (others, NARROW), (queries, NARROW))
    for order, least in ((rest, MIN_WIDTH), (queries, QUERY_WIDTH), (others, READABLE)) if gentle else stages:
        while total > width:
            candidates = [i for i in order if widths[i] > least]
            if not candidates:
                break
            i = max(candidates, key=lambda j: widths[j])
            cut = min(total - width, widths[i] - least)
            widths[i] -= cut
            total -= cut
    return widths


def _cut(text, width, middle=False, end=False):
    """text in width characters; a query keeps its first word and its end (the variations that differ), an
    error its end (the cause: "step X failed: exited with code 2: <the step's own words>")."""
    if len(text) <= width:
        return text
    if end:
        return "..." + text[len(text) - max(width - 3, 1):]
    words = text.split()
    if middle and len(words) > 2:
        tail = []
        while len(words) - len(tail) > 1 and len(" ".join([words[0], "..."] + [words[-1 - len(tail)]] + tail)) <= width:
            tail.insert(0, words[-1 - len(tail)])
        if tail:
            return " ".join([words[0], "..."] + tail)
    return text[:max(width - 3, 1)] + "..."


def show(column, value):
    """A value as a table shows it: times as dates, figures to about four digits, None as '-'."""
    if value is None or value == "":
        return "-"
    if column == "started" and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    if isinstance(value, bool):
        return str(value).lower()
    if column in ("f1", "exact_match") and isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.2f}"   # a score of 0 read "0" beside "12.00" in one column
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        size = abs(value)
        if size >= 1e15:   # "%.0f" of 1e30 read 1000000000000000019884624838656: digits a float does not hold
            return f"{value:.4g}"
        return (f"{value:.0f}" if size >= 1000 else f"{value:.1f}" if size >= 100 else f"{value:.2f}"
                if size >= 1 else f"{value:.3g}")
    return str(value)


# -- runs as rows -----------------------------------------------------------------------------


def run_rows(runs_dir, unreadable=None):
    """[(flat row, names of its settings)] of every readable run record under runs_dir, oldest first; the ids
    of the others go into the list unreadable, when given. A run's row is remembered (RowsMemo) until its
    record changes: reading every record made `runs` take 2 s for 3,000 runs, most of it parsing JSON."""
    from . import records
    memo, out = RowsMemo(runs_dir), []
    for run_id in records.list_ids(runs_dir):
        try:
            out.append(run_row(runs_dir, run_id, memo))
        except UNREADABLE:   # (the others: damaged below the top, an imported record: one ended `runs` for all)
            if unreadable is not None:
                unreadable.append(run_id)
    memo.save()
    return sorted(out, key=lambda item: item[0].get("started") or 0)   # ids of one second sort by chance


# What reading a record can raise: MlrunError for one missing or no record, the others for one damaged below its top
UNREADABLE = (MlrunError, TypeError, ValueError, AttributeError, KeyError)
# what a run's row holds beyond records.flat's fields
ROW_EXTRAS = ("headline", "mode_scenario", "replay_of", "replay_exact")


def run_row(runs_dir, run_id, memo):
    """(flat row, names of its settings) of one run: the memo's while its record is unchanged, else read (and
    remembered unless the run still runs). Raises one of UNREADABLE."""
    from . import records
    path = os.path.join(runs_dir, run_id, "run.json")
    item = memo.get(run_id, path)
    if item is not None:
        return item
    record = records.load(path)
    row = records.flat(record)
    row["headline"] = headline(row)
    mode = "/".join(str(row[k]) for k in ("mode", "scenario") if row.get(k))
    row["mode_scenario"] = mode.replace("performance", "perf") or None
    if record.get("replay_of"):
        row["replay_of"] = record["replay_of"]
        row["replay_exact"] = record.get("exact") is not False   # --allow-differences: marked inexact
    item = (row, records.flat_settings(record))
    # a running one's status is its process's, asked each time; once it died it stays so (712 died runs were read
    # again by every `runs`, half of its time among 7,000)
    if record.get("status") != "running" or row.get("status") == "died":
        memo.put(run_id, item)
    return item


class RowsMemo:
    """The rows of finished runs, each kept with its record's identity (inode, size, mtime): a record rewritten
    (a replay's note, an import over it) is read again. One file per user under RUNS/.index/, readable by that
    user only (a teammate's private run must not show through it), written whole by rename; a runs folder this
    user may not write into is simply read each time. Another mlrun version, or another text of the code that makes
    the rows (a checkout pulled between versions kept old rows beside new ones), reads every record again."""

    def __init__(self, runs_dir):
        from .version import __version__
        from . import records, shapes
        code = hashlib.sha256()
        for module in (records, shapes, sys.modules[__name__]):
            with open(module.__file__, "rb") as f:
                code.update(f.read())
        self.version = f"{__version__}+{code.hexdigest()[:16]}"
        self.path = os.path.join(runs_dir, ".index", f"rows-{os.getuid()}.json")
        self.seen, self.stats = {}, {}
        try:   # sealed: an edited copy ("started": "x") said "unexpected TypeError ... a bug"; it is read past
            with open(self.path, "rb") as f:
                head, kept = unseal(f)
            kept = kept if head.get("version") == self.version else {}
        except FileNotFoundError:   # none yet: written once there is a row to keep
            kept = {}
        except (OSError, ValueError, TypeError):   # unseal's errors for a file of another form
            kept = None
        self.changed = not isinstance(kept, dict)   # a damaged memo is written again
        self.kept = kept if isinstance(kept, dict) else {}

    def get(self, run_id, path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.access(path, os.R_OK):   # made unreadable since: said as such by reading it
            return None
        self.stats[run_id] = [st.st_ino, st.st_size, st.st_mtime_ns]
        kept = self.kept.get(run_id)
        if (isinstance(kept, dict) and kept.get("stat") == self.stats[run_id] and isinstance(kept.get("row"), dict)
                and isinstance(kept.get("settings"), dict)):
            self.seen[run_id] = kept
            return kept["row"], kept["settings"]
        return None

    def put(self, run_id, item):
        if run_id in self.stats:   # the identity seen before the record was read: a change meanwhile reads again
            # scrubbed once, as it is kept (every file mlrun writes is: a record put there by hand): scrubbing every
            # row at each save took most of a warm `runs` of thousands
            from .secrets import scrub
            self.seen[run_id] = scrub({"stat": self.stats[run_id], "row": item[0], "settings": item[1]})
            self.changed = True

    def save(self, every_run=True):
        """every_run: this reader asked for every run (`runs`), so the rows it did not see are of runs gone; a
        reader of some (a sweep's points) keeps the others' (it wrote its own alone, and `runs` read each again)."""
        if not every_run:
            self.seen = {**self.kept, **self.seen}
        if not self.changed and self.seen.keys() == self.kept.keys():
            return
        folder = os.path.dirname(self.path)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        # made before the file is opened: a Ctrl-C while it was made left a partial .tmp file for ever
        data = seal({"version": self.version}, self.seen, separators=(",", ":"), default=str)
        try:
            from .cache import shared_dir
            shared_dir(folder)   # teammates sharing the runs folder keep their own file there
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError:   # a runs folder this user may only read, a full disk: the records are read next time too
            with contextlib.suppress(OSError):
                os.remove(tmp)


RUN_STATUSES = ("ok", "failed", "interrupted", "error", "running", "died", "running?")   # records.status()


def since_time(text):
    """--since: an age (12h, 2d, as gc's --older-than) or a local date or time (2026-12-01, 2026-12-01T09:30,
    2026-12-01 09:30) -> epoch seconds."""
    import datetime
    from .gc import parse_age
    try:
        return time.time() - parse_age(text, "--since")
    except UsageError:
        pass
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r}: an age or a date", hint="e.g. --since 12h, --since 2d, --since 2026-12-01 "
                         "or --since 2026-12-01T09:30 (local time)") from None


def select_runs(items, where=(), status=None, query=None, last=None, helpers=False, since=None):
    """The rows that pass the filters: helpers (get ..., process ...) only when asked, those started since then
    (epoch seconds), the last N."""
    if last is not None and last < 1:
        raise UsageError(f"--last {last}: give a number of runs, 1 or more")
    rows = [r for r, _ in items]
    check_fields([f for f, _, _ in where], rows, "the runs")
    if status is not None and not status.replace(",", "").strip():   # --status= read as no filter: every run listed
        raise UsageError("--status is empty", hint="statuses: " + ", ".join(RUN_STATUSES))
    wanted_status = {s.strip().lower() for s in status.split(",") if s.strip()} if status else None
    unknown = sorted((wanted_status or set()) - set(RUN_STATUSES))
    if unknown:   # a typo must not read as "no runs"
        raise UsageError(f"--status {unknown[0]}: not a run status" + did_you_mean(unknown[0], RUN_STATUSES),
                         hint="statuses: " + ", ".join(RUN_STATUSES))
    words = [w.lower() for w in (query or "").split()]
    out = []
    for row, _ in items:
        asked = (row.get("query") or "").lower().split()
        if not helpers and not words and asked[:1] and asked[0] in HELPER_WORDS:
            continue
        if wanted_status and str(row.get("status")).lower() not in wanted_status:
            continue
        if since is not None and not (isinstance(row.get("started"), (int, float)) and row["started"] >= since):
            continue
        if any(w not in asked and w.lstrip("_") not in [a.lstrip("_") for a in asked] for w in words):
            continue
        if matches(row, where):
            out.append(row)
    return out[-last:] if last else out


def run_columns(items, rows):
    """Default columns of `runs`, and what every listed run shares (said once, below the table): the run,
    its query and mode/scenario (unless all runs share them), the settings that differ, result, status."""
    chosen = {r["run"] for r in rows}
    settings, asked = [], []
    for row, given in items:
        if row["run"] in chosen:
            settings += [n for n in given if n not in settings and n not in ("mode", "scenario")]
            asked.append(given)
    # An override given to some runs only differs (absent = the recipe's own value); an input or group that
    # runs of another recipe lack does not. Settings as asked: an input no run set (--threads) whose result
    # of the same name (the threads a rule chose) differs is no setting that differs.
    differ = [f for f in settings if varying(asked, [f], missing=f.startswith(("dep.", "env.")))]
    _query_rest(rows, differ)
    shared = [c for c in present(rows, ["query_rest", "mode_scenario"]) if len(rows) > 1 and not varying(rows, [c])]
    columns = [c for c in ["run", "query_rest"] + present(rows, ["mode_scenario"]) if c not in shared]
    return columns + differ + ["headline", "status"], [show(c, rows[0][c]) for c in shared]


def _query_rest(rows, shown_columns):
    """Each row's query without the words a column shows already (a variation differing has its column)."""
    for row in rows:
        shown = {str(row.get(c)) for c in shown_columns}
        row["query_rest"] = " ".join(w for w in (row.get("query") or "").split() if w[1:].split(".")[0] not in shown
                                     or not w.startswith("_")) or None


def runs_text(runs_dir, where=(), columns=None, fmt="table", status=None, query=None, last=None, helpers=False,
              since=None):
    """`mlrun runs`: the runs that pass the filters, as a table (default columns) or as CSV/JSON/Markdown."""
    since = since_time(since) if since is not None else None   # said before any record is read
    unreadable = []
    items = run_rows(runs_dir, unreadable)
    rows = select_runs(items, parse_where(where), status, query, last, helpers, since)
    if unreadable:   # said on stderr, never silently left out (a script reading --json needs to know most)
        print(f"{plural(len(unreadable), 'run record')} could not be read: {', '.join(unreadable[:3])}"
              + (f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else "")
              + f" (`mlrun runs show {unreadable[0]}` says why)", file=sys.stderr)
    columns = parse_columns(columns)
    check_fields(columns, [r for r, _ in items], "the runs")
    if not columns and fmt in ("json", "csv"):  # scripts get every field
        columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("headline", "mode_scenario")))
    if not rows and fmt == "table":
        return (f"no runs{' that match' if items else ''} in {runs_dir}"
                + near_misses([r for r, _ in items], parse_where(where), query)
                + ("" if helpers or not items else " (helper commands like `get ...` show with --all)") + "\n")
    shared, dropped = [], []
    default = not columns
    if default:
        columns, shared = run_columns(items, rows)
    if fmt in ("table", "markdown"):   # a setting a run left to mlrun reads "- (1)", as in `sweep show` (a column
        asked = {row["run"]: given for row, given in items}   # of 1s stood for "1" asked and "-" alike)
        rows = [{**r, **{k: f"- ({show(k, r[k])})" for k, v in asked.get(r["run"], {}).items()
                         if v is None and r.get(k) is not None}} for r in rows]
    if default and fmt == "table":   # too many settings differ to show: leave some out, their variations back in
        # the query
        width = shutil.get_terminal_size((100, 24)).columns
        columns, dropped = fit_columns(rows, columns, width)
        said = show("query_rest", rows[0].get("query_rest")) if "query_rest" not in columns else None
        _query_rest(rows, [c for c in columns if c not in ("run", "query_rest", "mode_scenario", "headline",
                                                            "status")])
        if said is not None and varying(rows, ["query_rest"]):   # a variation left its column: the query differs
            columns.insert(1, "query_rest")
            shared = [x for x in shared if x != said]
        common = _common_words(rows) if "query_rest" in columns else []
        shared += [" ".join(common)] if common else []
    text = render(rows, columns, fmt)
    if dropped:   # wrapped, not cut: the names are what --columns takes
        text += "\n".join(textwrap.wrap(f"{plural(len(dropped), 'more setting')} "
                                         f"{'differs' if len(dropped) == 1 else 'differ'}, not shown (--columns picks "
                                         "them, --csv has all): " + ", ".join(sorted(dropped)), width,
                                         break_on_hyphens=False)) + "\n"
    return text + (f"every run listed: {', '.join(shared)}\n" if shared and fmt == "table" else "")


def _common_words(rows):
    """Take out of each row's query the words every listed run has (said once below the table): a query cut to
    fit kept its first word and its end, and runs that differ by a variation in the middle looked alike."""
    queries = [(row.get("query_rest") or "").split() for row in rows]
    common = [w for w in queries[0] if all(w in q for q in queries[1:])] if len(rows) > 1 else []
    for row, words in zip(rows, queries):
        row["query_rest"] = " ".join(w for w in words if w not in common) or None
    return common


def headline(row):
    """A run's result in a few words: F1/EM, samples/s or the latency percentile, VALID/INVALID."""
    if row.get("f1") is not None:   # an accuracy run: its LoadGen figures say nothing of speed
        return f"F1 {show('f1', row['f1'])} EM {show('exact_match', row.get('exact_match'))}"
    parts = []
    if row.get("samples_per_second") is not None:
        parts.append(f"{show('', row['samples_per_second'])}/s")
    elif row.get("completed_samples_per_second") is not None:
        parts.append(f"{show('', row['completed_samples_per_second'])}/s")
    elif row.get("scenario") in ("SingleStream", "MultiStream"):
        pct = "latency_p90_ms" if row.get("scenario") == "SingleStream" else "latency_p99_ms"
        if row.get(pct) is not None:
            parts.append(f"{pct.split('_')[1]} {show('', row[pct])} ms")
    if row.get("result"):   # a recipe's own `result` may be true or 5: one such run ended `runs` for every run
        parts.append(str(row["result"]) + short_mark(row))
    elif parts:
        parts[-1] += short_mark(row)
    return " ".join(parts) or row.get("headline") or None   # else the step's own words ("2 answers"), if it said
