"""`mlrun report`: one self-contained HTML page of one or more sweeps.

One file a person can mail or archive and open anywhere: the CSS is inline, the plots are PNG
data URIs, nothing is fetched and no script runs (there is none). Per sweep: its query and fixed
settings, a table of its points (settings, results, status, error; the best value of each result
in bold), the plots (the main result against each grid axis, one series per value of the next
axis), and under each row a <details> with the point's flat record and the exact command of its
run. Every text is HTML-escaped: a query or an error holding markup is shown, never run.
"""
import base64
import html
import os
import time
from collections import Counter

from engine import records
from engine.errors import MlrunError, UsageError
from engine.results import RESULT_FIELDS, present, short_mark, show
from engine.words import plural

from . import plot, table

RESULT_COLUMNS = RESULT_FIELDS + ("seconds",)
PLOT_SIZE = (600, 400)   # two side by side on a laptop screen

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; white-space: nowrap; }
td.why { white-space: normal; min-width: 12em; max-width: 36em; }
th { background: #f3f3f3; white-space: normal; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #fff7d6; }
.ok { color: #17702a; } .failed, .error, .interrupted, .stopped { color: #b00020; } .pending, .running { color: #777; }
dl.fixed { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.fixed dt { font-weight: bold; } dl.fixed dd { margin: 0; font-family: monospace; }
code, pre { font-family: ui-monospace, monospace; font-size: 12px; }
pre { background: #f6f6f6; padding: 6px; white-space: pre-wrap; word-break: break-all; max-width: 70em; }
tr.more td { border-top: none; padding: 0 8px 2px; font-size: 12px; white-space: normal; }
details > summary { cursor: pointer; color: #0645ad; }
dl.flat { columns: 3 22em; font-size: 12px; margin: 4px 0; }
dl.flat div { break-inside: avoid; display: flex; gap: 8px; } dl.flat dt { font-weight: bold; }
dl.flat dd { margin: 0; word-break: break-all; }
figure { display: inline-block; margin: 0 1em 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; } div.wide { overflow-x: auto; }
"""


def e(value):
    """Text as HTML (quotes too): markup in a query or an error is shown, never interpreted."""
    return html.escape(str(value), quote=True)


def plot_choices(record, rows):
    """[(x, y, by)]: each main result against each grid axis that varies, by the next such axis."""
    axes = plot.plotted_axes(rows, record.get("grid") or {})
    ys = [y for y in ("samples_per_second", "completed_samples_per_second", "f1")
          if any(plot.number(r.get(y)) is not None for r in rows)]
    ys = ys or [y for y in [plot.default_y(rows)] if y]
    return [(x, y, next((a for a in axes if a != x), None)) for y in ys for x in axes]


def best_values(rows, columns):
    """{column: the best value among ok points} for the columns whose name gives a direction: of the VALID runs
    where there are any (an INVALID one was bold as best), never a value every point ties at."""
    out = {}
    for col in columns:
        ok = [r for r in rows if r.get("point_status") == "ok" and plot.ranked(r, col)]
        ok = [r for r in ok if not plot.invalid(r)] or ok
        values = [v for v in (plot.number(r.get(col)) for r in ok) if v is not None]
        if (len(values) == 1 or len(set(values)) > 1) and plot.direction(col):
            out[col] = (max if plot.direction(col) == "max" else min)(values)
    return out


def command_of(run):
    """The exact command line a run recorded, as a shell would take it."""
    return records.command(run or {})


def section(index, record, rows, runs):
    """The HTML of one sweep: its settings, plots and points. runs: {run id: run record or None}."""
    name = record.get("name", "?")
    anchor = f"s{index}"
    grid = record.get("grid") or {}
    statuses = Counter(r.get("point_status") or "?" for r in rows)
    out = [f'<section id="{anchor}"><h2>sweep {e(name)}</h2>',
           f'<p>{plural(len(rows), "point")}: ' + ", ".join(f'<span class="{e(s)}">{n} {e(s)}</span>'
                                                  for s, n in sorted(statuses.items())) + "</p>",
           '<dl class="fixed">', f"<dt>query</dt><dd>{e(table.shared_query(record, rows))}</dd>"]
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in plot.fixed_settings(record).items()]
    out += [f"<dt>grid {e(k)}</dt><dd>{e(', '.join(map(str, v)))}</dd>" for k, v in grid.items() if len(v) > 1]
    out.append("</dl>")
    out.append(plots(record, rows))
    out.append(points_table(anchor, rows, list(grid), runs))
    out.append("</section>")
    return "\n".join(out)


def plots(record, rows):
    choices = plot_choices(record, rows)
    if not choices:
        why = "no point has a result to plot (see the table)" if plot.default_y(rows) is None else \
            "no grid axis has several values"
        return f'<p class="note">No plot: {why}.</p>'
    figs = []
    for x, y, by in choices:
        try:
            c, data = plot.render(record, rows, x, y, by, size=PLOT_SIZE)
        except Exception as err:   # one plot that cannot be drawn leaves the page, and its other plots, whole
            said = err.message if isinstance(err, MlrunError) else f"unexpected {type(err).__name__}: {err}"
            figs.append(f'<p class="note">No plot of {e(y)} against {e(x)}: {e(said)}</p>')
            continue
        what = f"{y} against {x}" + (f", one series per {by}" if by else "")
        best = plot.best_said(c)   # with "(every run INVALID)", as `sweep plot` says it (the page left it out)
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        w, h = PLOT_SIZE
        figs.append(f'<figure style="width: {w}px"><img src="{uri}" width="{w}" height="{h}" alt="{e(what)}">'
                    f"<figcaption>{e(what + best)}</figcaption></figure>")
    return "<div>" + "\n".join(figs) + "</div>"


def points_table(anchor, rows, axes, runs):
    results = present(rows, RESULT_COLUMNS)
    best = best_values(rows, results)
    head = ["point", "status"] + axes + [f"{c} ({plot.unit(c)})" if plot.unit(c) else c for c in results] \
        + ["run", "error"]
    out = ['<div class="wide"><table class="points"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for r in rows:
        point, status = r.get("point", "?"), r.get("point_status") or "?"
        cells = [f"<td>{e(point)}</td>", f'<td class="{e(status)}">{e(status)}</td>']
        cells += [f"<td>{e(show(a, r.get(a)))}</td>" for a in axes]
        for col in results:
            value = r.get(col)
            num = plot.number(value)
            cls = "num best" if col in best and num == best[col] and status == "ok" and plot.ranked(r, col) \
                and not (plot.invalid(r) and any(not plot.invalid(x) for x in rows
                                                 if x.get("point_status") == "ok" and plot.ranked(x, col))) \
                else "num"
            mark = short_mark(r) if col == "result" and value else ""   # as sweep show: no figure to submit
            cells.append(f'<td class="{cls}">{e(show(col, value) + mark)}</td>')
        error = str(r.get("error") or "")
        first = error.splitlines()[0] if error else ""
        cells.append(f"<td>{e(r.get('run') or '-')}</td>")
        more = " ..." if len(first) > 160 or len(error) > len(first) else ""
        cells.append(f'<td class="why">{e(first[:160] + more)}</td>')
        out.append(f'<tr id="{anchor}-{e(point)}">' + "".join(cells) + "</tr>")
        # Its details on a row of their own, the table's full width: opening them moves no column.
        out.append(f'<tr class="more"><td colspan="{len(head)}">{details(point, r, runs.get(r.get("run")))}</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def details(point, row, run):
    """A row's full settings one click away: the exact command, the error, every flat field."""
    parts = [f"<details><summary>{e(point)}: settings &amp; command</summary>"]
    command = command_of(run)
    if command:
        parts.append(f'<p>command:</p><pre class="command">{e(command)}</pre>')
        if run.get("_dir"):
            parts.append(f"<p>run folder: <code>{e(run['_dir'])}</code></p>")
    else:
        parts.append('<p class="note">no run record for this point</p>')
    if row.get("error"):
        parts.append(f'<p>error:</p><pre class="error">{e(row["error"])}</pre>')
    parts.append('<dl class="flat">' + "".join(f"<div><dt>{e(k)}</dt><dd>{e(_raw(k, v))}</dd></div>"
                                             for k, v in sorted(row.items())) + "</dl></details>")
    return "".join(parts)


def _raw(field, value):
    """A value in full (no rounding), but a time as a date."""
    return show(field, value) if field == "started" or value is None else value


def page(sweeps, now=None):
    """The whole page for [(sweep record, rows, runs)]."""
    names = [rec.get("name", "?") for rec, _, _ in sweeps]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    body = [f"<h1>mlrun report: {e(', '.join(names))}</h1>",
            f'<p class="note">Written by mlrun on {e(when)}. Each row\'s details hold its full settings and '
            "the exact command of its run.</p>"]
    if len(sweeps) > 1:
        body.append("<ul>" + "".join(f'<li><a href="#s{i}">sweep {e(n)}</a></li>' for i, n in enumerate(names))
                    + "</ul>")
    body += [section(i, rec, rows, runs) for i, (rec, rows, runs) in enumerate(sweeps)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>mlrun report: {e(', '.join(names))}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def run_records(runs_dir, rows):
    """{run id: its record, or None when it cannot be read} for the rows' runs."""
    out = {}
    for r in rows:
        run = r.get("run")
        if run and run not in out:
            try:
                out[run] = records.load(os.path.join(runs_dir, run, "run.json"))
            except MlrunError:
                out[run] = None
    return out


def write(settings, names, out):
    """mlrun report NAME... -o FILE: the page of those sweeps, written atomically; returns its size."""
    from engine.secrets import scrub
    from .table import load, rows as table_rows
    sweeps = []
    for name in dict.fromkeys(names):
        data = load(settings, name)
        loaded = {}   # each point's record read once (the table's rows read them, then the report again)
        rows = table_rows(settings, name, data, loaded=loaded)
        sweeps.append((data, rows, {**run_records(settings.runs, [r for r in rows if r.get("run") not in loaded]),
                                    **loaded}))
    data = scrub(page(sweeps)).encode()  # no secret this process knows in a file it writes
    plot.save(out, data, "cannot write the report")
    return len(data)


def add_arguments(p):
    p.add_argument("names", nargs="+", metavar="NAME", help="the sweeps on the page (mlrun sweep list lists them)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the page to write")


def cmd_report(args, extras, settings):
    if os.path.isdir(args.output):
        raise UsageError(f"report -o {args.output} is a folder: name the page's file, e.g. -o sweeps.html")
    if not args.output.lower().endswith((".html", ".htm")):   # HTML under .pdf misleads whoever opens it, as plot's
        raise UsageError(f"report -o {args.output}: it writes an HTML page; name the file .html",
                         hint="e.g. -o sweeps.html (a browser prints it to PDF)")
    size = write(settings, args.names, args.output)
    print(f"wrote {args.output} ({size / 1024:.0f} KB): {', '.join(dict.fromkeys(args.names))}; "
          "one file, opens in any browser without a server")
    return 0
