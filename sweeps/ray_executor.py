"""Sweep points on a Ray cluster: each point one Ray task running mlrun on a node (sweeps/node.py).

Ray does the scheduling: a point asks for the CPUs (and GPUs) of its Task; a measuring point asks for
all the CPUs of one node (a node with no other measurement of this sweep, chosen when it frees up and
held by node affinity), so Ray's resource accounting never lets two measurements, or anything else,
share its cores. `--on ray` connects to RAY_ADDRESS (else the local cluster: "auto"), `--on ray:HOST:PORT`
to that cluster, `--on ray://HOST:PORT` through Ray Client. Nodes share the cache folder (the engine's
per-entry flocks hold across nodes on the shared folder) or, with `--node-cache local|DIR`, each node
builds what it lacks in its own; run folders come back to this machine's runs/. Tasks are never retried:
a worker or node that dies leaves the point failed with Ray's reason, and a rerun of the sweep repeats it.
"""
import functools
import os
import signal
import socket
import threading
import time
from collections import deque

from engine.errors import MlrunError, UsageError
from engine.guard import STOP_SIGNALS, Interrupted
from engine.words import plural

from . import node, remote
from .executors import Executor

POLL_S = 0.5
NODES_EVERY_S = 5.0
ASK_S = 10.0   # seconds the queue of started points may take to answer before the head is asked whether it is there
STOP_LINK_S = 5.0   # how long a stopped sweep waits for its cancelled points' outcomes to reach the queue


def make(on, options):
    """--on ray (RAY_ADDRESS, else "auto"), ray:HOST:PORT, ray://HOST:PORT."""
    remote.need("ray", f"--on {on}")
    address = None if on == "ray" else on if on.startswith("ray://") else on[len("ray:"):]
    return RayExecutor(address, options)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address=None, options=None):
        options = options or {}
        self.address = address
        self.node_cache = options.get("node_cache")
        self.log_dir = options.get("log_dir")

    def check(self, tasks):
        _reachable(self._address())   # before the sweep records anything

    def _address(self):
        return self.address or os.environ.get("RAY_ADDRESS") or "auto"

    def _connect(self, ray):
        address = self._address()
        # Ray Client starts a server process per client on the head: on a busy head that can miss its time-out.
        for attempt in range(3 if address.startswith("ray://") else 1, 0, -1):
            try:
                ours = _stop_handlers()
                context = ray.init(address=address, logging_level="warning", log_to_driver=False,
                                   configure_logging=False)
                _restore(ours)
                return context
            except (ConnectionError, RuntimeError, ValueError) as e:
                if attempt == 1:
                    # something answers there (_reachable said so): a cluster's other port, named in the other form
                    # (the hint said "start one" of a cluster that was up)
                    other = "the Ray Client port (10001 by default) is written ray://HOST:PORT; " \
                        if not address.startswith("ray://") else \
                        "the GCS port (6379 by default) is written ray:HOST:PORT (or RAY_ADDRESS); "
                    raise UsageError(f"cannot reach the Ray cluster at {address}: {str(e).strip().splitlines()[0]}",
                                     hint=f"{other}no cluster yet: start one (`ray start --head`), then --on ray "
                                          "(RAY_ADDRESS), --on ray:HOST:6379 or --on ray://HOST:10001") from None

    def run(self, tasks, settings, on_event):
        ray = remote.need("ray", "--on ray")
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        with remote.Shared(settings, self.node_cache) as shared:
            context = self._connect(ray)
            # The head's GCS, asked every few seconds: once it is gone Ray ends this process in 60 s (exit 1, the
            # points left 'running'); seen first, the sweep says so and the points that had not started stay pending.
            gcs = getattr(context, "address_info", {}).get("gcs_address") if context is not None else None
            try:
                remote.by_value(ray.cloudpickle)
                started = Queue(actor_options={"num_cpus": 0})   # workers say when a point starts
                ray.get(started.actor.qsize.remote())   # up before any point starts: news sent earlier waited unread
                # one get always waits at the queue, beside the tasks: a start is known the moment it is said (read
                # every half second, one said just before the head went was lost and its point called not started)
                waiting = started.actor.get.remote()
                fn = ray.remote(node.run_point)
                env = remote.node_env(settings)
                # Ray sets OMP_NUM_THREADS to a task's CPUs: a benchmark must see the machine as a local run does
                # (a sweep that wants it set says so: --env.OMP_NUM_THREADS=N, or a --grid of it).
                drop = ["OMP_NUM_THREADS"]

                def submit(task, **resources):
                    spec = dict(shared.spec(task, env), env_drop=drop)
                    tell = functools.partial(node.tell_actor, started.actor)
                    return fn.options(max_retries=0, num_gpus=task.gpus, **resources).remote(spec, tell, tell)

                by_id = {t.point_id: t for t in tasks}
                nodes, checked = _cpus_by_node(ray), time.monotonic()
                most = max(nodes.values(), default=0)
                wanting = max((t.cpus for t in tasks if not t.measures), default=0)
                if wanting > most:   # Ray would queue such a task for ever, saying nothing
                    raise UsageError(f"--cpus {wanting}: no node of the Ray cluster has that many CPUs (the most: "
                                     f"{most})", hint=f"--cpus {most} or fewer")
                refs = {submit(t, num_cpus=t.cpus): (t, None) for t in tasks if not t.measures}
                measuring, busy, seen = deque(t for t in tasks if t.measures), set(), set()
                mlruns = {}   # point id: (host, pid, when heard) of its mlrun
                stop = _Deferred()
                try:
                    while refs or measuring:
                        stop.check()
                        gone = None
                        if time.monotonic() - checked > NODES_EVERY_S:
                            if gcs and not _listening(gcs):
                                gone = ClusterGone(f"its head at {gcs} stopped answering")
                            else:
                                nodes, checked = _cpus_by_node(ray), time.monotonic()
                        for node_id in [n for n in nodes if n not in busy]:
                            if not measuring:
                                break
                            task = measuring.popleft()   # all of that node's CPUs: nothing else runs there
                            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
                            refs[submit(task, num_cpus=nodes[node_id], scheduling_strategy=strategy)] = (task, node_id)
                            busy.add(node_id)
                        if measuring and not refs and not nodes and not gone:   # (gone: they stay pending)
                            for task in measuring:
                                lost = remote.lost(task, "-", "no Ray node with CPUs is left", log_dir=self.log_dir)
                                yield self._finish(lost, task, seen, on_event)
                            measuring.clear()
                            break
                        try:
                            if gone:
                                raise gone
                            ready, _ = ray.wait([*refs, waiting], num_returns=1, timeout=POLL_S)
                            # news first: a point that ended (its worker died) may have said just before that it
                            # started, and which mlrun ran it
                            if waiting in ready or ready and ray.wait([waiting], timeout=0)[0]:
                                if waiting in ready:
                                    ready.remove(waiting)
                                news = [ray.get(waiting, timeout=ASK_S), *_started_news(ray, started, gcs)]
                                waiting = started.actor.get.remote()
                                for point_id, where, *pid in (n for n in news if isinstance(n, tuple)):
                                    if pid and pid[0]:   # its mlrun, writing in this runs folder
                                        mlruns[point_id] = (where.split("@")[0], pid[0], time.time())
                                    if point_id not in seen:
                                        seen.add(point_id)
                                        on_event("started", by_id[point_id], None)
                            # a queued point ended by Ray's error as its node went down never ran: when the head
                            # went too, it stays pending (it was failed, as if it had run)
                            died = [e for e in (_ray_error(ray, r) for r in ready if refs[r][0].point_id not in seen)
                                    if e is not None]
                            went = _went(gcs, died) if died else None
                            if went:
                                raise ClusterGone(went)
                        except (ray.exceptions.RayError, ClusterGone) as e:   # the cluster went (its head stopped)
                            said = str(e) if isinstance(e, ClusterGone) else type(e).__name__
                            why = f"the Ray cluster went while it ran ({said})"
                            for task, node_id in [(t, n) for t, n in refs.values() if t.point_id in seen]:
                                yield self._finish(remote.lost(task, (node_id or "-")[:8], why, log_dir=self.log_dir),
                                                   task, seen, on_event)
                            # the points that had not started stay pending (were: failed, as if they had run)
                            unstarted = [t for t, _ in refs.values() if t.point_id not in seen] + list(measuring)
                            refs.clear()
                            measuring.clear()
                            if unstarted:
                                raise MlrunError(f"the Ray cluster went while the sweep ran ({said}); "
                                                 f"{plural(len(unstarted), 'point')} that had not started stay pending",
                                                 hint="start the cluster again and run the same command: the sweep "
                                                      "goes on from there")
                            break
                        for ref in ready:
                            task, node_id = refs.pop(ref)
                            busy.discard(node_id)
                            error = _ray_error(ray, ref) if task.measures and node_id else None
                            if task.point_id not in seen and type(error).__name__ in NODE_GONE:
                                # sent to a node that died before the point started: it never ran; another node
                                # takes it (it was failed, "node ... doesn't exist any more", the head free)
                                nodes.pop(node_id, None)
                                checked = 0   # the nodes asked again now, not in NODES_EVERY_S
                                measuring.appendleft(task)
                                continue
                            outcome = _outcome(ray, ref, task, node_id, settings.runs, self.log_dir,
                                               mlruns.get(task.point_id))
                            if type(error).__name__ == "NodeDiedError":   # died under a point that ran
                                nodes.pop(node_id, None)   # no measuring point is sent there again
                                checked = 0
                            yield self._finish(outcome, task, seen, on_event)
                finally:
                    stop.close()
                    for ref in refs:   # Ctrl-C: the workers stop their mlrun (recorded as interrupted)
                        ray.cancel(ref)
                    if refs:
                        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=30)
                        for ref in ready:   # ended before the cancel reached it: its answer is there
                            try:
                                result = ray.get(ref, timeout=5)
                            except ray.exceptions.RayError:   # cancelled: its outcome comes by the queue
                                continue
                            task, _ = refs.pop(ref)
                            self._finish(remote.outcome(result, settings.runs, self.log_dir), task, seen, on_event)
                        # only the points that started can hand an outcome over (a queued one never ran)
                        self._link_stopped(ray, started, waiting, {t.point_id for t, _ in refs.values()} & seen,
                                           by_id, settings, seen, on_event)
            finally:
                ray.shutdown()

    def _link_stopped(self, ray, queue, waiting, stopped, by_id, settings, seen, on_event):
        """The outcomes the cancelled points handed over (node.run_point's on_stop): each stopped point is linked
        to its run, recorded interrupted by its mlrun. One whose worker died unheard stays 'the sweep was stopped'."""
        deadline = time.monotonic() + STOP_LINK_S   # the workers' puts may reach the queue after their tasks end
        while stopped and time.monotonic() < deadline:
            try:
                items = queue.get_nowait_batch(queue.qsize())
                if waiting is not None and ray.wait([waiting], timeout=0)[0]:   # the waiting get took one
                    items, waiting = [ray.get(waiting, timeout=ASK_S), *items], None
            except Exception:   # the queue's actor went with the cluster: nothing more to link
                return
            for item in items:
                if isinstance(item, dict) and item.get("point_id") in stopped:
                    stopped.discard(item["point_id"])
                    task = by_id[item["point_id"]]
                    self._finish(remote.outcome(item, settings.runs, self.log_dir), task, seen, on_event)
            if stopped and not items:
                time.sleep(0.2)

    @staticmethod
    def _finish(outcome, task, seen, on_event):
        if task.point_id not in seen:   # it ended before saying it started (its worker died)
            seen.add(task.point_id)
            on_event("started", task, None)
        on_event("finished", task, outcome)
        return outcome


class ClusterGone(Exception):
    """The cluster's head stopped answering while the sweep ran."""


def _started_news(ray, started, gcs):
    """What the workers said since the last look (the points that started), asked with a time limit: a call to
    the queue's actor waited without end once the head was gone, until Ray ended this process after 60 s (exit 1,
    the points left 'running'), before the head check could see it."""
    try:
        count = ray.get(started.actor.qsize.remote(), timeout=ASK_S)
        return ray.get(started.actor.get_nowait_batch.remote(count), timeout=ASK_S) if count else []
    except ray.exceptions.GetTimeoutError:
        if gcs and not _listening(gcs):
            raise ClusterGone(f"its head at {gcs} stopped answering") from None
        return []   # a slow answer from a cluster that is there: asked again at the next poll


# A task's errors that say its node went before it ran (a measuring point sent there by node affinity)
NODE_GONE = ("TaskUnschedulableError", "NodeDiedError")


def _ray_error(ray, ref):
    """The Ray error a finished task ended with (its worker or node died, it was cancelled...), else None."""
    try:
        ray.get(ref, timeout=ASK_S)
    except ray.exceptions.RayError as e:
        return e
    return None


def _went(gcs, errors, within=ASK_S):
    """How the cluster went, given the Ray errors its tasks just ended with, or None while it is there: a driver
    whose own raylet died has lost it; else the head's port is asked for a while (a node's death is told before
    the head's port closes)."""
    if any(type(e).__name__ == "LocalRayletDiedError" for e in errors):
        return "the Ray node of this machine died"
    deadline = time.monotonic() + within
    while gcs:
        if not _listening(gcs, timeout=1):
            return f"its head at {gcs} stopped answering"
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
    return None


def _listening(address, timeout=2):
    """Whether something takes connections at HOST:PORT."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def _stop_handlers():
    """mlrun's handlers of its stop signals (engine.guard), {} off the main thread (none of ours to keep)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}


def _restore(handlers):
    """ray.init puts its own handler under SIGTERM (it exited the sweep with a stack dump, leaving its points
    'running'): mlrun's go back, so a stopped sweep records its points as interrupted, as a local one does."""
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


class _Deferred:
    """While the points run, a stop signal is noted and raised by check() from the loop's own code: raised from
    the handler, it surfaced inside Ray's calls, which swallowed it (the sweep ran on, deaf to signals)."""

    def __init__(self):
        self.signum = None
        self.before = {s: signal.signal(s, self._note) for s, handler in _stop_handlers().items()
                       if handler not in (None, signal.SIG_IGN)}

    def _note(self, signum, frame):
        self.signum = self.signum or signum

    def check(self):
        if self.signum:
            raise Interrupted(self.signum)

    def close(self):
        """mlrun's handlers back; after a stop, the signals stay ignored while the points stop (as engine.guard's)."""
        for signum, handler in self.before.items():
            signal.signal(signum, signal.SIG_IGN if self.signum else handler)


def _reachable(address, timeout=10):
    """A usage error, in seconds, when the address is not HOST:PORT (or "auto") or nothing listens there
    (ray.init would try for a minute and a half, or wait for minutes)."""
    if address == "local":   # ray.init's word for a new cluster of this process
        return
    told = ""
    if address == "auto":   # the cluster `ray start` last recorded here: one left by a stopped cluster hung ray.init
        try:
            from ray._private.utils import get_ray_address_file, read_ray_address
            address, told = read_ray_address(), f" (recorded in {get_ray_address_file(None)})"
        except Exception:   # another Ray: it says itself what it finds
            return
        if not address:
            return   # none recorded: ray.init says so at once
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"Ray address {address!r}{told}: expected HOST:PORT"
                         + (" (from RAY_ADDRESS)" if address == os.environ.get("RAY_ADDRESS") else ""),
                         hint="--on ray:HOST:6379 names the cluster's GCS port, --on ray://HOST:10001 its Ray Client "
                              "port; --on ray alone uses RAY_ADDRESS, else the cluster started on this machine")
    hint = ("is the cluster up (`ray status`)? --on ray:HOST:PORT names its GCS port (6379 by default), "
            "--on ray://HOST:PORT its Ray Client port (10001)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            speaks = _speaks_grpc(conn)
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address}{told}: {e.strerror or e}", hint=hint) from None
    if not speaks:   # ray.init would wait on it for ever, printing Ray's warnings
        raise UsageError(f"{address}{told} answers, but not as a Ray cluster (no gRPC server there)", hint=hint)


def _speaks_grpc(conn, timeout=5):
    """Whether what listens on conn is an HTTP/2 server, as Ray's GCS and client servers (gRPC) are: it answers
    the client preface with a SETTINGS frame (type 4) at once."""
    conn.settimeout(timeout)
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    head = b""
    try:
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:   # a timeout: nothing answered
        return False
    return head[3] == 4


def _cpus_by_node(ray):
    return {n["NodeID"]: int(n["Resources"].get("CPU", 0)) for n in ray.nodes()
            if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1}


def _outcome(ray, ref, task, node_id, runs, log_dir, mlrun=None):
    try:
        return remote.outcome(ray.get(ref), runs, log_dir)
    except ray.exceptions.RayError as e:   # the worker or its node died, the task was cancelled...
        reason = str(e).strip().splitlines()
        # its run, where the worker's mlrun wrote in this runs folder (the point named none: its link was lost)
        run_id = node.run_of_process(runs, mlrun[1], mlrun[2] - 60, host=mlrun[0]) if mlrun else None
        return remote.lost(task, node_id[:8] if node_id else "-",
                           f"the Ray task of point {task.point_id} failed: {type(e).__name__}: "
                           f"{reason[-1] if reason else ''}", log_dir=log_dir, run_id=run_id)
