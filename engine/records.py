"""Run records: what a run was asked, what it ran, where, with what, and what it gave.

`runs/<id>/run.json` holds the request (query, inputs, overrides), the plan (each node with
its recipe digest, variations, inputs, version, key, and whether it was built or reused), a
copy of every recipe used (`runs/<id>/recipes/`, laid out like the checkout so relative
`sources` still resolve), package lists of the venvs used, host facts, timings and results.
"""
import json
import os
import re
import shutil
import sys
import time

from . import cgroups
from .errors import MlrunError, UsageError
from .secrets import redacted
from .shapes import mistyped, said

RECORD_FORMAT = 2
SNAPSHOT_DIR = "snapshot"
# Host variables worth keeping with a run: they change how benchmarks behave.
HOST_ENV_PREFIXES = ("MLRUN_", "OMP_", "MKL_", "KMP_", "CUDA_", "HF_", "ORT_")


# The places a run took from the environment, as the options that say the same on a command line.
PLACE_OPTIONS = (("MLRUN_CACHE", "--cache"), ("MLRUN_RUNS", "--runs"), ("MLRUN_RECIPES", "--recipes"),
                 ("MLRUN_MIRROR", "--mirror"))


def _option_value(argv, option):
    """The value given to `option` in argv (`--opt V` or `--opt=V`; "" when it ends argv), else None."""
    for i, arg in enumerate(argv):
        if arg == option:
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def place(record, variable):
    """The place (MLRUN_MIRROR, MLRUN_CACHE...) a run was given: its option on the command line, else the
    variable it had; None if neither."""
    option = dict(PLACE_OPTIONS)[variable]
    given = _option_value([str(a) for a in record.get("argv") or []][1:], option)
    return given if given is not None else ((record.get("host") or {}).get("env") or {}).get(variable)


def command(record):
    """The run's command line as a shell takes it, with the places it had from MLRUN_* (a sweep's points get
    them so) written as options, so that it runs the same pasted elsewhere; None if none was recorded."""
    argv = [str(a) for a in record.get("argv") or []]
    if not argv:
        return None
    env = (record.get("host") or {}).get("env") or {}
    places = []
    for variable, option in PLACE_OPTIONS:
        if env.get(variable) and _option_value(argv[1:], option) is None:
            for value in env[variable].split(os.pathsep) if option == "--recipes" else [env[variable]]:
                places += [option, value]
    import shlex
    return shlex.join(argv[:1] + places + argv[1:])


def host_facts():
    """CPU, cores, memory, OS and Python of this machine, and the variables that tune benchmarks."""
    uname = os.uname()  # not the platform module: it costs every run 15 ms of start-up
    facts = {"cpu": _cpuinfo_field("model name") or uname.machine, "cores": os.cpu_count(),
             "memory_gb": _memory_gb(), "os": f"{_os_name() or uname.sysname} (kernel {uname.release})",
             "machine": uname.machine, "python": sys.version.split()[0], "hostname": uname.nodename,
             # the cores this run may use: a sweep pins measuring points to disjoint ones
             "cpus_allowed": sorted(os.sched_getaffinity(0)),
             # a cgroup's CPU quota (docker --cpus=0.5): a fourth of the speed with the same cores allowed
             "cpu_quota": cgroups.cpu_quota()}
    facts["env"] = redacted({k: v for k, v in sorted(os.environ.items()) if k.startswith(HOST_ENV_PREFIXES)})
    return facts


def _cpuinfo_field(name):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def _memory_gb():
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None


def snapshot_recipes(plan, run_dir):
    """Copy every recipe of the plan, and its `sources`, into run_dir/snapshot/ as laid out around it.

    Recipes live in <root>/recipes/<name>/ and sources are relative to that folder, so the copy keeps
    paths relative to <root> (the checkout): a replay resolves the same `../../mlperf_bert/x.py`.
    """
    out, target = {}, os.path.join(run_dir, SNAPSHOT_DIR)
    try:
        _snapshot(plan, target, out)
    except OSError as e:  # a full disk, say; copytree gathers its failures, the first one says why
        from .oserrors import explain
        raise explain(e, "cannot copy the recipes into the run record:") from None
    return out


def _snapshot(plan, target, out):
    # Each checkout (root) whose recipes the plan uses is copied as laid out; the second and later ones each under
    # a folder of its own (two `--recipes` folders both named recipes/ with a recipe a/ each: the second copy
    # overwrote the first, and its replay was refused as "changed after the run").
    roots = {}
    for node in plan.nodes:
        if node.name in out or not node.recipe_path or not os.path.isfile(node.recipe_path):
            continue
        folder = os.path.dirname(node.recipe_path)
        root = os.path.dirname(os.path.dirname(folder))
        rel = os.path.join(roots.setdefault(root, f".root{len(roots) + 1}" if roots else ""),
                           os.path.relpath(folder, root))
        root_target = os.path.join(target, roots[root])
        shutil.copytree(folder, os.path.join(target, rel), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
        for source in node.sources:
            src = os.path.normpath(os.path.join(folder, source))
            src_rel = os.path.relpath(src, root)
            if src_rel.startswith(".."):
                continue  # outside the checkout: its digest is still in the key
            os.makedirs(os.path.dirname(os.path.join(root_target, src_rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(root_target, src_rel))
        out[node.name] = {"version": node.version, "digest": node.material["recipe_digest"],
                          "snapshot": os.path.join(SNAPSHOT_DIR, rel), "files": _file_digests(folder, node.sources)}


def _file_digests(folder, sources):
    """{file as the recipe names it: its sha256's first 16 digits}: `diff` of two runs whose recipe differs names the
    files that do (it said only the recipe's two digests; a bundle is read without its copy of the recipes)."""
    from .digests import file_digest
    from .index import recipe_files
    paths = {os.path.relpath(p, folder): p for p in recipe_files(folder, with_yaml=True)}
    paths.update({source: os.path.normpath(os.path.join(folder, source)) for source in sources})
    return {rel: file_digest(path)[:16] for rel, path in sorted(paths.items()) if os.path.isfile(path)}


def collect(folder, wanted, strict=False):
    """The files a recipe declares under `record:`, read from its folder (JSON parsed, text as lines).
    strict: a .json file that does not parse raises ValueError (the step broke its word) instead of being
    kept as lines."""
    out = {}
    for field, name in wanted.items():
        path = os.path.join(folder, name)
        real, inside = os.path.realpath(path), os.path.realpath(folder)
        if strict and os.path.islink(path) and not os.path.exists(path):
            raise ValueError(f"its {field} file {name} is a link to nothing")
        if strict and os.path.lexists(path) and not (real + os.sep).startswith(inside + os.sep):
            # read through a link (the file's or a folder's on its way), the entry's results changed with a file
            # outside it (cache verify saw none)
            raise ValueError(f"its {field} file {name} lies out of its folder, through a link ({real})")
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):   # reading a FIFO hangs
            if strict:
                raise ValueError(f"its {field} file {name} is no file (a FIFO, socket or device)")
            continue
        try:
            with open(path) as f:
                text = f.read()
        except IsADirectoryError:   # it said "wrote no s.json"
            if strict:
                raise ValueError(f"its {field} file {name} is a folder") from None
            continue
        except OSError:
            continue
        except UnicodeDecodeError:   # it said "'utf-8' codec can't decode byte 0xb7", naming no file
            if strict:
                raise ValueError(f"its {field} file {name} is not UTF-8 text") from None
            continue
        if name.endswith(".json"):
            try:
                out[field] = json.loads(text)
            except (ValueError, RecursionError) as e:   # 100,000 nested brackets: "a bug in mlrun"
                if strict:
                    raise ValueError(f"its {field} file {name} is not JSON "
                                     f"({e if isinstance(e, ValueError) else 'nested too deep'})") from None
        if field not in out:
            out[field] = text.splitlines()
        if strict and field == "results" and not isinstance(out[field], dict):
            # `[1, 2]` ran `ok`, then its run vanished from `mlrun runs` ("could not be read")
            raise ValueError(f"its results file {name} holds {type(out[field]).__name__} {str(out[field])[:60]}, "
                             "where a JSON object of its figures is needed")
    return out


# -- finding and reading records ---------------------------------------------------------


def find(runs_dir, ref):
    """The run.json path for a run id (or a unique prefix of one), a run folder, or a run.json file."""
    if ref.endswith(".json") and os.path.isfile(ref):
        return os.path.abspath(ref)
    if os.path.isfile(os.path.join(ref, "run.json")):
        return os.path.abspath(os.path.join(ref, "run.json"))
    last = LAST.fullmatch(ref)
    if last:   # no run id starts with a letter
        return _last(runs_dir, ref, int(last[1] or 0))
    ids = [i for i in list_ids(runs_dir) if i.startswith(ref)]
    if ref in ids:   # a whole id wins over the longer ones it begins (ID beside a copy ID.bak)
        ids = [ref]
    if len(ids) == 1:
        return os.path.join(runs_dir, ids[0], "run.json")
    if not ids:
        private = _private_runs(runs_dir, ref)
        if private:   # a teammate's run made under umask 077: "no run" sent them looking elsewhere
            from .cache import owner
            raise UsageError(f"run {private[0]} in {runs_dir} is not readable by you (owner: "
                             f"{owner(os.path.join(runs_dir, private[0]))})",
                             hint="its owner can make it readable to the group (chmod -R g+rX)")
        if os.path.isdir(ref):   # a folder here, not a run's: it said "no run 'DIR' in RUNS"
            raise UsageError(f"{ref} is a folder but no run folder: it has no run.json",
                             hint="a run folder is runs/<id>/ (or $MLRUN_RUNS/<id>/); `mlrun runs` lists the runs")
        if os.path.isfile(ref) and ref.endswith((".tar.gz", ".tgz")):   # a bundle, to a verb that reads none
            raise UsageError(f"{ref} is a bundle: this verb takes a run here (an id, last, a run folder or a "
                             "run.json)", hint=f"mlrun import {ref} adds its run here; diff and replay read a "
                                                "bundle in place")
        raise UsageError(f"no run '{ref}' in {runs_dir}", hint="`mlrun runs` lists the recorded runs; `last` "
                                                               "names the newest it lists, last~1 the one before")
    raise UsageError(f"'{ref}' names {len(ids)} runs: {', '.join(ids[:5])}"
                     + (f" and {len(ids) - 5} more" if len(ids) > 5 else ""), hint="give more of the id")


def to_remove(runs_dir, ref=None, older_than=None, now=None):
    """(runs `mlrun rm run` removes: [(id, folder)], ids left as they still run): REF's run, or each run started
    more than older_than seconds ago. A run whose process still runs (or may, on another host) is never removed."""
    if ref is not None:
        path = find(runs_dir, ref)
        if os.path.realpath(os.path.dirname(os.path.dirname(path))) != os.path.realpath(runs_dir):   # elsewhere
            raise UsageError(f"{os.path.dirname(path)} is not a run of {runs_dir}",
                             hint="rm run removes the runs of the runs folder: give its id")
        paths = [path]
    else:
        cut = (time.time() if now is None else now) - older_than
        paths = [os.path.join(runs_dir, i, "run.json") for i in list_ids(runs_dir)]
    chosen, live = [], []
    for path in paths:
        run_id = os.path.basename(os.path.dirname(path))
        try:
            record = load(path)
        except (MlrunError, TypeError, ValueError, AttributeError, KeyError):
            record = None   # a damaged record: by its folder's age alone
        started = record.get("started") if record else None
        if ref is None and not (started if isinstance(started, (int, float)) else os.stat(path).st_mtime) < cut:
            continue
        now_status = status(record) if record else None
        if now_status == "running?" and not _elsewhere(record.get("process")):
            now_status = "died"   # no process to ask (an old or damaged record): it could never be removed
        if now_status in ("running", "running?"):
            live.append(run_id)
            if ref is not None:
                raise UsageError(f"run {run_id} is still running" + (
                    "" if now_status == "running" else " on another host (so its record says: it cannot be asked "
                    "from here)"), hint="stop it first; a run whose process died shows as `died` in `mlrun runs`")
        else:
            chosen.append((run_id, os.path.dirname(path)))
    return chosen, live


def _elsewhere(process):
    """Whether a record's process may run on another host or container (status `running?` for another reason:
    the record names none)."""
    from .guard import machine
    here = machine()
    return isinstance(process, dict) and bool(process.get("host")) and (
        process.get("host") != here["host"] or process.get("pid_ns") != here["pid_ns"])


def remove_run(runs_dir, run_id):
    """Moved aside in one rename, its record first removed, then deleted: a removal stopped half-way leaves no
    half run (gc ends it)."""
    from .cache import remove_tree
    aside = os.path.join(runs_dir, f".removing-{run_id}.{os.getpid()}")
    os.rename(os.path.join(runs_dir, run_id), aside)
    os.remove(os.path.join(aside, "run.json"))
    remove_tree(aside)


LAST = re.compile(r"last(?:~(\d+))?")


def _last(runs_dir, ref, back):
    """`last` is the newest run `mlrun runs` lists (helper commands such as `get ...` are not), last~N the Nth
    before it: the run a user just saw at the bottom of the listing."""
    from .results import run_rows, select_runs
    items = run_rows(runs_dir)
    rows = select_runs(items)
    if back >= len(rows):
        # after `mlrun "get dataset squad"`, `runs show last` said "lists 0" and no more: helpers are not counted
        helpers = len(select_runs(items, helpers=True)) - len(rows)
        raise UsageError(f"no run '{ref}' in {runs_dir}: `mlrun runs` lists {len(rows)}"
                         + (f" (helper commands such as `get ...` are not counted: {helpers} here)" if helpers else ""),
                         hint="last is the newest run `mlrun runs` lists, last~1 the one before it"
                              + ("; give a helper run by its id (`mlrun runs --all` lists them)" if helpers else ""))
    return os.path.join(runs_dir, rows[-1 - back]["run"], "run.json")


def _private_runs(runs_dir, ref):
    """Folders under runs_dir whose names start with ref that this user may not read into."""
    try:
        names = os.listdir(runs_dir)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(ref) and os.path.isdir(os.path.join(runs_dir, n))
                  and not os.access(os.path.join(runs_dir, n), os.R_OK | os.X_OK))


def list_ids(runs_dir):
    try:
        # (not a dot's: .removing-ID.PID, a removal stopped half-way, showed as a second copy of its run)
        return sorted(n for n in os.listdir(runs_dir)
                      if not n.startswith(".") and os.path.isfile(os.path.join(runs_dir, n, "run.json")))
    except FileNotFoundError:
        return []


# The fields every reader of a record indexes, and what each must be where present.
SHAPE = {"steps": list, "planned": list, "argv": list, "request": dict, "root": dict, "host": dict,
         "recipes": dict, "status": str, "id": str, "query": str, "started": (int, float), "finished": (int, float),
         "results": dict, "packages": dict, "exports": dict, "process": dict, "replay_of": str}


TIMES = ("started", "finished")   # epoch seconds


def load(path):
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise MlrunError(f"cannot read run record {path}: {e}") from None
    check_shape(record, path)
    record["_dir"] = os.path.dirname(os.path.abspath(path))
    return record


# Below the top: what the readers (runs show, diff, replay, a sweep's rows) take as it comes
PART_SHAPES = {"request": {"query": str, "inputs": dict, "dep_overrides": dict, "env_overrides": dict},
               "root": {"recipe": str, "label": str, "key": str, "inputs": dict, "variations": list, "groups": dict}}
STEP_SHAPE = {"recipe": str, "label": str, "key": str, "status": str, "path": str, "log": str, "version": str,
              "seconds": (int, float), "started": (int, float), "finished": (int, float), "node": dict, "inputs": dict,
              "exports": dict, "env": dict, "record": dict, "material": dict, "tags": list, "variations": list,
              "command": list}
NODE_SHAPE = {"inputs": dict, "env": dict, "exports": dict, "tags": list, "variations": list, "deps": list}
MAPS_OF_OBJECTS = ("recipes", "packages")   # {recipe or venv: {...}}


def check_shape(record, path):
    """A damaged or hand-edited record ("steps": 5) is one unreadable run, not a TypeError that ends the listing
    (or `runs show`, `diff`: "unexpected TypeError ... a bug in mlrun" for a step whose key was a number)."""
    if not isinstance(record, dict) or "steps" not in record:
        raise MlrunError(f"{path} is not an mlrun run record")
    _check_fields(record, SHAPE, path, "")
    for field in MAPS_OF_OBJECTS:
        bad = next((k for k, v in (record.get(field) or {}).items() if not isinstance(v, dict)), None)
        if bad is not None:
            raise MlrunError(f"{path} is not an mlrun run record: its {field}: {bad} is no object")
    for part, shape in PART_SHAPES.items():
        _check_fields(record.get(part) or {}, shape, path, f"{part}.")
    for field in ("steps", "built_meanwhile", "failed_meanwhile"):
        steps = record.get(field) or []
        if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
            raise MlrunError(f"{path} is not an mlrun run record: a step of it is not an object")
        for step in steps:
            if not all(isinstance(step.get(k), str) for k in ("label", "key")):   # every step the runner writes
                raise MlrunError(f"{path} is not an mlrun run record: a step of it has no label or key as text")
            _check_fields(step, STEP_SHAPE, path, "step's ")
            _check_fields(step.get("node") or {}, NODE_SHAPE, path, "step's node.")


def _check_fields(value, shape, path, where):
    wrong = mistyped(value, shape, TIMES)
    if wrong:
        raise MlrunError(f"{path} is not an mlrun run record: its {where}{said(*wrong)}")


# -- what a record says, in a few words ----------------------------------------------------


def root_inputs(record):
    """The root's inputs, defaults included (older records: the last step's, right only for a run that ended ok)."""
    if record.get("root"):
        return record["root"].get("inputs") or {}
    if record.get("status") != "ok":
        return (record.get("request") or {}).get("inputs") or {}
    return record["steps"][-1]["node"].get("inputs", {}) if record.get("steps") else {}


def status(record):
    """The status to show: a record still 'running' whose process is gone is 'died'.

    Only decidable on the machine that ran it: elsewhere such a record shows as 'running?'.
    """
    if record.get("status") != "running":
        return record.get("status", "?")
    from .guard import alive
    return {True: "running", False: "died", None: "running?"}[alive(record.get("process") or {})]


def headline(results):
    """A short result: accuracy, or throughput/latency and VALID/INVALID; a benchmark of another shape: what
    `mlrun runs` shows of its figures (it said "-", or crashed on an F1 without EM, a figure that was text)."""
    if not isinstance(results, dict):
        return "-"
    parts = []
    accuracy = results.get("accuracy")
    if isinstance(accuracy, dict) and "f1" in accuracy:
        parts.append(f"F1 {_figure(accuracy['f1'])} EM {_figure(accuracy.get('exact_match'))}")
    loadgen = results.get("loadgen") if isinstance(results.get("loadgen"), dict) else {}
    metric = loadgen.get("metric") if isinstance(loadgen.get("metric"), dict) else {}
    for name, value in metric.items():
        parts.append(f"{name} {_figure(value)}")
    from .results import short_mark   # the marks `runs` shows, from the same fields
    shared = isinstance(results.get("shared_cores"), dict) and results["shared_cores"].get("overlapped") is True
    short = short_mark({"short": bool(results.get("short")), "shared_cores.overlapped": shared})
    if loadgen.get("result"):
        parts.append(str(loadgen["result"]) + short)
    elif parts:
        parts[-1] += short
    if parts:
        return ", ".join(parts)
    from .results import headline as row_headline   # the flat figures `runs` reads (samples_per_second, result)
    return row_headline(dict(result_fields(results))) or "-"


def _figure(value):
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
        "-" if value is None else str(value)


def packages(record):
    """{venv step label: {package: version}} from the `packages` the venv recipes record."""
    out = {}
    for step in record.get("steps") or []:
        lines = (step.get("record") or {}).get("packages")
        if isinstance(lines, list):
            out[f"{step['label']} [{step['key'][:12]}]"] = dict(
                line.split("==", 1) for line in lines if isinstance(line, str) and "==" in line)   # a recipe's
    # own file may hold other JSON ([1, 2]: a TypeError in the run's `finally` left its record "running")
    return out


# -- a run as one flat row: `runs --where/--columns`, `sweep show`, plots and reports -----------------

# Top-level results that are files or folders of the run, not figures: left out of the flat row.
_RESULT_PATHS = ("model", "features", "run_dir")


def flat(record):
    """One flat dict of a run's settings and results: str keys, scalar values (str, int, float, bool, None).

    run, status, query, started (epoch s), seconds, host (hostname); each root input by its name (defaults
    included); dep.NAME.KEY and env.KEY for the overrides asked; each variation group by its name (the
    variation without `_`; groupless ones in `variations`); then the results: result (VALID/INVALID),
    samples_per_second (and the other LoadGen metrics, units in the name), latency_pNN_ms, f1, exact_match,
    accuracy_*, and the benchmark's other scalar figures (nested ones dotted: parallelism.instances), where
    no setting of that name was given; a figure named as one of the run's own fields or a sweep's (seconds,
    host, point) as results.NAME. docs/sweeps.md lists them.
    """
    out = {"run": record.get("id"), "status": status(record), "query": record.get("query"),
           "started": record.get("started"),
           "seconds": round(record["finished"] - record["started"], 3)
           if record.get("finished") and record.get("started") else None,
           "host": (record.get("host") or {}).get("hostname"),
           "error": record.get("error")}   # the run's own: a recipe's `error` result read as the point's failure
    for name, value in flat_settings(record).items():   # an input named status or host took the run's own
        out[f"input.{name}" if name in RUN_FIELDS else name] = value
    results = record.get("results")
    for name, value in result_fields(results if isinstance(results, dict) else {}):
        if name in ROW_OWN:   # a recipe's own `seconds` or `point` silently gave way to the run's, or took the sweep's
            name = f"results.{name}"
        if out.get(name) is None:
            out[name] = value
        elif out[name] != value and f"results.{name}" not in out:   # what ran beside what was asked: an int8
            out[f"results.{name}"] = value   # --model file's run read precision fp32 (the input's), and only that
    return out


RUN_FIELDS = ("run", "status", "query", "started", "seconds", "host", "error")   # flat's own, first
# Fields a run's row (flat) or a sweep's (sweeps.table) has of its own.
ROW_OWN = ("run", "status", "query", "started", "seconds", "host", "error", "point", "point_status", "node",
           "mode_scenario", "query_rest", "replay_of", "replay_exact")


def flat_settings(record):
    """The settings part of flat(): variation groups, inputs, dep.NAME.KEY, env.KEY (what was asked)."""
    request = record.get("request") or {}
    inputs = {name: _scalar(value) for name, value in {**(request.get("inputs") or {}),
                                                       **root_inputs(record)}.items()}
    chosen, free = {}, []
    for group, name in _variation_groups(record):
        if group is None:
            free.append(name)
        elif inputs.get(group) is None:
            chosen[group] = name
        else:  # an input of the same name was given a value (app-mlperf-bert's --model and its model group)
            chosen[f"{group}_variation"] = name
    out = {**chosen, **({"variations": " ".join(free)} if free else {})}
    out.update((k, v) for k, v in inputs.items() if k not in chosen)
    for dep, overrides in sorted((request.get("dep_overrides") or {}).items()):
        for key, value in sorted(overrides.items()):
            out[f"dep.{dep}.{key}"] = typed(value)
    for key, value in sorted((request.get("env_overrides") or {}).items()):
        out[f"env.{key}"] = _scalar(value)
    return out


def _scalar(value):
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value)


def typed(text):
    """A command-line value as a number when it reads as one (--dep.model.layers=2 sorts and plots as 2)."""
    if isinstance(text, str):
        for kind in (int, float):
            try:
                number = kind(text)
            except ValueError:
                continue
            if number == number and abs(number) != float("inf"):  # not "nan" or "inf": text
                return number
    return _scalar(text)


def _slug(text):
    import re
    return re.sub(r"[^a-z0-9.]+", "_", text.lower().replace("(", "").replace(")", "")).strip("_")


def result_fields(results):
    """(name, scalar value) of a run's results, as flat() names them."""
    loadgen = results.get("loadgen") if isinstance(results.get("loadgen"), dict) else {}
    if loadgen.get("result"):
        yield "result", loadgen["result"]
    for name, value in _items(loadgen.get("metric")):
        if "percentile latency" not in name:  # the same figure as latency_pNN_ms below
            yield _slug(name), value
    for pct, ms in _items(loadgen.get("latency_ms")):
        yield f"latency_{str(pct).replace('.', '_')}_ms", ms
    if loadgen.get("reasons"):
        yield "reasons", "; ".join(map(str, loadgen["reasons"])) if isinstance(loadgen["reasons"], list) \
            else str(loadgen["reasons"])
    accuracy = results.get("accuracy")
    for name, value in _items(accuracy):
        if isinstance(value, (str, int, float, bool)) or value is None:
            yield (name if name in ("f1", "exact_match") else f"accuracy_{name}"), value
    if isinstance(accuracy, (str, int, float, bool)):
        yield "accuracy", accuracy   # a plain figure of that name (another benchmark's): it vanished
    for name, value in results.items():
        if name in ("loadgen", "accuracy") or name in _RESULT_PATHS and isinstance(value, str):
            continue   # (the BERT summary's paths: a figure of that name is kept)
        yield from _dotted(name, value)


def _items(value):
    return value.items() if isinstance(value, dict) else ()


def _dotted(name, value):
    """(name, scalar) of value, a dict's at any depth by dotted names (a.b.c); lists left out."""
    if isinstance(value, dict):
        for sub, v in value.items():
            yield from _dotted(f"{name}.{sub}", v)
    elif value is None or isinstance(value, (str, int, float, bool)):
        yield name, value


def _variation_groups(record):
    """[(group or None, variation name)] of the root: from the record, or for older records its recipe copy."""
    root = record.get("root")
    if root:
        groups = root.get("groups") or {}
        return [(groups.get(v.split(".")[0]), v) for v in root.get("variations", [])]
    steps = record.get("steps") or []
    if record.get("status") != "ok" or not steps:
        return []  # an older record of a run that stopped early: its root was never recorded
    node = steps[-1].get("node") or {}
    spec = _snapshot_variations(record, steps[-1].get("recipe"))
    return [((spec.get(v.split(".")[0]) or {}).get("group"), v) for v in node.get("variations", [])]


_SNAPSHOT_MEMO = {}


def _snapshot_variations(record, recipe):
    info = (record.get("recipes") or {}).get(recipe) or {}
    if not info.get("snapshot") or not record.get("_dir"):
        return {}
    path = os.path.join(record["_dir"], info["snapshot"], "recipe.yaml")
    if info.get("digest") not in _SNAPSHOT_MEMO:  # one parse per recipe version, however many runs
        import yaml
        try:
            with open(path) as f:
                spec = yaml.safe_load(f) or {}
            _SNAPSHOT_MEMO[info.get("digest")] = {k: v or {} for k, v in (spec.get("variations") or {}).items()}
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            return {}
    return _SNAPSHOT_MEMO[info.get("digest")]
