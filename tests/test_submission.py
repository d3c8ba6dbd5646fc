"""`mlrun submit` end to end, offline: a --short open-division submission of a tiny random BERT through the real
recipes, LoadGen, the official TEST01 scripts and the official checker (the shared copy of the sources).

One workspace for the module (the venvs are built once): the first submission is killed (SIGKILL of its
process group) after its first finished run, the same command then reuses that run and completes.
"""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import MLRUN, ROOT, SHARED_DATA, assert_user_error, kill_group, offline_mlrun, wait_for

QUERY = "app mlperf bert _onnxruntime _cpu _random"
TINY = ["--dep.model.layers=2", "--dep.model.hidden=128", "--dep.model.heads=2"]
SRC = os.path.join(os.path.dirname(ROOT), "shared", "mlperf-inference")
SYSTEM = """system_name: CI box
status: available
host_storage_type: SSD
host_memory_configuration: unknown
host_processor_interconnect: N/A
host_networking: N/A
host_networking_topology: N/A
host_network_card_count: "0"
cooling: air
hw_notes: none
sw_notes: mlrun
system_type_detail: N/A
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory, bert_seed):
    mlrun = offline_mlrun(tmp_path_factory.mktemp("submission"), seed=bert_seed.cache)
    (mlrun.root / "system.yaml").write_text(SYSTEM)
    return mlrun


def submit_args(root, *extra):
    return ["submit", QUERY, "--submitter=Team", "--division=open", "--system=system.yaml",
            f"--inference-src={SRC}", "-o", str(root / "sub"), *TINY, *extra]


def app_runs(root):
    """Run ids of the benchmark app under runs/ (other recipes, e.g. the sources, may make records too)."""
    runs = root / "runs"
    found = []
    for run_id in sorted(os.listdir(runs)) if runs.is_dir() else []:
        path = runs / run_id / "run.json"
        if path.is_file() and json.loads(path.read_text()).get("query", "").startswith("app mlperf bert"):
            found.append(run_id)
    return found


@pytest.fixture(scope="module")
def killed(ws):
    """A --short submission killed after its first finished run: (the run id it finished, the state then)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(ws.root / "cache"), MLRUN_RUNS=str(ws.root / "runs"),
               MLRUN_MIRROR=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    state = ws.root / "sub" / "state.json"

    def first_run_done():
        try:
            return len(json.loads(state.read_text())["runs"]) >= 1
        except (OSError, ValueError, KeyError):
            return False
    proc = subprocess.Popen([MLRUN, *submit_args(ws.root, "--short")], env=env, cwd=str(ws.root),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_for(first_run_done, timeout=900, interval=0.05), "no run finished"
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())
    return saved["runs"]["SingleStream/search"]["run"], saved


@pytest.fixture(scope="module")
def completed(ws, killed):
    result = ws(*submit_args(ws.root, "--short"), timeout=900)
    return result


def test_rerun_reuses_the_finished_run_and_completes(killed, completed):
    first, saved = killed
    out = completed.stdout
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"SingleStream/search: reused run {first}" in out
    state = json.loads((completed_root(completed) / "state.json").read_text())
    assert state["runs"]["SingleStream/search"]["run"] == first
    assert len(state["runs"]) == 8 and state["verdict"]["ok"] is True
    reused = [c for c in state["comparisons"] if c["run"] == "SingleStream/search" and c["reused"]]
    assert reused and reused[-1]["differences"] == []


def completed_root(result):
    line = next(x for x in result.stdout.splitlines() if x.startswith("tree: "))
    return __import__("pathlib").Path(line[len("tree: "):]).parent


def test_short_submission_tree_and_checker(ws, completed):
    out = completed.stdout
    assert "CANNOT be submitted" in out and "short-run complaints" in out
    assert "  Offline/accuracy: running\n" in out and "not run yet" not in out   # a first run needs no reason
    # SingleStream's latency: the early-stopping estimate, or where a short run has too few queries for one
    # (LoadGen logs 0 then) its p90, said so
    row = re.search(r"SingleStream +latency ms(?: \(p90: early stopping not met\))? +([0-9.]+) ", out)
    assert row and float(row[1]) > 0, out
    root = completed_root(completed)
    verdict = json.loads((root / "verdict.json").read_text())
    assert verdict["ok"] and verdict["errors"] == [] and verdict["short_run_errors"]
    assert os.path.isfile(verdict["archive"]) and verdict["archive"].endswith(".tar.gz")
    top = root / "tree" / "open" / "Team"
    system = json.loads((top / "systems" / "CI_box.json").read_text())
    assert system["division"] == "open" and system["host_processor_core_count"] and system["framework"]
    assert (top / "src" / "mlperf_bert" / "harness.py").is_file()
    calibration = (top / "documentation" / "calibration.md").read_text()   # where the rules want it described
    assert "Weights: fp32. Random weights, no training (plumbing only). No quantization and no calibration" \
        in calibration, calibration
    for scenario in ("SingleStream", "Offline"):
        d = top / "results" / "CI_box" / "bert-99" / scenario
        for rel in ("measurements.json", "user.conf", "README.md", "accuracy/accuracy.txt",
                    "accuracy/mlperf_log_accuracy.json", "accuracy/mlperf_log_detail.txt",
                    "performance/run_1/mlperf_log_summary.txt", "TEST01/verify_accuracy.txt",
                    "TEST01/verify_performance.txt", "TEST01/performance/run_1/mlperf_log_detail.txt"):
            assert (d / rel).is_file(), rel
        accuracy = (d / "accuracy" / "accuracy.txt").read_text()
        assert '"f1"' in accuracy and "hash=" in accuracy
        assert "TEST PASS" in (d / "TEST01" / "verify_accuracy.txt").read_text()   # deterministic responses
        # TEST01's accuracy log truncated too (no accuracy.txt there: the script left it whole, 12 MB, and said ERROR)
        assert "hash=" in (d / "TEST01" / "accuracy" / "accuracy.txt").read_text()
        assert (d / "TEST01" / "accuracy" / "mlperf_log_accuracy.json").stat().st_size < 10 * 1024
        readme = (d / "README.md").read_text()
        assert "bin/mlrun submit" in readme and "target_" in readme and "Settings search" in readme
        assert "Made by mlrun 0." in readme   # which mlrun: a teammate on another commit could not tell
        # the copy kept beside the tree (a path of the person's own file moved, or changed, with it)
        assert f"--system={root / 'system.yaml'}" in readme and f"--runs={ws.root / 'runs'}" in readme
        assert f"--mirror={SHARED_DATA}" in readme   # given as MLRUN_MIRROR: pasted without it, it went online
        assert "kept beside the tree as `system.yaml`" in readme and (root / "system.yaml").read_text() == SYSTEM
        # the runs' commands name the cache and mirror they ran with: pasted, they run the same
        assert f"bin/mlrun --cache {ws.root / 'cache'} --runs {ws.root / 'runs'} --mirror " in readme, readme
    # the full accuracy logs stay outside the tree; no run folder but TEST01's saw an audit.config
    assert list((root / "accuracy-logs").rglob("mlperf_log_accuracy.json"))
    assert not list((ws.root / "runs").rglob("audit.config"))
    state = json.loads((root / "state.json").read_text())
    assert set(state["settings"]) == {"SingleStream", "Offline"}
    assert state["settings"]["Offline"]["figures"]["target_qps"] > 0


def test_plan_shows_every_run_done_after_the_submission(ws, completed):
    result = ws("plan", *submit_args(ws.root, "--short"))
    assert result.returncode == 0, result.stderr
    for scenario in ("SingleStream", "Offline"):
        for kind in ("search", "accuracy", "performance", "TEST01"):
            line = next(x for x in result.stdout.splitlines() if x.strip().startswith(f"{scenario}/{kind} "))
            assert "done (" in line, line
    # --rerun marks them all to run again
    again = ws("plan", *submit_args(ws.root, "--short", "--rerun"))
    assert "(8 to run)" in again.stdout, again.stdout
    # the searches run again: their settings are to come, not the last search's (was: --target_qps=... shown)
    line = next(x for x in again.stdout.splitlines() if x.strip().startswith("Offline/performance "))
    assert "settings come from the search" in line and "target_qps" not in line, line
    # a run made on another host (here: its record's core count differs) is not reused, and the plan says why (the
    # run's own record, not state.json's copy of its fingerprint, says where it ran)
    state = json.loads((ws.root / "sub" / "state.json").read_text())
    path = os.path.join(os.path.dirname(state["runs"]["Offline/accuracy"]["folder"]), "run.json")
    with open(path) as f:
        saved = f.read()
    record = json.loads(saved)
    record["host"]["cores"] = 999
    with open(path, "w") as f:
        f.write(json.dumps(record))
    try:
        other = ws("plan", *submit_args(ws.root, "--short"))
    finally:
        with open(path, "w") as f:
            f.write(saved)
    line = next(x for x in other.stdout.splitlines() if x.strip().startswith("Offline/accuracy "))
    assert "to run" in line and "host cores: 999 ->" in line, line
    assert "(1 to run)" in other.stdout, other.stdout


@pytest.mark.parametrize("extra, fragment", [
    (["--scenarios=SingleStream,Interactive"], "unknown scenario(s): Interactive"),
    (["--division=closed"], "--division=closed needs the official model"),
    (["--query-instead=get dataset squad"], "mlrun submit runs the BERT benchmark app; 'get dataset squad' is "
                                            "get-dataset-squad"),   # was: 'has no input --mode'
])
def test_refused_before_any_run(ws, tmp_path, extra, fragment):
    before = app_runs(ws.root)
    args = [a for a in submit_args(ws.root, "--short") if not a.startswith("--division")] + extra
    if extra[0].startswith("--query-instead="):
        args = [extra[0].split("=", 1)[1] if a == QUERY else a for a in args[:-1]]
    if "--division=closed" not in extra:
        args.append("--division=open")
    result = ws(*[a if a != str(ws.root / "sub") else str(tmp_path / "sub") for a in args], timeout=120)
    assert_user_error(result, 2, fragment)
    assert app_runs(ws.root) == before
    assert not (tmp_path / "sub").exists()   # it left -o made, holding .submit.lock


def test_a_system_file_that_is_not_yaml_is_refused_before_the_sources_are_fetched(ws, tmp_path):
    # Without --inference-src the sources would be fetched (no internet here): the YAML error must come first.
    (tmp_path / "broken.yaml").write_text("system_name: [Box\n")
    args = [a for a in submit_args(tmp_path, "--short") if not a.startswith(("--inference-src", "--system"))]
    result = ws(*args, f"--system={tmp_path / 'broken.yaml'}", timeout=120)
    assert_user_error(result, 2, f"--system {tmp_path / 'broken.yaml'}: not YAML")
    assert "inference" not in result.stderr   # no fetch was tried


def test_closed_division_takes_the_official_model_named_or_not(ws, tmp_path):
    # The app runs the official fp32 model when no model is named: closed must accept it (plan only: no run).
    # NNCF's int8 of it too, as TensorRT's int8 engines of it (post-training, calibrated): it was refused
    for query, *extra in (["app mlperf bert _openvino _cpu", "--precision=int8", "--env.OMP_NUM_THREADS=1"],
                          ["app mlperf bert _onnxruntime _cpu"],
                          ["app mlperf bert _onnxruntime _cpu _fp32"]):
        args = ["plan", "submit", query, *extra, "--submitter=Team", "--division=closed", "--system=system.yaml",
                f"--inference-src={SRC}", "-o", str(tmp_path / "closed")]
        result = ws(*args, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "official fp32" in result.stdout + result.stderr, result.stdout
        assert ("made int8 by NNCF" in result.stdout) == bool(extra), result.stdout
        # the lines list what submit sets itself: the flags given (tuned) were nowhere
        assert ("every run also gets your --precision=int8 --env.OMP_NUM_THREADS=1" in result.stdout) == bool(extra), \
            result.stdout
    # Scenarios the checker refuses for closed bert-99 on an edge system: before any run (was: after all of them)
    for scenarios, said in (("SingleStream,Offline,MultiStream", "the checker refuses MultiStream"),
                            ("Offline", "missing SingleStream")):
        result = ws(*args[:-2], f"--scenarios={scenarios}", "-o", str(tmp_path / "closed2"), timeout=120)
        assert_user_error(result, 2, "a closed bert-99 submission on an edge system (round v6.1) has SingleStream, "
                          "Offline, and no other", said)


def test_a_later_scenarios_own_input_is_refused_before_any_run(ws, tmp_path):
    """--Offline.precision=bf16 (onnxruntime runs no bf16): the first scenario's four runs ran, then it was
    refused; now every scenario's plan is made before any run."""
    before = app_runs(ws.root)
    result = ws(*submit_args(tmp_path, "--short", "--scenarios=SingleStream,Offline", "--Offline.precision=bf16"),
                timeout=120)
    assert_user_error(result, 2, "--Offline.precision=bf16 applies only with _openvino")
    assert app_runs(ws.root) == before
    # a misspelt scoped one: its suggestion scoped too (it said "did you mean --instances?")
    result = ws(*submit_args(tmp_path, "--short", "--Offline.instancez=2"), timeout=120)
    assert_user_error(result, 2, "has no input --Offline.instancez (did you mean --Offline.instances?)")


def test_missing_system_fields_listed_at_once_before_any_run(ws, tmp_path):
    before = app_runs(ws.root)
    (tmp_path / "partial.yaml").write_text("system_name: Box\ncooling: air\n")
    args = [a if a != "--system=system.yaml" else f"--system={tmp_path / 'partial.yaml'}"
            for a in submit_args(tmp_path)]
    err = assert_user_error(ws(*args, timeout=120), 2, "required field(s)")
    for field in ("status", "host_storage_type", "host_networking", "sw_notes"):
        assert field in err
    assert app_runs(ws.root) == before


def test_test01_falls_back_to_baseline_and_compliance_accuracy(ws, completed, tmp_path):
    """A SUT that is not bit-deterministic: one logged response differs, so the accuracy part of the
    verification fails and the TEST01 README's baseline/compliance accuracy files are made."""
    import shutil
    from engine.settings import Settings
    from submission import submit, tree
    state = json.loads((completed_root(completed) / "state.json").read_text())
    test01, accuracy = (state["runs"][f"Offline/{k}"]["folder"] for k in ("TEST01", "accuracy"))
    scenario, changed = tmp_path / "Offline", tmp_path / "test01"
    (scenario / "accuracy").mkdir(parents=True)
    shutil.copy(os.path.join(accuracy, "mlperf_log_accuracy.json"), scenario / "accuracy")
    shutil.copytree(os.path.join(completed_root(completed), "tree", "open", "Team", "results", "CI_box", "bert-99",
                                 "Offline", "performance"), scenario / "performance")
    shutil.copytree(test01, changed, ignore=shutil.ignore_patterns(".mlrun"))
    lines = (changed / "mlperf_log_accuracy.json").read_text().split("\n")
    i = next(n for n, line in enumerate(lines) if '"data" : "' in line)
    at = lines[i].index('"data" : "') + len('"data" : "')
    lines[i] = lines[i][:at] + ("0" if lines[i][at] != "0" else "1") + lines[i][at + 1:]
    (changed / "mlperf_log_accuracy.json").write_text("\n".join(lines))
    opts, inputs, deps, env = submit.parse(QUERY, ["--submitter=Team", "--division=open", "-o", str(tmp_path / "s")])
    settings = Settings(cache=str(ws.root / "cache"), runs=str(ws.root / "runs"),
                        mirror=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    sub = submit.Submission(opts, inputs, deps, env, settings, out=open(os.devnull, "w"))
    sub.src = SRC
    os.makedirs(tmp_path / "s" / "logs")
    tree._test01(sub, str(scenario), str(changed), "x")
    assert "TEST FAIL" in (scenario / "TEST01" / "verify_accuracy.txt").read_text()
    files = sorted(os.listdir(scenario / "TEST01" / "accuracy"))
    assert files == ["accuracy.txt", "baseline_accuracy.txt", "compliance_accuracy.txt", "mlperf_log_accuracy.json"]
    for name in ("baseline_accuracy.txt", "compliance_accuracy.txt"):
        assert '"f1"' in (scenario / "TEST01" / "accuracy" / name).read_text()


def test_an_interrupted_rerun_leaves_no_old_verdict_and_says_how_to_go_on(ws, completed):
    """After Ctrl-C in `submit --rerun`: verdict.json ("ok": true), the tree and the archive of the last submit stayed
    beside a state.json naming other runs, and the advice was "the same command goes on from where it stopped",
    which with --rerun starts every run again (a user's trial)."""
    root = completed_root(completed)
    archive = json.loads((root / "verdict.json").read_text())["archive"]
    assert os.path.basename(archive) == "Team-open-short-rehearsal.tar.gz"   # a rehearsal's, named so
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(ws.root / "cache"), MLRUN_RUNS=str(ws.root / "runs"),
               MLRUN_MIRROR=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    proc = subprocess.Popen([MLRUN, *submit_args(ws.root, "--short", "--rerun")], env=env, cwd=str(ws.root),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert wait_for(lambda: not (root / "verdict.json").exists(), timeout=300, interval=0.05), "verdict kept"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "the same command without --rerun goes on from where it stopped" in err, err
    assert not os.path.exists(archive) and not (root / "tree").exists() and not (root / "verdict.json").exists()
    assert "verdict" not in json.loads((root / "state.json").read_text())


def test_a_submit_that_would_drop_results_is_refused_and_a_scoped_flag_reuses_the_other_scenarios(ws, completed):
    """A second system given the same -o lost the first's tree, archive and verdict, even when stopped after
    4 s; --scenarios=Offline to redo one scenario dropped SingleStream from the tree; each unsaid."""
    assert completed.returncode == 0
    again = ws(*submit_args(ws.root, "--short"), timeout=900)   # the tree as built (a test before may have cut it)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    sub = ws.root / "sub"
    (ws.root / "other.yaml").write_text(SYSTEM.replace("CI box", "Other box"))
    other = [a if a != "--system=system.yaml" else "--system=other.yaml" for a in submit_args(ws.root, "--short")]
    for args, said in ((other, "without system CI_box's results"),
                       (submit_args(ws.root, "--short", "--scenarios=Offline"), "without the SingleStream results")):
        for verb in (["plan"], []):
            assert_user_error(ws(*verb, *args, timeout=300), 2, said, "--replace")
        assert (sub / "tree").is_dir() and (sub / "verdict.json").is_file()   # nothing removed
    assert ws("plan", *other, "--replace", timeout=300).returncode == 0
    # one scenario with other flags: the other scenario's runs are reused
    plan = ws("plan", *submit_args(ws.root, "--short", "--Offline.instances=1"), timeout=300)
    assert plan.returncode == 0, plan.stderr
    rows = {line.split()[0]: line for line in plan.stdout.splitlines() if line.startswith("  ") and "/" in line}
    assert all("done (" in rows[f"SingleStream/{kind}"] for kind in ("search", "accuracy", "performance")), rows
    assert "to run" in rows["Offline/search"] and 'instances: absent -> "1"' in rows["Offline/accuracy"], rows
    assert "Offline's runs also get your --instances=1" in plan.stdout
    # tuned back: the earlier settings' runs are reused (state.json kept one run per name: hours of runs again)
    changed = ws(*submit_args(ws.root, "--short", "--Offline.instances=1"), timeout=900)
    assert changed.returncode == 0, changed.stdout[-2000:] + changed.stderr[-2000:]
    assert "SingleStream/accuracy: reused run" in changed.stdout and "Offline/accuracy: running again" in changed.stdout
    back = ws("plan", *submit_args(ws.root, "--short"), timeout=300)
    assert "(0 to run)" in back.stdout, back.stdout
    again = ws(*submit_args(ws.root, "--short"), timeout=900)
    assert again.returncode == 0 and "running" not in again.stdout.split("runs:")[1].split("tree:")[0], again.stdout
