"""Probes: facts of this machine a recipe's output depends on, measured while resolving, hashed into the key.

A recipe declares `probe: {NAME: [program, args...]}` (e.g. which interpreter `python3` is).
Each probe runs before anything is built, in the environment the step will start from (the
host's base variables, `hash_env`, `pass_env`, the `--env` overrides, the inputs, MLRUN_MIRROR; not its
dependencies' exports);
its output goes into the node's key material, so `plan`, `explain` and the entry show it.

Outputs are remembered in `cache/.index/probes.json`, keyed by the program's resolved path
and stat, the arguments and that environment: the warm path stats a file instead of starting
an interpreter; a probe declared `remember: false` (the GPU's) runs at every resolution. A program
that picks what it runs from a file it reads (pyenv's global version file) is not seen changing:
select with a variable the recipe passes, or a path.
"""
import hashlib
import json
import os
import re

from . import envs, keys, secrets
from .errors import ResolutionError

MEMO_FORMAT = 1
TIMEOUT = 60
DIGESTS_FORMAT = 1


class Prober:
    """Runs probes for the resolver; `root` (a cache folder) holds the memo and is where they run."""

    def __init__(self, root=None, mirror=None):
        self.root = root
        self.mirror = mirror   # a step's MLRUN_MIRROR: a probe may read what the step will take from there
        self.memo_path = os.path.join(root, ".index", "probes.json") if root else None
        self.digests_path = os.path.join(root, ".index", "file-digests.json") if root else None
        self._memo = None
        self._digests = None

    def __call__(self, node, spec, host, overrides=None):
        """{probe name: output} for node, whose `spec` is its recipe's `probe` mapping; `overrides`: the --env
        values every step gets (a probe of the CPU's bf16 saw no --env.ONEDNN_MAX_CPU_ISA that the step then met)."""
        env = {k: host[k] for k in envs.BASE_VARS if k in host}
        env.update({k: host[k] for k in node.pass_env or () if k in host})
        env.update({k: v for k, v in node.hash_env.items() if v is not None})
        env.update({k: v for k, v in (overrides or {}).items() if k not in (node.secret_env or {})})
        env.update({k: node.secret_env[k] for k in node.hash_env if k in (node.secret_env or {})})
        env.update(envs.input_env(node))
        if self.mirror:
            env["MLRUN_MIRROR"] = self.mirror
        # {recipe}: a probe may run a script kept in its recipe's folder.
        folder = os.path.dirname(node.recipe_path or "") or "."
        out = {}
        for name, probe in sorted(spec.items()):
            argv, remember = (probe["run"], probe.get("remember", True)) if isinstance(probe, dict) else (probe, True)
            written, argv = argv[0], [envs.expand(a.replace("{recipe}", folder), env) for a in argv]
            lead = re.match(r"\$\{?(\w+)\}?", written)
            if lead and not env.get(lead.group(1)):   # "cannot start : not found on PATH" said nothing of it
                raise ResolutionError(f"{node.name}: probe '{name}' names its program as {written}, which is "
                                      f"{argv[0] or 'empty'} where probes run",
                                      hint="a probe gets the host's environment, its pass_env, hash_env and inputs, "
                                           "not a step's (no MLRUN_PYTHON, no dep's exports): name a program on PATH")
            out[name] = self._output(node, name, argv, env) if remember else self._run(node, name, argv, env)
        return out

    def _output(self, node, name, argv, env):
        import shutil  # only recipes with probes pay for it
        program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if not program:
            why = ("a folder" if os.path.isdir(argv[0]) else "not executable" if os.path.exists(argv[0])
                   else "no such file") if os.sep in argv[0] else "not found on PATH"
            raise ResolutionError(f"{node.name}: probe '{name}' cannot start {argv[0]}: {why}",
                                  hint=f"{node.name} needs it before anything runs; install it or pass a path")
        program = os.path.realpath(program)
        st = os.stat(program)
        # Secret values never reach the memo, not even hashed.
        seen = {k: v for k, v in env.items() if not secrets.is_secret(k)}
        # A script among the arguments is part of what runs: an edited one is run again.
        # (ctime and inode too: `cp -p` or `rsync -a` of another file of the same size keeps size and mtime)
        scripts = [[a, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino] for a in argv[1:] if os.path.isfile(a)
                   for s in [os.stat(a)]]
        # The host too: a cache shared by machines (NFS) must not hand one machine's CPU or Python to another.
        memo_key = hashlib.sha256(keys.canonical(
            [argv, program, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, seen, os.uname().nodename,
             scripts, _cpus()])).hexdigest()
        memo = self._load()
        if memo_key not in memo:
            memo[memo_key] = self._run(node, name, argv, env)
            self._store(memo)
        return memo[memo_key]

    def _run(self, node, name, argv, env):
        import signal
        import subprocess  # only a probe not yet remembered pays for it
        import tempfile
        what = f"{node.name}: probe '{name}' ({' '.join(argv)})"
        # Files, not pipes, and a session of its own killed once it exits: a job it left in the background held
        # the pipe open (60 s, then "did not answer", though it had) and outlived mlrun.
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            try:
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                        cwd=self.root if self.root and os.path.isdir(self.root) else None,
                                        start_new_session=True)
            except OSError as e:
                raise ResolutionError(f"{what} cannot start: {e.strerror}") from None
            try:
                code = _wait(proc, TIMEOUT)
            except subprocess.TimeoutExpired:
                raise ResolutionError(f"{what} did not answer within {TIMEOUT} s") from None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass   # nothing of it left
                proc.wait()
            stdout.seek(0)
            stderr.seek(0)
            out = stdout.read().decode(errors="replace").strip()
            err = stderr.read().decode(errors="replace").strip().splitlines()
        if code != 0 or not out:
            raise ResolutionError(f"{what} failed ({'exit ' + str(code) if code else 'no output'})"
                                  + (f": {err[-1]}" if err else ""))
        return out

    def file_digest(self, path):
        """sha256 of a file (a `content: true` input), remembered by its real path, size, mtime, ctime and inode,
        so a warm run stats the file instead of reading it again."""
        from .digests import file_digest
        real = os.path.realpath(path)
        st = os.stat(real)   # an OSError: the caller names the input
        memo_key = keys.canonical([real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]).decode()
        if self._digests is None:
            self._digests = _read_memo(self.digests_path, DIGESTS_FORMAT)
        if memo_key not in self._digests:
            self._digests[memo_key] = file_digest(real)
            # An older record of the same path is dropped: one record per file.
            fresh = {k: v for k, v in self._digests.items() if json.loads(k)[0] != real or k == memo_key}
            self._digests = fresh
            self._write(self.digests_path, DIGESTS_FORMAT, fresh)
        return self._digests[memo_key]

    def _load(self):
        if self._memo is None:
            self._memo = _read_memo(self.memo_path, MEMO_FORMAT)  # none yet, or unreadable: probe again
        return self._memo

    def _store(self, memo):
        self._write(self.memo_path, MEMO_FORMAT, memo)

    @staticmethod
    def _write(path, format_, outputs):
        if not path:
            return
        from .cache import shared_dir, write_json
        try:
            shared_dir(os.path.dirname(path), top=os.path.dirname(os.path.dirname(path)))   # the cache's .index/
            write_json(path, {"format": format_, "outputs": outputs}, sort_keys=True)
        except OSError:
            pass  # a read-only cache: probes are simply run again next time


def _cpus():
    """The cores this process may use: a probe of them (nproc) under `taskset -c 0` was remembered for every later
    plan, and the reverse (a sweep pins its points' workers)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _read_memo(path, format_):
    if not path:
        return {}
    try:
        with open(path) as f:
            stored = json.load(f)
        if stored.get("format") == format_ and isinstance(stored["outputs"], dict):
            return stored["outputs"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass  # no memo yet, or an unreadable one
    return {}


def _wait(proc, timeout):
    """proc's exit code, or subprocess.TimeoutExpired after timeout seconds. Popen.wait(timeout) polls, sleeping up
    to 50 ms between looks (a 15-ms probe was seen after 30 to 60): a pidfd (Linux 5.3) says at once."""
    import select
    import subprocess
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # another OS, an older kernel
        return proc.wait(timeout=timeout)
    try:
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        if not poll.poll(timeout * 1000):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()
