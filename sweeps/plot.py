"""`mlrun sweep plot`: a sweep's points as one PNG drawn by matplotlib.

The shape of the data picks the chart: a numeric x with several values is a line plot (one line
per series), anything else a bar chart. A series is one value of `--by`, and of every other grid
axis that varies, so no two points are ever averaged into one mark. Units come from field names:
`_per_second` samples/s, `_ms` ms, `_ns` ns, `seconds` s, `f1`/`exact_match` %. The best point is
marked by the field's direction, also from its name: higher is better for throughput
(`*_per_second`) and accuracy (`f1`, `exact_match`, `accuracy`), lower for latency and time
(`*_ms`, `*_ns`, `*latency*`, `seconds`); a field of neither kind gets no best mark, nor do points that all
tie. The best is a run LoadGen called VALID; where none is, the best INVALID one, its note saying so. Points that did
not finish ok, or lack a value, are left out and counted in the caption.

`chart()` decides (pure data, what tests check), `figure()` draws, `png()` writes the bytes with the
chart's summary in a PNG text chunk named "mlrun".
"""
import argparse
import difflib
import io
import json
import math
import os
import textwrap
from dataclasses import dataclass, field

from engine.errors import MlrunError, UsageError
from engine.oserrors import output_errors
from engine.results import show, varying
from engine.words import plural

from .grid import NOT_GIVEN

DPI = 100
DEFAULT_SIZE = (960, 560)
# The main result of a sweep, in order of preference (the first one its points have).
# Server's figure is its completed samples/s: ranked by latency, the point that carried the least load was "best"
MAIN_RESULTS = ("samples_per_second", "completed_samples_per_second", "f1", "latency_p90_ms", "latency_p50_ms",
                "exact_match")
# Fields a point row always has that are never worth an axis.
NOT_AXES = {"point", "point_status", "error"}


def unit(name):
    """The unit a field's name announces, or None."""
    if name.endswith("_per_second"):   # Server's completed_samples_per_second read "completed_samples/s"
        return "samples/s" if name.endswith("samples_per_second") else name[:-len("_per_second")] + "/s"
    for suffix, u in (("_ms", "ms"), ("_ns", "ns"), ("_gb", "GB"), ("_mb", "MB")):
        if name.endswith(suffix):
            return u
    if name == "seconds" or name.endswith("_seconds"):
        return "s"
    if name in ("f1", "exact_match") or name.endswith(("_f1", "_exact_match", "_percent")):
        return "%"
    return None


def direction(name):
    """'max' when a higher value is better, 'min' when lower is, None when the name does not say."""
    if name.endswith("_per_second") or name in ("f1", "exact_match", "accuracy") \
            or name.endswith(("_f1", "_exact_match", "_accuracy")):
        return "max"
    if name.endswith(("_ms", "_ns")) or "latency" in name or name == "seconds" or name.endswith("_seconds"):
        return "min"
    return None


def ranked(row, name):
    """Whether the row's value of `name` may be the best: an Offline run's latencies mean nothing (the harness
    says so), and a sweep across scenarios starred its 1137 ms over Server's 3.95."""
    return not ("latency" in name and row.get("scenario") == "Offline")


def axis_label(name):
    u = unit(name)
    return f"{name} ({u})" if u else name


def number(value):
    """A number for numbers and numeric text ("4", "0.5"), else None (bools, nan and inf are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = float(value if isinstance(value, (int, float)) else str(value).strip())
    except ValueError:
        return None
    if not math.isfinite(n):
        return None
    return int(n) if n.is_integer() and abs(n) < 2 ** 53 else n   # 4, not 4.0, on an axis and in a note


def fields(rows):
    """Every field the rows have, sorted."""
    return sorted({k for r in rows for k in r} - NOT_AXES)


def check_fields(rows, name, **chosen):
    """A usage error for a chosen field no row has, listing the fields there are."""
    have = set(fields(rows))
    for option, value in chosen.items():
        if value is not None and value not in have:
            near = difflib.get_close_matches(value, sorted(have), n=3)
            raise UsageError(f"sweep {name} has no field '{value}' (--{option})"
                             + (f"; did you mean {' or '.join(near)}?" if near else ""),
                             hint=_few("fields there are: ", sorted(have, key=lambda f: (f not in MAIN_RESULTS, f)),
                                       name))


def _few(what, names, sweep, most=12):
    """A hint of a dozen names, not 90 on a 2,000-character line."""
    return what + ", ".join(names[:most]) + (f" and {len(names) - most} more (`mlrun sweep show {sweep} --json` "
                                             "has them all)" if len(names) > most else "")


def default_y(rows):
    """The main result: samples_per_second for performance points, f1 for accuracy ones."""
    ok = [r for r in rows if r.get("point_status") == "ok"] or rows
    modes = {r.get("mode") for r in ok}
    order = ("f1",) + MAIN_RESULTS if modes == {"accuracy"} else MAIN_RESULTS
    return next((f for f in order if any(number(r.get(f)) is not None for r in ok)), None)


@dataclass
class Chart:
    """What a plot shows, decided from the rows (no drawing)."""
    kind: str                 # "line" or "bar"
    x: str
    y: str
    by: str | None
    series: dict = field(default_factory=dict)   # label -> [(x value, y value, row)], x numeric for lines
    categories: list = field(default_factory=list)   # bar charts: x values, in order
    best: dict | None = None  # {"point", "series", "x", "y"}
    left_out: list = field(default_factory=list)   # [(point id, why)]

    def summary(self):
        return {"kind": self.kind, "x": self.x, "y": self.y, "by": self.by, "series": list(self.series),
                "points": sum(len(p) for p in self.series.values()), "best": self.best,
                "left_out": [{"point": p, "why": w} for p, w in self.left_out]}


def chart(rows, x, y, by=None, grid=()):
    """Decide the chart: which points, which series, line or bar, the best point, who is left out.

    grid: the sweep's grid axes; those other than x and by that vary join the series label.
    """
    plotted, left_out = [], []
    for r in rows:
        point = r.get("point", "?")
        if r.get("point_status") != "ok":
            left_out.append((point, r.get("point_status") or "no status"))
        elif r.get("run") and r.get("error"):   # an ok point's run record removed or damaged since (it said "no
            # samples_per_second")
            left_out.append((point, "its run record unreadable"))
        elif number(r.get(y)) is None:   # a text value is not missing: it is no number to draw
            left_out.append((point, f"no {y}" if r.get(y) in (None, "") else f"{y} is no number"))
        elif r.get(x) is None:
            left_out.append((point, f"no {x}"))
        else:
            plotted.append(r)
    xs = [number(r[x]) for r in plotted]
    kind = "line" if plotted and None not in xs and len(set(xs)) > 1 else "bar"
    keys = ([by] if by else []) + varying(plotted, [g for g in grid if g not in (x, by)])
    c = Chart(kind, x, y, by, left_out=left_out)
    for r in plotted:
        # a point without the value reads '-' as in `sweep show` (a --by field no point had drew "user_conf=None")
        label = ", ".join(f"{k}={_text(r.get(k))}" if len(keys) > 1 or k != by else _text(r.get(k))
                          for k in keys) or y
        xv = number(r[x]) if kind == "line" else str(r[x])
        c.series.setdefault(label, []).append((xv, number(r[y]), r))
    if kind == "line":
        for points in c.series.values():
            points.sort(key=lambda p: p[0])
    else:
        order = list(grid.get(x, [])) if isinstance(grid, dict) else []
        seen = {str(r[x]) for r in plotted}
        numeric = all(number(v) is not None for v in seen)
        # The grid's own order first (a variation group's values are written with their '_'; a value not given,
        # `-`, reads "- (1)": it went after the values given, whatever the grid said)
        ordered = [w for v in order for w in _categories_of(str(v), seen)]
        c.categories = list(dict.fromkeys(ordered)) + sorted(
            seen - set(ordered), key=lambda v: (number(v), v) if numeric else (0, v))
        # Two points of one series at one category (x is not a grid axis): each gets its own bar.
        for label, points in c.series.items():
            if len({p[0] for p in points}) < len(points):
                c.categories = []
                break
        if not c.categories:
            for label in c.series:
                c.series[label] = [(f"{xv} ({row.get('point')})", yv, row) for xv, yv, row in c.series[label]]
            c.categories = list(dict.fromkeys(p[0] for pts in c.series.values() for p in pts))
    best = direction(y)
    candidates = [(yv, label, xv, row) for label, pts in c.series.items() for xv, yv, row in pts
                  if ranked(row, y)]
    # The best of the runs LoadGen called VALID (an INVALID one was starred, nothing saying so); where every run is
    # INVALID (short tuning runs), the best of those, said so; a tie is no best
    valid = [t for t in candidates if not invalid(t[3])]
    pool = valid or candidates
    if best and (len(pool) == 1 or len({t[0] for t in pool}) > 1):
        pick = (max if best == "max" else min)(pool, key=lambda t: t[0])
        c.best = {"point": pick[3].get("point"), "series": pick[1], "x": pick[2], "y": pick[0],
                  "direction": best, **({"invalid": True} if not valid else {})}
    return c


def _text(value):   # an empty value too, as `sweep show` writes it: its series was named after the y field
    return "-" if value in (None, "") else str(value)


def _categories_of(value, seen):
    """The categories a grid value is drawn as: itself, without its '_', or for `-` each "- (VALUE)" there is."""
    if value in seen:
        return [value]
    if value == NOT_GIVEN:
        return sorted((w for w in seen if w.startswith(NOT_GIVEN + " (")), key=lambda w: (number(w[3:-1]) is None,
                                                                                        number(w[3:-1]) or 0, w))
    return [value.lstrip("_")] if value.lstrip("_") in seen else []


def invalid(row):
    return str(row.get("result") or "").upper() == "INVALID"


def title_lines(name, query, fixed, width=DEFAULT_SIZE[0]):
    """The title: the sweep's name and query, then its fixed settings, wrapped to the picture's width (8.5 pixels
    a character at 10 points: at 7 a line of settings ran 60 pixels past a 960-pixel picture), at most 4 lines."""
    chars = max(int((width - 20) / 8.5), 40)
    lines = textwrap.wrap(f"sweep {name}" + (f": {query}" if query else ""), chars) \
        + textwrap.wrap(" ".join(f"{k}={v}" for k, v in fixed.items()), chars)
    if len(lines) > 4:
        lines = lines[:4]
        lines[-1] = lines[-1][:chars - 4] + " ..."
    return "\n".join(lines)


def caption(c):
    """Which points were left out, counted by reason."""
    if not c.left_out:
        return ""
    why = {}
    for point, reason in c.left_out:
        why.setdefault(reason, []).append(point)
    parts = [f"{len(p)} {reason} ({', '.join(p[:6])}{', ...' if len(p) > 6 else ''})" for reason, p in why.items()]
    return f"left out: {'; '.join(parts)}"


def figure(c, title, size=DEFAULT_SIZE):
    """The matplotlib Figure of a Chart (no pyplot: nothing global, the Agg canvas)."""
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure
    except ImportError:
        raise MlrunError("plots need matplotlib, which is not installed",
                         hint="install mlrun's requirements: .venv/bin/pip install -r requirements.txt") from None
    # Text as written: a $ in a value ($ORIGIN/lib, a price) started matplotlib's math mode, which failed on it
    # (a ValueError: no plot, no report) or drew it as symbols. Many series: 20 colours in 3 line styles, not 10
    # colours repeated.
    many = len(c.series) > 10
    with rc_context({"text.parse_math": False, **({"axes.prop_cycle": _many_colours()} if many else {})}):
        return _figure(c, title, size, Figure)


def _many_colours():
    from cycler import cycler
    from matplotlib import colormaps
    return cycler(linestyle=["-", "--", ":"]) * cycler(color=list(colormaps["tab20"].colors))   # 60 that differ


def _figure(c, title, size, Figure):
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if c.kind == "line":
        for label, points in c.series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        xs = sorted({p[0] for pts in c.series.values() for p in pts})
        if xs[0] > 0 and xs[-1] / xs[0] >= 16:   # batch sizes 1, 4, 16, 64: even steps on a log axis
            ax.set_xscale("log", base=2)
        if len(xs) <= 12:
            ax.set_xticks(xs, [show(c.x, v) for v in xs])
            ax.minorticks_off()
    else:
        n = len(c.series)
        width = 0.8 / max(n, 1)
        slot = {cat: i for i, cat in enumerate(c.categories)}
        for i, (label, points) in enumerate(c.series.items()):
            offset = (i - (n - 1) / 2) * width
            ax.bar([slot[p[0]] + offset for p in points], [p[1] for p in points], width, label=label)
        width = size[0] - (260 if len(c.series) > 6 else 100)   # the axes', about
        ticks = tick_labels(c.categories, width)
        ax.set_xticks(range(len(c.categories)), ticks)
        if ticks != c.categories or len(c.categories) * (max(map(len, ticks)) * CHAR_PX + 8) > width:
            # side by side, 12 paths or 40 versions were one smear: upright, in a font a slot holds
            ax.tick_params(axis="x", labelrotation=90, labelsize=max(5, min(10, 0.6 * width / len(ticks))))
    if c.best:
        bx, by_ = _best_xy(c)
        u = unit(c.y)
        ax.plot([bx], [by_], linestyle="none", marker="*", markersize=20, color="gold", markeredgecolor="black",
                zorder=5, gid="best", label="_best")
        # The note stays inside the plot: left of a point in the right half, under a maximum, over a minimum.
        right = _rank(c) > 0.5
        high = c.best["direction"] == "max"
        said = f"best ({c.best['direction']}{', every run INVALID' if c.best.get('invalid') else ''})"
        # a bar's value as its label reads: a 140-character path whole in the note squeezed the axes to a sliver
        where = best_where(c, ticks[c.categories.index(c.best["x"])] if c.kind == "bar" else None)
        ax.annotate(f"{said}: {show(c.y, c.best['y'])}{' ' + u if u else ''}\n{where}",
                    xy=(bx, by_), xytext=(-14 if right else 14, -14 if high else 14), textcoords="offset points",
                    ha="right" if right else "left", va="top" if high else "bottom", fontsize=9, gid="best-note",
                    bbox={"boxstyle": "round", "fc": "lightyellow", "ec": "grey"})
    ax.set_xlabel(axis_label(c.x))
    ax.set_ylabel(axis_label(c.y))
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    ax.grid(True, alpha=0.3)
    if c.kind == "bar" and min((p[1] for pts in c.series.values() for p in pts), default=0) >= 0:
        ax.set_ylim(bottom=0)
    if len(c.series) > 6:   # beside the axes, in columns: inside, a long legend hid the title and the points
        ax.legend(title=c.by, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), ncols=1 + len(c.series) // 16)
    elif len(c.series) > 1 or c.by:
        ax.legend(title=c.by, fontsize=9)
    note = caption(c)
    if note:
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
        fig.text(0.01, 0.01, note, fontsize=8, color="dimgrey")
    return fig


CHAR_PX, LONGEST_TICK = 7, 24   # a character of a tick label at 10 points, 100 dpi (DejaVu Sans, about)


def tick_labels(categories, width):
    """A bar chart's category labels as drawn: those longer than LONGEST_TICK cut to their end ("...-number-11.conf",
    where paths and versions differ), when `width` pixels cannot hold them whole. Where that makes two alike (paths
    that differ only at their start, /home/user1/.../user.conf), each is cut before the end they all share
    ("/home/user1..."); where that does too, they stay whole."""
    if sum(len(t) * CHAR_PX + 8 for t in categories) <= width:
        return list(categories)
    cut = [_cut_to_end(t, LONGEST_TICK) for t in categories]
    if len(set(cut)) == len(cut):
        return cut
    # they stood whole: upright, 150 characters ran off the picture and what told them apart was not in it
    shared = min(len(os.path.commonprefix([t[::-1] for t in categories])), min(map(len, categories)) - 1)
    cut = [_cut_to_end(t[:len(t) - shared], LONGEST_TICK - 3) + "..." for t in categories] if shared > 3 else cut
    return cut if len(set(cut)) == len(cut) else list(categories)


def _cut_to_end(text, most):
    return text if len(text) <= most else "..." + text[3 - most:]


def best_said(c):
    """'; best: WHERE = VALUE' (and that every run was INVALID), as the plot's caption ends; '' without a best."""
    return f"; best: {best_where(c)} = {show(c.y, c.best['y'])}" + (
        " (every run INVALID)" if c.best.get("invalid") else "") if c.best else ""


def best_where(c, x_text=None):
    """'p004: batch_size=4, backend=deepsparse': the best point and its settings (x_text: its x as written)."""
    where = [f"{c.x}={x_text or show(c.x, c.best['x'])}"]
    label = c.best["series"]
    if label != c.y:
        where.append(label if "=" in label or not c.by else f"{c.by}={label}")
    return f"{c.best['point']}: {', '.join(where)}"


def _rank(c):
    """Where the best point sits from left (0) to right (1), by the order of the x values."""
    if c.kind == "bar":   # bars span -0.5 .. categories - 0.5
        return (_best_xy(c)[0] + 0.5) / len(c.categories)
    xs = sorted({p[0] for pts in c.series.values() for p in pts})
    return xs.index(c.best["x"]) / max(len(xs) - 1, 1)


def _best_xy(c):
    """Where the best point sits in data coordinates (a bar's x is its slot plus the series' offset)."""
    if c.kind == "line":
        return c.best["x"], c.best["y"]
    n, labels = len(c.series), list(c.series)
    width = 0.8 / n
    return c.categories.index(c.best["x"]) + (labels.index(c.best["series"]) - (n - 1) / 2) * width, c.best["y"]


def png(fig, c):
    """The PNG bytes of a figure, with the chart's summary as the text chunk 'mlrun' (JSON)."""
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():   # a crowded layout draws as it can; its UserWarning said nothing to act on
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": "mlrun", "mlrun": json.dumps(c.summary())})
    return buf.getvalue()


def parse_size(text):
    """'960x560' -> (960, 560), within sensible bounds."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: write WIDTHxHEIGHT in pixels, e.g. 960x560") from None
    if not (100 <= w <= 8000 and 100 <= h <= 8000):
        raise UsageError(f"--size {text}: each side must be 100 to 8000 pixels")
    return w, h


def fixed_settings(record):
    """What every point of a sweep shares: its inputs and overrides, and grid axes of one value."""
    from engine.secrets import redacted
    request = record.get("request") or {}
    fixed = dict(request.get("inputs") or {})
    for dep, over in (request.get("dep_overrides") or {}).items():
        fixed.update({f"dep.{dep}.{k}": v for k, v in over.items()})
    fixed.update({f"env.{k}": v for k, v in redacted(request.get("env_overrides") or {}).items()})
    for axis, values in (record.get("grid") or {}).items():
        if len(values) == 1:
            fixed[axis] = values[0]
    return fixed


def plotted_axes(rows, grid):
    """The grid axes that vary among the points that ran ok (those plotted): fail=false,true varies among all
    points, and was drawn as one bar group."""
    ok = [r for r in rows if r.get("point_status") == "ok"]
    return varying(ok, list(grid)) or varying(rows, list(grid))


def render(record, rows, x=None, y=None, by=None, size=DEFAULT_SIZE):
    """(Chart, PNG bytes) of one plot of a sweep record and its rows; usage errors for bad fields."""
    name, grid = record.get("name", "?"), record.get("grid") or {}
    x = x or next(iter(plotted_axes(rows, grid) or list(grid)), None)
    if x is None:
        raise UsageError(f"sweep {name}: say which field goes on the x axis (--x FIELD)",
                         hint="fields there are: " + ", ".join(fields(rows)))
    if y is None:   # a bad --x (or --by) said first: "no point has a result" sent the user to the points
        check_fields(rows, name, x=x, by=by)
    y = y or default_y(rows)
    if y is None:
        raise MlrunError(f"sweep {name}: no point has a result to plot ({plural(len(rows), 'point')}: "
                         + ", ".join(sorted({str(r.get('point_status')) for r in rows})) + ")",
                         hint=f"mlrun sweep show {name} lists the points and their errors")
    check_fields(rows, name, x=x, y=y, by=by)
    if by is not None and by in (x, y):   # a series per value of the x axis itself: labelled 'threads=1, threads=1'
        raise UsageError(f"sweep plot --by {by} is also --{'x' if by == x else 'y'}",
                         hint="--by takes another field: one series per value of it")
    if x == y:   # a diagonal of the x values, "best" its largest
        raise UsageError(f"sweep plot --x {x} is also --y", hint="--y takes a result, such as samples_per_second")
    text = sorted({str(r[y]) for r in rows if r.get(y) not in (None, "") and number(r.get(y)) is None})
    if text and not any(number(r.get(y)) is not None for r in rows):
        raise UsageError(f"sweep {name}: --y {y} holds text ({', '.join(text[:3])}), and the y axis is a number",
                         hint=f"--by {y} draws one series per value; --y takes a figure such as samples_per_second")
    c = chart(rows, x, y, by, grid)
    if not c.series:
        raise MlrunError(f"sweep {name}: no point to plot: {caption(c)}",
                         hint=f"mlrun sweep show {name} lists the points and their errors")
    from .table import shared_query
    return c, png(figure(c, title_lines(name, shared_query(record, rows), fixed_settings(record), size[0]), size), c)


def save(path, data, operation):
    """Write bytes through a temporary file and a rename: a reader never sees half a file."""
    with output_errors(operation, path):
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def add_arguments(p):
    p.add_argument("name", metavar="NAME", help="the sweep (mlrun sweep list lists them)")
    p.add_argument("--x", metavar="FIELD", help="the field on the x axis (default: the first grid axis that varies)")
    p.add_argument("--y", metavar="FIELD", help="the field on the y axis (default: samples_per_second for "
                                                "performance points, f1 for accuracy ones)")
    p.add_argument("--by", metavar="FIELD", help="one series (line or bar colour) per value of this field")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the PNG to write")
    p.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), metavar="WxH",
                   help="the picture's size in pixels (default %(default)s)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one mlrun error line, exit 2, as every verb
        raise UsageError(f"sweep plot: {message}", hint=USAGE)


USAGE = "mlrun sweep plot NAME --x FIELD [--y FIELD] [--by FIELD] -o FILE.png [--size WxH]"


def parse(words):
    """The options of `sweep plot NAME ...` (the sweep verb hands over the words after `plot`)."""
    p = _Parser(prog="mlrun sweep plot", usage=USAGE, description="draw a sweep's points as one PNG: a line plot "
                "when x is a number with several values, else a bar chart; the best point marked")
    add_arguments(p)
    return p.parse_args(words)


def cmd_plot(args, extras, settings):
    """mlrun sweep plot NAME ...: args.sweep_name is NAME, the plot's options come in extras."""
    opts = parse(([args.sweep_name] if getattr(args, "sweep_name", None) else []) + list(extras))
    if not opts.output.strip():
        raise UsageError("-o is empty", hint=USAGE)
    if not opts.output.lower().endswith(".png"):   # a PNG under another name would mislead whoever opens it
        raise UsageError(f"sweep plot -o {opts.output}: it writes a PNG; name the file .png", hint=USAGE)
    from .table import load, rows
    size = parse_size(opts.size)
    c, data = render(load(settings, opts.name), rows(settings, opts.name), opts.x, opts.y, opts.by, size)
    save(opts.output, data, "cannot write the plot")
    print(f"wrote {opts.output}: {c.kind} chart of {c.y} against {c.x}"
          + (f" by {c.by}" if c.by else "") + f", {plural(c.summary()['points'], 'point')}" + best_said(c))
    if c.left_out:
        print(caption(c))
    return 0
