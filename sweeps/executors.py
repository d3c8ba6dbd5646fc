"""Where a sweep's points run: here (one after another, or --jobs N at once), or on a cluster.

An executor takes Tasks (a point's mlrun arguments and what it needs) and yields an Outcome per task as each
one ends. Every task is a plain `mlrun run ... --json` process: the run record it writes is the result (it
must end in settings.runs: an executor whose nodes have their own runs folder copies it back).

    executor(on, options) -> Executor     on: None/"local", "ray", "ray://HOST:PORT", "slurm"
    Executor.run(tasks, settings, on_event) -> iterator of Outcome
        on_event(kind, task, outcome or None), kind "started" or "finished", always from the caller's thread

Cluster executors live in their own modules (sweeps/ray_executor.py, sweeps/slurm_executor.py), each with
`make(on, options) -> Executor`; they are imported only when asked for. options: {"jobs": N, "cpus": N,
"slurm": {key: value}, "log_dir": folder for each point's stderr (POINT.log)}.

Measuring points never share cores: with --jobs N the local executor pins each worker to its own cores
(os.sched_setaffinity before the point starts: mlrun and its benchmark inherit it) when any point measures;
a machine with fewer cores than N is refused. Points that only compute accuracy run unpinned.
"""
import importlib
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from engine.cache import shared_dir
from engine.errors import UsageError
from engine.settings import CHECKOUT

from .node import die_with_parent, run_id_of, run_of_process

MLRUN = os.path.join(CHECKOUT, "bin", "mlrun")
CLUSTER = {"ray": "sweeps.ray_executor", "slurm": "sweeps.slurm_executor"}
TAIL_CHARS = 4000
STOP_GRACE = 60   # seconds an interrupted point has to record itself before it is killed


@dataclass
class Task:
    point_id: str
    argv: list            # mlrun's arguments: ["run", QUERY, "--batch_size=4", ..., "--json"]
    cpus: int = 1
    gpus: int = 0
    measures: bool = True  # a performance measurement: never shares cores with another one


@dataclass
class Outcome:
    point_id: str
    returncode: int
    run_id: str = None
    node: str = ""
    seconds: float = 0.0
    stderr_tail: str = ""
    cores: list = None     # the cores it was pinned to (None: not pinned)
    started: float = 0.0   # epoch seconds
    log: str = None        # its stderr, whole, when kept


class Executor:
    name = "?"

    def check(self, tasks):
        """Refuse (a UsageError) what this executor cannot run well, before the sweep records anything."""

    def run(self, tasks, settings, on_event):
        raise NotImplementedError


def executor(on, options):
    """The executor `--on` names (None: local)."""
    if on is not None and not on.strip() or on == "ray:":   # ran locally, or on RAY_ADDRESS's cluster, unsaid
        raise UsageError(f"--on {on!r}: " + ("no address after it" if on else "empty"),
                         hint="use --on local, ray, ray://HOST:PORT, ray:HOST:PORT or slurm")
    on = on or "local"
    kind = "ray" if on.startswith("ray:") else on   # ray://HOST:PORT (Ray Client), ray:HOST:PORT (the GCS)
    # Options of another executor would be dropped without a word: the person meant them for a cluster.
    for option, applies in (("slurm", ("slurm",)), ("node_cache", ("ray", "slurm")), ("cpus", ("ray", "slurm")),
                            ("jobs", ("local",))):
        if options.get(option) and kind not in applies and not (option == "jobs" and options[option] == 1):
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} applies to --on {' or --on '.join(applies)}, not --on {on}",
                             hint=f"add --on {applies[0]}, or leave {flag} out")
    if on == "local":
        return LocalExecutor(jobs=options.get("jobs") or 1, log_dir=options.get("log_dir"))
    if kind not in CLUSTER:
        raise UsageError(f"--on {on}: not an executor",
                         hint="use --on local, ray, ray://HOST:PORT, ray:HOST:PORT or slurm")
    try:
        module = importlib.import_module(CLUSTER[kind])
    except ModuleNotFoundError as e:
        if e.name == CLUSTER[kind]:
            raise UsageError(f"--on {kind} is not part of this mlrun checkout ({CLUSTER[kind]} is missing)") from None
        raise UsageError(f"--on {kind} needs the Python package '{e.name}'",
                         hint=f"install it into mlrun's venv: .venv/bin/pip install {e.name}") from None
    return module.make(on, options)


def settings_env(settings):
    """The environment of an mlrun child that uses the same cache, runs, recipes and mirror as `settings`."""
    env = dict(os.environ)
    env.update(MLRUN_CACHE=settings.cache, MLRUN_RUNS=settings.runs, MLRUN_RECIPES=os.pathsep.join(settings.recipes))
    if settings.mirror:
        env["MLRUN_MIRROR"] = settings.mirror
    else:
        env.pop("MLRUN_MIRROR", None)
    return env


def run_mlrun(task, env, cores=None, log_path=None, started_proc=None):
    """Run one task as an mlrun process here; its Outcome. cores: pin it (and all it starts) to these.

    The process gets SIGTERM if this one dies (even of SIGKILL): it records its run as interrupted and
    stops its step, so no orphan goes on measuring beside the points of a resumed sweep.
    """
    def child_setup():
        die_with_parent()
        if cores:
            os.sched_setaffinity(0, cores)
    started = time.time()
    err = open(log_path, "w+b") if log_path else subprocess.PIPE
    try:
        proc = subprocess.Popen([MLRUN, *task.argv], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, preexec_fn=child_setup, cwd=os.getcwd())
        if started_proc:
            started_proc(proc)
        out, errors = proc.communicate()
    finally:
        if log_path:
            err.seek(max(0, os.fstat(err.fileno()).st_size - TAIL_CHARS))
            errors = err.read()
            err.close()
    run_id = run_id_of(out.decode(errors="replace"))
    if run_id is None and proc.returncode < 0:   # killed (SIGKILL, out of memory) before it printed its run
        run_id = run_of_process(env.get("MLRUN_RUNS"), proc.pid, started)
    return Outcome(point_id=task.point_id, returncode=proc.returncode, run_id=run_id,
                   node=os.uname().nodename, seconds=time.time() - started,
                   stderr_tail=errors.decode(errors="replace")[-TAIL_CHARS:], cores=list(cores) if cores else None,
                   started=started, log=log_path)


class LocalExecutor(Executor):
    """Points on this machine: one after another, or `jobs` at once (measuring ones on disjoint cores)."""
    name = "local"

    def __init__(self, jobs=1, log_dir=None, cores=None):
        self.jobs = max(1, int(jobs))
        self.log_dir = log_dir
        self.cores = sorted(cores or os.sched_getaffinity(0))

    def check(self, tasks):
        self.slots(tasks)

    def slots(self, tasks):
        """One core set per worker (None: not pinned); a usage error when measuring points would share cores."""
        jobs = min(self.jobs, max(1, len(tasks)))
        if jobs == 1 or not any(t.measures for t in tasks):
            return [None] * jobs
        n = len(self.cores)
        if n < jobs:
            raise UsageError(f"--jobs {self.jobs}: performance points would share cores (this machine lets mlrun "
                             f"use {n} core{'s' if n != 1 else ''}: {','.join(map(str, self.cores))}), which skews "
                             "what they measure",
                             hint=f"use --jobs {n} or fewer (each point pinned to its own cores), or run "
                                  "accuracy points only")
        return [self.cores[i * n // jobs:(i + 1) * n // jobs] for i in range(jobs)]

    def run(self, tasks, settings, on_event):
        slots = self.slots(tasks)
        env = settings_env(settings)
        if self.log_dir:
            shared_dir(self.log_dir)   # a teammate resuming the sweep writes there
        todo, events = queue.Queue(), queue.Queue()
        for t in tasks:
            todo.put(t)
        stopping = threading.Event()
        procs, lock = {}, threading.Lock()

        def worker(cores):
            while not stopping.is_set():
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    break
                events.put(("started", task, None))
                log = os.path.join(self.log_dir, f"{task.point_id}.log") if self.log_dir else None

                def started(proc, task=task):
                    with lock:
                        procs[task.point_id] = proc
                try:
                    outcome = run_mlrun(task, env, cores, log, started)
                except OSError as e:  # cannot start mlrun at all: the point fails, the others go on
                    outcome = Outcome(task.point_id, 127, node=os.uname().nodename, stderr_tail=str(e),
                                      started=time.time())
                with lock:
                    procs.pop(task.point_id, None)
                events.put(("finished", task, outcome))
            events.put(("worker done", None, None))

        threads = [threading.Thread(target=worker, args=(cores,), daemon=True) for cores in slots]
        for t in threads:
            t.start()
        alive = len(threads)
        try:
            while alive:
                kind, task, outcome = events.get()
                if kind == "worker done":
                    alive -= 1
                    continue
                on_event(kind, task, outcome)
                if kind == "finished":
                    yield outcome
        finally:  # interrupted (Ctrl-C, SIGTERM) or abandoned: stop what runs; each records itself interrupted
            stopping.set()
            with lock:
                running = list(procs.values())
            for proc in running:
                _signal(proc, signal.SIGTERM)
            deadline = time.time() + STOP_GRACE
            for proc in running:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    _signal(proc, signal.SIGKILL)
            for t in threads:
                t.join(timeout=5)
            while not events.empty():   # the stopped points' outcomes: their runs, recorded interrupted
                kind, task, outcome = events.get()
                if kind == "finished":
                    on_event(kind, task, outcome)


def _signal(proc, sig):
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
