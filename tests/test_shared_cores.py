"""Measurements that share cores: two performance runs at once on one machine each measure about half the speed;
each says so (mlperf_bert/shared_cores.py). Disjoint cores (a sweep's pinned points) are no conflict."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from engine import guard
from engine.results import headline, render
from mlperf_bert import random_model, shared_cores, squad_features

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder of this test's own: other people's measurements on this machine stay out of it."""
    path = tmp_path / "measuring"
    monkeypatch.setenv(shared_cores.DIR_VAR, str(path))
    monkeypatch.delenv(shared_cores.OFF_VAR, raising=False)
    return path


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_stale_file_of_a_dead_process_is_no_warning_and_is_removed(folder, capsys):
    folder.mkdir()
    here = guard.machine()
    cores = sorted(os.sched_getaffinity(0))
    dead = dead_pid()
    stale = folder / f"{dead}-12345.json"
    stale.write_text(json.dumps({"pid": dead, **here, "started": 12345, "cores": cores, "run": None}))
    # a reused pid: this test's parent runs, but it is not the process that wrote the file (another start time)
    parent = os.getppid()
    reused = folder / f"{parent}-{guard.start_time(parent) + 1}.json"
    reused.write_text(json.dumps({"pid": parent, **here, "started": guard.start_time(parent) + 1, "cores": cores}))
    marker = folder / f"{dead}-12345.met-by-1-2"   # addressed to a measurement that has ended
    marker.write_text("{}")
    # a write its process was killed in (nothing collected it), and one just begun (kept: a pid of another namespace
    # may be writing it)
    cut, fresh = folder / f".{dead}-12345.json.{dead}.tmp", folder / f".1-2.met-by-3-4.{dead}.tmp"
    cut.write_text("{")
    fresh.write_text("{")
    os.utime(cut, (time.time() - 2 * shared_cores.ASIDE_AGE_S,) * 2)
    with shared_cores.Announce(interval=3600) as sharing:
        assert (folder / f"{sharing.stem}.json").is_file()
    assert capsys.readouterr().err == ""
    assert not stale.exists() and not reused.exists() and not marker.exists() and not cut.exists()
    fresh.unlink()
    assert sharing.record()["checked"] and not sharing.record()["overlapped"]
    assert os.listdir(folder) == []   # its own file gone at the end
    assert shared_cores.describe(sharing.record()) is None


def test_files_of_ended_processes_left_where_they_cannot_be_removed_are_read_once(folder, monkeypatch):
    """Another user's (a sticky folder): 5000 of them were read again at each look, 0.65 s of a core every 0.5 s."""
    folder.mkdir()
    here, dead = guard.machine(), dead_pid()
    for ticks in range(1, 4):
        (folder / f"{dead}-{ticks}.json").write_text(json.dumps({"pid": dead, **here, "started": ticks, "cores": []}))
    monkeypatch.setattr(shared_cores.Announce, "_unlink", lambda self, name: None)   # as if another user's
    read = []
    real_read = shared_cores._read
    monkeypatch.setattr(shared_cores, "_read", lambda name, fd: read.append(name) or real_read(name, fd))
    with shared_cores.Announce(interval=3600) as sharing:
        sharing._look()
        sharing._look()
    assert sorted(read) == [f"{dead}-{ticks}.json" for ticks in range(1, 4)]


def test_one_that_started_and_ended_between_two_looks_is_still_recorded(folder, capsys):
    """The later one finds this one's file and leaves a marker addressed to it: this one never looked meanwhile."""
    with shared_cores.Announce(interval=3600) as first:
        code = (f"from mlperf_bert import shared_cores as s\nwith s.Announce('{folder}', 'Server', 3600) as a:\n    pass\n"
                "print(a.record()['overlapped'])")
        later = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert later.stdout.strip() == "True", later.stderr
        assert later.stderr.startswith(f"warning: another measurement runs on this run's cores: pid {os.getpid()} ")
        assert len(later.stderr.splitlines()) == 1
    record = first.record()
    assert record["overlapped"] and [o["scenario"] for o in record["others"]] == ["Server"], record
    assert capsys.readouterr().err == ""   # nobody was measuring when it started
    assert os.listdir(folder) == []
    assert shared_cores.describe(record).startswith("another measurement ran on this run's cores while it measured: "
                                                    "pid ")


def test_files_anyone_may_write_there_neither_end_the_run_nor_reach_the_terminal(folder, capsys):
    """Cores that are no list of core numbers ended the run in a TypeError; a run id that is no run id was printed."""
    folder.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ident = guard.identity(sleeper.pid)
        stem = f"{sleeper.pid}-{ident['started']}"
        (folder / f"{stem}.json").write_text(json.dumps({**ident, "cores": 1}))
        with shared_cores.Announce(interval=3600) as sharing:
            (folder / f"{sharing.stem}.met-by-1-2").write_text(json.dumps({"pid": 1, "cores": 1}))
            (folder / f"{stem}.json").write_text(json.dumps({**ident, "cores": sharing.cores, "run": "\x1b]0;hi\x07",
                                                             "scenario": "\x1b[2J"}))
            sharing._look()
    finally:
        sleeper.kill()
        sleeper.wait()
    record = sharing.record()
    assert [(o["pid"], o["run"], o["scenario"]) for o in record["others"]] == [(sleeper.pid, None, None)], record
    assert "\x1b" not in shared_cores.describe(record) and capsys.readouterr().err == ""


def test_a_link_put_in_the_folders_place_while_it_measures_is_not_followed(folder, tmp_path):
    """The folder's owner (another user, whose folder a root run uses) may rename it and put a link in its place:
    the looks removed and wrote files in the folder it points to."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "999999-1.json").write_text("not a measurement's")   # named as one of a process that has ended
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ident = guard.identity(sleeper.pid)
        with shared_cores.Announce(interval=3600) as sharing:
            (elsewhere / f"{sleeper.pid}-{ident['started']}.json").write_text(
                json.dumps({**ident, "cores": sharing.cores}))
            folder.rename(tmp_path / "renamed")
            folder.symlink_to(elsewhere)
            sharing._look()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(os.listdir(elsewhere)) == sorted(["999999-1.json", f"{sleeper.pid}-{ident['started']}.json"])
    assert os.listdir(tmp_path / "renamed") == [] and not sharing.record()["overlapped"]


def test_a_folder_that_cannot_be_used_is_said_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(shared_cores.DIR_VAR, str(tmp_path / "a-file" / "measuring"))
    monkeypatch.setattr(shared_cores, "_said", set())
    for _ in range(2):
        with shared_cores.Announce() as sharing:
            pass
    err = capsys.readouterr().err
    assert err.count("note: ") == 1 and "cannot announce this measurement in " in err, err
    assert sharing.record() == {"checked": False, "why": sharing.why_not}
    assert shared_cores.describe(sharing.record()).startswith("not checked for measurements sharing its cores: ")


def test_a_relative_folder_is_no_check(tmp_path, monkeypatch, capsys):
    """The harness runs in its run's folder: MLRUN_SHARED_CORES_DIR=measuring made a folder in each run's, none saw
    another, and each recorded checked, not overlapped."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(shared_cores.DIR_VAR, "measuring")
    monkeypatch.setattr(shared_cores, "_said", set())
    with shared_cores.Announce() as sharing:
        pass
    assert sharing.record() == {"checked": False, "why": "MLRUN_SHARED_CORES_DIR=measuring is no absolute path (each "
                                                         "run would look in its own folder)"}
    assert not (tmp_path / "measuring").exists() and capsys.readouterr().err.startswith("note: ")


def test_the_check_can_be_turned_off(folder, monkeypatch, capsys):
    monkeypatch.setenv(shared_cores.OFF_VAR, "off")
    with shared_cores.Announce() as sharing:
        assert not folder.exists()
    assert sharing.record() == {"checked": False, "why": "turned off (MLRUN_SHARED_CORES=off)"}
    assert capsys.readouterr().err == ""


def test_runs_mark_a_result_measured_on_shared_cores():
    rows = [{"result": "VALID", "short": True, "shared_cores.overlapped": True},
            {"result": "VALID", "shared_cores.overlapped": False}]
    assert [line.strip() for line in render(rows, ["result"], "table").splitlines()] == \
        ["RESULT", "VALID (short, shared cores)", "VALID"]
    assert headline({"samples_per_second": 5.0, "result": "VALID", "shared_cores.overlapped": True}) == \
        "5.00/s VALID (shared cores)"
    from engine import records
    assert records.headline({"loadgen": {"result": "INVALID", "metric": {}},
                             "shared_cores": {"checked": True, "overlapped": True}}) == "INVALID (shared cores)"


def test_a_sweeps_best_point_measured_on_shared_cores_is_said_not_to_be_trusted():
    from sweeps.cli import _best_warnings
    shared = [{"shared_cores.overlapped": True}, {"shared_cores.overlapped": False}]
    assert [note.split(" (")[0] for note in _best_warnings(shared[0], {}, shared, "samples_per_second")] == \
        ["another measurement ran on its cores while it measured"]
    assert _best_warnings(shared[1], {}, shared, "samples_per_second") == []


# -- real harness processes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    onnx.save(random_model.build(layers=2, hidden=64, heads=2, seq=384), root / "model.onnx")
    squad_features.build(SHARED_DATA / "squad" / "dev-v1.1.json", SHARED_DATA / "bert-vocab" / "vocab.txt",
                         root / "features", max_examples=20)
    return root


def start_harness(files, out, cores, min_duration_ms, env):
    command = [sys.executable, "-m", "mlperf_bert.harness", "--features", str(files / "features"), "--model",
               str(files / "model.onnx"), "--out", str(out), "--scenario", "SingleStream", "--mode", "performance",
               "--count", "20", "--min-duration", str(min_duration_ms)]
    return subprocess.Popen(command, cwd=files, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))


@pytest.mark.slow   # about 10 s: a measurement long enough for two others to start and end within it
def test_harnesses_on_the_same_cores_both_record_it_and_on_disjoint_cores_neither(files, folder, tmp_path):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two cores to run measurements on disjoint ones")
    env = dict(os.environ)
    first = start_harness(files, tmp_path / "first", {allowed[0]}, 8000, env)
    deadline = time.monotonic() + 60
    while not any(shared_cores.ENTRY.fullmatch(name) for name in (os.listdir(folder) if folder.is_dir() else ())):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    # while the first measures: one on its core, one on another core
    same = start_harness(files, tmp_path / "same", {allowed[0]}, 300, env)
    other = start_harness(files, tmp_path / "other", {allowed[1]}, 300, env)
    outputs = {name: proc.communicate(timeout=120) for name, proc in (("same", same), ("other", other))}
    assert first.poll() is None, "the first measurement ended before the others did: no overlap was tested"
    outputs["first"] = first.communicate(timeout=120)
    summaries = {}
    for name, (out, err) in outputs.items():
        proc = {"first": first, "same": same, "other": other}[name]
        assert proc.returncode == 0 and "Traceback" not in err, (name, out, err)
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert {name: s["shared_cores"]["overlapped"] for name, s in summaries.items()} == \
        {"first": True, "same": True, "other": False}
    assert [o["pid"] for o in summaries["first"]["shared_cores"]["others"]] == [same.pid]
    assert [o["pid"] for o in summaries["same"]["shared_cores"]["others"]] == [first.pid]
    # the later one was warned at its start, on one line; the run's closing lines say it; the result keeps its word
    assert f"warning: another measurement runs on this run's cores: pid {first.pid} " in outputs["same"][1]
    assert "warning:" not in outputs["other"][1] and "warning:" not in outputs["first"][1]
    assert "  shared cores: another measurement ran on this run's cores while it measured" in outputs["first"][0]
    assert "shared cores" not in outputs["other"][0]
    assert summaries["first"]["loadgen"]["result"] in ("VALID", "INVALID")
    assert os.listdir(folder) == []   # each removed its file
