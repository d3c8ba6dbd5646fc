"""Sweeps on a real single-node SLURM started by this module (Debian's slurm-wlm and munge).

The fixture writes a minimal slurm.conf (slurmctld and slurmd on 127.0.0.1, this host's name and CPUs,
ports chosen here, state in a temp folder, no cgroups, no accounting), starts munged with its own key and
socket, then both daemons in the foreground, each in its own process group, and stops them by their
groups at the end. A machine that cannot start them skips the tests, printing why (the daemon's log).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import wait_for
from cluster_points import free_port, point_recipes, settings_of, task

pytest.importorskip("submitit", reason="the SLURM executor's tests need requirements-cluster.txt installed")

pytestmark = pytest.mark.slow
CONF = """\
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
"""


def _tail(path, n=15):
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-n:])
    except OSError:
        return f"({path} was not written)"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [p for p in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if not shutil.which(p)]
    if missing:
        pytest.skip(f"SLURM is not installed here (no {', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), root=root, ctld_port=free_port(), d_port=free_port(),
                                cpus=os.cpu_count()))
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)   # sbatch, squeue and scancel of this process read it
    procs = []

    def start(*argv, log):
        procs.append(subprocess.Popen(argv, stdout=open(root / log, "w"), stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True))
    try:
        start("munged", "--foreground", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
              f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed",
              log="munged.out")
        if not wait_for(lambda: os.path.exists(f"{root}/munge.sock"), timeout=10):
            pytest.skip(f"munged did not start:\n{_tail(root / 'munged.out')}\n{_tail(root / 'munged.log')}")
        start("slurmctld", "-D", "-f", str(conf), log="slurmctld.out")
        start("slurmd", "-D", "-f", str(conf), log="slurmd.out")

        def idle():
            out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() == "idle"
        if not wait_for(idle, timeout=30, interval=0.5):
            pytest.skip("this machine could not start a one-node SLURM:\n"
                        + "\n".join(f"--- {n}\n{_tail(root / n)}"
                                    for n in ("slurmctld.log", "slurmd.log", "slurmd.out")))
        yield root
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf


def run_points(ws, tasks, slurm=(("time", "5"),), events=None):
    from sweeps.slurm_executor import SlurmExecutor
    events = [] if events is None else events
    return list(SlurmExecutor({"slurm": dict(slurm)}).run(
        tasks, settings_of(ws), lambda kind, t, outcome: events.append((kind, t.point_id)))), events


def test_two_points_as_one_job_array(slurm, ws):
    point_recipes(ws)
    outcomes, events = run_points(ws, [task(0), task(1)])
    assert all(o.returncode == 0 for o in outcomes), [o.stderr_tail for o in outcomes]
    assert sorted(o.point_id for o in outcomes) == ["p000", "p001"]
    for o in outcomes:   # the records are in runs/, each with its point's input
        record = json.load(open(os.path.join(ws.runs, o.run_id, "run.json")))
        assert record["status"] == "ok" and record["steps"][-1]["node"]["inputs"]["n"] == int(o.point_id[1:])
        assert o.node.startswith(socket.gethostname())
    # One array: submitit's folders are named ARRAY_TASK, with one array id for both points.
    folders = [f for f in os.listdir(os.path.join(ws.runs, ".slurm")) if "_" in f and not f.startswith(".")]
    assert len(folders) == 2 and len({f.split("_")[0] for f in folders}) == 1, folders
    assert sorted(events) == sorted([(k, p) for p in ("p000", "p001") for k in ("started", "finished")])


def test_measuring_points_run_exclusive_and_a_cancelled_job_is_recorded(slurm, ws, tmp_path):
    pid_file = tmp_path / "pid"
    point_recipes(ws, run=f"echo $$ >> {pid_file}; sleep 60")
    import threading

    def cancel_running():   # the first point to run is cancelled the way a user would
        if wait_for(lambda: pid_file.exists(), timeout=60):
            out = subprocess.run(["squeue", "--noheader", "--array", "--states=RUNNING", "--format=%i"],
                                 capture_output=True, text=True, timeout=10).stdout.split()
            subprocess.run(["scancel", *out], timeout=10)
    canceller = threading.Thread(target=cancel_running)
    canceller.start()
    outcomes, _ = run_points(ws, [task(0, measures=True)])
    canceller.join()
    [o] = outcomes
    # Its mlrun got SLURM's SIGTERM, recorded the run as interrupted and said so; SLURM's state is added.
    assert o.returncode == 143 and "interrupted by SIGTERM" in o.stderr_tail, o.stderr_tail
    assert re.search(r"mlrun: error: SLURM job \d+(_0)? ended CANCELLED", o.stderr_tail), o.stderr_tail
    # The job had the whole node (--exclusive).
    script = open(next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ws.runs, ".slurm"))
                       for f in fs if f.endswith("_submission.sh"))).read()
    assert "#SBATCH --exclusive" in script
    assert json.load(open(os.path.join(ws.runs, o.run_id, "run.json")))["status"] == "interrupted"
