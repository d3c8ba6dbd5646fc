"""Sweep points on SLURM: one job array per kind of point (submitit's map_array), one array task per point.

SLURM schedules; submitit writes the job script and pickles `sweeps.node.run_point` and its spec into
`runs/.slurm/<job>/` (so runs/ must be on a file system the nodes share), and each array task runs mlrun on
its node, like a Ray task (the same cache and record rules: sweeps/node.py). `--slurm partition=cpu,time=30`
sets submitit's SLURM parameters (`time` in minutes, default 60; any sbatch option submitit knows:
account, qos, mem, constraint, nodelist, array_parallelism, ...). Measuring points are an array of
`--exclusive` jobs: a whole node each, never sharing its cores; the others ask for their CPUs
(--cpus-per-task) and GPUs (--gpus-per-node). The program runs in the batch step itself (no srun), so an
exclusive job's process may use every core of its node.

States come from `squeue --states=all` (SLURM keeps finished jobs there for MinJobAge, 5 min by default),
not from sacct, so clusters without accounting work too. An array task that ends without an answer
(cancelled, timed out, out of memory, node failure) leaves its point failed with SLURM's state and the tail
of the job's log; Ctrl-C cancels the arrays (scancel), and their mlrun record their runs as interrupted. The jobs
are named mlrun-sweep-NAME-<runs folder's digest>: a sweep started again cancels those a killed one left.
"""
import contextlib
import difflib
import getpass
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types

from engine.errors import MlrunError, UsageError

from . import node, remote
from .executors import Executor

POLL_S = 1.0
GRACE_S = 10.0      # a finished job's result file may take this long to show on a shared file system
# squeue unanswered this long (slurmctld stopped): the sweep stops, exit 2 (it waited silently for ever); a busy
# controller answers within SLURM's own MessageTimeout (10 s by default) several times over
CONTROLLER_LOST_S = 180.0
FOLDER_ID = "folder-id"   # runs/.slurm/folder-id: the runs folder's name in its jobs' names, whatever path reaches it
DEFAULTS = {"time": 60, "job_name": "mlrun-sweep"}
STOP_LINK_S = 20   # after a stop, how long the sweep waits for its cancelled points' answers (each names its run)
# sbatch --time's forms (man sbatch)
SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT")
ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "REVOKED", "SPECIAL_EXIT")


def parameters(given):
    """{"partition": "cpu", "time": "30"} (--slurm partition=cpu,time=30) -> submitit SlurmExecutor
    parameters; an unknown name is a usage error."""
    from submitit.slurm.slurm import _get_default_parameters
    valid = set(_get_default_parameters()) - {"use_srun", "srun_args", "setup", "teardown", "folder"}
    whole = _whole_number_parameters() - {"time"}   # time also takes SLURM's forms, checked below
    out = {}
    for name, value in (given or {}).items():
        name = name.strip().replace("-", "_")
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            raise UsageError(f"--slurm: unknown SLURM parameter '{name}'"
                             + (f"; did you mean '{close[0]}'?" if close else ""),
                             hint="known: " + ", ".join(sorted(valid)))
        value = str(value).strip()
        if name == "additional_parameters":   # a mapping, which KEY=VALUE cannot give ("unexpected ValueError")
            raise UsageError("--slurm additional_parameters takes a mapping of sbatch options, which --slurm "
                             "KEY=VALUE cannot give", hint="name the sbatch option itself: --slurm "
                             "partition=...,constraint=...,qos=... (those of `known` below), or set it in the "
                             "partition's defaults; known: " + ", ".join(sorted(valid - {name})))
        if name == "time" and not SLURM_TIME.fullmatch(value):  # sbatch would refuse it only at submission
            raise UsageError(f"--slurm time={value}: not a SLURM time limit",
                             hint="minutes (30), MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED")
        if name in whole and not value.isdigit():   # submitit compared it with a number: a Python TypeError
            raise UsageError(f"--slurm {name}={value}: expects a whole number")
        out[name] = int(value) if value.isdigit() else {"true": True, "false": False}.get(value.lower(), value)
    return out


def _whole_number_parameters():
    """The SLURM parameters submitit takes as numbers (typed int in its sbatch writer), and array_parallelism."""
    import inspect
    import typing

    from submitit.slurm.slurm import _make_sbatch_string
    numbers = (int, typing.Optional[int], "int", "tp.Optional[int]", "typing.Optional[int]")
    return {"array_parallelism"} | {name for name, p in inspect.signature(_make_sbatch_string).parameters.items()
                                    if p.annotation in numbers}


def make(on, options):
    remote.need("submitit", "--on slurm")
    return SlurmExecutor(options)


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, options=None):
        options = options or {}
        self.params = dict(DEFAULTS, **parameters(options.get("slurm")))   # wrong names fail before any planning
        self.node_cache = options.get("node_cache")
        self.log_dir = options.get("log_dir")
        self.sweep = options.get("sweep")   # its jobs are named by it unless --slurm job_name= names them
        self._started = set()   # the jobs seen running: after a stop, their answers link their points to their runs
        self._reported = set()   # the jobs whose outcome was given: one answered meanwhile is given on a stop
        self.own_name = self.sweep is not None and "job_name" not in (options.get("slurm") or {})

    def check(self, tasks):
        if not shutil.which("sbatch"):
            raise UsageError("--on slurm: `sbatch` is not on PATH", hint="run the sweep where SLURM's commands work "
                             "(a login node), or use --on ray / the local executor")
        # SLURM's commands without a controller print pages of their own errors and sbatch's last line blamed
        # --slurm: ask the controller first, quietly.
        conf = os.environ.get("SLURM_CONF")
        if conf and not os.path.isfile(conf):   # scontrol then waited 30 s, and that was all it was said to be
            raise UsageError(f"--on slurm: SLURM_CONF={conf} names no file", hint="point SLURM_CONF at the cluster's "
                             "slurm.conf (`scontrol show config` on a login node says which), or unset it")
        if shutil.which("scontrol"):
            try:
                ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired as late:   # what it said before it was stopped says why
                said = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x
                               for x in (late.stdout or "", late.stderr or ""))
                ping = subprocess.CompletedProcess([], 1, "", said + "\n`scontrol ping` did not answer in 30 s")
            said = [x.strip() for x in (ping.stdout + ping.stderr).splitlines() if x.strip() and x[0] != "*"]
            if ping.returncode != 0 and not any(x.endswith(" is UP") for x in said):   # a backup down is fine
                raise UsageError(f"--on slurm: SLURM's controller does not answer here: "
                                 f"{said[-1] if said else 'scontrol ping failed'}",
                                 hint="is slurmctld up (`scontrol ping`, `sinfo`)? SLURM_CONF names the slurm.conf "
                                      "to use; or run the sweep with --on ray or the local executor")
        wanting = max((t.cpus for t in tasks if not t.measures), default=0)
        most = _most_cpus(self.params.get("partition")) if wanting > 1 else None
        if most is not None and wanting > most:   # its jobs stayed pending for ever, the sweep saying nothing
            raise UsageError(f"--cpus {wanting}: no node of SLURM's {self.params.get('partition') or 'partitions'} "
                             f"has that many CPUs (the most: {most})", hint=f"--cpus {most} or fewer (`sinfo`)")
        nodes = self.params.get("nodes")
        have = _most_nodes(self.params.get("partition")) if isinstance(nodes, int) and nodes > 1 else None
        if have is not None and nodes > have:   # pending for ever (PartitionNodeLimit), the sweep saying nothing
            part = self.params.get("partition")
            raise UsageError(f"--slurm nodes={nodes}: a job of SLURM's " + (f"partition {part}" if part else
                             "default partition") + f" has {have} node(s) at most (its nodes, or its MaxNodes)",
                             hint=f"--slurm nodes={have} or fewer (`sinfo`), or another partition")

    def run(self, tasks, settings, on_event):
        submitit = remote.need("submitit", "--on slurm")
        import cloudpickle   # submitit's pickler
        params = self.params
        self.check(tasks)
        if self.own_name:   # this sweep's name and runs folder: no other sweep's jobs are named so
            params = dict(params, job_name=f"mlrun-sweep-{self.sweep}-{_folder_id(settings.runs)}")
            self._cancel_leftovers(params["job_name"])
        with remote.Shared(settings, self.node_cache) as shared:
            remote.by_value(cloudpickle)
            env = remote.node_env(settings)
            jobs = self._submit(submitit, tasks, settings, params, shared, env)
            try:
                yield from self._watch(submitit, jobs, settings.runs, on_event)
            finally:
                # answered, not yet reported (a stop between a job's answer and its turn): its point is what it ran
                # (it was recorded interrupted, no run, and a resume ran it again)
                for job_id, (job, task) in jobs.items():
                    if job_id not in self._reported and _answered(job):
                        self._reported.add(job_id)
                        on_event("finished", task, _result(submitit, job, task, "", settings.runs, self.log_dir))
                unanswered = {job_id: pair for job_id, pair in jobs.items() if not _answered(pair[0])}
                arrays = sorted({job_id.split("_")[0] for job_id in unanswered})
                if arrays:   # interrupted: nothing of this sweep keeps running
                    try:
                        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60)
                    except (OSError, subprocess.TimeoutExpired):   # no controller: nothing runs them either
                        pass
                # a point that ran got SLURM's SIGTERM, recorded its run interrupted and answered: linked to it (its
                # point said only 'the sweep was stopped', no run, as a Ray point does not)
                running = {job_id: pair for job_id, pair in unanswered.items() if job_id in self._started}
                deadline = time.monotonic() + STOP_LINK_S
                while running and time.monotonic() < deadline:
                    for job_id, (job, task) in list(running.items()):
                        if _answered(job):
                            del running[job_id]
                            self._reported.add(job_id)
                            on_event("finished", task, _result(submitit, job, task, "", settings.runs, self.log_dir))
                    if running:
                        time.sleep(0.5)
                _forget_specs(job for job, _ in jobs.values())

    @staticmethod
    def _cancel_leftovers(job_name):
        """Cancel the jobs of a sweep of this name that was killed (kill -9: its arrays stayed queued and ran alone,
        measuring beside the points run again). The sweep's lock is held: no live sweep has jobs of that name."""
        try:
            queued = subprocess.run(["squeue", "--noheader", "--name", job_name, "--user", getpass.getuser(),
                                     "--format=%F"], capture_output=True, text=True, timeout=60).stdout.split()
            if queued:
                subprocess.run(["scancel", *sorted(set(queued))], capture_output=True, timeout=60)
                print(f"cancelled {len(set(queued))} SLURM job(s) a stopped run of this sweep left queued or running",
                      file=sys.stderr)
        except (OSError, subprocess.TimeoutExpired):   # its points are run again anyway: nothing is lost
            pass

    def _submit(self, submitit, tasks, settings, params, shared, env):
        groups = {}
        for task in tasks:   # one array per kind of point: the resources are the array's
            groups.setdefault((task.measures, task.cpus, task.gpus), []).append(task)
        jobs = {}
        for (measures, cpus, gpus), group in groups.items():
            ex = submitit.SlurmExecutor(folder=os.path.join(settings.runs, ".slurm", "%j"), max_num_timeout=0)
            kind = {"exclusive": True} if measures else {"cpus_per_task": max(1, cpus)}
            if gpus:
                kind["gpus_per_node"] = gpus
            # --no-requeue: a job requeued after a node failure ran its point again, alone and unrecorded, after the
            # sweep had ended; the sweep itself runs a point again where one was lost
            extra = dict(params.get("additional_parameters") or {}, no_requeue=True)
            ex.update_parameters(**dict(params, **kind, use_srun=False, additional_parameters=extra))
            try:
                with _stderr_kept() as said:   # sbatch's own lines went to the terminal, then again in mlrun's
                    submitted = ex.map_array(node.run_point, [shared.spec(t, env) for t in group])
            except Exception as e:   # sbatch refused (a partition that does not exist, a time over the limit...)
                arrays = sorted({job_id.split("_")[0] for job_id in jobs})
                if arrays:   # the arrays it took before stay queued, then run unwatched: cancelled
                    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60)
                _forget_specs(job for job, _ in jobs.values())
                why = getattr(e, "stderr", None) or getattr(e, "output", None) or str(e)
                why = why.decode() if isinstance(why, bytes) else str(why)
                why = why if why.strip() else said.text
                raise MlrunError(f"sbatch refused the job array of {len(group)} point(s): "
                                 f"{why.strip().splitlines()[-1]}",
                                 hint="check --slurm (partition, time, account) against `sinfo`") from None
            for job in submitted:   # it holds the point's command line, an --env.TOKEN's value in it: this user's
                with contextlib.suppress(OSError):
                    os.chmod(job.paths.submitted_pickle, 0o600)
            jobs.update({job.job_id: (job, task) for job, task in zip(submitted, group)})
        return jobs

    def _watch(self, submitit, jobs, runs, on_event):
        left, started, ended_at = dict(jobs), self._started, {}
        answered_at = time.monotonic()   # squeue's last answer
        while left:
            states = _squeue(sorted({j.split("_")[0] for j in left}))
            if states is not None:
                answered_at = time.monotonic()
            elif time.monotonic() - answered_at > CONTROLLER_LOST_S and not any(_answered(j) for j, _ in left.values()):
                points = ", ".join(sorted(task.point_id for _, task in left.values()))
                raise UsageError(f"SLURM's controller has not answered squeue for {CONTROLLER_LOST_S:.0f} s "
                                 f"({_squeue.why or 'no answer'}): points {points} have no answer, and none can "
                                 "come while it is down",
                                 hint="check `scontrol ping`; once it answers, run the same sweep again: it runs "
                                      "what has no result")
            reasons = getattr(_squeue, "reasons", {})
            stuck = {job_id: reasons.get(job_id) for job_id in left if (states or {}).get(job_id, ("",))[0]
                     == "PENDING" and reasons.get(job_id) in NEVER_RUNS}
            if stuck:
                reason = next(iter(stuck.values()))
                points = ", ".join(sorted(left[job_id][1].point_id for job_id in stuck))
                raise UsageError(f"SLURM keeps the jobs of points {points} pending for ever: {reason} "
                                 f"({NEVER_RUNS[reason]})", hint="change --slurm to what the partition allows "
                                 "(`sinfo`, `scontrol show partition`) and run the same sweep again")
            for job_id, (job, task) in list(left.items()):
                state, where = (states or {}).get(job_id, (None, ""))
                if job_id not in started and (state in RUNNING or state in ENDED or _answered(job)):
                    started.add(job_id)
                    on_event("started", task, None)
                if _answered(job):
                    outcome = _result(submitit, job, task, where, runs, self.log_dir)
                    if outcome.returncode != 0 and state not in ENDED and states is not None and state is not None \
                            and time.monotonic() - ended_at.setdefault(job_id, time.monotonic()) < GRACE_S:
                        continue   # mlrun stopped (SIGTERM): wait for SLURM to say why
                    if state in ENDED and state != "COMPLETED":   # cancelled, timed out...: say so beside mlrun's words
                        outcome.stderr_tail += f"mlrun: error: SLURM job {job_id} ended {state}\n"
                elif states is not None and (state is None or state in ENDED):   # gone without an answer:
                    # give its result file time to show
                    if time.monotonic() - ended_at.setdefault(job_id, time.monotonic()) < GRACE_S:
                        continue
                    outcome = remote.lost(task, where or "-", f"SLURM job {job_id} ended {state or 'without a state'} "
                                          f"before point {task.point_id} answered{_log_tail(job)}",
                                          log_dir=self.log_dir)
                else:
                    continue
                del left[job_id]
                self._reported.add(job_id)
                on_event("finished", task, outcome)
                yield outcome
            if left:
                time.sleep(POLL_S)


@contextlib.contextmanager
def _stderr_kept():
    """What is written to this process's stderr (fd 2: submitit lets sbatch's through) kept, not shown; the
    holder's .text has it once the block ends."""
    holder = types.SimpleNamespace(text="")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield holder
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            holder.text = kept.read().decode(errors="replace")


def _forget_specs(jobs):
    """The pickled specs hold --env secrets in plain text, kept for ever: removed once their jobs need them no more
    (no requeue: --no-requeue)."""
    for job in jobs:
        with contextlib.suppress(OSError):
            os.unlink(job.paths.submitted_pickle)


def _most_cpus(partition=None):
    """The most CPUs a node of the partition (all, without one) has, by sinfo; None when sinfo does not say."""
    counts = [int(x.rstrip("+")) for x in _sinfo("%c", partition) or () if x.rstrip("+").isdigit()]
    return max(counts) if counts else None


def _most_nodes(partition=None):
    """The most nodes a job may have in the partition (without one: the default partition, where sbatch puts it):
    its nodes in any state, or its MaxNodes where fewer (sinfo %s); None when sinfo does not say."""
    if partition is None:
        names = _sinfo("%P", None)
        default = [name.rstrip("*") for name in names or () if name.endswith("*")]
        if len(default) != 1:
            return None
        partition = default[0]
    nodes = _sinfo("%N", partition, ["--Node"])   # a node per line
    if not nodes:
        return None
    most = len(set(nodes))
    for size in _sinfo("%s", partition) or ():   # "infinite", "1-2" or "2"
        top = size.rsplit("-", 1)[-1]
        if top.isdigit():
            most = min(most, int(top))
    return most


def _sinfo(field, partition, more=()):
    try:
        said = subprocess.run(["sinfo", "--noheader", *more, f"--format={field}",
                               *(["--partition", partition] if partition else [])],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return said.stdout.split() if said.returncode == 0 else None   # the words as sinfo writes them


def _answered(job):
    return job.paths.result_pickle.exists()


def _result(submitit, job, task, where, runs, log_dir):
    try:
        return remote.outcome(job.result(), runs, log_dir)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        lines = str(e).strip().splitlines()
        return remote.lost(task, where or "-", f"SLURM job {job.job_id} of point {task.point_id} failed: "
                           f"{lines[-1] if lines else type(e).__name__}", log_dir=log_dir)


def _folder_id(runs):
    """A name of the runs folder kept in it (runs/.slurm/folder-id), the same from every path and mount that reaches
    it: its absolute path's digest named it, and a sweep killed under another spelling (a symlink, another login
    node's mount) left its jobs running beside the points run again."""
    path = os.path.join(runs, ".slurm", FOLDER_ID)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "x") as f:   # the first sweep of this folder names it; a racing one reads its name
            f.write(hashlib.sha256(os.urandom(16)).hexdigest()[:8] + "\n")
    except FileExistsError:
        pass
    for _ in range(50):   # written by a racing sweep a moment ago
        with open(path) as f:
            name = f.read().strip()
        if re.fullmatch(r"[0-9a-f]{8}", name):
            return name
        time.sleep(0.1)
    raise MlrunError(f"{path} does not hold a folder name (8 hex digits)", hint=f"remove {path}: a new one is made")


def _squeue(arrays):
    """{array task id "12_3": (state, node)} for the jobs SLURM still lists, finished ones included;
    None when squeue did not answer (slurmctld busy): nothing is concluded from that round (why: _squeue.why)."""
    _squeue.why = None
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N|%r",
                               "--jobs=" + ",".join(arrays)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        _squeue.why = f"squeue: {e}"
        return None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return {}   # every array already forgotten
        _squeue.why = (done.stderr.strip().splitlines() or [f"squeue exited with {done.returncode}"])[-1]
        return None
    states, _squeue.reasons = {}, {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            states[parts[0]] = (parts[1], parts[2])
            _squeue.reasons[parts[0]] = parts[3]
    return states


_squeue.why = None
_squeue.reasons = {}   # array task id: why SLURM keeps it pending (squeue's %r)

# Why SLURM keeps a job pending that no wait mends (squeue %r): the sweep said nothing, for ever (--slurm time over
# the partition's limit)
# (not PartitionNodeLimit: SLURM says it too while the nodes are down or drained, which passes; more nodes than the
# partition has are refused before any job, by sinfo)
NEVER_RUNS = {"PartitionTimeLimit": "--slurm time is over the partition's limit",
              "BadConstraints": "no node has what --slurm constraint asks", "InvalidAccount": "--slurm account",
              "InvalidQOS": "--slurm qos", "QOSMaxNodePerJobLimit": "the QOS's most nodes per job",
              "QOSMaxCpuPerJobLimit": "the QOS's most CPUs per job",
              "QOSMaxWallDurationPerJobLimit": "the QOS's most time per job"}


def _log_tail(job):
    """The last lines of the job's logs, where SLURM says why (`*** JOB 12 ... CANCELLED AT ...`)."""
    text = ""
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            with open(path) as f:
                text += f.read()
        except OSError:
            pass
    lines = [line for line in text.strip().splitlines() if line.strip()][-3:]
    return (":\n" + "\n".join(lines)) if lines else ""
