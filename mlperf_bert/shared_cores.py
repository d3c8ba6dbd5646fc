"""Measurements that share cores. Two performance runs at once on one machine (two users, or one in two
terminals) each measure about half the speed, and nothing said so: each run's figures were recorded as the
machine's. While LoadGen measures, the harness announces itself in a machine-wide folder (a small JSON file per
process: pid, start time, the cores it may run on, the run id) and looks for the others whose cores overlap its own.
Disjoint cores (a sweep's --jobs points, each pinned) are no conflict.

A measurement that starts later finds this one's file and leaves a marker addressed to it (NAME.met-by-OTHER), so
this one learns of it even when the other starts and ends between two of its looks. A file whose process is gone
(by pid and start time: a reused pid is another process) is ignored and removed.

MLRUN_SHARED_CORES=off turns the check off; MLRUN_SHARED_CORES_DIR names the folder (default /dev/shm/mlrun-measuring,
or /tmp/mlrun-measuring where there is no /dev/shm). A folder that cannot be used is said once, and the run goes on.
"""
import contextlib
import json
import os
import pwd
import re
import stat
import sys
import threading
import time
from pathlib import Path

from engine import guard

OFF_VAR, DIR_VAR = "MLRUN_SHARED_CORES", "MLRUN_SHARED_CORES_DIR"
OFF_WORDS = ("off", "0", "no", "false")
FOLDER_NAME = "mlrun-measuring"
POLL_S = 0.5          # how often the others are looked for while LoadGen measures (a listing of a few files)
MAX_BYTES = 4096      # an announcement is a few hundred bytes: anything larger is not one of ours
ENTRY = re.compile(r"(\d+)-(\d+)\.json")             # PID-STARTTICKS.json
MARKER = re.compile(r"(\d+-\d+)\.met-by-(\d+-\d+)")  # TARGET.met-by-WRITER: the writer found the target measuring
ASIDE = re.compile(r"\..+\.(\d+)\.tmp")                # .NAME.PID.tmp: _write's, until its rename
ASIDE_AGE_S = 60   # a write takes microseconds: one this old whose writer is gone was cut short (killed)
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")      # engine.runner.new_run_id's names (engine.gc.RUN_ID)
SCENARIOS = ("SingleStream", "MultiStream", "Offline", "Server")
_said = set()   # what could not be done, said once per process
# a file another process removed first, or another user's (a sticky folder: only its owner removes it)
_quiet = contextlib.suppress(OSError)


def folder():
    """The machine-wide folder: every user's measurements must find each other's files there (not $TMPDIR, which
    may be a user's own)."""
    chosen = os.environ.get(DIR_VAR)
    if chosen:
        return Path(chosen)
    return Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") / FOLDER_NAME


def turned_off():
    return os.environ.get(OFF_VAR, "").strip().lower() in OFF_WORDS


def run_id_of(run_dir):
    """The mlrun run this harness writes into (runs/ID/STEP, or a --find-peak run's folder below it), or None."""
    for path in [Path(run_dir), *Path(run_dir).parents][:5]:
        if RUN_ID.fullmatch(path.name) and (path / "run.json").is_file():
            return path.name
    return None


def cores_text(cores):
    """0-3,6: runs of neighbours as ranges."""
    spans = []
    for core in sorted(cores):
        if spans and core == spans[-1][1] + 1:
            spans[-1][1] = core
        else:
            spans.append([core, core])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def describe_other(other):
    """pid 123 (user ann, run 20261207-101500-ab12, cores 0-1)"""
    parts = [f"user {other.get('user') or '?'}"] + ([f"run {other['run']}"] if other.get("run") else []) + \
        [f"cores {cores_text(other.get('cores') or [])}"]
    return f"pid {other.get('pid')} ({', '.join(parts)})"


def _say(what):
    if what not in _said:
        _said.add(what)
        print(f"note: {what}; this run goes on without the check for measurements sharing its cores "
              f"({OFF_VAR}=off turns it off)", file=sys.stderr)


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _read(name, folder_fd):
    """(the file's JSON dict, its owner's uid), or (None, None): gone, a link, too large, not ours."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return None, None
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
                return None, None
            data = _announced(json.loads(f.read(MAX_BYTES + 1)))
    except (OSError, ValueError):
        return None, None
    return (data, info.st_uid) if data else (None, None)


def _announced(data):
    """data as _entry writes it, or None. Anyone may write in the folder: cores that were no list of core numbers
    ended the run (TypeError), and the run id and scenario go to the terminal (not another user's escapes)."""
    if not isinstance(data, dict) or type(data.get("pid")) is not int or not isinstance(data.get("cores"), list) \
            or not all(type(core) is int for core in data["cores"]):
        return None
    run, scenario, since = data.get("run"), data.get("scenario"), data.get("since")
    return {**data, "run": run if isinstance(run, str) and RUN_ID.fullmatch(run) else None,
            "scenario": scenario if scenario in SCENARIOS else None,
            "since": since if type(since) in (int, float) else None}


def _gone(stem):
    """Whether the process PID-STARTTICKS has ended (its pid free, or another process's now)."""
    pid, ticks = map(int, stem.split("-"))
    return not guard.running(pid) or guard.start_time(pid) != ticks


class Announce:
    """A context around LoadGen's measurement: announces this process, warns of the others on its cores at the
    start, keeps looking while it measures, and record() says which overlapped at any time."""

    def __init__(self, run_dir=None, scenario=None, interval=POLL_S):
        self.interval = interval
        self.folder = folder()
        self.run_id = run_id_of(run_dir) if run_dir else None
        self.scenario = scenario
        self.cores = sorted(os.sched_getaffinity(0))
        self.pid = os.getpid()
        self.started = guard.start_time(self.pid)
        self.stem = f"{self.pid}-{self.started}"
        self.others = {}          # stem -> what it announced (and its user)
        self._ended = set()       # files of processes that have ended, left where this user may not remove them
        self.why_not = None       # why there was no check
        self._fd = None           # the folder, opened: every name is looked up in it (_prepare)
        self._announced = False   # this process's file is there
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    # -- announcing --------------------------------------------------------------------------------------

    def _entry(self):
        return {"pid": self.pid, **guard.machine(), "started": self.started, "cores": self.cores,
                "run": self.run_id, "scenario": self.scenario, "since": round(time.time(), 3)}

    def _write(self, name, data):
        """data as name, whole or not at all: written aside, then renamed (a reader never sees half of it)."""
        aside = f".{name}.{self.pid}.tmp"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.rename(aside, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self._unlink(aside)
            raise

    def _unlink(self, name):
        with _quiet:
            os.unlink(name, dir_fd=self._fd)

    def _prepare(self):
        """Open the folder (made if missing), never through a link: its owner may rename it and put a link to
        another folder in its place (a root run removed and wrote files there), so it is opened once and every
        name is looked up in what was opened."""
        try:
            os.mkdir(self.folder, 0o1777)
            made = True
        except FileExistsError:
            made = False
        self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        if made:
            os.fchmod(self._fd, 0o1777)   # past the umask: every user writes here, none removes another's files

    # -- looking -------------------------------------------------------------------------------------------

    def _look(self):
        """Read the folder: the others on this process's cores (each once), markers addressed to it, and the files
        of processes that have ended (removed where this user may)."""
        try:
            names = os.listdir(self._fd)
        except OSError:
            return
        mine = set(self.cores)
        for name in names:
            if name in self._ended:   # another user's: 5000 of them took 0.65 s to read again at each look
                continue
            if (entry := ENTRY.fullmatch(name)) and name != f"{self.stem}.json":
                data, uid = _read(name, self._fd)
                ident = data if data and data.get("pid") == int(entry[1]) else None
                alive = guard.alive(ident) if ident else (False if _gone(name[:-5]) else None)
                if alive is False:
                    self._unlink(name)   # a run killed outright left it (ours to collect where we may)
                    self._ended.add(name)
                    continue
                # undecidable (another pid namespace, a damaged file): not counted, not removed
                if alive and mine & set(data["cores"]):
                    stem = name[:-5]
                    with self._lock:
                        new = stem not in self.others
                        self.others.setdefault(stem, {**data, "user": _user(uid)})
                    if new and self._announced:   # it may have started after our last look: tell it
                        with _quiet:
                            self._write(f"{stem}.met-by-{self.stem}", self._entry())
            elif marker := MARKER.fullmatch(name):
                if marker[1] == self.stem:
                    data, uid = _read(name, self._fd)
                    if data and mine & set(data["cores"]):
                        with self._lock:
                            self.others.setdefault(marker[2], {**data, "user": _user(uid)})
                    self._unlink(name)
                elif _gone(marker[1]):   # addressed to a measurement that has ended
                    self._unlink(name)
                    self._ended.add(name)
            elif (aside := ASIDE.fullmatch(name)) and not guard.running(int(aside[1])):
                # a write its process was killed in: nothing else removes it (its age: a pid of another namespace)
                with _quiet:
                    if time.time() - os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mtime > ASIDE_AGE_S:
                        self._unlink(name)
                self._ended.add(name)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._look()

    def __enter__(self):
        if turned_off():
            self.why_not = f"turned off ({OFF_VAR}={os.environ.get(OFF_VAR)})"
            return self
        if self.started is None:   # no /proc: no start time to tell a reused pid from the process that announced
            self.why_not = "this system does not say when a process started (no /proc)"
            _say(self.why_not)
            return self
        if not self.folder.is_absolute():   # the step's own folder's: each run's apart, and recorded as checked
            self.why_not = f"{DIR_VAR}={self.folder} is no absolute path (each run would look in its own folder)"
            _say(self.why_not)
            return self
        try:
            self._prepare()
            self._write(f"{self.stem}.json", self._entry())
        except OSError as error:
            self.why_not = f"cannot announce this measurement in {self.folder} ({error.strerror or error})"
            _say(self.why_not)
            self._close()
            return self
        self._announced = True
        self._look()
        if self.others:
            print(f"warning: another measurement runs on this run's cores: "
                  f"{'; '.join(describe_other(o) for o in self.others.values())}: each slows the other, and this "
                  "run's figures will not be the machine's alone", file=sys.stderr, flush=True)
        self._thread = threading.Thread(target=self._loop, name="shared-cores", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if not self._announced:
            return
        self._stop.set()
        self._thread.join()
        self._look()   # one that started since the last look
        self._unlink(f"{self.stem}.json")
        self._announced = False
        self._look()   # markers left between that look and the removal
        self._close()

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def record(self):
        """{"checked": true, "overlapped", "others": [...]} or {"checked": false, "why"}."""
        if self.why_not:
            return {"checked": False, "why": self.why_not}
        others = [{"pid": o.get("pid"), "user": o.get("user"), "run": o.get("run"), "cores": o.get("cores"),
                   "scenario": o.get("scenario"), "since": o.get("since")} for o in self.others.values()]
        return {"checked": True, "overlapped": bool(others), "cores": self.cores, "others": others,
                "folder": str(self.folder)}


def describe(record):
    """The summary's closing line, or None when nothing is to be said."""
    if not record.get("checked"):
        return f"not checked for measurements sharing its cores: {record.get('why')}"
    if not record.get("overlapped"):
        return None
    others = record.get("others") or []
    return (f"{'another measurement' if len(others) == 1 else f'{len(others)} other measurements'} ran on this run's "
            f"cores while it measured: {'; '.join(describe_other(o) for o in others)}; its figures are not the "
            "machine's alone (run again when it is alone)")
