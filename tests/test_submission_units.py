"""The parts of `mlrun submit` that need no run: settings search arithmetic, the system description, parsing."""
import json
import re
import os

import pytest

from conftest import ROOT
from engine.errors import UsageError
from submission import search, submit, system

SHARED_SRC = os.path.join(os.path.dirname(ROOT), "shared", "mlperf-inference")


def _run_folder(tmp_path, summary_lines):
    (tmp_path / "mlperf_log_summary.txt").write_text("\n".join(summary_lines) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({"warmup_qps": 10.0}))
    return str(tmp_path)


def test_offline_target_is_an_overestimate_of_the_measured_qps(tmp_path):
    folder = _run_folder(tmp_path, ["Scenario : Offline", "Samples per second: 200.0", "Result is : VALID"])
    found = search.settings_from("Offline", folder, "RUN1")
    assert found["inputs"] == {"target_qps": 250.0}           # 200 x 1.25: LoadGen then runs >= min_duration
    assert found["figures"]["measured_qps"] == 200.0 and "RUN1" in found["how"]


def test_singlestream_target_is_an_underestimate_of_the_mean_latency(tmp_path):
    folder = _run_folder(tmp_path, ["Scenario : SingleStream", "Mean latency (ns) : 6122000"])
    found = search.settings_from("SingleStream", folder, "RUN2")
    assert found["inputs"] == {"target_latency": 4.898} and found["user_conf"] == []   # 6.122 / 1.25


def test_sub_millisecond_latency_is_kept_to_the_microsecond(tmp_path):
    # LoadGen reads target_latency as a real number of ms (strtod): no rounding up to 1 ms, which would be
    # 2.5x this mean latency, over the 2x LoadGen's generated queries allow.
    folder = _run_folder(tmp_path, ["Scenario : SingleStream", "Mean latency (ns) : 500000"])
    found = search.settings_from("SingleStream", folder, "RUN3")
    assert found["inputs"] == {"target_latency": 0.4} and found["user_conf"] == []


def test_required_system_fields_come_from_the_official_checker():
    lists = system.checker_lists(SHARED_SRC, "SYSTEM_DESC_REQUIRED_FIELDS")
    fields = lists["SYSTEM_DESC_REQUIRED_FIELDS"]
    assert len(fields) >= 30 and "host_processor_model_name" in fields and "cooling" in fields


@pytest.mark.parametrize("query, packages, expected", [
    ("app mlperf bert _onnxruntime _cpu _random", None, "onnxruntime 1.23.2"),
    ("app mlperf bert _onnxruntime _cpu _random", "onnxruntime==1.22.1 tqdm==4.67.1", "onnxruntime 1.22.1"),
    ("app mlperf bert _onnxruntime _cpu _random", "onnx==1.18.0", "onnxruntime 1.23.2"),
    ("app mlperf bert _deepsparse _random", None, "deepsparse 1.8.0"),
    # OpenVINO runs the model, whatever onnxruntime the venv under its layer holds
    ("app mlperf bert _openvino _random", "onnxruntime==1.22.1 tqdm==4.67.1", "openvino 2026.4.1"),
])
def test_the_framework_named_is_the_runtime_the_venv_installs(tmp_path, query, packages, expected):
    # Another onnxruntime (--dep.python.packages) must not be described as the recipe's 1.23.2.
    from engine.resolver import resolve
    from engine.settings import Settings
    settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(ROOT, "recipes"),
                                          "MLRUN_CACHE": str(tmp_path / "cache")})
    plan = resolve(settings.index(), query, host_env=dict(os.environ), prober=settings.prober(),
                   dep_overrides={"python": {"packages": packages}} if packages else {})
    backend = next(n for n in plan.nodes if n.name.startswith("get-backend-"))
    assert submit.framework(backend) == expected


def test_missing_system_fields_are_one_error_naming_all_of_them():
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    with pytest.raises(UsageError) as err:
        system.describe(SHARED_SRC, {"cooling": "air"}, "Team", "open", facts, short=False)
    message = err.value.message
    for field in ("system_name", "status", "host_storage_type", "hw_notes"):
        assert field in message
    for field in ("cooling", "host_processor_model_name", "operating_system", "framework"):
        assert f" {field}," not in message and not message.endswith(field)


YAML_FIELDS = {"status": "available", "system_name": "Box", "host_storage_type": "SSD", "host_memory_configuration": "1x24GB",
               "host_processor_interconnect": "N/A", "host_networking": "N/A", "host_networking_topology": "N/A",
               "cooling": "air", "hw_notes": "", "sw_notes": "", "host_network_card_count": 1, "system_type_detail": "VM"}


def test_the_documented_system_yaml_is_complete_and_a_field_the_checker_reads_as_empty_is_refused():
    """docs/submission.md's example YAML gives every field the machine cannot tell. A 0 where the checker wants an
    answer passed, and the checker failed the submission after all its runs ('requires a meaningful response')."""
    import re
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    with open(os.path.join(ROOT, "docs", "submission.md")) as f:
        example = re.search(r"```yaml\n(.*?)```", f.read(), re.S).group(1)
    import yaml
    assert yaml.safe_load(example) == YAML_FIELDS
    desc, notes = system.describe(SHARED_SRC, YAML_FIELDS, "Team", "open", facts, short=False)
    assert notes == [] and desc["host_network_card_count"] == 1
    for value in (0, "", None, False):
        with pytest.raises(UsageError) as err:
            system.describe(SHARED_SRC, dict(YAML_FIELDS, host_network_card_count=value), "Team", "open", facts,
                            short=False)
        assert err.value.message == (f"the system description gives host_network_card_count: {value!r}, which the "
                                     "checker takes for no answer")


@pytest.mark.parametrize("field, value, fragment", [
    ("status", "bogus", "gives status: 'bogus', not one the rules take"),   # the checker refused it after every run
    ("system_name", True, "gives system_name: True, which names no system"),   # YAML's yes: system "True"
    ("system_name", ["a", "b"], "which names no system"),
    ("system_name", "  ", "which names no system"),
    ("system_type", "bogus", "gives system_type: 'bogus', not one the checker takes"),   # likewise, any division
    # the checker wants the network division's fields beside it, and stops with an exception on a YAML true
    ("is_network", "true", "gives is_network: 'true': mlrun submits a SUT on this machine"),
    ("is_network", True, "gives is_network: True"),
    # the flags' own: ignored in silence (the docs said the YAML wins)
    ("division", "closed", "gives division: 'closed', and --division=open: the flag decides"),
    ("submitter", "Someone", "gives submitter: 'Someone', and --submitter=Team: the flag decides"),
])
def test_system_fields_the_checker_would_refuse_are_refused_before_any_run(field, value, fragment):
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    with pytest.raises(UsageError) as err:
        system.describe(SHARED_SRC, dict(YAML_FIELDS, **{field: value}), "Team", "open", facts, short=True)
    assert fragment in err.value.message


def test_a_field_named_near_one_the_description_lacks_says_which():
    """coolng: copied into the system file, and the error named only the cooling it lacked."""
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    fields = {k: v for k, v in YAML_FIELDS.items() if k != "cooling"}
    with pytest.raises(UsageError) as err:
        system.describe(SHARED_SRC, dict(fields, coolng="water"), "Team", "open", facts, short=True)
    assert "gives coolng, which is no field the checker reads (did you mean cooling?)" in err.value.message


def test_the_flags_own_fields_agreeing_and_fields_of_ones_own_pass():
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    desc, _ = system.describe(SHARED_SRC, dict(YAML_FIELDS, division="open", submitter="Team", my_notes="x"), "Team",
                              "open", facts, short=True)
    assert (desc["division"], desc["submitter"], desc["my_notes"]) == ("open", "Team", "x")


def test_a_false_is_network_is_written_as_the_checker_reads_it():
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    desc, _ = system.describe(SHARED_SRC, dict(YAML_FIELDS, is_network=False), "Team", "closed", facts, short=True)
    assert desc["is_network"] == "false"   # a YAML false: a bool, which the checker's .lower() stops on


def test_one_submit_at_a_time_in_one_output_folder(tmp_path):
    """Two submits into one -o ran every run twice at once (each measuring the other), the last wrote state.json."""
    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / submit.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError) as err:
            submit._hold(str(tmp_path))
        assert err.value.message == f"another mlrun submit is using {tmp_path}"
    finally:
        holder.kill()
        holder.wait()
    submit._hold(str(tmp_path)).release()   # free again
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match="a file, not a folder"):
        submit._hold(str(afile))


def test_machine_facts_and_user_fields_fill_the_description():
    facts = system.machine_facts("/", "onnxruntime 1.23.2", "Python 3.11")
    desc, notes = system.describe(SHARED_SRC, {"system_name": "Box", "framework": "mine"}, "Team", "open", facts,
                                  short=True)
    assert desc["framework"] == "mine" and desc["system_name"] == "Box"     # the user's field wins
    assert desc["division"] == "open" and desc["submitter"] == "Team" and desc["system_type"] == "edge"
    assert desc["host_processor_core_count"] and desc["accelerators_per_node"] == "0"
    assert desc["status"] == "available" and "status" in notes[0]            # --short: placeholders, said so
    assert system.system_id(desc) == "Box"


def test_a_missing_required_option_names_a_misspelt_one_beside_it():
    with pytest.raises(UsageError, match=r"needs --submitter \(--submiter is given: did you mean --submitter\?\)"):
        submit.parse("app mlperf bert", ["--submiter=T", "--division=open"])
    with pytest.raises(UsageError) as err:
        submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "--scenario=Offline"])
    assert "--scenarios=A,B chooses the scenarios" in err.value.hint


@pytest.mark.parametrize("words, fragment", [
    (["--scenarios=Offline,Bogus"], "unknown scenario(s): Bogus"),
    (["--benchmarks=bert-98"], "unknown benchmark(s): bert-98"),
    (["--mode=accuracy"], "sets --mode itself"),
    (["--division=semi"], "'semi' is not one of open, closed"),
    (["--scenario=Offline"], "sets --scenario itself"),   # was taken as --scenarios (an abbreviation)
    # last one won in silence; app inputs given twice were refused already
    (["--division=open", "--division=closed"], "--division is given twice: 'open' and 'closed'"),
    (["--submitter=Other"], "--submitter is given twice"),
    # These passed and a rehearsal said OK: a subset scored, a user.conf overriding what the rules fix
    (["--questions=/tmp/q.json"], "--questions scores a chosen subset of the dev set"),
    (["--division=closed", "--user_conf=/tmp/u.conf"], "--user_conf in the closed division"),
    (["--submitter=" + "A" * 65], "at most 64 characters"),   # failed packing, after every run
    # scenario-scoped inputs: a scenario that is none, one not run, an input submit sets itself
    (["--Ofline.instances=1"], "--Ofline.instances: 'Ofline' is no scenario"),
    (["--Server.instances=2"], "Server is not among the scenarios this submission runs (SingleStream, Offline)"),
    (["--Offline.target_qps=5"], "sets --target_qps itself"),
    (["--Offline.questions=/tmp/q.json"], "--questions scores a chosen subset"),
    (["--Offline.dep.model.layers=3"], "a scenario's own flags are app inputs"),
    (["--jobs=0"], "--jobs '0': give a whole number of entries built at once"),
])
def test_bad_requests_are_usage_errors(words, fragment):
    base = ([] if any(w.startswith("--submitter") for w in words) and "--submitter=Other" not in words
            else ["--submitter=Team"]) + ([] if any(w.startswith("--division") for w in words) else ["--division=open"])
    with pytest.raises(UsageError) as err:
        submit.parse("app mlperf bert", base + words)
    assert fragment in err.value.message


def test_jobs_is_each_runs_entries_built_at_once(monkeypatch):
    base = ["--submitter=Team", "--division=open"]
    monkeypatch.delenv("MLRUN_JOBS", raising=False)
    assert submit.parse("app mlperf bert", base)[0].jobs == 2
    assert submit.parse("app mlperf bert", base + ["--jobs", "3"])[0].jobs == 3
    monkeypatch.setenv("MLRUN_JOBS", "1")
    assert submit.parse("app mlperf bert", base)[0].jobs == 1   # an app input named jobs it is not


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "-x", "my team"])
def test_a_submitter_is_a_plain_folder_name(name):
    """'..' made the default -o the current folder: the tree replaced the person's files there."""
    with pytest.raises(UsageError, match="letters, digits"):
        submit.parse("app mlperf bert", [f"--submitter={name}", "--division=open"])
    assert submit.parse("app mlperf bert", ["--submitter=Team_1.x", "--division=Open"])[0].division == "open"


def test_a_system_named_dots_stays_inside_the_tree():
    assert [system.system_id({"system_name": n}) for n in ("..", ".", "...x", "a..b")] == ["system", "system", "x",
                                                                                          "a..b"]


def test_output_folder_that_no_submission_made_is_refused(tmp_path):
    """-o DIR holding files and no state.json: building would have replaced its tree/ (deleted the person's notes);
    a state.json of another shape was 'unexpected KeyError, a bug in mlrun'."""
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path)])[0]
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds files and no state.json"):
        submit.Submission(opts, {}, {}, {}, settings=None)
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(UsageError, match="is not one mlrun wrote"):
        submit.Submission(opts, {}, {}, {}, settings=None)
    (tmp_path / "state.json").write_text('{"runs": {}}')
    assert submit.Submission(opts, {}, {}, {}, settings=None).state == {"runs": {}}
    assert (tmp_path / "tree" / "notes.txt").read_text() == "mine"


def test_a_submission_folder_whose_damaged_state_was_removed_as_told_starts_over(tmp_path):
    """The hint of a damaged state.json said "remove it to start over"; done, the folder was "no submission folder
    mlrun made" (a dead end). One a submit made starts over; a person's folder of the same names still is refused."""
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path)])[0]
    for name in ("tree", "tree-check", "accuracy-logs", "work", "logs", "check"):
        (tmp_path / name).mkdir()
    for name in ("system.yaml", "verdict.json", "T-open.tar.gz", "T-open.tar.gz.sha1", "state.json"):
        (tmp_path / name).write_text("{bad")
    with pytest.raises(UsageError) as e:
        submit.Submission(opts, {}, {}, {}, settings=None)
    assert e.value.hint.startswith("remove it to start over in this folder: every run is done again")
    (tmp_path / "state.json").unlink()
    assert submit.Submission(opts, {}, {}, {}, settings=None).state == {"runs": {}, "comparisons": []}
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("work", "logs"):   # a person's own: no name only a submit writes
        (mine / name).mkdir()
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(mine)])[0]
    with pytest.raises(UsageError, match="holds files and no state.json"):
        submit.Submission(opts, {}, {}, {}, settings=None)


GOOD_STATE = {"runs": {"Offline/search": {"run": "R1", "folder": "/f", "inputs": {}, "command": ["bin/mlrun"],
                                           "fingerprint": {"plan": {}, "request": {}, "host": {}}, "finished": 1.0}},
              "comparisons": [], "request": {"scenarios": ["Offline"], "submitter": "T", "short": True},
              "settings": {"Offline": {"inputs": {}, "user_conf": [], "figures": {}, "how": "x"}},
              "history": {"Offline/search": []}, "built": True, "verdict": {"ok": True, "summary": "s"}}
DAMAGED_STATES = [   # (what is said, the damage): each said "unexpected ... a bug in mlrun" in submit and plan submit
    ("its run Offline/search is no object", lambda d: d["runs"].update({"Offline/search": 5})),
    ("its run Offline/search's run is int 5", lambda d: d["runs"]["Offline/search"].update(run=5)),
    ("its run Offline/search's fingerprint.plan is int", lambda d: d["runs"]["Offline/search"]["fingerprint"].update(
        plan=5)),
    ("its request.scenarios is int", lambda d: d["request"].update(scenarios=5)),
    ("its request is int", lambda d: d.update(request=5)),
    ("its settings is int", lambda d: d.update(settings=5)),
    ("its settings of Offline are no object", lambda d: d["settings"].update(Offline=5)),
    ("its history is int", lambda d: d.update(history=5)),
    ("its run Offline/search is no object", lambda d: d["history"].update({"Offline/search": [5]})),
    ("its verdict.ok is str", lambda d: d["verdict"].update(ok="x")),
]


def test_a_state_edited_to_other_types_is_refused_with_what_is_wrong(tmp_path):
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path)])[0]
    state = tmp_path / "state.json"
    state.write_text(json.dumps(GOOD_STATE))
    assert submit.Submission(opts, {}, {}, {}, settings=None).state == GOOD_STATE
    for said, damage in DAMAGED_STATES:
        data = json.loads(json.dumps(GOOD_STATE))
        damage(data)
        state.write_text(json.dumps(data))
        with pytest.raises(UsageError, match=re.escape(f"is not one mlrun wrote: {said}")):
            submit.Submission(opts, {}, {}, {}, settings=None)


def test_defaults_are_the_required_scenarios_of_bert_99():
    opts, inputs, deps, env = submit.parse("app mlperf bert", ["--submitter=Team", "--division=open",
                                                               "--dep.model.layers=2", "--threads=2"])
    assert opts.scenario_list == ["SingleStream", "Offline"] and opts.benchmark_list == ["bert-99"]
    assert inputs == {"threads": "2"} and deps == {"model": {"layers": "2"}}
    assert opts.output == os.path.join("submissions", "Team")


def test_loadgen_seeds_are_read_from_the_detail_log():
    # a log of the pinned LoadGen 6.0.17: the round's seeds (tools/submission/submission_checker/constants.py, v6.1)
    seeds = search.loadgen_seeds(os.path.join(ROOT, "tests", "data", "loadgen", "offline-perf"))
    assert seeds["qsl_rng_seed"] == 2085463073848966840
    assert seeds["sample_index_rng_seed"] == 2747215439041700203
    assert seeds["schedule_rng_seed"] == 16159082839903944936


def test_server_measurement_is_find_peak_and_its_target_is_the_one_found(tmp_path):
    assert search.measurement_inputs("Server", short=True)["find_peak"] is True
    assert "find_peak" not in search.measurement_inputs("Offline", short=True)
    folder = _run_folder(tmp_path, ["Scenario : Server", "Completed samples per second : 58.0"])
    peak = {"qps": 60.0834, "offline_samples_per_second": 65.5, "checked_valid": True, "note": "",
            "trials": [{}] * 7}
    (tmp_path / "summary.json").write_text(json.dumps({"find_peak": peak}))
    found = search.settings_from("Server", folder, "RUN4")
    assert found["inputs"] == {"target_qps": 60.083}           # the search's highest VALID target, not a fraction
    assert "7 short runs" in found["how"] and "91.7% of Offline" in found["how"] and "RUN4" in found["how"]
    again = search.retry_settings("Server", found, folder, "RUN5")
    assert again["inputs"] == {"target_qps": 54.075} and "RUN5" in again["how"]   # 60.083 x 0.9
    # every full-length check missed the bound: the run starts where they stepped down to, not at the search's
    # target they showed INVALID; a retry never asks more than the failed run completed
    peak.update(checked_valid=False, checked_qps=51.2)
    (tmp_path / "summary.json").write_text(json.dumps({"find_peak": peak}))
    found = search.settings_from("Server", folder, "RUN7")
    assert found["inputs"] == {"target_qps": 51.2} and "checks stepped down to 51.2 QPS" in found["how"]
    # and where the checks stepped down to a VALID one (the search's target kept as "found", "qps" the VALID one)
    peak.update(checked_valid=True, checked_qps=55.5, qps=55.5, found=60.0834)
    (tmp_path / "summary.json").write_text(json.dumps({"find_peak": peak}))
    stepped = search.settings_from("Server", folder, "RUN9")
    assert stepped["inputs"] == {"target_qps": 55.5} and "short runs that respect LoadGen's early stopping is " \
        "60.083 QPS, its full-length checks stepped down to 55.5 QPS" in stepped["how"], stepped["how"]
    (tmp_path / "slow").mkdir()
    slow = _run_folder(tmp_path / "slow", ["Scenario : Server", "Completed samples per second : 40.5"])
    again = search.retry_settings("Server", found, slow, "RUN8")
    assert again["inputs"] == {"target_qps": 40.5} and "it completed" in again["how"]


def test_server_measurement_without_a_peak_search_is_a_step_error(tmp_path):
    folder = _run_folder(tmp_path, ["Scenario : Server", "Completed samples per second : 58.0"])
    with pytest.raises(search.StepError, match="recorded no --find-peak result"):
        search.settings_from("Server", folder, "RUN6")


@pytest.mark.parametrize("met, value, metric", [
    (True, 41.5, "latency ms"),
    (False, 38.922, "latency ms (p90: early stopping not met)"),   # LoadGen logs the estimate as 0 then
])
def test_the_results_table_shows_a_latency_early_stopping_could_not_estimate_as_the_percentile(tmp_path, met, value,
                                                                                               metric):
    from submission import checker
    run = tmp_path / "open" / "Me" / "results" / "vm" / "bert-99" / "SingleStream" / "performance" / "run_1"
    run.mkdir(parents=True)
    items = {"early_stopping_met": met, "early_stopping_latency_ss": 41500000 if met else 0,
             "result_90.00_percentile_latency_ns": 38921584, "result_validity": "VALID" if met else "INVALID"}
    run.joinpath("mlperf_log_detail.txt").write_text(
        "".join(f':::MLLOG {json.dumps({"key": k, "value": v})}\n' for k, v in items.items()))
    [row] = checker.table(str(tmp_path), {})
    assert (row["value"], row["metric"]) == (value, metric)


def test_a_finished_run_whose_files_went_is_run_again(tmp_path):
    """Its accuracy log removed: it was 'done', then the tree stopped after every run on 'cannot use ...' (exit 2)."""
    import types
    runs, folder = tmp_path / "runs", tmp_path / "runs" / "R1" / "app-mlperf-bert"
    folder.mkdir(parents=True)
    (runs / "R1" / "run.json").write_text(json.dumps({"id": "R1", "status": "ok", "steps": []}))
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt"):
        (folder / name).write_text("x")
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
    sub.state["runs"]["Offline/accuracy"] = {"run": "R1", "folder": str(folder), "fingerprint": {}}
    assert sub.status("Offline/accuracy", plan=None) == ("to run", ["its run R1 lacks mlperf_log_accuracy.json now"])


def test_a_test01_scoring_run_is_reused_by_its_own_files(tmp_path):
    """TEST01's baseline and compliance scoring runs write accuracy.txt, no LoadGen logs: every resume ran them
    again, 'lacks mlperf_log_summary.txt, mlperf_log_detail.txt'."""
    import types
    runs, folder = tmp_path / "runs", tmp_path / "runs" / "R1" / "process-mlperf-accuracy-squad"
    folder.mkdir(parents=True)
    (runs / "R1" / "run.json").write_text(json.dumps({"id": "R1", "status": "ok", "steps": []}))
    (folder / "accuracy.txt").write_text("{\"exact_match\": 1, \"f1\": 2}\n")
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
    sub.host = {}
    plan = types.SimpleNamespace(nodes=[], request={"query": "process mlperf accuracy squad", "inputs": {}})
    for name in ("Offline/TEST01-baseline_accuracy", "Offline/TEST01-compliance_accuracy"):
        sub.state["runs"][name] = {"run": "R1", "folder": str(folder), "fingerprint": sub.fingerprint(plan)}
        assert sub.status(name, plan)[0] == "done"
    (folder / "accuracy.txt").unlink()
    assert sub.status(name, plan) == ("to run", ["its run R1 lacks accuracy.txt now"])


def test_a_run_is_reused_from_a_runs_folder_that_moved(tmp_path):
    """state.json keeps each run's folder: after `mv runs runs-moved` every run was done again, 'lacks ... now'."""
    import shutil
    import types
    runs, folder = _finished_run(tmp_path)
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(tmp_path / "moved")))
    sub.host = {}
    plan = types.SimpleNamespace(nodes=[], request={"query": "app", "inputs": {}})
    sub.state["runs"]["Offline/performance"] = {"run": "R1", "folder": str(folder), "fingerprint": sub.fingerprint(plan)}
    shutil.move(str(runs), str(tmp_path / "moved"))
    status, entry = sub.status("Offline/performance", plan)
    assert status == "done" and entry["folder"] == str(tmp_path / "moved" / "R1" / "app-mlperf-bert")


def test_the_scoring_recipe_keys_its_log_by_content(tmp_path):
    """The baseline log is written anew at one path by each TEST01 run: a stale score would be reused by path."""
    from engine.resolver import resolve
    from engine.settings import Settings
    settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(ROOT, "recipes"),
                                          "MLRUN_CACHE": str(tmp_path / "cache")})
    log = tmp_path / "mlperf_log_accuracy_baseline.json"

    def key():
        return resolve(settings.index(), "process mlperf accuracy squad", inputs={"log": str(log)},
                       host_env=dict(os.environ), prober=settings.prober()).root.key
    log.write_text("[]")
    first = key()
    log.write_text('[{"seq_id": 0, "qsl_idx": 0, "data": "00"}]')
    assert key() != first


def _finished_run(tmp_path):
    """(runs folder, run folder) of a finished run R1 with the logs the tree copies."""
    runs, folder = tmp_path / "runs", tmp_path / "runs" / "R1" / "app-mlperf-bert"
    folder.mkdir(parents=True)
    (runs / "R1" / "run.json").write_text(json.dumps({"id": "R1", "status": "ok", "steps": []}))
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        (folder / name).write_text("x")
    return runs, folder


def test_why_a_run_is_done_again_names_each_input_that_changed(tmp_path):
    """It said "request inputs: {'mode': 'performance', [..." cut at 200 characters: --threads=1 never named."""
    import types
    runs, folder = _finished_run(tmp_path)
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
    sub.host = {"cores": 2}
    inputs = {"mode": "performance", "scenario": "Offline", "count": 256, "min_duration": 10000, "target_qps": 40.5}
    node = types.SimpleNamespace(label="app-mlperf-bert _onnxruntime", key="k1")
    plan = types.SimpleNamespace(nodes=[node], request={"query": "app", "inputs": inputs})
    sub.state["runs"]["Offline/performance"] = {"run": "R1", "folder": str(folder), "fingerprint": sub.fingerprint(plan)}
    assert sub.status("Offline/performance", plan)[0] == "done"
    node.key = "k2"
    plan.request = {"query": "app", "inputs": {**inputs, "threads": "1"}}
    assert sub.status("Offline/performance", plan) == ("to run", [
        'request.inputs.threads: absent -> "1"', "plan: 1 node key(s) changed (1 app-mlperf-bert _onnxruntime)"])


def test_a_state_entry_pointed_at_another_run_is_judged_by_that_runs_own_record(tmp_path):
    """state.json's Offline/performance edited to name a run of another model (or mode, or machine), its fingerprint
    left as it was: the run was reused "plan, request and host unchanged" and its logs went into the tree."""
    import types
    runs, folder = _finished_run(tmp_path)
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
    sub.host = {k: "h" for k in submit.HOST_KEYS}
    inputs = {"mode": "performance", "scenario": "Offline", "target_qps": 40.5}
    plan = types.SimpleNamespace(nodes=[types.SimpleNamespace(label="get-ml-model-bert _random", key="m2")],
                                 request={"query": "app", "inputs": inputs, "dep_overrides": {"model": {"layers": "2"}},
                                          "env_overrides": {}})
    sub.state["runs"]["Offline/performance"] = {"run": "R1", "folder": str(folder), "fingerprint": sub.fingerprint(plan)}
    record = {"id": "R1", "status": "ok", "steps": [{"label": "get-ml-model-bert _random", "key": "m2"}],
              "request": plan.request, "host": {**sub.host, "hostname": "vm"}}
    (runs / "R1" / "run.json").write_text(json.dumps(record))
    assert sub.status("Offline/performance", plan)[0] == "done"   # the run as state.json says
    record.update(steps=[{"label": "get-ml-model-bert _random", "key": "m3"}],
                  request={**plan.request, "dep_overrides": {"model": {"layers": "3"}}},
                  host={**sub.host, "cpu": "another"})
    (runs / "R1" / "run.json").write_text(json.dumps(record))
    state, why = sub.status("Offline/performance", plan)
    assert state == "to run" and 'request.dep_overrides.model: {"layers": "3"} -> {"layers": "2"}' in why, why
    assert 'host cpu: "another" -> "h"' in why and any("1 get-ml-model-bert _random" in w for w in why)


def test_test01_is_verified_in_a_submission_folder_whose_path_has_spaces(tmp_path):
    """run_verification.py joins its paths into shell commands unquoted: with -o "sp dir/sub one" both checks failed
    on "unrecognized arguments: dir/sub one/..." and submit went on as if the SUT were not deterministic."""
    import shutil
    import types
    from submission import tree
    data = os.path.join(ROOT, "tests", "data", "loadgen", "offline-perf")
    log = '[\n{"seq_id": 0, "qsl_idx": 0, "data": "0000803F"}\n]\n'
    scenario_dir = tmp_path / "sp dir" / "sub one" / "tree" / "open" / "T" / "results" / "s" / "bert-99" / "Offline"
    test01_run = tmp_path / "runs dir" / "R1" / "app-mlperf-bert"
    for folder in (scenario_dir / "accuracy", scenario_dir / "performance" / "run_1", test01_run):
        folder.mkdir(parents=True)
    (scenario_dir / "accuracy" / "mlperf_log_accuracy.json").write_text(log)
    (test01_run / "mlperf_log_accuracy.json").write_text(log)
    for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
        shutil.copy(os.path.join(data, name), scenario_dir / "performance" / "run_1" / name)
        shutil.copy(os.path.join(data, name), test01_run / name)
    said = []
    sub = types.SimpleNamespace(dir=str(tmp_path / "sp dir" / "sub one"), src=SHARED_SRC, say=said.append)
    os.makedirs(os.path.join(sub.dir, "logs"))
    tree._test01(sub, str(scenario_dir), str(test01_run), "bert-99-Offline")
    assert said == ["  TEST01 bert-99-Offline: Accuracy check pass: True; Performance check pass: True"], said
    assert "TEST PASS" in (scenario_dir / "TEST01" / "verify_performance.txt").read_text()
    assert (scenario_dir / "TEST01" / "performance" / "run_1" / "mlperf_log_detail.txt").is_file()


def test_a_rebuild_of_the_tree_first_removes_the_last_verdict_and_archive(tmp_path):
    """A rebuild that failed left verdict.json 'ok: true' and the old archive beside a half-built tree."""
    import types
    from submission import tree
    for name in ("verdict.json", "T-open.tar.gz", "T-open.tar.gz.sha1", "Old-open.tar.gz", "Old-open.tar.gz.sha1"):
        (tmp_path / name).write_text("old")
    sub = types.SimpleNamespace(dir=str(tmp_path), opts=types.SimpleNamespace(submitter="T", division="open",
                                                                              short=False),
                                state={"verdict": {"ok": True, "archive": str(tmp_path / "Old-open.tar.gz")}},
                                system_id="box", system_desc={}, save=lambda: None)
    with pytest.raises(Exception):   # this sub has nothing to build from: the build stops after its start
        tree.build(sub, done={})
    # another --submitter's archive into the same -o went too (it stayed beside this one's)
    assert sorted(os.listdir(tmp_path)) == ["logs", "tree"] and "verdict" not in sub.state


def test_a_ctrl_c_as_the_verdict_goes_leaves_a_state_without_it(tmp_path, monkeypatch):
    """Ctrl-C just after verdict.json was removed left state.json with the verdict (it was saved after the
    removals): interrupted there now, the saved state has none."""
    import types
    from submission import tree
    (tmp_path / "verdict.json").write_text("{}")
    (tmp_path / "T-open.tar.gz").write_text("old")
    saved = []
    sub = types.SimpleNamespace(dir=str(tmp_path), opts=types.SimpleNamespace(submitter="T", division="open",
                                                                              short=False),
                                state={"verdict": {"ok": True, "archive": str(tmp_path / "T-open.tar.gz")}})
    sub.save = lambda: saved.append(json.loads(json.dumps(sub.state)))
    real_remove = os.remove

    def remove(path):
        real_remove(path)
        if os.path.basename(path) == "verdict.json":
            raise KeyboardInterrupt
    monkeypatch.setattr(os, "remove", remove)
    with pytest.raises(KeyboardInterrupt):
        tree.forget(sub)
    assert saved == [{}] and not os.listdir(tmp_path)


def test_a_rehearsals_archive_says_so_in_its_name():
    """--short packed MyTeam-open.tar.gz, the real name, for a tree the checker says has errors."""
    from submission import tree
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "--short"])[0]
    assert tree.archive_name(opts) == "T-open-short-rehearsal.tar.gz"
    assert tree.archive_name(submit.parse("app mlperf bert", ["--submitter=T", "--division=open"])[0]) == "T-open.tar.gz"


def test_an_output_folder_inside_another_submission_is_refused(tmp_path):
    other = tmp_path / "A"
    (other / "tree" / "open").mkdir(parents=True)
    (other / "state.json").write_text('{"runs": {}}')
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(other / "tree" / "open" / "s")])[0]
    with pytest.raises(UsageError, match=f"is inside the submission folder {other}"):
        submit.Submission(opts, {}, {}, {}, settings=None)
    assert not (other / "tree" / "open" / "s").exists()


def test_a_system_file_that_is_not_text_is_a_usage_error(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bin")   # was 'unexpected UnicodeDecodeError ... a bug in mlrun'
    with pytest.raises(UsageError, match="not UTF-8 text"):
        system.read_yaml(str(tmp_path / "bin.yaml"))


@pytest.mark.parametrize("query, inputs, weights, transform", [
    ("app mlperf bert _onnxruntime _cpu", {}, "fp32", "none"),
    ("app mlperf bert _onnxruntime _cpu _int8", {}, "int8", "none"),
    ("app mlperf bert _onnxruntime _cpu _int8-dynamic", {}, "int8", "quantized to int8 by onnxruntime's dynamic"),
    ("app mlperf bert _onnxruntime _cuda", {"precision": "tf32"}, "fp32", "none"),
    ("app mlperf bert _tensorrt", {"precision": "fp16"}, "fp16", "converted to fp16 by TensorRT"),
    ("app mlperf bert _tensorrt", {"precision": "int8"}, "int8", "quantized to int8 by TensorRT"),
    ("app mlperf bert _openvino", {"precision": "bf16"}, "bf16", "converted to bf16 by OpenVINO"),   # was fp32, none
    ("app mlperf bert _openvino", {"precision": "BF16"}, "bf16", "converted to bf16 by OpenVINO"),   # as typed
    ("app mlperf bert _openvino", {}, "fp32", "none"),
    ("app mlperf bert _openvino", {"precision": "int8"}, "int8", "quantized to int8 by NNCF"),   # not TensorRT
])
def test_measurements_say_the_engines_precision(query, inputs, weights, transform):
    """weight_data_types came from the query's words alone: a TensorRT fp16 engine was described as fp32."""
    from types import SimpleNamespace
    from submission import tree
    sub = SimpleNamespace(model={"what": "the official fp32 BERT-Large ONNX model"}, inputs=inputs,
                          opts=SimpleNamespace(query=query, division="closed"), loadgen="6.0.17",
                          framework="openvino 2026.4.1" if "_openvino" in query else "onnxruntime 1.23.2")
    got = tree.measurements(sub)
    assert got["weight_data_types"] == weights and got["weight_transformations"].startswith(transform)
    assert got["input_data_types"] == "int64"


def test_measurements_say_the_input_type_the_model_was_fed():
    """input_data_types was "int64" whatever ran: a model taking int32 inputs was misdescribed."""
    from types import SimpleNamespace
    from submission import tree
    sub = SimpleNamespace(model={"what": "the official fp32 BERT-Large ONNX model"}, inputs={},
                          opts=SimpleNamespace(query="app mlperf bert _onnxruntime _cpu", division="closed"),
                          loadgen="6.0.17", framework="onnxruntime 1.23.2")
    steps = {"app-mlperf-bert": {"record": {"results": {"input_dtype": "int32"}}}}
    assert tree.measurements(sub, steps)["input_data_types"] == "int32"


def _run_with(tmp_path, steps):
    """An app folder of a run whose record holds these steps."""
    run = tmp_path / "run"
    (run / "app-mlperf-bert").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"steps": steps}))
    return str(run / "app-mlperf-bert")


@pytest.mark.parametrize("source, verified, said", [
    ("/home/me/mirror/bert_calibration_features.txt", False, "a local mirror's copy, sha256 ab12"),
    ("https://raw.githubusercontent.com/mlcommons/inference/b66003e1/calibration/SQuAD-v1.1/"
     "bert_calibration_features.txt", True, "downloaded from the MLCommons inference repository"),
    ("https://example.org/my-list.txt", False, "downloaded from https://example.org/my-list.txt"),
])
def test_the_calibration_is_described_as_the_run_recorded_it(tmp_path, source, verified, said):
    """NNCF and TensorRT int8 said 'calibration on the MLPerf calibration set' whatever list the mirror held, and
    the tree had no calibration.md (the rules want one; the checker before v6.0 refused a closed tree without)."""
    from types import SimpleNamespace
    from submission import tree, weights
    calibration = {"recipe": "get-dataset-squad-calibration", "path": str(tmp_path / "gone"),
                   "record": {"calibration": {"source": source, "sha256": "ab12", "verified": verified}}}
    nncf = {"recipe": "get-ml-model-bert-int8-nncf", "path": str(tmp_path / "gone"), "record": {"quantization": {
        "nncf": "3.4.0", "settings": {"model_type": "TRANSFORMER"},
        "calibration": {"features": 98, "mean_length": 171.5, "left_out_held_out": 2}}}}
    steps = weights.run_steps(_run_with(tmp_path, [calibration, nncf]))
    sub = SimpleNamespace(model={"what": "the official fp32 BERT-Large ONNX model"}, inputs={"precision": "int8"},
                          opts=SimpleNamespace(query="app mlperf bert _openvino", division="closed"),
                          loadgen="6.0.17", framework="openvino 2026.4.1")
    got = tree.measurements(sub, steps)["weight_transformations"]
    assert got.startswith("quantized to int8 by NNCF 3.4.0") and said in got and "MLPerf calibration set" not in got
    assert ("not checked" in got) != verified, got
    kind, _, text = weights.describe(sub, steps)
    assert kind == "int8" and "98 features (mean length 171.5" in text and "2 left out" in text and said in text
    # int8-bf16: the same int8 model, the operators NNCF left unquantised run bf16: both named
    both = SimpleNamespace(**{**vars(sub), "inputs": {"precision": "int8-bf16"}})
    kind, transform, text = weights.describe(both, steps)
    assert kind == "int8, bf16" and transform.endswith("run by OpenVINO (its other operators in bf16: "
                                                       "INFERENCE_PRECISION_HINT bf16)") and "bf16" in text
    # given to one scenario (as `sweep best` prints it): that scenario's measurements and calibration.md say so (the
    # submission said int8 of every scenario, from the precision given to all)
    scoped = SimpleNamespace(**{**vars(sub), "opts": SimpleNamespace(**{**vars(sub.opts), "submitter": "T", "short": False,
                                                                        "scenario_inputs": {"Offline": {
                                                                            "precision": "int8-bf16"}}})})
    assert tree.measurements(scoped, steps, "Offline")["weight_data_types"] == "int8, bf16"
    assert tree.measurements(scoped, steps, "SingleStream")["weight_data_types"] == "int8"
    tree._documentation(scoped, str(tmp_path / "top"), {"Offline": steps, "SingleStream": steps})
    told = (tmp_path / "top" / "documentation" / "calibration.md").read_text()
    assert "\n\nOffline: weights int8, bf16. The int8 model" in told and "\n\nSingleStream: weights int8. " in told, told
    # the official int8 model run with --precision=bf16 on OpenVINO: its other operators bf16, said (it said int8)
    official = SimpleNamespace(**{**vars(sub), "inputs": {"precision": "bf16"},
                                  "opts": SimpleNamespace(query="app mlperf bert _openvino _int8", division="closed")})
    kind, transform, text = weights.describe(official, {})
    assert kind == "int8, bf16" and transform.startswith("run by OpenVINO with its other operators in bf16"), transform
    assert text.endswith("run as it is; run by OpenVINO with its other operators in bf16 (INFERENCE_PRECISION_HINT "
                         "bf16)."), text
    # TensorRT's int8 engine: the same list, its calibrator named
    trt = SimpleNamespace(**{**vars(sub), "opts": SimpleNamespace(query="app mlperf bert _tensorrt", division="closed")})
    got = tree.measurements(trt, {"get-dataset-squad-calibration": calibration})["weight_transformations"]
    assert "IInt8EntropyCalibrator2" in got and said in got
    # a record that cannot be read is said so, not called the MLPerf list
    assert "not recorded" in tree.measurements(sub, weights.run_steps(str(tmp_path / "none" / "app")))[
        "weight_transformations"]


def test_dynamic_int8_weights_say_their_settings_and_no_calibration(tmp_path):
    """The onnxruntime dynamic quantiser's int8 weights were described as 'none' (no transformation)."""
    from types import SimpleNamespace
    from submission import tree, weights
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "quantization.json").write_text(json.dumps({"settings": {"per_channel": True, "reduce_range": False}}))
    steps = weights.run_steps(_run_with(tmp_path, [{"recipe": "get-ml-model-bert-int8-dynamic",
                                                    "path": str(entry)}]))
    sub = SimpleNamespace(model={"what": "not the official model (/m.onnx)"}, inputs={},
                          opts=SimpleNamespace(query="app mlperf bert _onnxruntime _cpu _int8-dynamic",
                                               division="open"), loadgen="6.0.17", framework="onnxruntime 1.23.2")
    got = tree.measurements(sub, steps)
    assert got["weight_data_types"] == "int8"
    assert "quantize_dynamic: per_channel=True, reduce_range=False" in got["weight_transformations"]
    assert "No calibration" in weights.describe(sub, steps)[2]


def test_a_run_measured_on_a_busy_machine_is_said_and_run_again_alone_when_asked(tmp_path):
    """submit said nothing of it: the busy run's speed went into the tree, or set a target."""
    import types
    runs, folder = _finished_run(tmp_path)
    (folder / "summary.json").write_text(json.dumps({"other_load": {"busy": True, "share": 0.44, "cpus": 2}}))
    assert submit._busy(str(folder)) == "other processes took 44% of the 2 CPUs"
    (tmp_path / "quiet").mkdir()
    (tmp_path / "quiet" / "summary.json").write_text(json.dumps({"other_load": {"busy": False, "share": 0.01}}))
    assert submit._busy(str(tmp_path / "quiet")) is None and submit._busy(str(tmp_path / "none")) is None
    # another measurement on its cores (mlperf_bert.shared_cores), however quiet the rest of the machine was
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "summary.json").write_text(json.dumps({"other_load": {"busy": False, "share": 0.01},
                                                                 "shared_cores": {"overlapped": True,
                                                                                  "others": [{"pid": 41}]}}))
    assert submit._busy(str(tmp_path / "shared")) == "another measurement ran on its cores (pid 41)"
    for damaged in ({"shared_cores": True, "other_load": {}}, {"other_load": [1]},
                    {"shared_cores": {"overlapped": True, "others": 5}}):
        (tmp_path / "shared" / "summary.json").write_text(json.dumps(damaged))
        assert submit._busy(str(tmp_path / "shared")) in (None, "another measurement ran on its cores")
    for words, status in (([], "done"), (["--rerun-busy"], "to run")):
        opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub"),
                                                *words])[0]
        sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
        sub.fingerprint = lambda plan: {"plan": {}, "request": {}, "host": {}}
        sub.state["runs"]["Offline/performance"] = {"run": "R1", "folder": str(folder), "busy": submit._busy(
            str(folder)), "fingerprint": {"plan": {}, "request": {}, "host": {}}}
        assert sub.status("Offline/performance", plan=None)[0] == status
    with pytest.raises(UsageError, match="--rerun and --rerun-busy: give one"):   # --rerun-busy was ignored
        submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "--rerun", "--rerun-busy"])


@pytest.mark.parametrize("kind", ["datacenter,edge", "edge,datacenter"])
def test_a_system_of_both_types_has_the_checker_s_datacenter_edge_scenarios(kind):
    """Both spellings the checker takes: looked up as 'required-scenarios-datacenter,edge', which is no key, and a
    closed bert-99 submission was refused as taking no results from such a system."""
    required, optional = system.checker_scenarios(SHARED_SRC, "v6.1", kind, "bert-99")
    assert (required, optional) == system.checker_scenarios(SHARED_SRC, "v6.1", "datacenter-edge", "bert-99")
    assert sorted(required) == ["Offline", "SingleStream"]


def test_the_command_the_tree_gives_runs_from_the_checkout(tmp_path, monkeypatch):
    """Its READMEs say to run it from the checkout: a relative --system=mysys.yaml given elsewhere was not found
    there, and without -o it wrote another folder (the resume state lost)."""
    from submission import cli as submission_cli
    monkeypatch.chdir(tmp_path)
    argv = submission_cli._from_anywhere(["submit", "q", "--system=mysys.yaml", "-o", "out", "--model=zoo:a/b",
                                          "--user_conf", "u.conf", "--count=5", "--mirror=/abs"])
    assert argv == ["submit", "q", f"--system={tmp_path}/mysys.yaml", "-o", f"{tmp_path}/out", "--model=zoo:a/b",
                    "--user_conf", f"{tmp_path}/u.conf", "--count=5", "--mirror=/abs"]


def test_the_command_the_tree_gives_runs_no_run_again():
    """Its READMEs gave the last submit's command with --rerun=Offline as the one that makes the submission: pasted,
    every Offline run was done anew (at full length 20-30 minutes, new measurements in place of the submitted)."""
    from submission.cli import _without_reruns
    q = "app mlperf bert"
    for rerun in (["--rerun=Offline"], ["--rerun", "Offline"], ["--rerun"], ["--rerun-busy"]):
        assert _without_reruns(["submit", q, *rerun, "-o", "d"], q) == ["submit", q, "-o", "d"], rerun
    assert _without_reruns(["submit", "--rerun", q, "--short"], q) == ["submit", q, "--short"]   # the query stays


def test_an_int8_model_given_as_a_file_is_said_int8_quantised_before(tmp_path):
    """--model=an int8 file was declared fp32, 'none', 'the fp32 weights of not the official model (...)'."""
    from types import SimpleNamespace
    from submission import tree, weights
    app = {"recipe": "app-mlperf-bert", "path": str(tmp_path), "record": {"results": {"model_int8_operators": 15}}}
    sub = SimpleNamespace(model={"what": "not the official model (/m/int8.onnx)"}, inputs={},
                          opts=SimpleNamespace(query="app mlperf bert _openvino _cpu", division="open"),
                          loadgen="6.0.17", framework="openvino 2026.4.1")
    got = tree.measurements(sub, weights.run_steps(_run_with(tmp_path, [app])))
    assert got["weight_data_types"] == "int8" and "holds 15 int8 operators" in got["weight_transformations"]
    text = weights.describe(sub, {"app-mlperf-bert": app})[2]
    assert text.startswith("No calibration by mlrun: the model /m/int8.onnx holds 15 int8 operators") and \
        "Describe it here" in text
    app["record"]["results"]["model_int8_operators"] = 0   # an fp32 file
    kind, transform, text = weights.describe(sub, {"app-mlperf-bert": app})
    assert (kind, transform) == ("fp32", "none") and "the fp32 weights of the model /m/int8.onnx as given" in text


def test_a_failed_test01_performance_check_fails_a_full_submission(tmp_path, monkeypatch):
    """The open division's checker skips compliance: a TEST01 33% faster than the performance run (the machine's
    load changed) got 'verdict: OK' and a packed archive, from submit and from `check submission` alike."""
    import types
    from engine.errors import StepError
    from submission import checker, pack, tree
    test01 = tmp_path / "tree" / "open" / "T" / "results" / "Box" / "bert-99" / "Offline" / "TEST01"
    test01.mkdir(parents=True)
    (test01 / "verify_performance.txt").write_text(
        "Reference score = 989.935\nTest score = 1479.03\nTEST FAIL: Test score invalid\n")
    failure = ("TEST01 bert-99-Offline (Box): the performance check failed (Reference score = 989.935; Test score = "
               "1479.03; TEST FAIL: Test score invalid): the TEST01 run's speed is not within 10% of the "
               "performance run's")
    assert checker.open_compliance_failures(str(tmp_path / "tree")) == [failure]
    closed = tmp_path / "tree2" / "closed" / "T" / "results" / "Box" / "bert-99" / "Offline" / "TEST01"
    closed.mkdir(parents=True)   # the closed division's checker says it itself
    (closed / "verify_performance.txt").write_text("TEST FAIL: Test score invalid\n")
    assert checker.open_compliance_failures(str(tmp_path / "tree2")) == []
    (test01 / "verify_performance.txt").write_text("Reference score = 989.935\nTest score = 990.1\nTEST PASS\n")
    assert checker.open_compliance_failures(str(tmp_path / "tree")) == []

    monkeypatch.setattr(pack, "pack", lambda root, out: out)
    for short in (True, False):
        sub = types.SimpleNamespace(dir=str(tmp_path / "out"), tree_errors=[], say=lambda line: None, src="src",
                                    opts=types.SimpleNamespace(short=short, submitter="T", division="open"),
                                    state={"runs": {}}, save=lambda: None)
        os.makedirs(sub.dir, exist_ok=True)
        monkeypatch.setattr(checker, "check", lambda *a, short=False, **k: checker.CheckResult(
            ok=short, errors=[] if short else [failure], short_run_errors=[failure] if short else [], warnings=[],
            table=[], log="log", summary="SUMMARY: submission looks OK"))
        if short:   # a rehearsal's TEST01 only rehearses: listed apart
            assert tree.finish(sub, str(tmp_path)) == 0
            assert json.load(open(os.path.join(sub.dir, "verdict.json")))["ok"]
        else:
            with pytest.raises(StepError, match="TEST01's performance check failed") as caught:
                tree.finish(sub, str(tmp_path))
            assert "--rerun-busy" in caught.value.hint   # else the failing scenario's two runs alone, not all
            assert "else --rerun=Offline/performance,Offline/TEST01 (only those run again)" in caught.value.hint
            verdict = json.load(open(os.path.join(sub.dir, "verdict.json")))
            assert not verdict["ok"] and verdict["archive"] is None and verdict["errors"] == [failure]


def test_server_is_refused_once_a_singlestream_search_shows_it_cannot_be_valid():
    """A sample alone took 700 ms: Server's search failed only after SingleStream's and Offline's runs."""
    from engine.errors import StepError
    slow = {"figures": {"measured_mean_latency_ms": 700.754}}
    with pytest.raises(StepError, match="one sample alone takes 700.8 ms .* over Server's 130 ms bound") as caught:
        submit.server_possible("SingleStream", slow, "r1", ["SingleStream", "Offline", "Server"])
    assert "--scenarios=SingleStream,Offline" in caught.value.hint
    submit.server_possible("SingleStream", slow, "r1", ["SingleStream", "Offline"])   # no Server asked
    submit.server_possible("SingleStream", {"figures": {"measured_mean_latency_ms": 12.0}}, "r1", ["Server"])


def test_an_input_for_one_scenario_goes_to_its_runs_alone():
    """One flag set for all: --instances=1 meant for Offline ran SingleStream's runs again too."""
    opts, inputs, _, _ = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "--threads=2",
                                                          "--offline.instances", "1", "--Offline.threads=1"])
    assert inputs == {"threads": "2"} and opts.scenario_inputs == {"Offline": {"instances": "1", "threads": "1"}}
    sub = submit.Submission.__new__(submit.Submission)
    sub.opts, sub.inputs = opts, inputs
    assert sub.inputs_of({"mode": "accuracy", "scenario": "Offline"}) == {"threads": "1", "instances": "1",
                                                                          "mode": "accuracy", "scenario": "Offline"}
    assert sub.inputs_of({"mode": "accuracy", "scenario": "SingleStream"}) == {"threads": "2", "mode": "accuracy",
                                                                               "scenario": "SingleStream"}


def _last(tmp_path, request, **opts):
    """A Submission over a folder whose last tree was built by `request`."""
    import types
    sub = submit.Submission.__new__(submit.Submission)
    sub.dir, sub.system_id, sub.out = str(tmp_path), "Box", __import__("io").StringIO()
    sub.state = {"request": dict({"submitter": "T", "division": "open", "scenarios": ["SingleStream", "Offline"],
                                  "benchmarks": ["bert-99"], "short": True}, **request), "system_id": "Box",
                 "runs": {}, "built": True}
    sub.opts = types.SimpleNamespace(**dict(dict(submitter="T", division="open",
                                                 scenario_list=["SingleStream", "Offline"],
                                                 benchmark_list=["bert-99"], short=True, replace=False), **opts))
    return sub


@pytest.mark.parametrize("request_, opts, said", [
    ({"benchmarks": ["bert-99", "bert-99.9"]}, {}, "without the bert-99.9 results"),
    ({"submitter": "Other"}, {}, "without submitter Other's tree and archive"),
    ({"division": "closed"}, {}, "without the closed division's tree and archive"),   # removed unsaid
    ({"short": False}, {}, "without its full-length runs (a --short rehearsal takes their places"),
    ({}, {"scenario_list": ["Offline"]}, "without the SingleStream results"),
])
def test_a_submit_that_would_drop_what_the_last_tree_held_is_refused(tmp_path, request_, opts, said):
    """A shrunk --benchmarks, another --submitter given the same -o, a rehearsal over a full submission: each
    rebuilt the tree without what it held (and its archive), exit 0, unsaid."""
    with pytest.raises(UsageError) as e:
        _last(tmp_path, request_, **opts).keeps_the_last_tree()
    assert said in e.value.message and "--replace" in e.value.hint
    meant = _last(tmp_path, request_, replace=True, **opts)
    meant.keeps_the_last_tree()   # --replace: meant, and said
    assert said in meant.out.getvalue() and "note: --replace: the tree is rebuilt without" in meant.out.getvalue()
    _last(tmp_path, {}).keeps_the_last_tree()   # the same request: nothing dropped
    never = _last(tmp_path, request_, **opts)   # a first submit stopped before any tree: nothing to drop (a typo
    del never.state["built"]                    # in --submitter could not be mended)
    never.keeps_the_last_tree()


def test_a_scoped_input_given_twice_in_two_cases_is_refused():
    with pytest.raises(UsageError, match=r"--Offline.threads is given twice: '1' and '2'"):
        submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "--Offline.threads=1",
                                         "--offline.threads=2"])


def test_a_submission_whose_runs_are_in_another_runs_folder_is_refused_not_redone(tmp_path):
    """The tree's command pasted in a teammate's checkout (its own runs/): every run was "gone" and done again,
    and the tree in this folder rebuilt from the new ones."""
    import types
    theirs = tmp_path / "mine" / "runs"
    (theirs / "20261205-000000-aaaa" / "app-mlperf-bert").mkdir(parents=True)
    (theirs / "20261205-000000-aaaa" / "run.json").write_text("{}")
    sub = _last(tmp_path, {}, rerun=False)
    sub.state["runs"] = {"Offline/accuracy": {"run": "20261205-000000-aaaa",
                                              "folder": str(theirs / "20261205-000000-aaaa" / "app-mlperf-bert")}}
    sub.settings = types.SimpleNamespace(runs=str(tmp_path / "other-checkout" / "runs"))
    with pytest.raises(UsageError) as e:
        sub.runs_here()
    assert f"are in {theirs}, not in this command's runs folder" in e.value.message
    assert e.value.hint.startswith(f"give --runs {theirs}")
    sub.settings.runs = str(theirs)
    sub.runs_here()


def test_a_user_conf_setting_what_submit_sets_is_refused_before_any_run(tmp_path):
    """It was refused by the harness at the scenario's performance run, after its search and its accuracy run
    over the whole dataset (hours of a real submission)."""
    import types
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.target_qps = 10\n")
    sub = submit.Submission.__new__(submit.Submission)
    sub.inputs = {}
    sub.opts = types.SimpleNamespace(scenario_list=["SingleStream", "Offline"],
                                     scenario_inputs={"Offline": {"user_conf": str(conf)}})
    with pytest.raises(UsageError, match="its target_qps = 10 for Offline is what submit sets itself"):
        sub.check_user_conf()
    conf.write_text("*.Offline.min_query_count = 100\n")   # its own settings: taken
    sub.check_user_conf()


def test_a_test01_run_whose_samples_ran_in_batches_says_why_its_responses_differ(tmp_path):
    """The default batching (Offline on OpenVINO's AMX precisions) forms batches anew in each run: TEST01's exact
    check failed and fell back to the accuracy comparison, and nothing said why."""
    from submission import tree
    (tmp_path / "summary.json").write_text(json.dumps({"batching": {"batch_size": 4, "pad_tokens": 16,
                                                                    "mean_batch": 3.556}}))
    assert tree._batched(str(tmp_path)).startswith("its samples ran in batches of up to 4 (padded by up to 16 tokens)")
    (tmp_path / "summary.json").write_text(json.dumps({"batching": {"batch_size": 4, "mean_batch": 1.0}}))
    assert tree._batched(str(tmp_path)) is None   # one sample per call: no such reason
    (tmp_path / "summary.json").write_text("[1]")
    assert tree._batched(str(tmp_path)) is None and tree._batched(str(tmp_path / "gone")) is None


@pytest.mark.parametrize("words, rerun, names", [
    (["--rerun"], True, set()),
    (["--rerun", "--short"], True, set()),   # the next flag is not taken for its runs
    (["--rerun=offline/test01,singlestream"], False,
     {"Offline/TEST01", "SingleStream/search", "SingleStream/accuracy", "SingleStream/performance",
      "SingleStream/TEST01"}),
    ([], False, set()),
])
def test_rerun_takes_the_runs_or_scenarios_to_run_again(tmp_path, words, rerun, names):
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "s"), *words])[0]
    assert (opts.rerun, opts.rerun_names) == (rerun, names)


@pytest.mark.parametrize("value, fragment", [
    ("Server/TEST01", "Server/TEST01 is no run of this submission"),   # Server is not among --scenarios
    ("Offline/perf", "Offline/perf is no run"),
    ("", "(nothing) is no run"),
])
def test_rerun_of_a_run_this_submission_has_not_is_a_usage_error(value, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)) as caught:
        submit.parse("app mlperf bert", ["--submitter=T", "--division=open", f"--rerun={value}"])
    assert "Offline/TEST01" not in caught.value.hint and "search, accuracy, performance, TEST01" in caught.value.hint


def test_a_scoped_rerun_runs_those_runs_again_and_reuses_the_others(tmp_path):
    import types
    runs, folder = _finished_run(tmp_path)
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub"),
                                            "--rerun=Offline/performance,Offline/TEST01"])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(runs)))
    sub.fingerprint = lambda plan: {"plan": {}, "request": {}, "host": {}}
    for name in ("Offline/search", "Offline/performance", "Offline/TEST01"):
        sub.state["runs"][name] = {"run": "R1", "folder": str(folder), "fingerprint": sub.fingerprint(None)}
    assert [sub.status(name, None)[0] for name in ("Offline/search", "Offline/performance", "Offline/TEST01")] == \
        ["done", "to run", "to run"]


def _detail_log(folder, scenario, score, validity="VALID"):
    folder.mkdir(parents=True, exist_ok=True)
    field = {"Offline": "result_samples_per_second", "SingleStream": "early_stopping_latency_ss"}[scenario]
    items = {"effective_scenario": scenario, field: score, "result_validity": validity}
    meta = {"is_error": False, "is_warning": False}
    (folder / "mlperf_log_detail.txt").write_text(
        "".join(f':::MLLOG {json.dumps({"key": k, "value": v, "metadata": meta})}\n' for k, v in items.items()))
    return str(folder)


def test_a_test01_run_off_the_performance_runs_speed_runs_once_more_as_soon_as_both_ran(tmp_path):
    """A TEST01 run 33% faster than the performance run (the machine's load changed between them) failed the
    verification after every scenario's runs, and the hint's --rerun ran every run again: submit now asks the
    official verify_performance.py as soon as both ran and runs TEST01 once more; a retry that fails too is not
    retried again, and its message names the two runs to redo."""
    import types
    said, ran = [], []
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub")])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(tmp_path / "runs")))
    sub.src, sub.say = SHARED_SRC, said.append
    sub.run_inputs = lambda scenario, kind: {"scenario": scenario}
    speeds = iter([1479.03, 1001.2])   # the first retry too fast still, then within 10%

    def run(name, inputs, again=None, mark=None):
        ran.append((name, again, mark))
        run_id = f"T{len(ran) + 1}"
        return {"run": run_id, "folder": _detail_log(tmp_path / run_id, "Offline", next(speeds)), **(mark or {})}
    sub.run = run
    perf = {"run": "P1", "folder": _detail_log(tmp_path / "P1", "Offline", 989.935)}
    fast = {"run": "T1", "folder": _detail_log(tmp_path / "T1", "Offline", 1479.03)}
    done = {("Offline", "performance"): perf, ("Offline", "TEST01"): fast}
    again = sub.test01_speed_checked("Offline", done)
    assert ran == [("Offline/TEST01", "run T1's speed was not within the margin of performance run P1's",
                    {"retry_of": "T1", "against": "P1"})]
    assert again["run"] == "T2" and again["retry_of"] == "T1"
    assert "Offline/TEST01 run T1: TEST01 scored 1479.03 against the performance run's 989.935 (official " \
           "verify_performance.py: TEST FAIL); TEST01 once more" in said[0], said
    assert "again: the verification will fail; on a quiet machine, --rerun=Offline/performance,Offline/TEST01 " \
           "runs both again" in said[1], said
    assert os.path.isfile(tmp_path / "sub" / "logs" / "TEST01-speed-T1.log")
    # the retry failed too: the same command resumes with it, and does not retry it again
    done[("Offline", "TEST01")] = again
    assert sub.test01_speed_checked("Offline", done) is again and len(ran) == 1
    assert "(itself a retry)" in said[-1]
    # against a new performance run (--rerun=Offline/performance), the failing TEST01 may be retried once
    done[("Offline", "performance")] = dict(perf, run="P2")
    passed = sub.test01_speed_checked("Offline", done)
    assert passed["run"] == "T3" and "its speed is within the margin" in said[-1], said
    # within the margin, or runs it cannot compare (an INVALID one: the verification says why), nothing runs
    done[("Offline", "TEST01")] = {"run": "T9", "folder": _detail_log(tmp_path / "T9", "Offline", 1050.0)}
    assert sub.test01_speed_checked("Offline", done)["run"] == "T9"
    done[("Offline", "TEST01")] = {"run": "T8", "folder": _detail_log(tmp_path / "T8", "Offline", 2000.0, "INVALID")}
    assert sub.test01_speed_checked("Offline", done)["run"] == "T8" and len(ran) == 2


@pytest.mark.parametrize("short", [False, True])
def test_submit_checks_test01s_speed_after_each_scenarios_runs_of_full_length_only(tmp_path, monkeypatch, short):
    import types
    monkeypatch.setattr(search, "settings_from", lambda scenario, folder, run: {"how": "measured", "inputs": {},
                                                                                 "figures": {}})
    monkeypatch.setattr(search, "summary_values", lambda folder: {"Result is": "VALID"})
    monkeypatch.setattr(search, "loadgen_seeds", lambda folder: {})
    opts = submit.parse("app mlperf bert", ["--submitter=T", "--division=open", "-o", str(tmp_path / "sub"),
                                            "--scenarios=Offline", *(["--short"] if short else [])])[0]
    sub = submit.Submission(opts, {}, {}, {}, settings=types.SimpleNamespace(runs=str(tmp_path / "runs")))
    sub.src, sub.say, sub.save, sub.system_id = SHARED_SRC, lambda line: None, lambda: None, "box"
    sub.loadgen = "6.0.17"
    scores = {"Offline/performance": [989.9], "Offline/TEST01": [1479.0, 1001.0]}
    ran = []

    def run(name, inputs, again=None, mark=None):
        ran.append(name)
        score = scores[name].pop(0) if name in scores else 1.0
        return {"run": f"R{len(ran)}", "folder": _detail_log(tmp_path / f"R{len(ran)}", "Offline", score),
                **(mark or {})}
    sub.run = run
    done = sub.execute()
    assert ran == ["Offline/search", "Offline/accuracy", "Offline/performance", "Offline/TEST01"] + \
        ([] if short else ["Offline/TEST01"])
    assert done[("Offline", "TEST01")]["run"] == ("R4" if short else "R5")


def test_a_system_file_that_is_not_there_points_at_the_fields(tmp_path):
    """--system my-system.yaml, the README's name, before it is written: "No such file or directory", no more."""
    from submission import system
    with pytest.raises(UsageError) as error:
        system.read_yaml(str(tmp_path / "my-system.yaml"))
    assert "No such file or directory" in error.value.message and "docs/submission.md" in error.value.hint
