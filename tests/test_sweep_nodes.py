"""What a cluster node does for a point (sweeps/node.py), without a cluster: a node that does not see the
submitting machine's runs folder sends the run folder back as bytes; one that does not see the shared cache
says so; and the cluster executors' usage errors (a missing package, a wrong --slurm name)."""
import json
import os
import subprocess
import sys

import pytest

from clusters import point_recipes, settings_of, task
from conftest import ROOT, assert_user_error


def sweep_two_points(ws, *flags, hide=None, env=None):
    """`mlrun sweep point --grid n=0,1 --name s FLAGS` run by this Python (which has the cluster packages),
    with the package `hide` made unimportable."""
    point_recipes(ws)
    code = (f"import sys; sys.modules.update({{{hide!r}: None}} if {hide!r} else {{}}); sys.path.insert(0, {ROOT!r}); "
            "from engine.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "sweep", "point", "--grid", "n=0,1", "--name", "s", *flags],
                            env=env or ws.env(), capture_output=True, text=True, timeout=60, cwd=ws.root)
    assert not os.path.exists(os.path.join(ws.runs, "sweeps", "s"))   # refused before anything was recorded
    return result


def shared_for(ws, **kw):
    from sweeps import remote
    return remote.Shared(settings_of(ws), **kw)


def test_a_node_without_the_runs_folder_sends_the_run_back(ws, tmp_path):
    from sweeps import node, remote
    point_recipes(ws)
    with shared_for(ws, node_cache=str(tmp_path / "node-cache")) as shared:
        spec = shared.spec(task(3), remote.node_env(settings_of(ws)))
        spec["runs_marker"] = [spec["runs_marker"][0], "another machine's folder"]   # as a node elsewhere sees it
        result = node.run_point(spec)
    assert result["returncode"] == 0, result["stderr"]
    assert result["archive"] and not os.path.exists(result["node_runs"])   # the node's scratch copy is gone
    outcome = remote.outcome(result, ws.runs, log_dir=str(tmp_path / "logs"))
    record = json.load(open(os.path.join(ws.runs, outcome.run_id, "run.json")))
    step = record["steps"][-1]
    assert record["status"] == "ok" and step["path"] == os.path.join(ws.runs, outcome.run_id, "point")
    assert open(os.path.join(step["path"], "n.txt")).read() == "3\n"
    assert record["steps"][0]["path"].startswith(str(tmp_path / "node-cache"))   # the node's own cache
    assert "point" in open(outcome.log).read()
    assert not [n for n in os.listdir(ws.runs) if n.startswith(".")]   # no staging folder, no marker left
    # its summary, step.json, env.sh and command.sh name the copy here, not the node's scratch folder (gone)
    for folder, dirs, files in os.walk(os.path.join(ws.runs, outcome.run_id)):
        for name in files:
            if name.endswith((".json", ".sh")):
                assert os.path.join(result["node_runs"], outcome.run_id) not in open(os.path.join(folder, name)).read(), name
    assert os.path.join(ws.runs, outcome.run_id) in open(os.path.join(step["path"], ".mlrun", "env.sh")).read()


def test_a_node_that_does_not_see_the_shared_cache_says_so(ws):
    from sweeps import node
    point_recipes(ws)
    with shared_for(ws) as shared:
        spec = shared.spec(task(0))
        spec["cache_marker"] = [spec["cache_marker"][0], "not this one"]
        result = node.run_point(spec)
    assert result["returncode"] == 2 and result["run_id"] is None
    assert "is not shared with node" in result["stderr"] and "--ray-cache local" in result["stderr"]


def test_a_bad_node_cache_is_a_usage_error(ws):
    point_recipes(ws)
    result = ws.mlrun("sweep", "point", "--grid", "n=0,1", "--name", "s", "--on", "local", "--node-cache", "rel/dir")
    assert_user_error(result, 2, "--node-cache applies to --on ray or --on slurm")   # not dropped in silence
    from engine.errors import UsageError
    with pytest.raises(UsageError, match="--node-cache rel/dir: expected shared"):
        shared_for(ws, node_cache="rel/dir")


@pytest.mark.parametrize("on, package", [("ray", "ray"), ("ray://head:10001", "ray"), ("slurm", "submitit")])
def test_a_cluster_without_its_package_says_how_to_install_it(ws, on, package):
    result = sweep_two_points(ws, "--on", on, hide=package)
    assert_user_error(result, 2, f"--on {on} needs the Python package `{package}`", "requirements-cluster.txt")


@pytest.mark.parametrize("on, address", [("ray:headnode", "headnode"), ("ray://head:abc", "ray://head:abc"),
                                         ("ray:head:70000", "head:70000"), ("ray://", "ray://")])
def test_a_ray_address_that_is_not_host_port_is_refused_at_once(ws, on, address):
    pytest.importorskip("ray")
    result = sweep_two_points(ws, "--on", on)
    assert_user_error(result, 2, f"Ray address '{address}': expected HOST:PORT")


def test_a_stale_recorded_ray_cluster_is_said_at_once(ws, tmp_path):
    """--on ray with no RAY_ADDRESS: Ray takes the cluster `ray start` last recorded on this machine; one
    stopped since (its record left) made the sweep print Ray's connection warnings for minutes."""
    pytest.importorskip("ray")
    from clusters import free_port
    port = free_port()
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    env = {k: v for k, v in ws.env(RAY_TMPDIR=str(tmp_path)).items() if k != "RAY_ADDRESS"}
    result = sweep_two_points(ws, "--on", "ray", env=env)
    assert_user_error(result, 2, f"cannot reach the Ray cluster at 127.0.0.1:{port} (recorded in "
                                 f"{tmp_path / 'ray' / 'ray_current_cluster'}): Connection refused")


def test_a_ray_cluster_that_is_not_there_is_said_at_once(ws):
    pytest.importorskip("ray")
    from clusters import free_port
    port = free_port()
    result = sweep_two_points(ws, "--on", f"ray:127.0.0.1:{port}")
    assert_user_error(result, 2, f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused")


@pytest.mark.slow   # waits out the refusal it checks (about 6 s)
@pytest.mark.parametrize("on", ["ray:127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_that_answers_but_is_no_ray_cluster_is_said_in_seconds(ws, on):
    """A port that takes connections but is no Ray head (another service, another process of Ray's): ray.init
    waited on it for ever, printing Ray's GCS warnings (killed after minutes)."""
    pytest.importorskip("ray")
    import socket
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.extend(listener.accept() for _ in range(2)), daemon=True).start()
    try:
        result = sweep_two_points(ws, "--on", on.format(port=port))
    finally:
        listener.close()
    assert_user_error(result, 2, f"127.0.0.1:{port} answers, but not as a Ray cluster (no gRPC server there)")


@pytest.mark.parametrize("flags, message", [
    (["--slurm", "partition=cpu"], "--slurm applies to --on slurm, not --on local"),
    (["--node-cache", "local"], "--node-cache applies to --on ray or --on slurm, not --on local"),
    (["--cpus", "4", "--on", "local"], "--cpus applies to --on ray or --on slurm, not --on local"),
    (["--slurm", "time=30", "--on", "ray:127.0.0.1:9"], "--slurm applies to --on slurm, not --on ray:127.0.0.1:9")])
def test_cluster_options_without_their_cluster_are_refused_not_dropped(ws, flags, message):
    result = sweep_two_points(ws, *flags)
    assert_user_error(result, 2, message)


@pytest.mark.parametrize("flags, path, message", [
    (["--slurm", "partition=cpu,tiem=30"], None, "unknown SLURM parameter 'tiem'; did you mean 'time'?"),
    (["--slurm", "time=abc"], None, "--slurm time=abc: not a SLURM time limit"),
    # submitit compared it with a number: "'<' not supported between instances of 'str' and 'int'"
    (["--slurm", "array_parallelism=abc"], None, "--slurm array_parallelism=abc: expects a whole number"),
    # "unexpected ValueError ... a bug in mlrun", and the new sweep's record left holding the name
    (["--slurm", "additional_parameters=x"], None, "--slurm additional_parameters takes a mapping of sbatch options"),
    ([], "/nonexistent", "--on slurm: `sbatch` is not on PATH")])
def test_slurm_usage_errors_come_before_anything_runs(ws, flags, path, message):
    pytest.importorskip("submitit")
    result = sweep_two_points(ws, "--on", "slurm", *flags, env=ws.env(**({"PATH": path} if path else {})))
    assert_user_error(result, 2, message)


def test_a_ray_point_can_be_cancelled_on_a_node_that_ignores_ctrl_c(tmp_path):
    """Ray cancels a task as a Ctrl-C (interrupt_main); a node started with SIGINT ignored (`ray start &` from a
    script) never saw it, and the point ran on after the sweep stopped."""
    code = (f"import signal, sys; sys.path.insert(0, {ROOT!r}); signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from sweeps import node\n"
            f"spec = {{'point_id': 'p000', 'cache_marker': {str(tmp_path / 'none')!r}, 'cache': 'c'}}\n"
            "node.run_point(spec, on_start=lambda item: None, on_stop=lambda item: None)\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN); node.run_point(spec)   # SLURM's: no cancel to take\n"
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "True"], result.stdout + result.stderr


def test_a_point_slurm_stopped_says_why_beside_its_runs_words(tmp_path):
    """A SLURM time-out or scancel read only 'interrupted by SIGTERM' (the run's record), not the job's end."""
    from types import SimpleNamespace
    from sweeps import cli as sweep_cli
    from sweeps.executors import Outcome
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"id": "r1", "steps": [], "status": "interrupted",
                                              "error": "interrupted by SIGTERM"}))
    p = {}
    tail = "mlrun: interrupted by SIGTERM\nmlrun: error: SLURM job 23_0 ended TIMEOUT\n"
    sweep_cli._finish(p, Outcome("p000", 143, run_id="r1", stderr_tail=tail), SimpleNamespace(runs=str(tmp_path / "runs")))
    assert (p["status"], p["error"]) == ("interrupted", "interrupted by SIGTERM (SLURM job 23_0 ended TIMEOUT)")
    p = {}   # no record: the job's end is already the last error said, not twice
    sweep_cli._finish(p, Outcome("p000", 143, stderr_tail=tail), SimpleNamespace(runs=str(tmp_path / "runs")))
    assert p["error"] == "SLURM job 23_0 ended TIMEOUT"


def test_a_missing_cluster_package_is_installed_into_mlruns_own_python():
    """The hint said `pip install -r ...`: a plain pip installs outside the .venv mlrun runs with (a user's trial)."""
    from engine.errors import UsageError
    from sweeps import remote
    with pytest.raises(UsageError) as error:
        remote.need("no_such_cluster_package", "--on ray")
    assert error.value.hint.startswith(f"{sys.executable} -m pip install -r ") and "requirements-cluster.txt" in \
        error.value.hint, error.value.hint
