"""The BERT benchmark through the real recipes and the real entry point, offline.

Downloads come from the mirror ../shared/data (the official SQuAD dev set and vocab); the model is
a tiny random-weight BERT built by its recipe (never an accuracy claim). The venvs these recipes
build take a minute of pip installs, so the tests of this module share one cache folder (built by
the first test, reused by the rest), separate from every other test's.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import MLRUN, TINY_MODEL, assert_user_error, offline_mlrun, step_dir, step_of

QUERY = "app mlperf bert _onnxruntime _cpu _random"


@pytest.fixture(scope="module")
def bert(tmp_path_factory, bert_seed):
    return offline_mlrun(tmp_path_factory.mktemp("bert"), seed=bert_seed.cache)


@pytest.fixture(scope="module")
def accuracy_run(bert):
    result = bert(QUERY, "--mode=accuracy", "--count=20", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_accuracy_mode_20_samples(accuracy_run, bert_seed):
    run_dir = step_dir(accuracy_run)
    for name in ("user.conf", "mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
                 "accuracy.txt", "summary.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert not os.path.exists(os.path.join(run_dir, "audit.config"))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["mode"] == "accuracy" and summary["samples_completed"] == 20
    assert set(summary["accuracy"]) >= {"exact_match", "f1"}
    accuracy_line = open(os.path.join(run_dir, "accuracy.txt")).read()
    assert '"exact_match"' in accuracy_line and '"f1"' in accuracy_line
    # a random model's score is said to mean nothing, not held to the target (was "target F1 >= 89.965: not met")
    said = accuracy_run.stderr + open(os.path.join(run_dir, ".mlrun", "build.log")).read()
    assert summary["random_weights"] is True and "(a random-weight model: plumbing only, its score means nothing)" \
        in said and "target F1 >=" not in said, said
    # The 20 responses of an accuracy run.
    log = json.load(open(os.path.join(run_dir, "mlperf_log_accuracy.json")))
    assert sorted(r["qsl_idx"] for r in log) == list(range(20))
    # The status lines name every step; the first run in an empty cache (the session's seed) built them,
    # and this one, in a copy of that cache, found them.
    first = bert_seed.first_run.stderr
    assert "built in" in first and "get-dataset-squad-features" in first and "get-mlperf-loadgen" in first
    assert "cached" in accuracy_run.stderr and "get-dataset-squad-features" in accuracy_run.stderr


def test_second_run_is_all_cached(bert, accuracy_run):
    result = bert(QUERY, "--mode=accuracy", "--count=20", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(result.stdout)["steps"]
    assert [s["status"] for s in steps[:-1]] == ["cached"] * (len(steps) - 1)
    assert steps[-1]["status"] == "ran" and steps[-1]["recipe"] == "app-mlperf-bert"
    # Deterministic responses: the same samples give the same bytes run after run.
    first = json.load(open(os.path.join(step_dir(accuracy_run), "mlperf_log_accuracy.json")))
    again = json.load(open(os.path.join(step_dir(result), "mlperf_log_accuracy.json")))
    assert {r["qsl_idx"]: r["data"] for r in first} == {r["qsl_idx"]: r["data"] for r in again}


@pytest.mark.parametrize("scenario", ["Offline", "SingleStream", "MultiStream", "Server"])
def test_performance_mode_each_scenario(bert, accuracy_run, scenario):
    result = bert(QUERY, "--mode=performance", f"--scenario={scenario}", "--count=16", "--min_duration=300",
                  *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = step_dir(result)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["mode"] == "performance" and summary["scenario"] == scenario
    text = open(os.path.join(run_dir, "mlperf_log_summary.txt")).read()
    assert f"Scenario : {scenario}" in text and "Result is :" in text
    assert not os.path.exists(os.path.join(run_dir, "audit.config"))
    # how it ran: the summary's own lines, kept in summary.json and shown by `runs show` (it showed none of them)
    how = summary["how_it_ran"]
    assert how[0].startswith("sequence handling: ") and any(line.startswith("parallelism: ") for line in how), how
    said = open(os.path.join(run_dir, ".mlrun", "build.log")).read()
    assert all("  " + line in said for line in how), (how, said)
    shown = bert("runs", "show", json.loads(result.stdout)["run"])
    assert shown.returncode == 0 and "  how it ran:\n    sequence handling: " in shown.stdout, shown.stdout


def test_local_model_file_instead_of_the_model_recipe(bert, accuracy_run):
    model = step_of(accuracy_run, "get-ml-model-bert")["path"]
    # The file is a model entry keyed by its content: a copy elsewhere reuses it, nothing lands in the run folder.
    copy = os.path.join(bert.root, "elsewhere.onnx")
    shutil.copyfile(os.path.join(model, "model.onnx"), copy)
    entries = []
    for path, status in ((os.path.join(model, "model.onnx"), "built"), (copy, "cached")):
        result = bert("app mlperf bert _onnxruntime _cpu", "--mode=performance", "--count=8", "--min_duration=200",
                      f"--model={path}", "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        steps = {s["recipe"]: s for s in json.loads(result.stdout)["steps"]}
        assert steps["get-ml-model-bert"]["label"] == "get-ml-model-bert _file"
        assert steps["get-ml-model-bert"]["status"] == status
        assert steps["app-mlperf-bert"]["label"] == "app-mlperf-bert _onnxruntime _cpu"   # no _fp32 for a file
        entries.append(steps["get-ml-model-bert"]["path"])
        summary = json.load(open(os.path.join(step_dir(result), "summary.json")))
        assert summary["model"] == os.path.join(entries[-1], "model.onnx")
        assert not [f for f in os.listdir(step_dir(result)) if f.endswith(".onnx")]
    assert entries[0] == entries[1]


def test_int8_dynamic_of_the_random_model(bert, accuracy_run):
    tiny = [arg.replace("--dep.model.", "--dep.source.") for arg in TINY_MODEL]
    result = bert(QUERY + " _int8-dynamic", "--mode=accuracy", "--count=8", *tiny, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = {s["recipe"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["app-mlperf-bert"]["label"] == "app-mlperf-bert _onnxruntime _cpu _random _int8-dynamic"
    int8 = steps["get-ml-model-bert-int8-dynamic"]["path"]
    summary = json.load(open(os.path.join(step_dir(result), "summary.json")))
    assert summary["model"] == os.path.join(int8, "model.onnx") and summary["samples_completed"] == 8
    assert summary["sequence_handling"].startswith("exact lengths")
    assert json.load(open(os.path.join(int8, "quantization.json")))["seq_axis"] == "dynamic"
    # said in the run's lines (nothing told an int8 run from an fp32 one there)
    said = result.stderr + open(os.path.join(step_dir(result), ".mlrun", "build.log")).read()
    assert f"  model: int8, {summary['model_int8_operators']} quantised nodes run int8 (the rest fp32)" in said, said


def test_process_accuracy_recipe_scores_the_log(bert, accuracy_run):
    run_dir = step_dir(accuracy_run)
    log = os.path.join(run_dir, "mlperf_log_accuracy.json")
    result = bert("process mlperf accuracy squad", f"--log={log}")
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith('{"exact_match"')][0]
    assert set(json.loads(line)) == {"exact_match", "f1"}
    # The log of 20 samples covers a few questions: those alone are scored (the harness's own figure), and it
    # says so, as the harness does (one scoring path).
    assert line == open(os.path.join(run_dir, "accuracy.txt")).read().splitlines()[0]
    assert "of 10570 questions: the log covers only these" in result.stdout
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert f"scored {summary['accuracy']['questions']} of 10570 questions" in result.stdout
    # An empty log is an error, not a figure.
    empty = os.path.join(bert.root, "empty-log.json")
    with open(empty, "w") as f:
        f.write("[]")
    failed = bert("process mlperf accuracy squad", f"--log={empty}")
    assert_user_error(failed, 1, "process-mlperf-accuracy-squad")
    assert "holds no responses: nothing to score" in failed.stdout + failed.stderr
    assert '"f1"' not in failed.stdout


def test_a_strict_short_run_fails_on_invalid_and_keeps_its_results(bert, accuracy_run):
    """--strict: an INVALID result exits 1; the run record still holds the result, why, and that it is short."""
    before = set(os.listdir(os.path.join(bert.root, "runs")))
    result = bert(QUERY, "--mode=performance", "--scenario=SingleStream", "--count=8", "--strict", *TINY_MODEL)
    assert_user_error(result, 1, "app-mlperf-bert")
    assert "--strict: the performance result is INVALID: early stopping needs at least 64 queries" in result.stderr
    assert "fix: --count=64 or more" in result.stdout
    # The run this command made (ids sort by second only: another test's run may share its second).
    [run_id] = set(os.listdir(os.path.join(bert.root, "runs"))) - before - {"latest"}
    record = json.load(open(os.path.join(bert.root, "runs", run_id, "run.json")))
    assert record["status"] == "failed"
    results = record["results"]
    assert results["loadgen"]["result"] == "INVALID" and results["short"] is True
    assert results["loadgen"]["explanation"][0]["fix"].startswith("--count=64")
    row = [line for line in bert("runs").stdout.splitlines() if line.startswith(run_id)][0]
    assert "INVALID (short)" in row
    # The same run with Offline is VALID, exactly 20 samples, still short.
    result = bert(QUERY, "--mode=performance", "--count=20", "--strict", *TINY_MODEL, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(step_dir(result), "summary.json")))
    assert summary["samples_completed"] == 20 and summary["short"] is True
    assert summary["loadgen"]["result"] == "VALID"


def test_features_entry_holds_the_reference_digest(bert, accuracy_run):
    steps = json.loads(bert(QUERY, "--mode=accuracy", "--count=20", *TINY_MODEL, "--json").stdout)["steps"]
    features = next(s["path"] for s in steps if s["recipe"] == "get-dataset-squad-features")
    assert json.load(open(os.path.join(features, "digest.json"))) == {
        "count": 10833,
        "D_ids": "b75291371c078f3114d60dfd077a761037b5869761c0414a49cdc7e8b051605c",
        "D_mask": "9634bbdf85592ffd5aab26166a5ec089638e9641bd30cb4e3116faaecd394cee",
        "D_seg": "e3923a65eeb01663acb1500587984717b638ff0148421191b79eec1042d4ef87",
        "D_all": "70301e8f3a10ddb5465dea354cb6809673a0baeb248a247548cddfab7363792a"}


def test_process_accuracy_needs_a_log(bert):
    assert_user_error(bert("process mlperf accuracy squad"), 2, "needs --log")
    assert_user_error(bert("process mlperf accuracy squad", "--log=/nonexistent/log.json"), 2, "no such file")


def test_model_with_unmappable_inputs_is_refused_as_a_usage_error(bert, accuracy_run):
    """A --model file that is not a BERT QA model is the person's mistake, as a file that is not ONNX is: exit 2 at
    its model step (it was a failed step, exit 1, with the same words)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    path = str(bert.root / "odd.onnx")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["tokens"], ["start"], to=TensorProto.FLOAT),
         helper.make_node("Identity", ["start"], ["end"])],
        "odd", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["b", 384])],
        [helper.make_tensor_value_info("start", TensorProto.FLOAT, ["b", 384]),
         helper.make_tensor_value_info("end", TensorProto.FLOAT, ["b", 384])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "unused")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    result = bert("app mlperf bert _onnxruntime _cpu", "--mode=accuracy", "--count=4", f"--model={path}")   # no _random
    err = assert_user_error(result, 2, f"cannot map the inputs of {path}: it has tokens[b, 384]; expected ids: "
                            "input_ids", "hint: no input found for ", "give an ONNX file of a BERT question-answering")
    assert "get-ml-model-bert _file" in err and "app-mlperf-bert" not in err, err   # refused where the file is read


@pytest.mark.slow
def test_loadgen_from_source_gives_the_same_module(bert, tmp_path):
    """_from-src compiles PyPI's source distribution with the system C++ compiler. Here unoptimised: a CXX that
    turns setup.py's -O3 into -O0 (the same sources and bindings; 39 s instead of 67 on the EPYC), which the
    recipe's hash_env keys as another compiler."""
    cxx, calls = tmp_path / "g++-O0", tmp_path / "calls.txt"
    cxx.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                   'for a do shift; case "$a" in -O[1-3s]) set -- "$@" -O0 ;; *) set -- "$@" "$a" ;; esac; done\n'
                   'exec g++ "$@"\n')
    cxx.chmod(0o755)
    exports = {}
    for variation, extra in (("_wheel", ()), ("_from-src", (f"--env.CXX={cxx}",))):
        result = bert(f"get mlperf loadgen {variation}", *extra, "--json", timeout=1500)
        assert result.returncode == 0, result.stderr[-3000:]
        exports[variation] = json.loads(result.stdout)["exports"]["PYTHONPATH"]
    assert exports["_wheel"] != exports["_from-src"]
    compiled = calls.read_text()   # the sdist's own sources, through the CXX given
    assert "loadgen.cc" in compiled and "python_api.cc" in compiled and " -O3" in compiled, compiled[-2000:]
    probe = ("import mlperf_loadgen as lg; print(sorted(n for n in dir(lg) if not n.startswith('_')));"
             "s = lg.TestSettings(); s.scenario = lg.TestScenario.Offline; print(s.scenario)")
    outputs = {v: subprocess.run(["python3", "-c", probe], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=p)) for v, p in exports.items()}
    for v, out in outputs.items():
        assert out.returncode == 0, (v, out.stderr)
    assert outputs["_wheel"].stdout == outputs["_from-src"].stdout


def test_replay_on_the_same_machine_reuses_everything_and_equals(bert, accuracy_run):
    run_id = json.loads(accuracy_run.stdout)["run"]
    result = bert("replay", run_id, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["equal"] is True
    assert [s["status"] for s in out["steps"][:-1]] == ["cached"] * (len(out["steps"]) - 1)


def test_bundle_replays_in_an_empty_cache_without_downloading(bert, accuracy_run, tmp_path):
    """A teammate's machine: another cache folder, no mirror, no network; the bundle brings every entry."""
    run_id = json.loads(accuracy_run.stdout)["run"]
    bundle = str(tmp_path / "run.tar.gz")
    exported = bert("export", run_id, "-o", bundle, "--with-cache")
    assert exported.returncode == 0, exported.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(tmp_path / "other-cache"), MLRUN_RUNS=str(tmp_path / "other-runs"))
    result = subprocess.run([MLRUN, "replay", bundle, "--json"], env=env, capture_output=True, text=True,
                            timeout=900, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["equal"] is True
    assert [s["status"] for s in out["steps"][:-1]] == ["cached"] * (len(out["steps"]) - 1)
