"""The verbs: `mlrun sweep QUERY ... --grid ... --name NAME`, `mlrun sweep show NAME`, `mlrun sweep list`.

A sweep resolves every point before anything runs (a point whose plan fails stops the sweep, all such
points listed), then runs the points through an executor, recording each point's run, status and error in
runs/sweeps/NAME/sweep.json as it goes. Run again, it skips the points whose run finished ok with the same
plan key (the root node's key: recipes, inputs, variations and every dependency), and runs the rest, a point
left `running` by a sweep that died included; --rerun runs them all again.
"""
import copy
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time

from engine import records, results, secrets, usage
from engine.errors import MlrunError, ResolutionError, UsageError
from engine.words import plural

from . import grid as gridlib, record, table
from .executors import Task, executor

INTERRUPTED_CODES = (129, 130, 143)


def add_arguments(p, verb):
    """The arguments of `mlrun sweep` (and of `mlrun sweeps`, which lists them)."""
    if verb == "sweeps":
        p.set_defaults(query="list", sweep_name=None)
        return
    p.add_argument("query", metavar="QUERY|show|list|plot|best",
                   help='the query every point runs, e.g. "app mlperf bert _onnxruntime _cpu _random"; '
                        "or show NAME, or list, or plot NAME --x FIELD [--y FIELD] [--by FIELD] -o FILE.png, or best NAME "
                        "[--y FIELD] [--json] (the best VALID point and the submit command that uses it)")
    p.add_argument("sweep_name", nargs="?", metavar="NAME", help="with show: the sweep to show")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                   help="a dimension of the grid, repeatable: an input (batch_size=1,4), a dependency input "
                        "(dep.model.layers=2,4), an environment override (env.OMP_NUM_THREADS=1,2) or a "
                        "variation group (backend=_onnxruntime,_deepsparse); the value - is not given "
                        "(threads=-,1,2: the harness's own choice, then 1 and 2)")
    p.add_argument("--name", help="the sweep's name: its record is runs/sweeps/NAME/sweep.json")
    p.add_argument("--rerun", action="store_true", help="run again the points that finished ok")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="local: points at once, at most the number of points (performance points each pinned "
                        "to its own cores; refused when there are fewer cores than that)")
    p.add_argument("--on", metavar="WHERE",
                   help="local (default), ray (RAY_ADDRESS), ray:HOST:PORT, ray://HOST:PORT, or slurm")
    p.add_argument("--slurm", metavar="KEY=VALUE,...", help="SLURM job options, e.g. partition=cpu,time=30")
    p.add_argument("--cpus", type=int, metavar="N", help="cores each point asks a cluster for (default 1)")
    p.add_argument("--node-cache", "--ray-cache", metavar="shared|local|DIR",
                   help="ray/slurm: the cache the nodes use: this one, on a shared file system (default), "
                        "each node's own (~/.cache/mlrun), or DIR on every node")
    p.epilog = ("Any other --NAME=VALUE is an input of the queried recipe (or --dep.*, --env.*), the same for "
                "every point. docs/sweeps.md describes grids, resuming and the fields of `sweep show`.")


# `mlrun sweep show|list|best --help`: their own options (the sweep's, --grid --jobs --on..., were listed, and each
# of those is refused there)
SUB_HELP = {
    "show": """usage: mlrun sweep show NAME [--where FIELD=VALUE]... [--columns A,B] [--json|--csv|--markdown]

One sweep's points: each point's status, grid values and its run's results (a table, or every field with
--json/--csv). --where (one word: FIELD=VALUE, or <, >, <=, >=, != between) and --columns as for `mlrun runs`
(docs/sweeps.md lists the fields).""",
    "list": """usage: mlrun sweep list [--json|--csv|--markdown]     (also: mlrun sweeps)

The sweeps of this runs folder: name, query, points done, left and failed.""",
    "best": """usage: mlrun sweep best NAME [--y FIELD] [--json]

The best point of a sweep among its VALID points (by samples_per_second; Server by completed_samples_per_second;
SingleStream by latency_p90_ms; accuracy by f1; or FIELD), with notes when it may be noise, and the `bin/mlrun
submit` command that runs it, its settings scoped to its scenario. Exit 1 when no point is VALID, none ended
ok, or every point ties (no best, as the plot and report have none).
  --y FIELD   rank by this field (its direction known: a rate higher, a latency lower)
  --json      the point, its value, grid values (not_given: values the point left to the harness), notes and
              the submit command as a list""",
}


PLAN_NOTE_FROM = 500   # points: a grid this large says it is being planned


def cmd_sweep(args, extras, settings):
    if args.query == "show":
        return cmd_show(args, extras, settings)
    if args.query in ("list", "ls"):
        return cmd_list(args, extras, settings)
    if args.query == "plot":
        from .plot import cmd_plot   # its options (--x, --y, --by, -o) come in extras
        return cmd_plot(args, extras, settings)
    if args.query == "best":
        return cmd_best(args, extras, settings)
    from engine.words import did_you_mean
    near = did_you_mean(args.query, ["show", "list", "plot", "best"]) if " " not in args.query else ""
    if near:   # `sweep lsit` said "a sweep needs a --name", `sweep plto be` "unexpected argument 'be'"
        raise UsageError(f"mlrun sweep {args.query}: no such verb{near}",
                         hint="the verbs are sweep show NAME, sweep list, sweep plot NAME, sweep best NAME; a "
                              "sweep is mlrun sweep QUERY --grid NAME=V1,V2 --name NAME")
    if args.sweep_name:
        raise UsageError(f"unexpected argument '{args.sweep_name}'",
                         hint="inputs are --NAME=VALUE (with '='), the query one quoted argument; "
                              "the verbs are sweep show NAME, sweep list, sweep plot NAME, sweep best NAME")
    for flag in ("jobs", "cpus"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag} {getattr(args, flag)}: give 1 or more")
    if not args.name:
        raise UsageError("a sweep needs a --name", hint="e.g. --name bs-threads; `mlrun sweep show NAME` shows it")
    shown = [f"--{f}" for f in ("where", "columns", "csv", "json", "markdown") if getattr(args, f, None)]
    if shown:
        raise UsageError(f"{', '.join(shown)}: options of `mlrun sweep show NAME`, not of running a sweep")
    return run_sweep(args, extras, settings)


# -- mlrun sweep QUERY ----------------------------------------------------------------------


def run_sweep(args, extras, settings):
    from engine.cli import split_extras
    from engine.words import did_you_mean
    from engine.resolver import Resolver, resolve
    name = record.check_name(args.name)
    if not args.grid:   # --gird X was taken for an input: say which flag was meant
        typo = next((w.split("=")[0] for w in extras if w.startswith("--") and w.split("=")[0] != "--grid"
                     and did_you_mean(w.split("=")[0], ["--grid"])), None)
        if typo:
            raise UsageError(f"a sweep needs at least one --grid NAME=V1,V2 ({typo} is given: did you mean --grid?)",
                             hint="e.g. mlrun sweep QUERY --grid batch_size=1,4 --name bs")
    inputs, deps, env = split_extras(extras)
    grid = gridlib.parse(args.grid)
    index = settings.index()
    recipe, _ = Resolver(index).select(args.query)
    kinds = gridlib.classify(grid, recipe, inputs, deps, env)
    options = {"jobs": args.jobs, "cpus": args.cpus, "slurm": _key_values(args.slurm, "--slurm"),
               "node_cache": args.node_cache,
               "log_dir": os.path.join(record.sweeps_dir(settings.runs), name, "logs"), "sweep": name}
    runner = executor(args.on, options)   # an unknown --on fails before anything is planned
    prober = settings.prober()

    # Every point's plan first: a point that cannot be planned is an error before anything runs.
    planned, problems, plans = [], [], {}
    count = math.prod(len(values) for values in grid.values())
    if count > PLAN_NOTE_FROM:   # about 2 ms a plan: 10,000 points planned for 20 s with nothing on the screen
        print(f"sweep {name}: planning {count:,} points first (every point's plan before any runs; Ctrl-C stops)",
              file=sys.stderr, flush=True)
    for point_id, point_settings in gridlib.points(grid):
        q, i, d, e = gridlib.point_request(args.query, recipe, point_settings, kinds, inputs, deps, env)
        try:
            plan = resolve(index, q, inputs=i, host_env=os.environ, dep_overrides=d, env_overrides=e, prober=prober)
        except MlrunError as error:
            problems.append((f"{point_id} ({_describe(point_settings)})", error.message))
            continue
        root = plan.root
        task = Task(point_id=point_id, argv=gridlib.argv(q, i, d, e), cpus=args.cpus or 1,
                    gpus=1 if any(v.split(".")[0] == "cuda" for v in root.variations) else 0,
                    measures=not root.cache and root.inputs.get("mode") != "accuracy")
        planned.append((point_id, point_settings, root.key, task))
        plans[point_id] = plan
    if problems:   # one line per reason: a misspelt fixed flag repeated the same line for every point
        by_reason = {}
        for point, reason in problems:
            by_reason.setdefault(reason, []).append(point)
        lines = [("every point" if len(points) == len(problems) + len(planned) else
                  ", ".join(points[:4]) + (f" and {len(points) - 4} more" if len(points) > 4 else "")) + f": {reason}"
                 for reason, points in by_reason.items()]
        apart = any(" has no input --" in reason for reason in by_reason) and planned
        raise ResolutionError(f"{len(problems)} of {len(problems) + len(planned)} points of sweep '{name}' cannot "
                              "be planned; nothing ran:\n  " + "\n  ".join(lines),
                              hint=("a --dep.NAME.* flag goes to every point, and these points' NAME is another "
                                    "recipe (a grid over --precision where int8 quantises the model first): sweep "
                                    "them apart, or give that dependency once as a file the points share (the BERT "
                                    "app's --model=FILE); " if apart else "")
                              + "fix the grid or the flags; `mlrun plan QUERY ...` shows one point's plan")

    seen, same = {}, []
    for point_id, point_settings, key, _ in planned:   # offline,Offline or -,DEFAULT: one plan measured twice
        if key in seen:
            same.append(f"{seen[key][0]} ({_describe(seen[key][1])}) and {point_id} ({_describe(point_settings)})")
        seen.setdefault(key, (point_id, point_settings))
    if same:
        raise UsageError(f"sweep '{name}': points with the same plan (values that name one setting): "
                         + "; ".join(same), hint="give each value once, in one spelling")
    runner.check([task for _, _, _, task in planned])
    request = {"inputs": inputs, "dep_overrides": deps, "env_overrides": secrets.redacted(env)}
    lock = record.hold(settings.runs, name)
    try:
        old = record.read(settings.runs, name)
        before = copy.deepcopy(old)   # _merge builds on it in place
        data = _merge(old, os.path.dirname(record.path(settings.runs, name)), name,
                      args.query, request, grid, kinds, planned, args.rerun, settings.runs, plans)
        tasks = [task for point_id, _, _, task in planned if record.point(data, point_id)["status"] == "pending"]
        skipped = len(planned) - len(tasks)
        stale, lost, changed = data.pop("_stale", 0), data.pop("_lost", 0), data.pop("_changed", [])
        data["process"] = {"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()}
        record.write(settings.runs, data)
        print(f"sweep {name}: {plural(len(planned), 'point')}, {len(tasks)} to run"
              + (f" on {args.on}" if args.on and args.on != "local" else "")
              + (f", {skipped} skipped (finished ok with the same plan; --rerun runs them again)" if skipped else "")
              + (f"; {stale} left running by a sweep that stopped: run again" if stale else "")
              + (f"; {lost} whose run record is gone or unreadable: run again" if lost else ""), file=sys.stderr)
        # an ok point run again because its plan changed says what changed (a sweep run again without the
        # --mirror it had ran every int8 point again, which then failed offline, with no word of why)
        for point_id, run_id, why in changed[:5]:
            print(f"  {point_id} ran ok as {run_id}; its plan changed: {why}", file=sys.stderr)
        if len(changed) > 5:
            print(f"  ... and {len(changed) - 5} more points whose plans changed", file=sys.stderr)
        if tasks:
            try:
                _execute(runner, tasks, settings, data)
            except MlrunError:
                ids = {task.point_id for task in tasks}   # a new sweep's tasks are all its points
                started = any(p.get("run") or p.get("status") != "pending" for p in data["points"]
                              if p.get("id") in ids)
                if old is None and not started:
                    # nothing could start (sbatch refused, no Ray cluster there): a new sweep leaves no record, which
                    # `sweep list` showed and which refused the name with another grid
                    lock.release()
                    shutil.rmtree(os.path.dirname(record.path(settings.runs, name)), ignore_errors=True)
                elif not started:
                    # refused before any point started (--cpus no node has, a --node-cache it cannot use): the record
                    # as it was, so the command put right does not run again what --rerun had set pending
                    record.write(settings.runs, before)
                raise
    finally:
        lock.release()
    counts = record.counts(data)
    bad = len(data["points"]) - counts.get("ok", 0)
    print(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; `mlrun sweep show {name}` shows the table", file=sys.stderr)
    return 1 if bad else 0


def _readable_run(runs_dir, run_id):
    try:
        records.load(os.path.join(runs_dir, str(run_id), "run.json"))
        return True
    except MlrunError:
        return False


def _merge(old, folder, name, query, request, grid, kinds, planned, rerun, runs_dir, plans):
    """The sweep record to run: the old one's finished points kept when its query, request and grid match."""
    fresh = {"name": name, "query": query, "request": request, "grid": grid, "kinds": kinds, "points": []}
    if old is not None:
        # the record holds them scrubbed (a grid of URLs with passwords): compared so, and said so (it was "exists
        # with another grid" for the same command, the secrets printed)
        now = {what: secrets.scrub(fresh[what]) for what in ("query", "grid", "request")}
        differences = [_difference(what, old.get(what), now[what])
                       for what in ("query", "grid", "request") if not _same(what, old.get(what), now[what])]
        if differences:
            raise UsageError(f"sweep '{name}' exists with another " + "; ".join(differences),
                             hint=f"use another --name for a new sweep, or remove {folder} to start this one over")
    before = {p["id"]: p for p in (old or {}).get("points", [])}
    stale = lost = 0
    changed = []
    for point_id, point_settings, plan_key, _ in planned:
        p = before.get(point_id) or {"id": point_id, "run": None, "error": None, "node": None}
        p.update(settings=point_settings)
        stale += p.get("status") == "running"  # we hold the sweep's lock: whoever ran it is gone
        # an ok point whose run was removed, or whose record cannot be read, has no results left to show: run it
        # again (was: skipped, empty)
        gone = p.get("status") == "ok" and not _readable_run(runs_dir, p.get("run"))
        lost += gone and not rerun
        if not (rerun or gone) and p.get("status") == "ok" and p.get("plan_key") != plan_key:
            changed.append((point_id, p.get("run"), _what_changed(runs_dir, p.get("run"), plans[point_id])))
        if rerun or gone or p.get("status") != "ok" or p.get("plan_key") != plan_key:
            if p.get("run"):
                p.setdefault("history", []).append(p["run"])
            p.update(status="pending", run=None, error=None)
        p["plan_key"] = plan_key
        fresh["points"].append(p)
    fresh["_stale"], fresh["_lost"], fresh["_changed"] = stale, lost, changed
    return fresh


def _what_changed(runs_dir, run_id, plan):
    """The first way `plan` differs from the plan run_id ran (replay's comparison), in a line."""
    from engine import replay
    try:
        differences, _ = replay.plan_differences(records.load(os.path.join(runs_dir, str(run_id), "run.json")), plan)
    except MlrunError:
        return "its record cannot be compared"
    if not differences:
        return "the recipes of the run differ"
    first = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", differences[0])   # digests as the tables show keys
    return first + (f" (and {len(differences) - 1} more)" if len(differences) > 1 else "")


def _execute(runner, tasks, settings, data):
    progress = Progress(data, sys.stderr)
    points = {p["id"]: p for p in data["points"]}

    def on_event(kind, task, outcome):
        p = points[task.point_id]
        if kind == "started":
            p.update(status="running", started=time.time())
        else:
            _finish(p, outcome, settings)
            stop = sys.exc_info()[1]   # the executor's cleanup after the sweep's own stop: its line says which
            if isinstance(stop, KeyboardInterrupt):
                _stopped_by_sweep(p, stop)
            progress.finished(p)
        record.write(settings.runs, data)
        progress.show()

    outcomes = runner.run(tasks, settings, on_event)
    try:
        for _ in outcomes:
            pass
    except KeyboardInterrupt as e:   # the points it stopped (SIGTERM, in the runner's cleanup): said as such
        for p in data["points"]:
            _stopped_by_sweep(p, e)
        record.write(settings.runs, data)
        raise
    finally:
        outcomes.close()   # interrupted: stops the points that still run (each records its run interrupted)
        progress.done()
        stopped = [p for p in data["points"] if p["status"] == "running"]
        for p in stopped:
            p.update(status="interrupted", error="the sweep was stopped")
        if stopped:
            record.write(settings.runs, data)


def _stopped_by_sweep(p, stop):
    """A point whose run the sweep's own stop ended (its SIGTERM to the run) reads so, with the sweep's signal."""
    from engine.guard import signal_name
    if p["status"] == "interrupted" and p.get("error") in ("interrupted by SIGTERM", "mlrun was stopped by SIGTERM"):
        p["error"] = f"the sweep was stopped by {signal_name(stop)}, and stopped this point's run"


def _finish(p, outcome, settings):
    status = None
    if outcome.run_id:
        try:
            run = records.load(os.path.join(settings.runs, outcome.run_id, "run.json"))
            status, p["error"] = records.status(run), run.get("error")
        except MlrunError as e:
            p["error"] = e.message
    code = outcome.returncode
    if status is None or status in ("running", "died"):   # no record, or one that never ended
        # SIGKILL is no stop of the sweep's (those are SIGINT, SIGTERM): the kernel's out-of-memory killer, a user
        status = "ok" if code == 0 else "interrupted" if code in INTERRUPTED_CODES or (
            code < 0 and -code != signal.SIGKILL) else "failed"
    if status not in record.FINISHED:
        status = "failed"   # 'error' (not carried out: mlrun's exit 2) and 'died' count as failed points
    if status != "ok" and not p.get("error"):
        # a point killed by a signal: the signal's name, not "code -15" nor its last progress line
        killed = (f"mlrun was stopped by {signal.Signals(-code).name}"
                  + (" (the kernel's out-of-memory killer sends it: see dmesg)" if code == -signal.SIGKILL else "")
                  ) if code < 0 and -code in SIGNALS else None
        p["error"] = _last_error(outcome.stderr_tail, errors_only=bool(killed)) or killed or \
            f"mlrun exited with code {code}"
    cluster = re.search(r"SLURM job \S+ ended [A-Z_]+", outcome.stderr_tail or "")
    if status != "ok" and cluster and cluster.group(0) not in (p.get("error") or ""):
        # why SLURM stopped it (TIMEOUT, CANCELLED): the run's own record says only "interrupted by SIGTERM"
        p["error"] = f"{p.get('error') or 'stopped'} ({cluster.group(0)})"
    p.update(status=status, run=outcome.run_id, node=outcome.node, seconds=outcome.seconds, log=outcome.log)
    if outcome.started:
        p["started"] = outcome.started   # when it really began (the event may have been seen later)
    if outcome.cores is not None:
        p["cores"] = outcome.cores


SIGNALS = {int(s) for s in signal.Signals}


def _last_error(tail, errors_only=False):
    lines = [line for line in (tail or "").splitlines() if line.strip()]
    errors = [line[len("mlrun: error: "):] for line in lines if line.startswith("mlrun: error: ")]
    return errors[-1] if errors else (lines[-1] if lines and not errors_only else None)


class Progress:
    """One line, done / running / failed / left, rewritten on a terminal; a line per finished point."""

    def __init__(self, data, stream):
        self.data, self.stream, self.tty = data, stream, stream.isatty()

    def line(self):
        c = record.counts(self.data)
        done = c.get("ok", 0) + c.get("failed", 0) + c.get("interrupted", 0)
        return (f"sweep {self.data['name']}: {done}/{len(self.data['points'])} done, {c.get('running', 0)} running, "
                f"{c.get('failed', 0)} failed, {c.get('pending', 0)} left")

    def show(self):
        if self.tty:
            print("\x1b[2K" + self.line(), end="\r", file=self.stream, flush=True)

    def finished(self, p):
        head = "\x1b[2K" if self.tty else ""
        tail = f"  run {p['run']}" if p.get("run") else ""
        why = f": {p['error']}" if p["status"] != "ok" and p.get("error") else ""
        # a URL's password in an axis' value is printed masked, as it is recorded
        print(secrets.scrub(f"{head}  {p['id']} {_describe(p['settings'])}: {p['status']}{why}{tail}"), file=self.stream,
              flush=True)

    def done(self):
        if self.tty:
            print("\x1b[2K", end="", file=self.stream, flush=True)


# -- mlrun sweep show NAME, mlrun sweep list ----------------------------------------------------


def cmd_show(args, extras, settings):
    if not args.sweep_name:
        raise UsageError("mlrun sweep show needs a NAME", hint="`mlrun sweep list` lists the sweeps")
    _no_extras(extras, "sweep show", args)
    data = table.load(settings, args.sweep_name)
    fmt = _format(args)
    # picked by the values the runs had, in every format (the table's "- (1)" missed --where threads=1, as --csv
    # did not); `FIELD=-` picks the points that left FIELD to mlrun
    rows = table.rows(settings, args.sweep_name, data, shown=False)
    conditions = results.parse_where(args.where)
    given = results.parse_columns(args.columns)
    results.check_fields([f for f, _, _ in conditions] + given, rows, f"sweep '{data['name']}'")
    everything = rows
    dash = [c for c in conditions if c[2] == gridlib.NOT_GIVEN and c[1] in ("=", "!=")]
    plain = [c for c in conditions if c not in dash]
    left = table.not_given(data)
    rows = [r for r in rows if results.matches(r, plain)
            and all((f in left.get(r["point"], [])) == (op == "=") for f, op, _ in dash)]
    if fmt not in ("csv", "json"):   # scripts get values as the runs have them, not "- (1)"
        rows = table.for_people(data, rows)
    if not rows and fmt == "table":   # an empty table said nothing (`runs` says "no runs that match")
        print(f"no points of sweep '{data['name']}' match ({len(everything)} in all)"
              + results.near_misses(everything, plain))
        return 0
    columns = given or table.columns(data, rows)
    if not given and fmt in ("csv", "json"):  # scripts get every field, the table's first
        columns = list(dict.fromkeys(columns + [k for r in rows for k in r]))
    below = fmt == "table" and not given and "error" in columns   # whole, under the table: cut, it said "...uff"
    sys.stdout.write(results.render(rows, [c for c in columns if not (below and c == "error")], fmt,
                                    whole=list(data["grid"])))
    if below:
        print("errors:\n" + "\n".join(f"  {r['point']}: {r['error']}" for r in rows if r.get("error")))
    if fmt == "table" and not given:   # what no column shows: an all-int8 sweep's table did not say int8
        request = data.get("request") or {}
        shared = gridlib.argv(table.shared_query(data, rows), request.get("inputs") or {},
                              request.get("dep_overrides") or {}, request.get("env_overrides") or {})[1:-1]
        print(f"every point: {shlex.join(shared)} (and its grid's values)")
    return 0


def cmd_best(args, extras, settings):
    """sweep best NAME [--y FIELD]: the best VALID point by the sweep's main result (or FIELD), said with what may
    make it noise (a busy machine, cores pinned), and the `mlrun submit` command that runs its settings (they were
    retyped by hand, the backend of the grid forgotten)."""
    from . import plot
    rest, y = list(extras), None
    while rest and rest[0] in ("--y",) and len(rest) > 1 or rest and rest[0].startswith("--y="):
        y, rest = (rest[1], rest[2:]) if rest[0] == "--y" else (rest[0][4:], rest[1:])
    if rest[:1] == ["--y"] or y == "":   # it said "unexpected argument(s) for 'sweep best': --y"; --y= ranked by
        raise UsageError("sweep best --y needs a FIELD", hint="e.g. --y f1, --y latency_p99_ms")   # the default
    if not args.sweep_name and rest and not rest[0].startswith("-"):   # `sweep best --y=f1 NAME`
        args.sweep_name, rest = rest[0], rest[1:]
    if not args.sweep_name:
        raise UsageError("mlrun sweep best needs a NAME", hint="`mlrun sweep list` lists the sweeps")
    fmt = _format(args)
    if fmt not in ("table", "json"):
        raise UsageError(f"sweep best prints text or --json, not --{fmt}")
    _no_extras(rest, "sweep best", args)
    data = table.load(settings, args.sweep_name)
    rows = table.rows(settings, args.sweep_name, data, shown=False)
    if rows and not any(r.get("point_status") == "ok" for r in rows):   # "no point has a result to rank"
        raise MlrunError(f"no point of sweep '{data['name']}' ended ok ({len(rows)} in all)",   # their steps failed
                         hint=f"`mlrun sweep show {data['name']}` says why each failed", exit_code=1)
    if y:   # a misspelt field: "samples_per_secnd says not whether more is better"
        from engine.results import check_fields
        check_fields([y], rows, f"sweep '{data['name']}'")
    y = y or plot.default_y(rows)
    if not y or not plot.direction(y):
        raise UsageError(f"sweep '{data['name']}': {'no point has a result to rank' if not y else y + ' says not whether more is better'}",
                         hint="--y FIELD names one that does (samples_per_second, completed_samples_per_second, f1, "
                              "a latency)")
    ok = [r for r in rows if r.get("point_status") == "ok" and plot.ranked(r, y) and plot.number(r.get(y)) is not None]
    if not ok:
        offline = any(r.get("point_status") == "ok" and plot.number(r.get(y)) is not None for r in rows)
        raise UsageError(f"sweep '{data['name']}': " + (f"an Offline run's {y} means nothing (one query of every "
                         "sample): it ranks no point" if offline else f"no point that ended ok has {y}"),
                         hint=f"mlrun sweep show {data['name']}")
    valid = [r for r in ok if not plot.invalid(r)]
    judged = any(r.get("result") for r in ok)   # LoadGen said VALID or INVALID (an accuracy run: neither)
    pool = valid or ok
    if len(pool) > 1 and len({plot.number(r[y]) for r in pool}) == 1:   # as the plot and the report: no best
        message = (f"sweep '{data['name']}': no best by {y}: its {len(pool)} {'VALID ' if judged and valid else ''}"
                   f"points all have {results.show(y, pool[0][y])}")
        if fmt == "json":
            from engine.cli import _print_json
            _print_json({"sweep": data["name"], "by": y, "direction": plot.direction(y), "point": None,
                         "tie": [r["point"] for r in pool], "value": pool[0][y], "submit": None})
        else:
            print(message + f"; `mlrun sweep show {data['name']}` shows them")
        return 1
    best = (max if plot.direction(y) == "max" else min)(pool, key=lambda r: plot.number(r[y]))
    run = records.load(os.path.join(settings.runs, best["run"], "run.json"))
    if fmt == "json":
        return _best_json(data, best, run, ok, y, bool(valid) if judged else None)
    among = ("VALID points" if valid else "points (every one INVALID)") if judged else "points"
    print(f"best of sweep '{data['name']}' by {y} ({'higher' if plot.direction(y) == 'max' else 'lower'} is better), "
          f"among its {among}: {best['point']} = {results.show(y, best[y])} (run {best['run']})")
    point = next((p for p in data["points"] if p["id"] == best["point"]), {})
    given = point.get("settings") or {}
    # a value not given ("-") is said so, with what its run had: it read as if set, like the next point's
    grid = {k: best.get(k) if given.get(k) != table.NOT_GIVEN else
            f"{table.NOT_GIVEN} ({best.get(k) if best.get(k) is not None else 'not given: its default'})"
            for k in data.get("grid") or {}}
    print("  its grid values: " + ", ".join(f"{k}={v}" for k, v in grid.items()))
    for warning in _best_warnings(best, run, ok, y):
        print(f"  note: {warning}")
    if not valid:   # the most overloaded point of an all-INVALID Server sweep was offered for submission
        print("no submit command: no point is VALID (a submission needs VALID runs); see `mlrun sweep show "
              f"{data['name']}` for why")
        return 1
    print("submit what it ran (its settings scoped to its scenario: combine the lines of several scenarios' sweeps, "
          "widening --scenarios; with a system description of yours, and --inference-src DIR offline):\n  "
          + shlex.join(_submit_argv(best, run)))
    return 0


def _best_json(data, best, run, ok, y, valid):
    from engine.cli import _print_json
    from . import plot
    point = next((p for p in data["points"] if p["id"] == best["point"]), {})
    given = point.get("settings") or {}
    _print_json({"sweep": data["name"], "by": y, "direction": plot.direction(y), "valid": valid,
                 "point": best["point"], "run": best["run"], "value": best[y],
                 "grid": {k: best.get(k) for k in data.get("grid") or {}},
                 # grid values the point did not give ("-"): the run's own, not set (the text says so too)
                 "not_given": [k for k in data.get("grid") or {} if given.get(k) == table.NOT_GIVEN],
                 "notes": _best_warnings(best, run, ok, y),
                 "submit": _submit_argv(best, run) if valid is not False else None})
    return 1 if valid is False else 0


def _submit_argv(best, run):
    """`mlrun submit ...` of a point's run: its query and settings, less what submit sets for each run."""
    request = run.get("request") or {}
    from submission.submit import CONTROLLED
    inputs = {k: v for k, v in (request.get("inputs") or {}).items()
              if k not in CONTROLLED + ("find_peak", "strict", "peak_tolerance")}
    scenario = (request.get("inputs") or {}).get("scenario") or best.get("scenario")
    # scoped to its scenario: the best points of several scenarios' sweeps then go into one submit as they are
    argv = gridlib.argv(request.get("query") or "", {(f"{scenario}.{k}" if scenario else k): v
                                                     for k, v in inputs.items()},
                        request.get("dep_overrides") or {}, request.get("env_overrides") or {})[1:-1]
    from engine.settings import Settings
    default = Settings()
    places = []   # where it ran from (a sweep's points get them as MLRUN_*): offline, the mirror above all
    for variable, option in records.PLACE_OPTIONS:
        value = records.place(run, variable)
        usual = {"MLRUN_CACHE": default.cache, "MLRUN_RECIPES": os.pathsep.join(default.recipes)}.get(variable)
        if value and variable != "MLRUN_RUNS" and value != usual:   # this checkout's own: said as it is
            places += [f"{option}={v}" for v in (value.split(os.pathsep) if option == "--recipes" else [value])]
    return ["bin/mlrun", *places, "submit", *argv] + ([f"--scenarios={scenario}"] if scenario else []) \
        + ["--submitter=YOUR_TEAM", "--division=open", "--system=SYSTEM.yaml"]


def _best_warnings(best, run, ok, y):
    """What may make the best point noise: a busy machine while it ran, fewer cores than the machine has, a
    second measurement of the same settings far from it."""
    out = []
    if re.fullmatch(r"f1|exact_match|accuracy.*", y):   # a score: the machine's load and a run's length change none
        return out
    if best.get("other_load.busy"):
        out.append("it was measured while other processes were busy (other_load): run the sweep again on a quiet "
                   "machine (`--rerun`) before you trust the ranking")
    if best.get("shared_cores.overlapped") is True:
        out.append("another measurement ran on its cores while it measured (shared_cores): run the sweep again when "
                   "the machine is yours (`--rerun`) before you trust the ranking")
    host = run.get("host") or {}
    allowed, cores = host.get("cpus_allowed"), host.get("cores")
    if isinstance(allowed, list) and isinstance(cores, int) and len(allowed) < cores:
        out.append(f"it ran on {len(allowed)} of the machine's {cores} cores (a sweep's --jobs pins each point): a "
                   "submission runs on all of them")
    busy = sum(1 for r in ok if r.get("other_load.busy"))
    if busy and not best.get("other_load.busy"):
        out.append(f"{busy} of the {len(ok)} points {'was' if busy == 1 else 'were'} measured on a busy machine")
    # too short for the busy rule (it wants 0.5 CPU-s of others): a 0.1 s point ranked on noise, unsaid
    span = [r.get("other_load.seconds") for r in ok if isinstance(r.get("other_load.seconds"), (int, float))]
    if span and min(span) < 1:
        out.append(f"some points measured for under a second (the shortest {min(span):.2f} s): too short to tell "
                   "settings apart on a shared machine; run more samples (--count) before you trust the ranking")
    shares = [r.get("other_load.share") for r in ok if isinstance(r.get("other_load.share"), (int, float))]
    if shares and max(shares) >= 0.25 and not busy:
        out.append(f"other processes took up to {max(shares):.0%} of the CPUs while points were measured")
    return out


def cmd_list(args, extras, settings):
    _no_extras(extras, "sweep list", args)
    if args.sweep_name:
        raise UsageError(f"sweep list takes no NAME (was given '{args.sweep_name}')",
                         hint=f"mlrun sweep show {args.sweep_name} shows one sweep")
    rows, unreadable = [], []
    for name in record.names(settings.runs):
        try:
            data = record.read(settings.runs, name)
        except MlrunError:
            unreadable.append(name)   # said below, as `mlrun runs` says an unreadable run (was: left out silently)
            continue
        c = record.counts(data)
        rows.append({"name": name, "query": data.get("query"), "grid": " ".join(
            f"{k}={','.join(v)}" for k, v in data.get("grid", {}).items()), "points": len(data["points"]),
            "ok": c.get("ok", 0), "failed": c.get("failed", 0),
            "left": c.get("pending", 0) + c.get("running", 0) + c.get("interrupted", 0)})
    if unreadable and _format(args) == "table":
        print(f"{plural(len(unreadable), 'sweep record')} could not be read: {', '.join(unreadable)} "
              f"(`mlrun sweep show {unreadable[0]}` says why)", file=sys.stderr)
    if not rows and _format(args) == "table":
        print(f"no sweeps in {record.sweeps_dir(settings.runs)}")
        return 0
    conditions = results.parse_where(args.where)
    columns = results.parse_columns(args.columns) or ["name", "points", "ok", "failed", "left", "query", "grid"]
    results.check_fields([f for f, _, _ in conditions] + columns, rows, "the sweeps")
    rows = [r for r in rows if results.matches(r, conditions)]
    sys.stdout.write(results.render(rows, columns, _format(args)))
    return 0


def _format(args):
    chosen = [f for f in ("csv", "json", "markdown") if getattr(args, f, False)]
    if len(chosen) > 1:
        raise UsageError("--" + " and --".join(chosen) + ": choose one output format")
    return chosen[0] if chosen else "table"


# Options of running a sweep, with the value each has when not given: sweep show and list refuse them (a
# `sweep show s1 --grid bs=1` read like a filter and showed every point).
RUNNING_OPTIONS = {"grid": None, "name": None, "rerun": False, "jobs": 1, "on": None, "slurm": None, "cpus": None,
                   "node_cache": None}


def _no_extras(extras, verb, args=None):
    if extras and extras[0].split("=")[0] == "--version":   # as `mlrun runs --version` says it
        raise UsageError(f"'{verb}' takes no --version", hint=usage.ALONE)
    if extras:
        raise UsageError(f"unexpected argument(s) for '{verb}': {' '.join(extras)}", hint=f"see mlrun {verb} --help")
    given = [f"--{k.replace('_', '-')}" for k, default in RUNNING_OPTIONS.items()
             if args is not None and getattr(args, k, default) != default]
    if given:
        raise UsageError(f"{', '.join(given)}: options of running a sweep, not of `mlrun {verb}`",
                         hint="--where FIELD=VALUE picks points; --columns, --csv, --json, --markdown shape the table"
                         if verb == "sweep show" else f"see mlrun {verb} --help")


def _describe(settings):
    return " ".join(f"{k}={v}" for k, v in settings.items())


def _same(what, old, new):
    """The query by its words; the grid in its order too, since the order of --grid flags numbers the points
    (p001 of another order is another point: its history would be false)."""
    if what == "query":
        return " ".join(str(old).split()) == " ".join(str(new).split())
    if what == "grid":
        return isinstance(old, dict) and list(old.items()) == list(new.items())
    return old == new


def _difference(what, old, new):
    """'request: inputs.min_duration was "20000", now "2000"': the values that differ, not two cut dumps (which
    cut exactly where they differed)."""
    if what == "grid" and old == new:   # the same dimensions, in another order
        return f"order of --grid flags (it numbers the points): was {', '.join(old)}, now {', '.join(new)}"
    if isinstance(old, dict) and isinstance(new, dict):
        flat_old, flat_new = _flatten(old), _flatten(new)
        keys = [k for k in dict.fromkeys([*flat_old, *flat_new]) if flat_old.get(k) != flat_new.get(k)]
        if keys:
            return f"{what}: " + "; ".join(f"{k} was {_brief(flat_old.get(k))}, now {_brief(flat_new.get(k))}"
                                           for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    return f"{what}: was {_brief(old)}, now {_brief(new)}"


def _flatten(value, prefix=""):
    out = {}
    for k, v in value.items():
        if isinstance(v, dict):   # an empty one holds nothing to compare
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _brief(value):   # as diff and replay write a value: a missing one is "absent" (it read null here)
    from engine.compare import shown
    return shown(value, width=100)


def _key_values(text, flag):
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{flag} {text!r}: write key=value,key=value", hint="e.g. --slurm partition=cpu,time=30")
        out[key.strip()] = value.strip()
    return out
