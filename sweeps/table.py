"""A sweep as rows: one dict per point, its settings and the flat fields of its run.

rows(settings, name) -> [{"point", "point_status", <grid settings>, <records.flat(run)>, "error"}]; a point
without a run has its settings only; a setting not given (`-`) reads "- (VALUE)", VALUE what its run had.
columns(data, rows) is the default choice of `sweep show`: the point, the grid's settings, then the results any
row has.
"""
import os

from engine import records, results
from engine.errors import MlrunError, UsageError

from . import record
from .grid import NOT_GIVEN


def load(settings, name):
    """The sweep record `name` (a usage error listing the sweeps there are when there is none)."""
    data = record.read(settings.runs, record.check_name(name, said="sweep {!r}"))
    if data is None:
        there = record.names(settings.runs)
        raise UsageError(f"no sweep '{name}' in {record.sweeps_dir(settings.runs)}",
                         hint=f"the sweeps there are: {', '.join(there)}" if there else
                         "none yet: mlrun sweep QUERY --grid NAME=V1,V2 --name NAME makes one")
    running = [p for p in data["points"] if p["status"] == "running"]
    if running and not record.held(settings.runs, name):   # its sweep was killed (SIGKILL, a node gone)
        for p in running:
            p.update(status="stopped", error=p.get("error") or "its sweep stopped while it ran (killed?); the same "
                                                                 "sweep command runs it again")
    return data


def rows(settings, name, data=None, shown=True, loaded=None):
    """shown: a setting not given reads "- (VALUE)" for people (for_people); else VALUE, as its run had it (None:
    unknown).
    loaded: a dict that gets {run id: its record, or None} of the records read (the report read each twice)."""
    data = data or load(settings, name)
    kinds = data.get("kinds") or {}
    memo = results.RowsMemo(settings.runs) if loaded is None else None   # `runs`'s rows: 1,000 points 0.5 -> 0.1 s
    out = []
    for point in data["points"]:
        row = {"point": point["id"], "point_status": point["status"], "run": point.get("run")}
        for field, value in point["settings"].items():
            row[field] = value.lstrip("_") if kinds.get(field) == "variation" else records.typed(value)
        if point.get("run"):
            try:
                if memo is not None:
                    flat = {k: v for k, v in results.run_row(settings.runs, point["run"], memo)[0].items()
                            if k not in results.ROW_EXTRAS}
                else:   # the report wants the whole record (None: it could not be read)
                    loaded[point["run"]] = None
                    loaded[point["run"]] = run = records.load(os.path.join(settings.runs, point["run"], "run.json"))
                    flat = records.flat(run)
                row.update({k: v for k, v in flat.items() if k not in row or v is not None})
            except results.UNREADABLE as e:   # removed or damaged since: the point still shows
                path = os.path.join(settings.runs, point["run"], "run.json")
                row["error"] = (f"its run {point['run']} is gone (no {path}): the sweep's command runs the point "
                                "again" if not os.path.lexists(path) else e.message if isinstance(e, MlrunError)
                                else f"run record {path} is damaged: {e}")   # below its top: it said "a bug"
        for field, value in point["settings"].items():   # not given: the value its run had
            if value == NOT_GIVEN and row.get(field) == NOT_GIVEN:
                row[field] = None
        row["point_status"] = point["status"]
        row["error"] = point.get("error") or row.get("error")
        row["node"] = point.get("node")
        out.append(row)
    if memo is not None:
        memo.save(every_run=False)
    return for_people(data, out) if shown else out


def not_given(data):
    """{point id: the grid's fields it left to mlrun (the value `-`)}, once for all rows (looked up point by point,
    a 1,000-point sweep searched its points a million times)."""
    return {p["id"]: [f for f, value in p["settings"].items() if value == NOT_GIVEN] for p in data["points"]}


def for_people(data, rows):
    """Rows as people read them: a setting not given reads "- (VALUE)", what its run had (`-` alone: unknown)."""
    left = not_given(data)
    for row in rows:
        for field in left.get(row["point"], []):
            row[field] = NOT_GIVEN if row.get(field) is None else f"{NOT_GIVEN} ({row[field]})"
    return rows


def shared_query(data, rows=()):
    """The sweep's query less the words its points do not all run: a grid over a variation group
    (backend=_onnxruntime,_openvino) replaces the query's own one, and the title, the report and `sweep show`
    said every point ran the query's _onnxruntime."""
    kinds = data.get("kinds") or {}
    gridded = {v for axis, values in (data.get("grid") or {}).items() if kinds.get(axis) == "variation"
               for v in values}
    ran = [set(r["query"].split()) for r in rows if r.get("query")]
    return " ".join(w for w in (data.get("query") or "").split() if w not in gridded and all(w in q for q in ran))


def columns(data, rows):
    """The point, the grid's fields, the results some row has, the point's status, its run, its error."""
    timed = [r for r in rows if r.get("scenario") != "Offline"]  # Offline latencies say nothing of a run
    shown = [f for f in results.RESULT_FIELDS if not f.startswith("latency_")] + ["latency_p90_ms", "latency_p99_ms"]
    figures = [f for f in results.present(rows, shown) if not f.startswith("latency_") or results.present(timed, [f])]
    cols = ["point"] + list(data["grid"]) + figures + ["point_status", "run"]
    return cols + (["error"] if any(r.get("error") for r in rows) else [])
