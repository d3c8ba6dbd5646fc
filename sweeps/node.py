"""What a cluster node does for one sweep point: run mlrun as a subprocess, say how it went.

The Ray and SLURM executors send `run_point` to the nodes by value (cloudpickle), so a node needs
neither this checkout on its Python path nor anything but the standard library here: it needs the
mlrun program (the same path by default: a shared file system) and the folders the spec names.

A spec (a dict) says: `point_id`, `argv` (mlrun's arguments), `mlrun` (the program), `env` (MLRUN_*
variables: recipes, mirror), `cache` (the cache folder on the node) and `cache_marker` (a file the
submitting machine wrote in a cache it expects the node to share; None when each node keeps its own
cache), `runs` (the submitting machine's runs folder) and `runs_marker` (a file written there),
`env_drop` (variables the cluster sets that mlrun must not see).
When the node sees the marker, the node shares that folder and mlrun writes its record there;
otherwise mlrun writes into a scratch folder and the run folder travels back as a .tar.gz (bytes).
"""
import ctypes
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

LOG_CHARS = 1_000_000   # of mlrun's stderr, sent back for the point's log


def node_name():
    """The host name, with the Ray node id when in a Ray worker (two Ray nodes may share a host)."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():   # in a Ray worker (asking elsewhere would set Ray up)
        try:
            return f"{host}@{ray.get_runtime_context().get_node_id()[:8]}"
        except Exception:   # a driver, not a worker
            pass
    slurm = os.environ.get("SLURMD_NODENAME")
    return f"{host}@{slurm}" if slurm and slurm != host else host


def _sees(marker):
    try:
        with open(marker[0]) as f:
            return f.read() == marker[1]
    except OSError:
        return False


def die_with_parent():
    """In the child: SIGTERM when the worker that started it dies (Ray kills workers by SIGKILL),
    so mlrun records its run as interrupted instead of running on unseen."""
    try:   # (ctypes imported before any fork: an import in a child forked from threads may wait for ever)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG (musl's libc too)
    except (OSError, AttributeError):
        pass


def tell_actor(actor, item):
    """Put item in a Ray queue actor without waiting: a task blocked in ray.get gives its CPUs back to
    Ray for that time, and another task could start on the cores of a measurement."""
    actor.put_nowait.remote(item)


def run_point(spec, on_start=None, on_stop=None):
    """Run one point's mlrun on this node; its outcome as a dict (remote.outcome reads it). Cancelled, it stops
    mlrun (which records its run interrupted) and hands the outcome to on_stop before raising: a cancelled Ray
    task returns nothing, and the sweep links the stopped point to its run from there."""
    if on_stop is not None and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Ray cancels a task as a Ctrl-C (interrupt_main), which a node started with SIGINT ignored (`ray start &`
        # from a script) never saw: the point ran on after the sweep stopped
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:   # not the worker's main thread: nothing to restore here
            pass
    t0 = time.time()
    node = node_name()
    out = {"point_id": spec["point_id"], "node": node, "started": t0, "returncode": 2, "run_id": None, "stderr": "",
           "archive": None, "node_runs": None}
    if spec.get("cache_marker") and not _sees(spec["cache_marker"]):
        out["stderr"] = (f"mlrun: error: the cache folder {spec['cache']} is not shared with node {node} "
                              "(no shared file system there?)\nhint: give each node its own cache: --ray-cache "
                              "local (or --ray-cache DIR, a folder on every node)")
        out["seconds"] = round(time.time() - t0, 3)
        return out
    shared_runs = _sees(spec["runs_marker"])
    runs = spec["runs"] if shared_runs else tempfile.mkdtemp(prefix="mlrun-point-")
    env = dict(os.environ, **spec.get("env", {}), MLRUN_CACHE=os.path.expanduser(spec["cache"]), MLRUN_RUNS=runs)
    for name in spec.get("env_drop", ()):
        env.pop(name, None)
    proc = subprocess.Popen([spec["mlrun"], *spec["argv"]], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)
    if on_start is not None:   # with mlrun's pid: a worker that dies answers nothing, and its run is found by it
        on_start((spec["point_id"], node, proc.pid if shared_runs else None))
    try:
        while True:   # back in Python each second: Ray's cancel (a KeyboardInterrupt) waits for that, not a C call
            try:
                stdout, stderr = proc.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:   # the task is cancelled (KeyboardInterrupt, SystemExit): stop mlrun cleanly
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        if on_stop is not None:
            on_stop(_ended(out, proc, stdout, stderr, runs, shared_runs, t0))
        raise
    return _ended(out, proc, stdout, stderr, runs, shared_runs, t0)


def _ended(out, proc, stdout, stderr, runs, shared_runs, t0):
    """out completed with how mlrun ended: its run (packed when the runs folder is this node's own)."""
    out.update(returncode=proc.returncode, stderr=(stderr or "")[-LOG_CHARS:],
               run_id=run_id_of(stdout) or run_of_process(runs, proc.pid, t0))
    if not shared_runs:
        if out["run_id"]:
            out["archive"], out["node_runs"] = _pack(os.path.join(runs, out["run_id"])), runs
        _remove(runs)
    out["seconds"] = round(time.time() - t0, 3)
    return out


def run_id_of(stdout):
    """The run id `mlrun run --json` printed (it prints one for a failed run too), or None."""
    try:
        return json.loads(stdout).get("run")
    except (ValueError, AttributeError):
        return None


def run_of_process(runs, pid, since, host=None):
    """The run that process pid (of host, by default this one) started (a failed run prints no JSON): its record
    names its process."""
    try:
        names = os.listdir(runs)
    except OSError:
        return None
    for name in sorted(names, reverse=True):
        try:
            if os.stat(os.path.join(runs, name)).st_mtime < since - 1:
                continue
            with open(os.path.join(runs, name, "run.json")) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        process = record.get("process") if isinstance(record, dict) else None
        if isinstance(process, dict) and process.get("pid") == pid and process.get("host") == (host or os.uname().nodename):
            return record.get("id")
    return None


def _pack(folder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    return buf.getvalue()


def _remove(folder):
    import shutil
    for root, dirs, _ in os.walk(folder):   # a run folder may hold read-only parts
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(folder, ignore_errors=True)
