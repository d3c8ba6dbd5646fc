"""Real clusters on this machine, and small recipes whose points run quickly: what the Ray and SLURM executor
tests (and bench/sweep_cluster.py) share.

RayCluster: nodes started by `ray start --block`, one CPU each, ports chosen here, each node in its own process
group. OneNodeSlurm: a minimal slurm.conf (slurmctld and slurmd on 127.0.0.1, this host's name and CPUs, ports
chosen here, state in a temp folder, no cgroups, no accounting), munged with its own key and socket, each daemon
in the foreground in its own process group. Both are stopped by their process groups (never by name), and a
cluster that cannot start raises ClusterUnavailable with its logs' tails.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from conftest import wait_for


class ClusterUnavailable(Exception):
    """This machine cannot start that cluster (the message says why)."""


def can_hide_folders():
    """Whether this process may give a node a mount namespace of its own (root, with CAP_SYS_ADMIN)."""
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True).returncode == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def point_recipes(ws, run='echo "$N" > n.txt', dep="echo dep > dep.txt"):
    """`point` (not cached, input n, running `run`) needs `shared-dep` (cached, running `dep`)."""
    ws.recipe("shared-dep", f"tags: shared-dep\nrun: {dep}\n")
    ws.recipe("point", f"""\
        tags: point
        cache: false
        deps: [shared-dep]
        inputs:
          n: {{type: int, default: 0, env: N}}
        run: {run}
        """)


def counted_dep(counter):
    """A dependency whose every build takes 2 s and appends a line to counter."""
    return f"sleep 2; echo built >> {counter}; echo dep > dep.txt"


def sweep_here(ws, monkeypatch, capsys, *argv):
    """`mlrun sweep ARGV` in this process (whose Python has the cluster packages; the points' mlrun need not):
    (exit code, stderr, the sweep record)."""
    import json
    from engine.cli import main
    for name, value in ws.env().items():
        if name.startswith("MLRUN_"):
            monkeypatch.setenv(name, value)
    code = main(["sweep", *argv])
    err = capsys.readouterr().err
    name = argv[argv.index("--name") + 1]
    with open(os.path.join(ws.runs, "sweeps", name, "sweep.json")) as f:
        return code, err, json.load(f)


def settings_of(ws):
    from engine.settings import Settings
    return Settings.from_env(environ=ws.env())


def task(i, **kw):
    from sweeps.executors import Task
    return Task(point_id=f"p{i:03d}", argv=["run", "point", f"--n={i}", "--json"], cpus=kw.pop("cpus", 1),
                gpus=0, measures=kw.pop("measures", False))


def tail(path, n=15):
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-n:])
    except OSError:
        return f"({path} was not written)"


class _Daemons:
    """Processes started in their own process groups, stopped by those groups: SIGTERM, then SIGKILL."""

    def __init__(self, root):
        self.root, self.procs = str(root), []
        os.makedirs(self.root, exist_ok=True)

    def start(self, argv, log, env=None):
        self.procs.append(subprocess.Popen(argv, stdout=open(os.path.join(self.root, log), "w"),
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env=env))

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):   # Ray's autoscaler monitor ignores SIGTERM
            for proc in reversed(self.procs):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            if all(_waited(p, wait) for p in self.procs):
                break
        # What they started (Ray's workers) names this cluster's folder: stragglers get SIGKILL by pid.
        if not wait_for(lambda: not self.left(), timeout=10, interval=0.5):
            for pid in self.left():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return wait_for(lambda: not self.left(), timeout=10, interval=0.5)

    def kill(self):
        """All of it at once, as a machine that goes: SIGTERM let a node's workers die before its raylet, which
        then started a queued task in the moment between."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def left(self):
        found = subprocess.run(["pgrep", "-f", self.root], capture_output=True, text=True).stdout
        return [int(p) for p in found.split()]


def _waited(proc, timeout):
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


class RayCluster(_Daemons):
    """`ray start --head` and more nodes on 127.0.0.1, one CPU each. Ray's token authentication is off
    (RAY_AUTH_MODE=disabled, on the nodes and, from the first node on, in os.environ for this process's drivers;
    stop() restores it): a head would otherwise turn it on whenever ~/.ray/auth_token exists, and a driver
    whose Ray was imported before it cannot follow. It is a test cluster, gone when the test ends."""
    AUTH = ("RAY_AUTH_MODE",)

    def __init__(self, root, cpus_per_node=1):
        super().__init__(root)
        self.port, self.client_port, self.cpus = free_port(), free_port(), cpus_per_node
        # Ray's socket paths must fit AF_UNIX's 107 bytes: a short folder of its own, not under a deep tmp_path.
        self.temp = tempfile.mkdtemp(prefix="mlrun-ray-", dir="/tmp")
        self.address = f"127.0.0.1:{self.port}"
        self.ray = os.path.join(os.path.dirname(sys.executable), "ray")
        self.auth = {"RAY_AUTH_MODE": "disabled"}
        self.old_auth = None

    def add_node(self, hide=None):
        """Start the head, then more nodes; hide: a folder this node does not see (a tmpfs over it, in a mount
        namespace of its own), as a node elsewhere would not see this machine's folder."""
        head = not self.procs
        if head:
            self.old_auth = {name: os.environ.get(name) for name in self.AUTH}
            os.environ.update(self.auth)
        args = [self.ray, "start", "--block", f"--num-cpus={self.cpus}", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
                f"--dashboard-agent-listen-port={free_port()}"]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.temp}"]
        else:
            args += [f"--address={self.address}"]
        if hide:
            args = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', hide, *args]
        self.start(args, f"node{len(self.procs)}.log", env=dict(os.environ, **self.auth))
        if not wait_for(lambda: self.exited() or self.nodes() >= len(self.procs), timeout=90, interval=1) \
                or self.exited():
            raise ClusterUnavailable(f"the Ray cluster did not get {len(self.procs)} nodes:\n"
                                     + "\n".join(tail(os.path.join(self.root, f"node{i}.log"))
                                                 for i in range(len(self.procs))))

    def exited(self):
        """A node that has died already: asking its head would wait on a GCS that never answers."""
        return any(proc.poll() is not None for proc in self.procs)

    def left(self):   # Ray's workers name the temp folder, the nodes' logs the root
        found = subprocess.run(["pgrep", "-f", f"{self.root}|{self.temp}"], capture_output=True, text=True).stdout
        return [int(p) for p in found.split()]

    def stop(self):
        try:
            return super().stop()
        finally:
            shutil.rmtree(self.temp, ignore_errors=True)
            for name, value in (self.old_auth or {}).items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def nodes(self):
        import ray
        try:
            ray.init(address=self.address, logging_level="error", configure_logging=False)
        except Exception:   # the head is not up yet
            return 0
        try:
            return len([n for n in ray.nodes() if n["Alive"]])
        finally:
            ray.shutdown()


SLURM_CONF = """\
ClusterName=mlruntest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmUser=root
SlurmdUser=root
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL MaxTime=1 State=UP
"""


class OneNodeSlurm(_Daemons):
    """munged, slurmctld and slurmd for this host; start() sets SLURM_CONF in os.environ, stop() restores it."""

    def start_all(self):
        missing = [p for p in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if not shutil.which(p)]
        if missing:
            raise ClusterUnavailable(f"SLURM is not installed here (no {', '.join(missing)}): "
                                     "apt-get install slurm-wlm munge")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd needs root")
        root = self.root
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        key = os.path.join(root, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(os.urandom(128))
        self.conf = os.path.join(root, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(host=socket.gethostname(), root=root, ctld_port=free_port(),
                                      d_port=free_port(), cpus=os.cpu_count()))
        self.old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = self.conf   # sbatch, squeue and scancel of this process read it
        self.start(["munged", "--foreground", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                    f"--seed-file={root}/munge.seed"], "munged.out")
        if not wait_for(lambda: os.path.exists(f"{root}/munge.sock"), timeout=10, interval=0.2):
            raise ClusterUnavailable("munged did not start:\n" + tail(root + "/munged.out") + "\n"
                                     + tail(root + "/munged.log"))
        self.start(["slurmctld", "-D", "-f", self.conf], "slurmctld.out")
        self.start(["slurmd", "-D", "-f", self.conf], "slurmd.out")

        def idle():
            out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() == "idle"
        if not wait_for(idle, timeout=30, interval=0.5):
            raise ClusterUnavailable("this machine could not start a one-node SLURM:\n" + "\n".join(
                f"--- {n}\n{tail(os.path.join(root, n))}" for n in ("slurmctld.log", "slurmd.log", "slurmd.out")))

    def stop(self):
        try:
            return super().stop()
        finally:
            if getattr(self, "old_conf", None) is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self.old_conf
