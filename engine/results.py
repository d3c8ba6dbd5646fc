"""Runs as a results list: flat rows (records.flat), filters, columns, and one output code for
`mlrun runs` and `mlrun sweep show`: an aligned table that fits the terminal, CSV, Markdown or JSON.

A filter is FIELD=VALUE (also !=, >, <, >=, <=; the last four on numbers). Text compares without case, and a
variation may be written with or without its `_` (backend=_deepsparse matches backend=deepsparse).
"""
import csv
import difflib
import io
import json
import math
import re
import shutil
import time

from .errors import UsageError

# Results worth a column when any row has them, in this order.
RESULT_FIELDS = ("result", "samples_per_second", "completed_samples_per_second", "latency_p50_ms",
                 "latency_p90_ms", "latency_p99_ms", "f1", "exact_match")
FORMATS = ("table", "csv", "markdown", "json")
WHERE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(!=|>=|<=|=|>|<)(.*)$")
# Columns the table may shorten (with "...") to fit the terminal, most willing first.
SHRINKABLE = ("error", "reasons", "query", "sequence_handling", "model", "user_conf", "audit_config")
MIN_WIDTH = 14


# -- filters --------------------------------------------------------------------------------


def parse_where(texts):
    """[(field, op, value)] from FIELD=VALUE words (usage error for anything else)."""
    out = []
    for text in texts or ():
        m = WHERE_RE.match(text)
        if not m:
            raise UsageError(f"--where {text!r}: write FIELD=VALUE (or !=, >, <, >=, <=)",
                             hint="e.g. --where backend=deepsparse --where samples_per_second>100")
        field, op, value = m[1], m[2], m[3].strip()
        if op in (">", "<", ">=", "<=") and _number(value) is None:
            raise UsageError(f"--where {text!r}: {op} compares numbers; {value!r} is not one")
        out.append((field, op, value))
    return out


def check_fields(names, rows, what):
    """A usage error for a field no row has (with the nearest names), unless there are no rows at all."""
    if not rows:
        return
    known = set().union(*rows)
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            raise UsageError(f"no field '{name}' in {what}",
                             hint=(f"did you mean {', '.join(near)}? " if near else "")
                             + "docs/sweeps.md lists the fields; --json shows a row's fields")


def matches(row, conditions):
    return all(_holds(row.get(field), op, value) for field, op, value in conditions)


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


def varying(rows, fields):
    """The fields whose values differ among the rows (a missing value counts as one), in the given order."""
    return [f for f in fields if len({json.dumps(r.get(f), default=str) for r in rows}) > 1]


def parse_columns(text):
    cols = [c.strip() for c in (text or "").split(",") if c.strip()]
    if text is not None and not cols:
        raise UsageError("--columns needs field names: --columns batch_size,threads,result")
    return cols


# -- output ---------------------------------------------------------------------------------


def render(rows, columns, fmt="table", width=None):
    """rows (dicts) as text in one of FORMATS; table and markdown show values short, CSV and JSON as they are."""
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=1, default=str) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        return out.getvalue()
    cells = [[show(c, r.get(c)) for c in columns] for r in rows]
    if fmt == "markdown":
        def line(items):
            return "| " + " | ".join(str(x).replace("|", "\\|") for x in items) + " |"
        aligns = ["---:" if rows and all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                          for r in rows if r.get(c) is not None) and any(r.get(c) is not None
                                                                                         for r in rows)
                  else "---" for c in columns]
        return "\n".join([line(columns), line(aligns)] + [line(c) for c in cells]) + "\n"
    header = [c.upper() for c in columns]
    width = width or shutil.get_terminal_size((100, 24)).columns
    widths = _fit([max(len(x) for x in col) for col in zip(header, *cells)], columns, width)
    lines = []
    for row in [header] + cells:
        lines.append("  ".join(_cut(x, w).ljust(w) for x, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def _fit(widths, columns, width):
    """Shorten the shrinkable columns, the widest first, until the row fits `width` (or they are all short)."""
    widths = list(widths)
    total = sum(widths) + 2 * (len(widths) - 1)
    order = [i for name in SHRINKABLE for i, c in enumerate(columns) if c == name or c.startswith(name + ".")]
    while total > width:
        candidates = [i for i in order if widths[i] > MIN_WIDTH]
        if not candidates:
            break
        i = max(candidates, key=lambda j: widths[j])
        cut = min(total - width, widths[i] - MIN_WIDTH)
        widths[i] -= cut
        total -= cut
    return widths


def _cut(text, width):
    return text if len(text) <= width else text[:max(width - 3, 1)] + "..."


def show(column, value):
    """A value as a table shows it: times as dates, figures to about four digits, None as '-'."""
    if value is None or value == "":
        return "-"
    if column == "started" and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        size = abs(value)
        return (f"{value:.0f}" if size >= 1000 else f"{value:.1f}" if size >= 100 else f"{value:.2f}"
                if size >= 1 else f"{value:.3g}")
    return str(value)
