"""Steps die with mlrun, whatever stops it.

mlrun runs each step through this guard (`python -I -S guard.py PARENT RECORD -- ARGV...`). The
guard starts the step in a new session, so the step and everything it starts (bash -> python,
background jobs) form one process group, and writes that group's identity to RECORD before the
step runs. It is a child subreaper (PR_SET_CHILD_SUBREAPER), so whatever the step starts stays its descendant,
even a process that leaves the group (setsid, a daemon). When the step's command exits, every descendant still
running is killed (TERM, LEFT_GRACE seconds, KILL) and named in LEFT beside RECORD: the step fails, as its entry
must not change once published. It kills the group when it is told to stop (SIGTERM, SIGINT, SIGHUP: that very
signal passed on to the group first, which has GRACE seconds to clean up), and when mlrun dies, even of SIGKILL: the
kernel sends the guard SIGTERM then (PR_SET_PDEATHSIG; set on the guard, not the step, because
it only reaches a direct child). Should the guard be killed together with mlrun, the next mlrun
that takes the entry's lock reads RECORD and kills what is left (`kill_recorded`).

mlrun itself turns the signals that stop it into Interrupted (`stop_signals_interrupt`), so SIGTERM
and SIGHUP clean up exactly as Ctrl-C does. A process is named by its pid, host, boot, pid namespace
and start time, so a reused pid is never mistaken for it. Standard library only: the guard runs
isolated, in the step's environment.
"""
import json
import os
import signal
import sys

RECORD = "pid.json"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE = 5   # seconds a stopped step has to clean up before its group is killed (mlrun waits 10 for the guard)
LEFT = "left.json"   # beside RECORD: {"count": N, "command": one's command line} of what the step left running
LEFT_GRACE = 1   # seconds a process the step left running has to end by itself, then again after SIGTERM


# -- who a process is ----------------------------------------------------------------------


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def machine():
    """Where pids mean something: host name, boot, pid namespace (None parts off Linux)."""
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = None
    return {"host": os.uname().nodename, "boot": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": ns}


def _stat_fields(pid):
    """/proc/PID/stat's fields after the command's name (the state is [0]), or [] when there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split() if stat and ")" in stat else []


def start_time(pid):
    """The process's start time (clock ticks since boot), or None when there is no such process."""
    try:
        return int(_stat_fields(pid)[19])
    except (IndexError, ValueError):
        return None


def running(pid):
    """Whether the process runs (a zombie has exited; only its parent has not collected it yet)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def identity(pid):
    """What names a process for good: pid, machine and start time."""
    return {"pid": pid, **machine(), "started": start_time(pid)}


def alive(ident):
    """True or False for a process recorded on this machine, None when that cannot be decided here."""
    here = machine()
    if not here["boot"] or ident.get("host") != here["host"] or not ident.get("started") \
            or not isinstance(ident.get("pid"), int):   # a damaged record: `runs show` ended "KeyError: 'pid'"
        return None
    if ident.get("boot") != here["boot"]:
        return False  # the machine rebooted since
    if ident.get("pid_ns") != here["pid_ns"]:
        return None   # another container on the same machine
    return running(ident["pid"]) and start_time(ident["pid"]) == ident["started"]


def kill_recorded(path):
    """Kill the process group recorded in `path` if it still runs here; a missing record is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            owner = os.fstat(f.fileno()).st_uid
            rec = json.load(f)
        pgid = int(rec["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return
    # A build folder is the group's to make (the cache is shared): a record another user wrote naming a process
    # that is not theirs would have this user (root above all) kill it. Their own leftovers only; a group of no
    # process seen here is nothing to kill (pid 0 killed the caller's own group, -5 was an EINVAL traceback).
    owners = _group_owners(pgid) if pgid > 1 else set()
    if not owners or any(uid != owner for uid in owners):
        return
    here = machine()
    if not here["boot"] or any(rec.get(k) != here[k] for k in here):
        return  # recorded on another machine, container or boot: not ours to kill
    started = start_time(pgid)
    if started is not None and started != rec.get("started"):
        return  # the leader's pid is another process's now: its group is gone (a live group's id is never reused)
    _kill_group(pgid)


def _group_owners(pgid):
    """The owners of the processes in the group pgid (its leader may have exited, its jobs left running)."""
    owners = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(name)[2]) == pgid:
                    owners.add(os.stat(f"/proc/{name}").st_uid)
            except (IndexError, ValueError, OSError):   # gone meanwhile
                continue
    return owners


def _descendants(root):
    """The pids of root's living descendants (zombies have exited), children before grandchildren."""
    children = {}
    for name in os.listdir("/proc"):
        fields = _stat_fields(name) if name.isdigit() else []
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def stopped(pgid):
    """A pid of the group pgid that is stopped (SIGSTOP, SIGTSTP: state T), or None."""
    for name in os.listdir("/proc"):
        fields = _stat_fields(name) if name.isdigit() else []
        if len(fields) > 2 and fields[0] == "T" and fields[2] == str(pgid):
            return int(name)
    return None


def command_line(pid):
    """A process's command line as one line ('' when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _reap():
    """Collect the guard's exited children (orphans reparented to it)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _end_leftovers(record):
    """Kill every descendant the step left running (TERM, LEFT_GRACE, KILL); name them in LEFT."""
    import time
    left = _descendants(os.getpid())
    deadline = time.monotonic() + LEFT_GRACE
    while left and time.monotonic() < deadline:   # ending by itself (bash's `>(tee log)` outlives bash a moment)
        time.sleep(0.02)
        _reap()
        left = _descendants(os.getpid())
    if not left:
        return
    info = {"count": len(left), "command": next(filter(None, map(command_line, left)), "")}
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + LEFT_GRACE
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        _reap()
        left = _descendants(os.getpid())
    for _ in range(100):   # killed ones' children, forked meanwhile, are found in the next round
        if not left:
            break
        for pid in left:
            _signal(pid, signal.SIGKILL)
        _reap()
        left = _descendants(os.getpid())
    try:
        with open(os.path.join(os.path.dirname(record), LEFT), "w") as f:
            json.dump(info, f)
    except OSError:   # its folder gone (the step removed it): its own failure is said then
        pass


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:   # gone, not ours, or no such group id
        pass


# -- used by mlrun ---------------------------------------------------------------------------


def command(argv, record):
    """The argv that runs `argv` under a guard watching this process."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), record, "--", *argv]


def records_above():
    """The RECORDs of the guards this process runs under (mlrun run by a step): each is an ancestor's argv."""
    records, pid = [], os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [os.fsdecode(a) for a in f.read().split(b"\0")]
            pid = int(_stat_fields(pid)[1])
        except (OSError, IndexError, ValueError):
            break
        if len(args) > 6 and args[1:3] == ["-I", "-S"] and args[3].endswith(os.sep + "guard.py") and args[6] == "--":
            records.append(args[5])
    return records


def stop(proc, record, signum=signal.SIGTERM):
    """Stop a guarded step now: the guard passes signum on to the step's group, then kills it; if the guard does
    not answer, kill both."""
    import subprocess
    proc.send_signal(signum)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    kill_recorded(record)


# -- mlrun's own stop signals -----------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """A signal stopped mlrun (SIGTERM, SIGHUP, or SIGINT: Ctrl-C); every part handles it as Ctrl-C."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def signal_name(interrupt):
    """The signal behind a KeyboardInterrupt (a plain one is Ctrl-C)."""
    return signal.Signals(getattr(interrupt, "signum", signal.SIGINT)).name


class stop_signals_interrupt:
    """Inside, SIGTERM, SIGHUP and SIGINT raise Interrupted; after one, the rest are ignored while mlrun cleans up.

    Python runs a signal's handler wherever the main thread is, a finalizer included (an import lock's weakref
    callback), and drops what a finalizer raises ("Exception ignored in ..."): that Ctrl-C was lost, with the
    other stop signals already ignored, and the run went on, deaf to every later one. Such an Interrupted is
    delivered again, to the main flow (the next signal comes from a thread a moment later)."""

    def __enter__(self):
        try:  # a signal ignored when mlrun started stays ignored (nohup, a background job of a script)
            self.before = {s: signal.signal(s, self._interrupt) for s in STOP_SIGNALS
                           if signal.getsignal(s) != signal.SIG_IGN}
        except ValueError:  # not the main thread: signals are not ours to handle
            self.before = {}
        self.hook = sys.unraisablehook
        if self.before:
            sys.unraisablehook = self._dropped

    def __exit__(self, *exc):
        for s, handler in self.before.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if self.before:
            sys.unraisablehook = self.hook

    @staticmethod
    def _interrupt(signum, frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    def _dropped(self, unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            return self.hook(unraisable)
        import threading
        for s in self.before:   # armed again: it was the first, and what follows it is the main flow's to take
            signal.signal(s, self._interrupt)
        # at the main thread, whose wait it breaks (sent to the process, any thread not blocking it may take it)
        threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident,
                                                    unraisable.exc_value.signum)).start()


# -- the guard itself ------------------------------------------------------------------------


class _Stop(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _on_stop(signum, frame):
    raise _Stop(signum)


def _in_step(record, ignored):
    """In the step's process before it runs: default signals (but those ignored when mlrun started: nohup), and
    its group's identity on disk."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN if s in ignored else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        tmp = record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(identity(os.getpid()), f)
        os.replace(tmp, record)
    except OSError as e:  # a step nobody could find again must not run
        print(f"mlrun: cannot record the step's process in {record}: {e}", file=sys.stderr, flush=True)
        os._exit(126)


def main(argv):
    import subprocess
    parent, record, cmd = int(argv[1]), argv[2], argv[4:]
    # Until the step's pid is known a stop signal waits, so the step can never start unwatched.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    # All three: the guard, in a session of its own, gets only what mlrun passes on (what it got itself).
    ignored = [s for s in STOP_SIGNALS if signal.getsignal(s) == signal.SIG_IGN]
    for s in STOP_SIGNALS:
        signal.signal(s, _on_stop)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: mlrun's death stops us
        libc.prctl(36, 1)   # PR_SET_CHILD_SUBREAPER: what leaves the step's group is still reparented to us
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return 1  # mlrun died before the guard could watch it
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: _in_step(record, ignored))
    except (OSError, subprocess.SubprocessError) as e:
        print(f"mlrun: cannot start {cmd[0]}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 127
    code = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while True:   # reaps the orphans reparented to us as they end, until the step's own process ends
            pid, status = os.waitpid(-1, 0)
            if pid == proc.pid:
                code = proc.returncode = os.waitstatus_to_exitcode(status)
                break
    except _Stop as e:
        code = -e.signum
        for s in STOP_SIGNALS:   # a second stop does not cut the grace short
            signal.signal(s, signal.SIG_IGN)
        # The step's own cleanup first (a trap on EXIT, pip's hooks): killed at once, pyenv's rehash lock stayed
        # behind and every later pip install on the machine waited 60 s and failed. Then what is left is killed.
        try:
            os.killpg(proc.pid, e.signum)
            os.killpg(proc.pid, signal.SIGCONT)   # a stopped process takes it too
            proc.wait(timeout=GRACE)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:   # its grace is over: no LEFT_GRACE more (twice: 7 s, not 5)
            _kill_group(proc.pid)
    finally:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        _end_leftovers(record)   # what the step left running, in its group or not
        _kill_group(proc.pid)  # all of it when stopped
        _reap()
    if code is not None and code < 0:  # end as the step did, so mlrun can say which signal killed it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
