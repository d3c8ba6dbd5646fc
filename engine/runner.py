"""Execute a plan: each node in dependency order, cached nodes skipped.

A cacheable node is built in a temporary folder under its entry lock and
published by rename; a node with `cache: false` (a benchmark run) runs in the
run folder `runs/<id>/<recipe>/`. Every step leaves the exact command and
environment beside its log so a person can re-run it by hand. While the run
builds a node, up to `jobs - 1` threads build later nodes that are ready
(_build_alongside: a download beside a pip install); while another mlrun builds
a node, the run builds later nodes that are ready (_build_aside).
"""
import errno
import json
import os
import re
import shlex
import signal
import sys
import threading
import time

from . import digests, envs, guard, integrity, records, secrets, usage
from .cache import META_DIR, UNDIGESTED, few, read_entry, removal_command, write_json
from .errors import MlrunError, StepError, UnrecordableFileError, UsageError, printable

TAIL_LINES = 20
LINE_SHOWN = 500   # characters of one line of a step's output that mlrun quotes (a 50 MB line printed 8 KB)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")   # all but tab


def printable_line(text):
    """Text of a step's (its output, a command line) as mlrun prints or records it itself: control characters
    (escape sequences, BEL, backspace) as \\xNN, and bytes that are not UTF-8 too: they drove the terminal."""
    return CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", printable(text))


def _duration(seconds):
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


class RunReporter:
    """Prints one status line per step on stderr; subclass to record or silence."""
    HEARTBEAT_S = 60

    def __init__(self, stream=None, heartbeat=None):
        self.stream = stream or sys.stderr
        self.heartbeat = self.HEARTBEAT_S if heartbeat is None else heartbeat
        self._beating = {}   # thread -> the event that stops the heartbeat of its step under way
        # a line is printed whole, never cut by a beat or by a step built alongside (re-entered by stop_heartbeat)
        self._printing = threading.RLock()
        self._shown = 0   # the width of a terminal's line under way, which the final one replaces
        self._under_way = {}   # thread -> its terminal line under way: shown again below another step's final line

    def line(self, text):
        with self._printing:
            self.stop_heartbeat()
            print(text, file=self.stream, flush=True)

    def step(self, i, total, node, status, detail="", final=True, log=None):
        """One line per step; a not-yet-final line ('building') only shows on a terminal, then is overwritten.
        Elsewhere (a log file, CI, a batch job) a step still under way says so every minute, with its log."""
        with self._printing:
            self._step(i, total, node, status, detail, final, log)

    def _step(self, i, total, node, status, detail, final, log):
        self.stop_heartbeat()
        self._under_way.pop(threading.get_ident(), None)
        text = f"[{i}/{total}] {node.label:<48} {status}{'  ' + detail if detail else ''}"
        tty = self.stream.isatty()
        if not final:
            if tty:
                print(text, end="\r", file=self.stream, flush=True)
                self._shown = len(text)
                self._under_way[threading.get_ident()] = text
            elif self.heartbeat:
                self._start_heartbeat(f"[{i}/{total}] {node.label:<48} {status}", log)
            return
        if tty and os.environ.get("TERM") == "dumb":   # no escape codes there: spaces cover the line under way
            text = text.ljust(self._shown)
        elif tty:
            text = "\x1b[2K" + text
        print(text, file=self.stream, flush=True)
        self._shown = 0
        if tty and self._under_way:   # a step built alongside ended: the line of one still under way, again
            again = list(self._under_way.values())[-1]
            print(again, end="\r", file=self.stream, flush=True)
            self._shown = len(again)

    def _start_heartbeat(self, head, log):
        stop, started = threading.Event(), time.time()
        self._beating[threading.get_ident()] = stop

        def beat():
            while not stop.wait(self.heartbeat):
                with self._printing:
                    if stop.is_set():
                        return
                    print(f"{head} for {time.time() - started:.0f} s" + (f"  log: {log}" if log else ""),
                          file=self.stream, flush=True)
        threading.Thread(target=beat, name="mlrun-heartbeat", daemon=True).start()

    def stop_heartbeat(self):
        """Stop the heartbeat of this thread's step (a step built alongside has its own)."""
        self._under_way.pop(threading.get_ident(), None)
        stop = self._beating.pop(threading.get_ident(), None)
        if stop is not None:
            stop.set()
            with self._printing:   # a beat being printed ends first
                pass


def _new_step(node):
    """A step of the run record, before it runs: the node it is and, once it ends, status, path, seconds."""
    return {"recipe": node.name, "label": node.label, "key": node.key, "node": node.to_dict()}


class Failed:
    """A node built alongside that failed: its error is the run's when the run reaches the node."""

    def __init__(self, node, error, seconds):
        self.node, self.error, self.seconds = node, error, seconds


class Alongside:
    """The state of a run's builds alongside its main thread, shared under one lock."""

    def __init__(self):
        # re-entrant: a stop signal landing between a `with` block's acquire and its body leaves the main thread
        # holding it (a Python race), and the run's end, which takes it again, must not hang on itself
        self.lock = threading.RLock()
        self.idle = threading.Condition(self.lock)   # notified as each thread ends
        self.threads = 0         # threads building alongside now
        self.ends = {}           # node key -> set once its build alongside has ended (built, failed or stopped)
        self.failed = {}         # node key -> Failed
        self.building = None     # the main thread's node: never picked alongside
        self.paused = False      # a run-folder step runs: nothing new starts
        self.closed = False      # the run is ending: nothing new starts
        self.halt = threading.Event()   # stop the steps under way (Ctrl-C)

    def claim(self, node):
        """The main thread's next node: never picked alongside from now (its lock would look taken by another
        mlrun). If a thread builds it alongside now, the event that says its build ended; else None."""
        with self.lock:
            end = self.ends.get(node.key)
            if end is None:
                self.building = node.key
            return None if end is None or end.is_set() else end

    def first_failed(self, nodes):
        with self.lock:
            return next((self.failed[n.key] for n in nodes if n.key in self.failed), None)

    def settle(self, timeout=None):
        """Until no thread builds alongside (each ends when nothing is ready; none starts meanwhile)."""
        with self.idle:
            self.paused = True
            self.idle.wait_for(lambda: self.threads == 0, timeout)
            self.paused = False


_alongside = threading.local()   # .active in a thread building alongside


JOBS = 2   # steps built at once by default: a download or a pip install waits on the network and disk most of its time


def jobs_given(given):
    """--jobs's value (None: not given), else $MLRUN_JOBS, else JOBS: a whole number from 1 (a usage error if not)."""
    where = "--jobs"
    if given is None:
        given, where = os.environ.get("MLRUN_JOBS") or None, "MLRUN_JOBS"
    if given is None:
        return JOBS
    try:
        jobs = int(given)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise UsageError(f"{where} {given!r}: give a whole number of entries built at once, 1 or more",
                         hint="--jobs 1 builds one entry after another")
    return jobs


def new_run_id():   # gc.RUN_ID matches these names
    return time.strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


class Runner:
    def __init__(self, cache, runs_dir, reporter=None, verbose=False, mirror=None,
                 host_env=None, stream_root=True, live_out=None, jobs=JOBS, timeout=None):
        self.cache = cache
        self.timeout = timeout   # seconds each step's command may run (--timeout); a recipe's own, if smaller
        self.jobs = jobs   # cache entries built at once: the main thread's and up to jobs - 1 alongside
        # where a live step's output goes: stdout, or stderr where stdout is for --json alone (-v broke the JSON)
        self.live_out = live_out
        self.runs_dir = os.path.abspath(runs_dir)
        self.reporter = reporter or RunReporter()
        self.verbose = verbose
        self.mirror = mirror
        self.host = dict(os.environ if host_env is None else host_env)
        self.stream_root = stream_root   # show the last step's output live (the benchmark)
        self.folders = {}                # node key -> its folder (entry or run folder)
        self.first_record = None         # run.json as first written: its space holds a full disk's last word
        self._along = Alongside()

    def run(self, plan, argv=None, extra=None):
        """Run every node; returns the run record (also written to runs/<id>/run.json, with `extra`)."""
        from .cache import shared_dir
        shared_dir(self.runs_dir, said=True)   # the group's, as the cache: a teammate's runs go there too
        while True:
            run_id = new_run_id()
            run_dir = os.path.join(self.runs_dir, run_id)
            try:
                os.makedirs(run_dir)
                break
            except FileExistsError:  # another mlrun started in the same second and drew the same suffix
                continue
        record = {"format": records.RECORD_FORMAT, "id": run_id, "argv": secrets.scrub_argv(argv or sys.argv),
                  "query": plan.query, "request": plan.request, "cwd": os.getcwd(), "started": time.time(),
                  "status": "running", "process": guard.identity(os.getpid()), "host": records.host_facts(),
                  # which mlrun made it: a replay refused for changed recipes says which one to replay it with
                  "mlrun": usage.recorded_version(),
                  "recipes": {}, **(extra or {}), "steps": [],
                  # What was asked, whole, from the start: a run that fails early keeps its mode and scenario,
                  # and `runs show` lists the steps it never reached.
                  "root": root_facts(plan.root), "planned": [n.label for n in plan.nodes]}
        self.record = record  # the caller's view of a run that raised (`run --json` still names it)
        # Written first: however this run ends, even killed, its folder holds a record `mlrun runs` can judge.
        record_path = os.path.join(run_dir, "run.json")
        import shutil
        try:
            write_json(record_path, record)
            self.first_record = json.dumps(record, default=str)   # on disk, indented: a compact fallback fits there
        except OSError as e:  # nothing ran yet: leave no folder without a record
            shutil.rmtree(run_dir, ignore_errors=True)
            from .oserrors import explain
            raise explain(e, "cannot write the run record", record_path) from None
        total = len(plan.nodes)
        folders = step_folders(plan)
        # this run's nodes built while it waited (_build_aside) or alongside, and the one under way: none left from
        # an earlier run
        self._nodes, self._aside, self._built_aside = plan.nodes, None, {}
        self._along = Alongside()
        try:
            try:
                record["recipes"] = records.snapshot_recipes(plan, run_dir)
                # on disk at once: a run killed later (SIGKILL, a node lost) kept "recipes": {}, and its replay after
                # a `git pull` said "the local ones are the recorded ones" and ran the new ones as exact
                try:
                    write_json(record_path, record)
                    self.first_record = json.dumps(record, default=str)
                except OSError:
                    pass   # a full disk: the first record stands, and the end says how the run ended
            except MlrunError:   # a full disk before any step ran: no folder left (it showed 'died' for ever)
                shutil.rmtree(run_dir, ignore_errors=True)
                record_path = None
                raise
            for node in plan.nodes:   # every entry the plan names, from the start: gc removed one planned for a
                if node.cache:        # later step while an earlier one built (it was rebuilt, or failed offline)
                    self.cache.use(node)
            for i, node in enumerate(plan.nodes, 1):
                end = self._along.claim(node)
                while end and not end.is_set():   # built alongside now: the run builds another ready node meanwhile
                    with self._along.lock:
                        picked = self._next_alongside()
                    if picked:
                        self._build_picked(*picked, total)
                        continue
                    if getattr(self.reporter, "stream", sys.stderr).isatty():   # its line was overwritten since
                        self.reporter.step(i, total, node, "building", "(alongside)", final=False)
                    end.wait()
                failed = self._along.first_failed(plan.nodes)
                if failed:   # a step built alongside failed: the run stops there, the plan's order kept
                    record["steps"] += self._steps_between(i - 1, failed.node)
                    t0 = time.time() - failed.seconds   # its own time, to its failure
                    raise failed.error
                step = _new_step(node)
                record["steps"].append(step)
                t0 = time.time()
                is_root = i == total
                if node.cache:
                    if node.alone:   # it measures while it builds: nothing built beside it
                        self._along.settle()
                    aside = self._built_aside.pop(node.key, None)
                    if aside:   # built while this run waited for another mlrun's build of an earlier node, or alongside
                        step["status"], self.folders[node.key] = aside.get("status", "built"), aside["path"]
                        t0 = time.time() - aside["seconds"]
                    else:
                        try:
                            step["status"], self.folders[node.key] = self._cached_or_build(node, i, total, is_root)
                        except BaseException:
                            if self._aside:   # what failed (or was stopped): a later node, built while this one waited
                                aside_node, started = self._aside
                                step.update(status="waiting", seconds=round(started - t0, 3))
                                record["steps"] += self._steps_between(i, aside_node)   # the plan's order kept
                                t0 = started
                            raise
                    # which build of the key: `export --with-cache` packed a rebuild (same key, other files) as this
                    built = read_entry(self.folders[node.key]) or {}
                    if built.get("entry_digest"):
                        step["entry_digest"] = built["entry_digest"]
                else:
                    self._along.settle()   # a run-folder step (a benchmark) runs alone: nothing built beside it
                    folder = os.path.join(run_dir, folders[node.key])
                    try:
                        meta = self._build(node, folder, i, total, is_root)
                    except (StepError, KeyboardInterrupt):   # a step may fail on its results (--strict), or be
                        # stopped having written some (a QA session's answers so far): they are still the run's
                        if node.record:   # half-written results are none (a record of them could not be read)
                            step["record"] = {field: value for field, value in records.collect(folder, node.record)
                                              .items() if field != "results" or isinstance(value, dict)}
                        raise
                    write_json(os.path.join(folder, META_DIR, "step.json"), meta)
                    step["status"], self.folders[node.key] = "ran", folder
                step["seconds"] = round(time.time() - t0, 3)
                step["path"] = self.folders[node.key]
                if node.record:
                    try:
                        step["record"] = records.collect(step["path"], node.record, strict=True)
                    except ValueError as e:   # results nobody can read are a failed step, not an ok run
                        raise StepError(f"step {node.label}: {e}", hint=f"its folder: {step['path']}") from None
                    unwritten = [name for field, name in node.record.items() if field not in step["record"]]
                    if unwritten:   # a misspelt name under record: went unnoticed, the record empty
                        self.reporter.line(f"note: {node.label} wrote no {', '.join(unwritten)}, which its recipe "
                                           "records (record:): the run's record holds nothing of it")
            record["status"] = "ok"
        except StepError as e:
            # exit 2 (a step refusing this machine or request, a full disk, a limit): not carried out, as mlrun's
            # own exit code says; exit 1: the step ran and failed
            record["status"], record["error"] = "failed" if e.exit_code == 1 else "error", e.message
            if getattr(e, "log", None) and record["steps"] and "status" not in record["steps"][-1]:
                record["steps"][-1]["log"] = e.log
            raise
        except KeyboardInterrupt as e:
            record["status"], record["error"] = "interrupted", f"interrupted by {guard.signal_name(e)}"
            raise
        except BaseException as e:
            record["status"], record["error"] = "error", describe_error(e)
            raise
        finally:
            self._end_alongside(record["status"])
            record["finished"] = time.time()
            if record["steps"] and "status" not in record["steps"][-1]:  # the step that failed or was stopped
                record["steps"][-1].update(status=record["status"],
                                           seconds=round(record["finished"] - t0, 3))
            ahead = [{"label": n.label, "key": n.key, "seconds": a["seconds"], "path": a["path"]}
                     for n in plan.nodes for a in [self._built_aside.get(n.key)] if a and "status" not in a]
            if ahead:   # built while it waited, and published, but after the step it stopped at: not "not run"
                record["built_meanwhile"] = ahead
            steps = {step["key"] for step in record["steps"]}
            ended = [{"label": n.label, "key": n.key, "status": _stopped_why(f.error), "seconds": round(f.seconds, 3),
                      **({"log": f.error.log} if isinstance(getattr(f.error, "log", None), str) else {})}
                     for n in plan.nodes for f in [self._along.failed.get(n.key)] if f and n.key not in steps]
            if ended:   # built alongside, and stopped with the run (Ctrl-C) or failed as it ended: not "not run"
                record["failed_meanwhile"] = ended
            record["packages"] = records.packages(record)
            record["results"] = (record["steps"][-1].get("record") or {}).get("results") if record["steps"] else None
            self.cache.release_uses()
            if record_path:   # (a Ctrl-C while the recipes were copied: an interrupted run, recorded so)
                self._write_record(record_path, record)
        record["run_dir"] = run_dir
        record["exports"] = self.exports(plan.root)
        return record

    def _write_record(self, path, record):
        """The final record; if it cannot be written a run that failed keeps its own error as the cause."""
        try:
            write_json(path, record)
        except OSError as e:
            problem = f"cannot write the run record {path}: {e.strerror or e}"
            self._write_in_place(path, record)
            if record["status"] == "ok":
                raise MlrunError(problem, hint="the run succeeded; only its record is missing or incomplete") from None
            self.reporter.line(f"mlrun: {problem}")

    def _write_in_place(self, path, record):
        """On a full disk, the first record with how the run ended, over the old one's own blocks (a new file
        needs space): `mlrun runs` showed a finished run as 'died' for ever."""
        if not self.first_record:
            return
        first = json.loads(self.first_record)
        first.update({k: record.get(k) for k in ("status", "error", "finished") if k in record},
                     record_incomplete="the disk was full when the run ended: its steps and results are not here")
        text = json.dumps(secrets.scrub(first), separators=(",", ":"), default=str).encode()   # compact: it fits
        try:
            if len(text) <= os.path.getsize(path):
                with open(path, "r+b") as f:
                    f.write(text)
                    f.truncate()
        except OSError:
            pass

    def exports(self, node):
        """The root's exports resolved against its folder: what the run produced."""
        return envs.apply_exports({}, node.exports, self.folders[node.key])

    # -- one node ---------------------------------------------------------------

    def _cached_or_build(self, node, i, total, is_root):
        self.cache.use(node)   # before the lookup: `mlrun gc` never removes an entry a run uses
        path = self.cache.lookup(node)
        if path:
            _check_downloads(node, path)
            self.reporter.step(i, total, node, "cached", _short(path))
            return "cached", path
        lock = self.cache.lock(node)
        held = lock.acquire(timeout=0)
        if not held:
            self._not_our_own_build(node)
        # Another mlrun builds it: meanwhile, later nodes whose deps are done and which nobody builds (Spack's
        # rule), so runs started together on one cache build their plans side by side, not one after the other.
        while not held and self._build_aside(node, total):
            held = lock.acquire(timeout=0)
        if not held and not lock.acquire(timeout=1):
            who = self.cache.builder(node)   # which process, and its log: a stopped one held it unsaid
            if not getattr(self.reporter, "stream", sys.stderr).isatty():   # a batch log showed nothing for a minute
                self.reporter.line(f"[{i}/{total}] {node.label}: waiting: another mlrun is building it{who}")
            self.reporter.step(i, total, node, "waiting", "another mlrun is building it" + who, final=False)
            lock.acquire()
        try:
            if not node.alone:
                self._start_alongside(total)
            return self._build_held(node, i, total, is_root)
        finally:
            lock.release()

    def _not_our_own_build(self, node):
        """A step that runs mlrun needing its own entry (a recipe running its own query) waited for good on the
        lock its own build holds: the build folder of a guard above this process is node's."""
        tmp = os.path.realpath(os.path.join(self.cache.root, ".tmp"))
        for record in guard.records_above():
            folder = os.path.dirname(os.path.dirname(os.path.realpath(record)))
            if os.path.dirname(folder) == tmp and folder.rsplit(".", 1)[0] == os.path.join(tmp, node.entry_name):
                raise MlrunError(f"{node.label} is being built by the step that runs this mlrun: it would wait for "
                                "itself", hint="a step may run mlrun on other entries, not on one its own build "
                                "needs (its own query)")

    def _build_aside(self, waiting_for, total):
        """Build one later node of the plan that can be built now (_pick_ready). True if one was built."""
        picked = self._pick_ready()   # (not an alone node: another mlrun builds now)
        if picked is None:
            return False
        j, node, lock = picked
        self._aside = (node, time.time())
        try:
            status, path = self._build_held(node, j, total, False,
                                            note=f"(while another mlrun builds {waiting_for.label})")
        finally:
            lock.release()
        self.folders[node.key] = path
        if status == "built":
            self._built_aside[node.key] = {"path": path, "seconds": round(time.time() - self._aside[1], 3)}
        self._aside = None
        return True

    def _pick_ready(self, skip=()):
        """The first later node that can be built now, its lock taken: (index, node, lock), or None. Ready
        (_ready), not in the cache (one found there counts as done: nodes after it may be ready now; its step says
        cached when the run reaches it), its lock free: taken without waiting, as every lock but the one a run
        waits for (two runs never wait on each other; a taken one is another mlrun's build or this run's own)."""
        for j, node in enumerate(self._nodes, 1):
            if not self._ready(node) or node.key in skip:
                continue
            try:
                path = self.cache.lookup(node)
                if path:
                    self.folders[node.key] = path
                    continue
                lock = self.cache.lock(node)
                if not lock.acquire(timeout=0):
                    continue
            except (OSError, MlrunError):   # a cache this user may only read, a teammate's private entry: the run
                continue                    # says why when it reaches the node, in its own words
            return j, node, lock
        return None

    def _ready(self, node):
        """A node that may be built ahead of the run's own: cached, neither interactive nor alone (measuring while
        it builds), not done yet, and every dep done."""
        return (node.cache and not node.interactive and not node.alone and node.key not in self.folders
                and all(dep.key in self.folders for _, dep in node.deps))

    def _start_alongside(self, total):
        """While the main thread builds its node, up to jobs - 1 threads build later nodes that are ready."""
        along = self._along
        with along.lock:
            if along.closed or along.failed or along.paused:
                return
            for _ in range(self.jobs - 1 - along.threads):
                along.threads += 1
                try:
                    threading.Thread(target=self._build_alongside, args=(total,), name="mlrun-alongside",
                                     daemon=True).start()
                except RuntimeError:   # "can't start new thread" (a container's pids limit): one entry at a time
                    along.threads -= 1
                    break

    def _next_alongside(self):
        """A later node ready to build now (_pick_ready) that no thread builds, or None. Under along.lock."""
        along = self._along
        if along.closed or along.failed or along.paused:
            return None
        picked = self._pick_ready(skip={along.building, *along.ends})
        if picked:
            along.ends[picked[1].key] = threading.Event()
        return picked

    def _build_alongside(self, total):
        """A thread building ready nodes of the plan, one after another, until none is ready. Its steps' output
        goes to their logs (shown whole once a step ends, with -v), a download draws no bar."""
        along = self._along
        _alongside.active = True
        try:
            while True:
                with along.lock:
                    picked = self._next_alongside()
                if picked is None or not self._build_picked(*picked, total):
                    return
        finally:
            with along.lock:
                along.threads -= 1
                along.idle.notify_all()

    def _build_picked(self, j, node, lock, total):
        """Build a node picked by _next_alongside (its lock held); False if it failed (or was stopped)."""
        along, started = self._along, time.time()
        try:
            status, path = self._build_held(node, j, total, False, note="(alongside)")
        except BaseException as e:   # its failure is the run's when the run reaches it; nothing new starts
            with along.lock:
                along.failed[node.key] = Failed(node, e, time.time() - started)
            if isinstance(e, KeyboardInterrupt) and not getattr(_alongside, "active", False):
                raise   # Ctrl-C in the main thread (built while it waited): the run stops
            return False
        else:   # before its end is set: the run, waiting for it, finds it built
            with along.lock:   # (cached: another mlrun built it meanwhile, as its line said; said once)
                self._built_aside[node.key] = {"path": path, "seconds": round(time.time() - started, 3),
                                               **({} if status == "built" else {"status": status})}
                self.folders[node.key] = path
            return True
        finally:
            lock.release()
            along.ends[node.key].set()

    def _show_output(self, i, total, node, log_path):
        """-v: a step built alongside shows its output once it ends, whole (never mixed with another's)."""
        import shutil
        out = self.live_out or sys.stdout
        try:
            with open(log_path, "rb") as f, self.reporter._printing:
                header = f.readline()   # the command, which mlrun wrote first; then the output (it may be large)
                while header:   # a `run:` script of several lines spans as many, inside its quotes: shown as output
                    try:
                        shlex.split(header.decode(errors="replace"))
                        break
                    except ValueError:   # its quotes not closed yet
                        more = f.readline()
                        header = more and header + more
                self.reporter.step(i, total, node, "output (built alongside):")
                shutil.copyfileobj(f, out.buffer)
                out.flush()
        except OSError:
            return

    def _end_alongside(self, status):
        """The run ends: steps built alongside end first. A failure waits for them (their work is kept, as make's
        "waiting for unfinished jobs"); a stop (Ctrl-C) stops them."""
        along = self._along
        with along.lock:
            along.closed = True
            running = [n.label for n in self._nodes if n.key in along.ends and not along.ends[n.key].is_set()]
        if not running:
            return
        if status != "interrupted":
            self.reporter.line(f"waiting for the steps built alongside to end: {', '.join(running)}")
            try:
                along.settle()
                return
            except KeyboardInterrupt:
                pass
        along.halt.set()   # each such step is stopped by its own thread (its guard), and set aside
        along.settle(timeout=guard.GRACE + 15)

    def _steps_between(self, start, failed):
        """The steps of plan nodes from index `start` up to `failed` (a node built meanwhile or alongside that
        failed), each as far as it got; the failed one's status is the run's."""
        nodes = self._nodes[start:self._nodes.index(failed) + 1]
        steps = [_new_step(n) for n in nodes]
        for n, step in zip(nodes[:-1], steps):
            aside = self._built_aside.pop(n.key, None)
            if aside:
                step.update(status=aside.get("status", "built"), path=aside["path"], seconds=aside["seconds"])
            elif n.key in self.folders:
                step.update(status="cached", path=self.folders[n.key], seconds=0.0)
            else:
                step.update(status="not run")
        return steps

    def _build_held(self, node, i, total, is_root, note=""):
        """Build node under its lock (held by the caller), unless another mlrun built it first."""
        path = self.cache.lookup(node)  # built by the process we waited for
        if path:
            _check_downloads(node, path)
            self.reporter.step(i, total, node, "cached", "(built by another mlrun) " + _short(path))
            return "cached", path
        build_dir = self.cache.new_build_dir(node)
        meta = self._build(node, build_dir, i, total, is_root, final=self.cache.path(node))
        changed = _changed_recipe_files(node)
        if changed:   # the step ran files other than the key hashed: its output is not that key's
            log = self._set_aside(build_dir, node) or os.path.join(build_dir, META_DIR, "build.log")
            raise StepError(f"step {node.label}: {few(changed)} of its recipe changed while it was built; "
                            "what it built may not be what its key says, so nothing was published",
                            hint="if the step writes into its recipe's folder ($MLRUN_RECIPE_DIR), make it write "
                                 "into its entry (its working folder) instead, or every build fails so; if you "
                                 f"edited the recipe meanwhile, run again (log: {log})")
        moved = _changed_contents(node)
        if moved:   # a sweep plans every point first: the file may be re-exported long before a step reads it
            log = self._set_aside(build_dir, node) or os.path.join(build_dir, META_DIR, "build.log")
            raise StepError(f"step {node.label}: {few(moved)} changed after mlrun planned it (its content is "
                            "no longer what the key holds), so what the step read may not be that content: "
                            "nothing was published",
                            hint=f"run again once the file stays as it is: the plan keys it by its bytes, and "
                                 f"the step reads it later (log: {log})")
        try:
            path = self.cache.publish(build_dir, node, meta)
        except BaseException as e:   # a signal or a full disk while hashing: no leftover in .tmp
            self._set_aside(build_dir, node, e)
            raise
        self.reporter.step(i, total, node, f"built in {time.time() - meta['started']:.1f} s",
                          " ".join(filter(None, (_short(path), note))))
        return "built", path

    def _build(self, node, folder, i, total, is_root, final=None):
        """Fetch downloads and run the command in folder; returns the step's metadata."""
        os.makedirs(os.path.join(folder, META_DIR), exist_ok=True)
        recipe_dir = os.path.dirname(node.recipe_path)
        chain = envs.dependency_chain(node, self.folders)
        env = envs.step_env(node, chain, self.host, folder, recipe_dir, self.mirror)
        argv = envs.command(node, env, folder, recipe_dir) if node.run else None
        meta_dir = os.path.join(folder, META_DIR)
        log_path = os.path.join(meta_dir, "build.log")
        started = time.time()
        alongside = getattr(_alongside, "active", False)
        live = not alongside and (self.verbose or (is_root and self.stream_root))
        # A step whose output shows live gets its line first; others get one line when done.
        self.reporter.step(i, total, node, "building" if node.cache else "running", final=live and bool(argv),
                           log=log_path)
        try:
            open(log_path, "ab").close()  # a kept failure always has its log, even one that never ran a command
            # within the try: a full disk here is a build that failed (set aside), not a leftover in .tmp
            _write_file(os.path.join(meta_dir, "env.sh"), envs.env_file(env, node.pass_env or (), folder, final))
            _write_rerun_script(meta_dir, argv, folder)
            for item in node.download:
                self._download(item, folder, progress=False if alongside else None)   # one bar: the main step's
            if argv:
                # A live step may draw progress on mlrun's terminal: its own output is a pipe into the log.
                tty = live and _terminal()
                self._execute(argv, dict(env, MLRUN_PROGRESS=tty) if tty else env, folder, log_path, live,
                              interactive=is_root and node.interactive, stop=self._along.halt if alongside else None,
                              beside=bool(final) and self.jobs > 1, label=node.label,
                              timeout=min(filter(None, (self.timeout, node.timeout)), default=None))
                if alongside and self.verbose:
                    self._show_output(i, total, node, log_path)
            # `rm -rf .mlrun`, its own folder, or a file or link put in its place: an "environment" error (exit 2),
            # or a link published as the entry and the folder it names sealed read-only
            if os.path.islink(folder) or os.path.islink(meta_dir) or not os.path.isdir(meta_dir):
                _make_again(folder, meta_dir)
                raise StepError(REMOVED, hint="a step writes in its folder; it removes nothing mlrun made there")
            if final:  # a FIFO would hang the hashing, a name that is not UTF-8 the records: fail the step
                digests.check_tree(folder, skip=UNDIGESTED)   # its .mlrun/ too: publishing hashes it
            self._check_deps(node)
            missing = _missing_exports(node, folder)
            if missing:   # a typo, or a file the step failed to make: its users would find nothing there, unsaid
                self.reporter.line(f"note: {node.label} exports " + ", ".join(f"{k} naming {p}" for k, p in missing)
                                   + ", which it did not make" + (" (an entry never changes)" if final else ""))
            if node.record:   # before it is published: an entry whose record cannot be read failed every run after
                try:
                    records.collect(folder, node.record, strict=True)
                except ValueError as e:
                    raise StepError(str(e), hint="the step's recipe says it writes it (record:)") from None
            unmasked = []
            masked = secrets.mask_files(folder, env, skip={META_DIR}, unmasked=unmasked)
            if unmasked:   # published, the entry (and a bundle of it) would carry the secret
                raise StepError(f"{node.label} wrote a secret of its environment into {few([f for f, _ in unmasked])}, "
                                f"which mlrun could not mask ({unmasked[0][1]}): nothing was published",
                                hint="make the step leave its files and folders writable by its user, or write no "
                                     "secret into them")
            if masked:   # a model source's record kept HF_ENDPOINT's password, and a bundle carried it
                self.reporter.line(f"note: {node.label} wrote a secret of its environment into {few(masked)}: "
                                   "masked there (mlrun keeps no secret in what it stores)")
        except (StepError, UnrecordableFileError) as e:
            if isinstance(e, UnrecordableFileError):   # named in the entry: its .tmp/ path is gone once set aside
                rel = printable(os.path.relpath(e.path, folder))
                e.message = f"{rel} in its folder{e.message[len(printable(e.path)):]}"
            _mask_quietly(folder, env)   # a failed uncached step's folder stays in the run, and `export` carries it
            with open(log_path, "a") as log:  # the cause too: a failed download prints nothing of its own
                log.write(secrets.scrub(f"mlrun: {e.message}\n"))
            seconds = time.time() - started
            kept = (self._set_aside(folder, node) or log_path) if final else log_path
            tail = _tail(kept)
            self.reporter.step(i, total, node, f"FAILED after {seconds:.1f} s", f"log: {kept}")
            # A live step's output was just shown where these lines go: its tail again said the error thrice.
            if tail and not (live and _one_destination(self.live_out or sys.stdout)):
                self.reporter.line("    " + "\n    ".join(tail))
            # A step that said why (an `error: ` line, as mlrun's own steps do) is quoted: a sweep's point, a
            # submission's run and the last line of a failed run give the cause, not only an exit code.
            said = _errors_said(tail)
            why = f": {said[-1][:300]}" if said and e.message.startswith("exited with code") else ""
            # A step's own exit 78 (it refused this machine or request) stays 2; an unrecordable output is the
            # step's fault.
            # the log always named: a hint (SIGKILL's, a removed folder's) took its place
            hint = f"{e.hint}; full log: {kept}" if e.hint and kept not in e.hint else e.hint or f"full log: {kept}"
            failed = StepError(f"step {node.label} failed: {e.message}{why}", hint=hint,
                               exit_code=e.exit_code if isinstance(e, StepError) else StepError.exit_code)
            failed.log = kept   # the run's record names it: `export` carries a kept log (.failed/) with the run
            if why and live and _one_destination(self.live_out or sys.stdout):
                # its error and hint were just shown, live, above mlrun's line: said once (the record keeps it whole)
                failed.on_screen = f"step {node.label} failed, as it said above: {e.message}"
                failed.hint_on_screen = bool(e.hint) and f"hint: {e.hint}" in tail
            raise failed from None
        except BaseException as e:
            self.reporter.stop_heartbeat()
            _mask_quietly(folder, env)
            if final:
                self._set_aside(folder, node, e)
            raise
        seconds = time.time() - started
        if not final:   # a cache entry's line comes once it is published (publishing hashes it)
            self.reporter.step(i, total, node, f"done in {seconds:.1f} s", _short(folder))
        return {"recipe": node.name, "version": node.version, "tags": node.tags, "variations": node.variations,
                "inputs": node.inputs, "key": node.key, "material": node.material, "node": node.to_dict(),
                **({"recipe_files": node.recipe_files} if node.recipe_files else {}),   # for `explain`
                "exports": node.exports, "command": argv, "env": secrets.redacted(env, node.pass_env or ()),
                "started": started,
                "finished": time.time(), "seconds": round(seconds, 3)}

    def _set_aside(self, folder, node, error=None):
        """Keep a failed or stopped build's log in .failed (its path, or None). When that fails too (the cache
        root turned unwritable, a full disk), what stopped the build is the error to show: the leftover stays
        in .tmp for gc."""
        try:
            return self.cache.keep_failed(folder, node, why=_stopped_why(error) if error else "failed")
        except OSError:
            return None

    def _check_deps(self, node):
        """A step must not have changed the entries of its dependencies (they are shared and read-only)."""
        for folder, dep in {folder: dep for dep, folder in envs.dependency_chain(node, self.folders)}.items():
            problems = integrity.stat_problems(folder) if dep.cache else []
            if problems:
                raise StepError(f"it changed the cache entry {folder} of its dependency {dep.label} "
                                f"({few(problems)})",
                                hint=f"a step writes only into its own folder ($MLRUN_ENTRY); "
                                     f"remove the damaged entry with `{removal_command(folder)}`")

    def _download(self, item, folder, progress=None):
        from .download import fetch  # requests is only imported when something is downloaded
        fetch(item["url"], os.path.join(folder, item["file"]), sha256=item.get("sha256"), md5=item.get("md5"),
              size=item.get("size"), mirror=self.mirror, partial_dir=self.cache.partial_dir(), progress=progress,
              index_path=os.path.join(self.cache.root, ".index", "mirror-hashes.json"))

    def _execute(self, argv, env, cwd, log_path, live, interactive=False, stop=None, beside=False, label="",
                 timeout=None):
        """beside: other entries may have been built at the same time (--jobs), each holding its memory."""
        import subprocess  # only steps that run pay for the import
        record = os.path.join(os.path.dirname(log_path), guard.RECORD)
        with open(log_path, "a+b") as log:   # read too: the step may remove it (_keep_log)
            log.write(secrets.scrub(f"$ {shlex.join(argv)}\n").encode())   # as a shell would take it back
            log.flush()
            try:  # through a guard: the step and all it starts die with mlrun, even of SIGKILL; the guard in
                # a session of its own, so that a SIGKILL to mlrun's process group (timeout -s KILL) spares it
                proc = subprocess.Popen(guard.command(argv, record), env=env, cwd=cwd,
                                        stdin=None if interactive else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:   # a limit of this machine or process (open files, memory, ARG_MAX): exit 2
                from .oserrors import LIMIT_HINTS
                limit = LIMIT_HINTS.get(e.errno) or (_too_long(argv, env) if e.errno == errno.E2BIG else None)
                raise StepError(f"cannot start {argv[0]}: {e.strerror}", hint=limit,
                                exit_code=2 if limit else StepError.exit_code) from None
            watch = _Watch(self.reporter, label, record, timeout)
            try:
                last = b"\n"
                for line in _lines(proc, stop, watch):
                    line = secrets.scrub_bytes(line)
                    log.write(line)
                    log.flush()   # the log is what a person follows (tail -f) while a long step runs
                    # An interactive step's error: and hint: lines become mlrun's own error (below), said once.
                    if live and not (interactive and line.startswith((b"error: ", b"hint: "))):
                        out = self.live_out or sys.stdout
                        out.buffer.write(line)
                        out.flush()
                    last = line
                if not last.endswith((b"\n", b"\r")):   # its last line unended: mlrun's own lines start on their own
                    log.write(b"\n")
                    if live:
                        (self.live_out or sys.stdout).buffer.write(b"\n")
                        (self.live_out or sys.stdout).flush()
                code = proc.wait()
            except BaseException as e:  # interrupted, timed out, or the log could not be written: stop the step
                if isinstance(e, KeyboardInterrupt):   # steps built alongside stop now, within the same grace
                    self._along.halt.set()
                guard.stop(proc, record, getattr(e, "signum", signal.SIGINT if isinstance(e, KeyboardInterrupt)
                                                 else signal.SIGTERM))
                _drain(proc, log)   # what its cleanup said (a trap on EXIT) belongs in the log too
                if isinstance(e, TimedOut):
                    raise StepError(f"timed out after {_duration(timeout)} (its group was sent SIGTERM)") from None
                raise
            finally:
                proc.stdout.close()
                guard.kill_recorded(record)  # the guard itself was killed: what it watched must not run on
                left = _read_left(record)
                gone = _keep_log(log, log_path, cwd)
        if gone and code == 0:
            raise StepError(REMOVED, hint="a step writes in its folder; it removes nothing mlrun made there")
        if code == 0 and left:   # a process it left would change the entry after it was published
            more = f" and {left['count'] - 1} more" if left["count"] > 1 else ""
            raise StepError(f"it left {left['count']} process{'es' if left['count'] > 1 else ''} running "
                            f"({printable_line(left['command'])[:200]}){more}, killed as it ended",
                            hint="a step waits for what it starts (wait, or stop its servers before it ends)")
        if code == 2 and interactive:  # the person's input was refused: their usage error, in the step's words
            tail = _tail(log_path)
            said = _errors_said(tail)
            hints = [line[len("hint: "):] for line in tail if line.startswith("hint: ")]
            raise UsageError(said[-1] if said else "the step refused its input (exit 2)",
                             hint=hints[-1] if hints else None)
        if code == EX_CONFIG:  # the step found this machine unable to run it (no GPU, no provider): exit 2
            # its own hint ends mlrun's error (it was buried in the step's output, under "hint: full log: ...")
            tail = _tail(log_path)
            hints = [line[len("hint: "):] for line in tail if line.startswith("hint: ")]
            raise StepError(describe_exit(code) + " (the step refused this machine or request"
                            + ("" if _errors_said(tail) else ": see the log") + ")",
                            hint=hints[-1] if hints else None, exit_code=2)
        last = _last_word(_tail(log_path)) if code != 0 else ""
        if any(m in last for m in FULL_DISK):
            # pip (or any tool) stopped by a full disk: this machine's trouble, exit 2, not the step's own failure.
            # Only its last word counts: a warning on the way ("could not write the http cache") is not the cause.
            raise StepError(describe_exit(code) + f" (the disk is full: {last.strip()[:200]})", exit_code=2,
                            hint="free some space on the disk that line names (the cache's, the runs folder's or "
                                 "TMPDIR's), or move that folder to another disk (--cache/--runs DIR), and run again")
        if code != 0:   # SIGKILL, or a shell's 137 for a child so killed: most often the kernel out of memory
            raise StepError(describe_exit(code), hint="SIGKILL: unless the step or someone sent it (kill -9), the "
                            "kernel's out-of-memory killer (dmesg says so) or a container's or job's memory limit: "
                            "fewer --instances, "
                            + ("--jobs 1 (one entry built at a time), " if beside else "") + "or more memory"
                            if code in (-signal.SIGKILL, 128 + signal.SIGKILL) else None)


LINE_MOST = 1 << 20   # bytes of one output line held at once: a longer one is passed on in pieces
FULL_DISK = ("No space left on device", "[Errno 28]", "Disk quota exceeded")   # strerror(ENOSPC), (EDQUOT)


REMOVED = f"it removed its own folder, its {META_DIR}/ or its log (mlrun's records of the step)"


STRING_MOST = 131072   # Linux's MAX_ARG_STRLEN: the most bytes of one argument or NAME=VALUE, whatever ARG_MAX is


def _too_long(argv, env):
    """E2BIG's hint: the argument or variable over MAX_ARG_STRLEN, else the whole over ARG_MAX."""
    over = [f"the variable {k}" for k, v in env.items() if len(os.fsencode(f"{k}={v}")) >= STRING_MOST] + \
        [f"argument {i} ({printable_line(a[:40])}...)" for i, a in enumerate(argv) if len(os.fsencode(a)) >= STRING_MOST]
    if over:
        return f"{over[0]} is over the system's limit for one argument or variable (MAX_ARG_STRLEN, " \
               f"{STRING_MOST} bytes): pass it in a file the step reads"
    return "the step's environment and command line together pass the system's limit (getconf ARG_MAX): " \
           "a smaller env, or a file the step reads"


def _missing_exports(node, folder):
    """(export, path as written) for each path in the step's folder its exports name and it did not make."""
    missing = []
    for key, value in (node.exports or {}).items():
        for path in (value.get("prepend", []) + value.get("append", []) if isinstance(value, dict) else [value]):
            if isinstance(path, str) and path.startswith("{entry}") and os.pathsep not in path \
                    and not os.path.lexists(envs.placeholders(path, folder)):
                missing.append((key, path))
    return missing


def _make_again(folder, meta_dir):
    """The step's folder and its META_DIR after the step removed them: a file (or a link) in their place, gone."""
    for made in (folder, meta_dir):
        if os.path.lexists(made) and not os.path.isdir(made) or os.path.islink(made):
            os.remove(made)
    os.makedirs(meta_dir, exist_ok=True)


def _keep_log(log, log_path, folder):
    """A step that removed its folder took its log with it: written again from the file mlrun still has open.
    True if it was gone."""
    try:
        if os.path.samestat(os.stat(log_path), os.fstat(log.fileno())):
            return False
    except OSError:
        pass
    try:
        import shutil
        _make_again(folder, os.path.dirname(log_path))
        log.flush()
        log.seek(0)
        with open(log_path, "wb") as again:
            shutil.copyfileobj(log, again)
    except OSError:
        pass   # what cannot be written again is said by the step's failure
    return True


def _mask_quietly(folder, env):
    """secrets.mask_files on the way out of a step that failed or was stopped: no note, never a second error."""
    try:
        secrets.mask_files(folder, env, skip={META_DIR})
    except Exception:   # noqa: BLE001  (the step's own failure is the one to report)
        pass


def _check_downloads(node, path):
    """A download's file name is not in the key (keys of entries users hold would change): an entry built before
    its recipe renamed the file holds the old name, and a step reading the new one failed with 'No such file'."""
    missing = [item["file"] for item in node.download if not os.path.lexists(os.path.join(path, item["file"]))]
    if missing:
        raise MlrunError(f"{node.label}: its entry {path} holds no {few(missing)}, which its recipe downloads: it was "
                         "built when the recipe named the download otherwise (a download's name is not part of "
                         "the key)", hint=f"remove the entry ({removal_command(path)}) and run again")


def step_folders(plan):
    """Each `cache: false` step's folder in the run: its recipe's name, unless two steps of the run are of one
    recipe (variations: they wrote one folder, the second's output read as both) or the name is the run's own
    (`snapshot`: the copy of its recipes): then NAME-KEY8."""
    names = [node.name for node in plan.nodes if not node.cache]
    return {node.key: node.name if names.count(node.name) == 1 and node.name not in RUN_OWN_NAMES
            else f"{node.name}-{node.key[:8]}" for node in plan.nodes if not node.cache}


RUN_OWN_NAMES = (records.SNAPSHOT_DIR, "run.json")


def _last_word(tail):
    """What a failed step said last: its last error line (error:, ERROR:), else its last line with text."""
    said = _errors_said(tail)
    return said[-1] if said else next((line for line in reversed(tail) if line.strip()), "")


def _drain(proc, log):
    """Whatever a stopped step's pipe still holds, into its log (never raises: the stop is what matters)."""
    import select
    try:
        fd = proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            log.write(secrets.scrub_bytes(chunk))
        log.flush()
    except (OSError, ValueError):
        pass


class TimedOut(Exception):
    """A step ran past its timeout."""


class _Watch:
    """Called while a step is silent: its timeout, and a step stopped (SIGSTOP, SIGTSTP) is said once."""

    def __init__(self, reporter, label, record, timeout):
        self.reporter, self.label, self.record = reporter, label, record
        self.deadline = time.monotonic() + timeout if timeout else None
        self.timeout, self.next_look, self.said = timeout, 0, None

    def __call__(self):
        now = time.monotonic()
        if self.deadline and now > self.deadline:
            raise TimedOut()
        if now < self.next_look:
            return
        self.next_look = now + 2
        try:
            with open(self.record) as f:
                pid = guard.stopped(int(json.load(f)["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return
        if pid and pid != self.said:
            command = printable_line(guard.command_line(pid))[:100]
            self.reporter.line(f"step {self.label} is stopped: its process {pid} ({command}) "
                               f"was sent SIGSTOP or SIGTSTP; `kill -CONT {pid}` resumes it"
                               + (f" (its timeout, {_duration(self.timeout)}, still applies)" if self.timeout else ""))
        self.said = pid


def _read_left(record):
    """What the guard says the step left running ({count, command}), or None; the file is removed."""
    path = os.path.join(os.path.dirname(record), guard.LEFT)
    try:
        with open(path) as f:
            left = json.load(f)
        os.remove(path)
    except (OSError, ValueError):
        left = None
    try:
        os.remove(record)
    except (FileNotFoundError, NotADirectoryError):   # gone with the step's folder (its own doing)
        pass
    return left if isinstance(left, dict) and left.get("count") else None


def _lines(proc, stop=None, watch=None):
    """The step's output as lines (ended by \\n or \\r, a progress bar's), until its guard has exited: then what
    the pipe holds, and no more. Read to EOF, a process that left the step's group (setsid, a daemon) held the
    build until it exited; a line without an end grew in memory (200 MB of \\r-less output took 440 MB)."""
    import select
    fd, pending, left = proc.stdout.fileno(), b"", None
    while left is None or left > 0:
        if stop is not None and stop.is_set():   # a step built alongside, when the run is stopped (its thread's)
            raise guard.Interrupted(signal.SIGINT)
        if left is None and proc.poll() is not None:
            left = 64   # reads of what it wrote before it ended (a pipe holds far less than 64 of them)
        if watch and watch.deadline and time.monotonic() > watch.deadline and left is None:
            raise TimedOut()
        if not select.select([fd], [], [], 0 if left is not None else 0.5)[0]:
            if left is not None:
                break
            if watch:
                watch()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        left = None if left is None else left - 1
        pending += chunk
        start = 0   # lines are cut by position; the rest is kept once per read (slicing each line off copied it)
        while start < len(pending):
            end = min((i for i in (pending.find(b"\n", start), pending.find(b"\r", start)) if i >= 0), default=-1)
            if end < 0 and len(pending) - start >= LINE_MOST:
                end = start + LINE_MOST - 1
            if end < 0:
                break
            yield pending[start:end + 1]
            start = end + 1
        pending = pending[start:]
    if pending:
        yield pending


def root_facts(node):
    """The root node as a record keeps it: its inputs (defaults included) and variations by group."""
    return {"recipe": node.name, "label": node.label, "key": node.key, "inputs": node.inputs,
            "variations": node.variations, "groups": node.groups or {}}


def _changed_recipe_files(node):
    """The files of node's recipe (its scripts, its sources) whose content is no longer what its key hashed."""
    folder, changed = os.path.dirname(node.recipe_path), []
    if node.recipe_files is None or not node.recipe_path:   # a recipe held in memory (tests): no folder
        return changed
    for rel, digest in sorted(node.recipe_files.items()):
        try:
            same = digests.file_digest(os.path.normpath(os.path.join(folder, rel))) == digest
        except OSError:
            same = False
        if not same:
            changed.append(rel)
    from .index import recipe_files   # a file the step made there (it was published, the next build failed)
    try:
        changed += [f"{rel} (new)" for rel in sorted(os.path.relpath(p, folder) for p in recipe_files(folder))
                    if rel not in node.recipe_files]
    except MlrunError:
        pass   # a loop or an odd file made meanwhile: the next plan says so
    return changed


def _changed_contents(node):
    """The `content: true` inputs (a --model file) whose file or folder no longer holds the bytes the key hashed."""
    changed = []
    for name, digest in sorted((getattr(node, "contents", None) or {}).items()):
        path = node.inputs.get(name)
        try:
            same = digests.content_digest(path) == digest
        except (OSError, MlrunError):
            same = False
        if not same:
            changed.append(f"--{name} {path}")
    return changed


def _stopped_why(error):
    """How a build ended that did not fail on its own: interrupted (Ctrl-C, SIGTERM, SIGHUP) or failed."""
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


def describe_error(error):
    """One line for an unexpected exception: an mlrun error's message, else its type and text."""
    if isinstance(error, MlrunError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# sysexits.h EX_CONFIG: a step exits with it when the machine, not the step, is at fault.
EX_CONFIG = 78


def describe_exit(code):
    """A readable cause instead of a raw wait status ('return code = 256')."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    try:   # a shell's status for a child a signal killed (139: SIGSEGV), else 126/127 in words
        died = f"128+{code - 128}: a process it ran died of {signal.Signals(code - 128).name}" if code > 128 else None
    except ValueError:
        died = None
    why = died or {126: "a command it ran is not executable", 127: "a command it ran was not found"}.get(code)
    return f"exited with code {code}" + (f" ({why})" if why else "")


def _write_rerun_script(meta_dir, argv, folder=None):
    import shlex

    def word(arg, script):   # {entry} in `run:` named the build's folder: `command.sh DIR` wrote there, not in DIR
        if not folder or folder not in arg:
            return shlex.quote(arg)
        if script:   # bash -c's text: its own shell expands the variable, as it took the path
            return shlex.quote(arg.replace(folder, "${MLRUN_ENTRY}"))
        return '"${MLRUN_ENTRY}"'.join(shlex.quote(part) if part else "" for part in arg.split(folder))
    body = ("#!/usr/bin/env bash\n# Re-run this step by hand: same environment, same command.\n"
            "# Run it in a scratch folder: cached entries are immutable.\n"
            'here="$(cd "$(dirname "$0")" && pwd)"\n'
            'cd "${1:-$PWD}" || { echo "command.sh: cannot enter ${1:-$PWD}" >&2; exit 1; }\n'
            'export MLRUN_ENTRY="$PWD"   # absolute: a relative DIR named another folder once inside it\n'
            'set -a; . "$here/env.sh"; set +a\n')
    shell = bool(argv) and os.path.basename(argv[0]) in ("bash", "sh", "dash", "zsh", "ksh")   # python -c is not
    body += ("exec " + " ".join(word(a, shell and i > 0 and argv[i - 1] == "-c") for i, a in enumerate(argv))
             + "\n") if argv else "# (download only: no command)\n"
    path = os.path.join(meta_dir, "command.sh")
    _write_file(path, secrets.scrub(body))  # a secret expanded into argv is left for the user to put back
    os.chmod(path, 0o755)


def _write_file(path, text):
    """Write text to path; an OSError names the path (a full disk fails in write(), which names none)."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        e.filename = e.filename or path
        raise


# `error: why`, as mlrun's own steps say it, or `prog.py: error: why`, as argparse does.
ERROR_LINE = re.compile(r"(?:[\w.+/-]+: )?(?:error|ERROR): (.+)")   # ERROR: pip's ("No matching distribution ...")


# A Python program that died of an exception ends its traceback so: `google.protobuf.message.DecodeError: ...`
EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Failure|Fault)): (.+)")


def _errors_said(lines):
    """What a step's own error lines say, in order; else the exception a Python step died of (its traceback's last
    line: "step ... failed: exited with code 1" said nothing of a --model file that was no ONNX)."""
    said = [m[1] for m in map(ERROR_LINE.fullmatch, lines) if m]
    if said:
        return said
    # the first such line after the last traceback (its stdout, flushed at exit, may come after it)
    header = max((i for i, line in enumerate(lines) if line == "Traceback (most recent call last):"), default=-1)
    died = [m for m in map(EXCEPTION_LINE.fullmatch, lines[header + 1:]) if m]
    if not died:
        return []
    last = died[0] if header >= 0 else died[-1]
    return [f"{last[1]}: {last[2]}"]


def _tail(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
    except OSError:
        return []
    return [printable_line(line[:LINE_SHOWN]) + ("...(cut)" if len(line) > LINE_SHOWN else "") for line in lines]


def _short(path):
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("../..") else path


def _one_destination(live_out):
    """Whether a live step's output and stderr (mlrun's lines) go to the same place: a terminal, or one file
    (2>&1). Apart (`2>err.log`), the failure's tail is all that stderr has of the cause."""
    try:
        out, err = os.fstat(live_out.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def _terminal():
    """The path of the terminal mlrun's stderr is, or None."""
    try:
        return os.ttyname(sys.stderr.fileno()) if sys.stderr.isatty() else None
    except (OSError, ValueError, AttributeError):  # closed, replaced by an object without a descriptor
        return None


def run_plan(plan, cache, runs_dir, **options):
    """Convenience API: run a resolved plan and return its record."""
    return Runner(cache, runs_dir, **options).run(plan)


__all__ = ["Runner", "RunReporter", "run_plan", "describe_exit", "MlrunError"]
