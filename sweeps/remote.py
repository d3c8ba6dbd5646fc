"""What the Ray and SLURM executors share on the submitting machine.

Both send `sweeps.node.run_point` to a node with a spec (see sweeps/node.py) and turn what comes back
into an Outcome: a run folder that travelled back as bytes is unpacked into this machine's runs/ and its
record's paths are made to point at the copy.
"""
import io
import json
import os
import shlex
import shutil
import sys
import tarfile
import uuid

from engine.cache import shared_dir
from engine.errors import UsageError
from engine.settings import CHECKOUT

from . import node
from .executors import TAIL_CHARS, Outcome

REQUIREMENTS = os.path.join(CHECKOUT, "requirements-cluster.txt")
NODE_CACHE_CHOICES = "shared (default: this machine's cache folder, on a shared file system), local, or a folder"


def need(module, what):
    """Import an optional cluster package, or say in one line how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{what} needs the Python package `{module}`, which is not installed",
                         hint=f"{shlex.quote(sys.executable)} -m pip install -r {REQUIREMENTS}  (the pinned ray and "
                              "submitit, into the Python mlrun runs with: a plain `pip` may install elsewhere)"
                         ) from None


def by_value(pickler):
    """Let a cloudpickle send node.py's code itself: a node needs no checkout on its Python path."""
    pickler.register_pickle_by_value(node)


class Shared:
    """Marker files in the runs folder (and the cache, when nodes are to share it) that a node reads to
    learn whether it sees the same folder; removed when the sweep ends."""

    def __init__(self, settings, node_cache=None):
        self.token = uuid.uuid4().hex
        self.runs, self.cache = settings.runs, settings.cache
        self.node_cache = node_cache or "shared"
        if self.node_cache not in ("shared", "local") and not os.path.isabs(self.node_cache):
            raise UsageError(f"--node-cache {self.node_cache}: expected {NODE_CACHE_CHOICES}",
                             hint="a folder must be an absolute path, the same on every node")
        self.paths = []

    def __enter__(self):
        self.runs_marker = self._mark(self.runs)
        self.cache_marker = self._mark(self.cache) if self.node_cache == "shared" else None
        return self

    def __exit__(self, *exc):
        for path in self.paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _mark(self, folder):
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f".sweep-{self.token}")
        with open(path, "w") as f:
            f.write(self.token)
        self.paths.append(path)
        return [path, self.token]

    def spec(self, task, env=None):
        cache = {"shared": self.cache, "local": "~/.cache/mlrun"}.get(self.node_cache, self.node_cache)
        return {"point_id": task.point_id, "argv": list(task.argv), "mlrun": node_mlrun(),
                "env": dict(env or {}), "cache": cache,   # "~" is the node's home
                "cache_marker": self.cache_marker, "runs": self.runs, "runs_marker": self.runs_marker}


def node_mlrun():
    """The mlrun program a node runs: this one (a shared file system), or $MLRUN_NODE_MLRUN, its path there."""
    return os.environ.get("MLRUN_NODE_MLRUN") or os.path.join(CHECKOUT, "bin", "mlrun")


def node_env(settings):
    """The variables a node's mlrun gets from this machine: its recipe folders and download mirror."""
    env = {"MLRUN_RECIPES": os.pathsep.join(settings.recipes)}
    if settings.mirror:
        env["MLRUN_MIRROR"] = settings.mirror
    return env


def outcome(result, runs, log_dir=None):
    """An Outcome from what node.run_point returned; a run folder that came back as bytes is unpacked
    into runs/ (never over an existing folder) with its record's node paths pointed at the copy, and
    mlrun's stderr is kept as the point's log (log_dir/POINT.log), as the local executor keeps it."""
    if result.get("archive"):
        _unpack(result["archive"], result["run_id"], result["node_runs"], runs)
    return Outcome(point_id=result["point_id"], returncode=result["returncode"], run_id=result["run_id"],
                   node=result["node"], seconds=result.get("seconds", 0.0), stderr_tail=result["stderr"][-TAIL_CHARS:],
                   started=result.get("started", 0.0), log=_log(log_dir, result["point_id"], result["stderr"]))


def lost(task, node_name, reason, seconds=0.0, log_dir=None, run_id=None):
    """The Outcome of a point whose worker or job ended without an answer (died, cancelled, timed out):
    failed (exit 1), with the reason as its error; run_id: its run, where it could be found without one."""
    text = f"mlrun: error: {reason}\n"
    return Outcome(point_id=task.point_id, returncode=1, run_id=run_id, node=node_name, seconds=seconds,
                   stderr_tail=text, log=_log(log_dir, task.point_id, text))


def _log(log_dir, point_id, text):
    if not log_dir:
        return None
    shared_dir(log_dir)   # a teammate resuming the sweep writes there
    path = os.path.join(log_dir, f"{point_id}.log")
    with open(path, "w") as f:
        f.write(text)
    return path


def _unpack(data, run_id, node_runs, runs):
    final = os.path.join(runs, run_id)
    if os.path.exists(final):
        return   # the same folder (a runs folder shared after all): nothing to copy
    staging = os.path.join(runs, f".incoming-{run_id}-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")   # refuses links out of the folder, absolute names
        # its folder there is runs/RUN_ID here (the record keeps where the node's mlrun wrote: its MLRUN_RUNS)
        _repoint(os.path.join(staging, run_id), os.path.join(node_runs, run_id), final)
        os.rename(os.path.join(staging, run_id), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _repoint(folder, old, new):
    """The run's files that name its folder on the node (old) name its copy here (new): the record, each step's
    summary and step.json, env.sh and command.sh (`command.sh DIR` sourced the node's env.sh, gone with its scratch
    folder)."""
    import shlex
    plain = shlex.quote(old) == old and shlex.quote(new) == new   # else a shell file's quoting would change
    for parent, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            if os.path.islink(path) or not (name.endswith(".json") or (plain and name.endswith(".sh"))):
                continue
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
            if old not in text:
                continue
            if name.endswith(".sh"):
                text = text.replace(old, new)
            else:
                try:
                    text = json.dumps(_moved(json.loads(text), old, new), indent=1) + "\n"
                except ValueError:
                    continue   # not JSON after all: left as written
            with open(path + ".tmp", "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            shutil.copymode(path, path + ".tmp")
            os.replace(path + ".tmp", path)


def _moved(value, old, new):
    """value with every string path under old rewritten under new."""
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    return value
