"""The sweep record: runs/sweeps/<name>/sweep.json, written whole (temp file + rename) under a file lock.

{"name", "query", "request": {inputs, dep_overrides, env_overrides given for every point}, "grid": {field:
[values]}, "kinds": {field: input|dep|variation}, "points": [{"id": "p000", "settings": {field: value},
"status": pending|running|ok|failed|interrupted, "run": RUN_ID|None, "error": str|None, "plan_key": the
root node's key, "node": host, "cores": [..] when pinned, "seconds"}], "process": the sweep's identity}.

Two locks: `sweep.json.lock` around each write (readers never need it: the rename is atomic), and
`sweep.lock`, held by the one mlrun sweep that runs this sweep (a second one is refused; a point found
`running` when the lock is taken was left by a sweep that died, and runs again).
"""
import json
import os
import re

from engine.errors import MlrunError, UsageError, os_errors
from engine.shapes import mistyped, said

SWEEPS_DIR = "sweeps"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
FINISHED = ("ok", "failed", "interrupted")


def sweeps_dir(runs_dir):
    return os.path.join(runs_dir, SWEEPS_DIR)


def check_name(name, said="--name {!r}"):
    """name, if it can name a sweep (said: how the person gave it, for the message)."""
    if len(name or "") > 100:
        raise UsageError(f"{said.format(name[:40] + '...')}: a sweep name is at most 100 characters")
    if not NAME_RE.match(name or ""):
        raise UsageError(f"{said.format(name)}: a sweep name is letters, digits, '.', '_' and '-' (not first)",
                         hint="e.g. --name bs-threads")
    return name


def path(runs_dir, name):
    return os.path.join(sweeps_dir(runs_dir), name, "sweep.json")


def names(runs_dir):
    """The sweeps recorded under runs_dir, sorted."""
    try:
        return sorted(n for n in os.listdir(sweeps_dir(runs_dir)) if os.path.isfile(path(runs_dir, n)))
    except FileNotFoundError:
        return []


def read(runs_dir, name):
    """The sweep record, or None when there is none."""
    p = path(runs_dir, name)
    try:
        with open(p) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MlrunError(f"cannot read the sweep record {p}: {e}") from None
    check_shape(data, p)
    return data


# What the readers (show, list, best, plot, report, a resumed sweep) take as it comes: a hand-edited or damaged
# record ("settings": [1], a point without a status) said "unexpected ... a bug in mlrun", and `sweep list` so
# for every sweep
SHAPE = {"name": str, "query": str, "request": dict, "grid": dict, "kinds": dict, "process": dict}
REQUEST_SHAPE = {"inputs": dict, "dep_overrides": dict, "env_overrides": dict}
POINT_SHAPE = {"id": str, "settings": dict, "status": str, "run": str, "error": str, "plan_key": str, "node": str,
               "cores": list, "seconds": (int, float)}


def check_shape(data, p):
    def wrong(what):
        return MlrunError(f"{p} is not an mlrun sweep record: {what}",
                          hint="was it edited by hand? `mlrun sweep QUERY ... --name NAME` with another name starts "
                               "afresh; the runs of its points are in `mlrun runs`")

    if not (isinstance(data, dict) and isinstance(data.get("points"), list) and isinstance(data.get("grid"), dict)):
        raise wrong("it has no points or grid")
    for fields, shape, where in [(data, SHAPE, "its "), (data.get("request") or {}, REQUEST_SHAPE, "its request.")] + [
            (point, POINT_SHAPE, "a point's ") for point in data["points"] if isinstance(point, dict)]:
        mistake = mistyped(fields, shape)
        if mistake:
            raise wrong(where + said(*mistake))
    if not all(isinstance(point, dict) and point.get("id") and point.get("status") and "settings" in point
               for point in data["points"]):
        raise wrong("a point of it is no object with an id, a status and settings")
    listless = next((axis for axis, values in data["grid"].items() if not isinstance(values, list)), None)
    if listless is not None:
        raise wrong(f"its grid's {listless} is no list of values")
    texts = [("its grid", v) for values in data["grid"].values() for v in values]
    texts += [("its kinds", v) for v in (data.get("kinds") or {}).values()]
    texts += [("a point's settings", v) for point in data["points"] for v in point["settings"].values()]
    bad = next((where for where, v in texts if not isinstance(v, str)), None)
    if bad:
        raise wrong(f"a value in {bad} is no text")
    run = next((pt["run"] for pt in data["points"] if pt.get("run") and not NAME_RE.match(pt["run"])), None)
    if run:   # a path ('../..') read a record outside the runs folder
        raise wrong(f"a point's run {run!r} is no run id")


def write(runs_dir, data):
    """Write the whole record atomically, under the record's lock (secrets scrubbed, as every record)."""
    from filelock import FileLock
    from engine.cache import write_json
    p = path(runs_dir, data["name"])
    with os_errors("cannot write the sweep record", p):
        _make(os.path.dirname(p))
        with FileLock(p + ".lock", mode=0o664):
            write_json(p, data)


def _make(folder):
    """A sweep's folder, in runs/sweeps/ made the group's as the cache's folders are: made under one teammate's
    umask, the next one's sweep could not be created there."""
    from engine.cache import shared_dir
    # with runs/sweeps/ and runs/ when it makes them: a teammate resumes or extends it
    shared_dir(folder, top=os.path.dirname(os.path.dirname(folder)))


def hold(runs_dir, name):
    """The lock of a running sweep (acquired): a second `mlrun sweep` of the same name is refused."""
    from filelock import FileLock, Timeout
    folder = os.path.dirname(path(runs_dir, name))
    with os_errors("cannot create the sweep folder", folder):
        _make(folder)
    lock = FileLock(os.path.join(folder, "sweep.lock"), mode=0o664)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"sweep '{name}' is being run by another mlrun now",
                         hint="wait for it (`mlrun sweep show " + name + "` shows its progress), or use another --name") \
            from None
    return lock


def held(runs_dir, name):
    """Whether an mlrun sweep runs this sweep now (holds its sweep.lock)."""
    from filelock import FileLock, Timeout
    lock = FileLock(os.path.join(os.path.dirname(path(runs_dir, name)), "sweep.lock"), mode=0o664)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:   # a runs folder this user cannot lock in: say nothing either way
        return True
    lock.release()
    return False


def point(data, point_id):
    return next(p for p in data["points"] if p["id"] == point_id)


def counts(data):
    """{status: number of points}."""
    out = {}
    for p in data["points"]:
        out[p["status"]] = out.get(p["status"], 0) + 1
    return out
