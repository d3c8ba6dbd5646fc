"""Run records, `mlrun runs`, `mlrun diff` and `mlrun replay`, through bin/mlrun on small recipes."""
import io
import json
import os
import shutil

import pytest

from conftest import assert_user_error


@pytest.fixture
def bench(ws):
    """A benchmark-like graph: a tool with a recorded package list, and an app that writes results."""
    ws.recipe("tool", """\
        tags: get tool
        version: "2.0"
        hash_env: [TOOL_FLAVOUR]
        run: printf 'numpy==2.3.4\\nonnx==1.19.1\\n' > packages.txt; echo tool > tool.txt
        exports: {TOOL: "{entry}/tool.txt"}
        record: {packages: packages.txt}
        """)
    ws.recipe("app", """\
        tags: app bench
        cache: false
        inputs:
          mode: {default: performance, choices: [accuracy, performance]}
        variations:
          fp32: {group: precision, default: true, env: {SCORE: "90.5"}}
          int8: {group: precision, env: {SCORE: "89.1"}}
        deps: [{name: tool, query: get tool}]
        run: bash "{recipe}/score.sh"
        record: {results: summary.json}
        """, files={"score.sh": """\
        cat "$TOOL" > /dev/null
        echo "{\\"accuracy\\": {\\"exact_match\\": 80.0, \\"f1\\": $SCORE}, \\"loadgen\\": {\\"metric\\": {\\"samples per second\\": 12.5}, \\"result\\": \\"VALID\\"}}" > summary.json
        """})
    return ws


def run_json(ws, *args, env=None):
    result = ws.mlrun(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def record_of(ws, run_id):
    return json.load(open(os.path.join(ws.runs, run_id, "run.json")))


def test_run_record_holds_request_plan_recipes_packages_host_results(bench):
    out = run_json(bench, "app bench", "--mode=accuracy")
    r = record_of(bench, out["run"])
    assert r["format"] == 2 and r["status"] == "ok"
    assert r["request"] == {"query": "app bench", "inputs": {"mode": "accuracy"}, "dep_overrides": {},
                            "env_overrides": {}}
    assert [(s["recipe"], s["status"]) for s in r["steps"]] == [("tool", "built"), ("app", "ran")]
    app = r["steps"][-1]["node"]
    assert app["variations"] == ["fp32"] and app["inputs"] == {"mode": "accuracy"}
    assert app["material"]["recipe_digest"] == r["recipes"]["app"]["digest"]
    # A copy of each recipe, so a replay does not need the same checkout.
    copy = os.path.join(bench.runs, out["run"], r["recipes"]["app"]["snapshot"])
    assert sorted(os.listdir(copy)) == ["recipe.yaml", "score.sh"]
    assert r["packages"] == {f"tool [{r['steps'][0]['key'][:12]}]": {"numpy": "2.3.4", "onnx": "1.19.1"}}
    assert r["results"]["accuracy"]["f1"] == 90.5
    assert {"cpu", "cores", "memory_gb", "os", "python"} <= set(r["host"])
    assert r["steps"][0]["seconds"] >= 0


@pytest.mark.slow  # about 1.0 s on the 2-core EPYC
def test_runs_lists_and_shows(bench):
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    listed = bench.mlrun("runs")
    assert listed.returncode == 0 and first in listed.stdout and "accuracy" in listed.stdout
    assert "F1 90.50 EM 80.00" in listed.stdout and "ok" in listed.stdout
    shown = bench.mlrun("runs", "show", first[:15])
    assert shown.returncode == 0, shown.stderr
    assert "query: app bench" in shown.stdout and "packages of tool" in shown.stdout
    # values as a command line gives them (was Python's {'mode': 'accuracy'}, strict=False, command: None)
    assert "True" not in shown.stdout and "False" not in shown.stdout and "{'" not in shown.stdout, shown.stdout
    path = os.path.join(bench.runs, first, "run.json")
    record = json.load(open(path))
    json.dump({**record, "argv": None, "request": {**record["request"], "inputs": {"mode": "accuracy", "x": True}}},
              open(path, "w"))
    shown = bench.mlrun("runs", "show", first).stdout
    assert "command: (not recorded)" in shown and "asked: --mode=accuracy --x=true" in shown, shown
    assert "how it ran:" not in shown   # results without lines of how it ran: no heading
    # a step's own lines of how it ran (the BERT app's instances, batching, find-peak) under their heading, a line
    # of two lines indented as one; not a column of `runs` (a list)
    how = ["parallelism: 1 instance(s) x 2 thread(s) (rule: Server: one instance on all 2 cores)",
           "model: hf:x@main\n  not pinned: ..."]
    json.dump({**record, "results": {**record["results"], "how_it_ran": how}}, open(path, "w"))
    shown = bench.mlrun("runs", "show", first).stdout
    assert ("  how it ran:\n    parallelism: 1 instance(s) x 2 thread(s) (rule: Server: one instance on all 2 cores)\n"
            "    model: hf:x@main\n      not pinned: ...\n") in shown, shown
    assert "how_it_ran" not in bench.mlrun("runs", "--csv").stdout
    json.dump(record, open(path, "w"))
    for flag in (["--csv"], ["--where", "mode=accuracy"], ["--last", "2"]):   # options of the list: were ignored
        assert_user_error(bench.mlrun("runs", "show", first, *flag), 2, "mlrun runs show takes one run")
    assert json.loads(bench.mlrun("runs", "--json").stdout)[0]["run"] == first
    assert_user_error(bench.mlrun("runs", "show", "nope"), 2, "no run 'nope'")
    # a folder that is no run's, a bundle to a verb that reads none: each was "no run 'X' in RUNS"
    os.makedirs(os.path.join(bench.root, "some folder"))
    assert_user_error(bench.mlrun("diff", "some folder", first), 2, "some folder is a folder but no run folder")
    assert bench.mlrun("export", first, "-o", "b.tar.gz").returncode == 0
    for args in (["runs", "show", "b.tar.gz"], ["export", "b.tar.gz", "-o", "c.tar.gz"]):
        assert_user_error(bench.mlrun(*args), 2, "b.tar.gz is a bundle", "mlrun import b.tar.gz")
    shutil.copytree(os.path.join(bench.runs, first), os.path.join(bench.runs, first + ".bak"))
    assert bench.mlrun("runs", "show", first).returncode == 0   # a whole id is no prefix of its copy's
    assert_user_error(bench.mlrun("runs", "show", first[:15]), 2, f"'{first[:15]}' names 2 runs")
    for ref in ("gone.tar.gz", "gone.tgz"):   # was taken as a run id: 'no run', or with --trust 'a local run'
        assert_user_error(bench.mlrun("replay", ref, "--trust", "x"), 2, f"no such file: {ref}")


def test_replay_on_the_same_machine_reuses_every_node_and_equals(bench):
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    replayed = run_json(bench, "replay", first)
    assert replayed["equal"] is True and replayed["replay_of"] == first
    assert [s["status"] for s in replayed["steps"]] == ["cached", "ran"]
    # run --json's shape (status, results...): a script reads both alike
    assert replayed["status"] == "ok" and replayed["results"] == run_json(bench, "runs", "show", first)["results"]
    assert record_of(bench, replayed["run"])["replay_of"] == first
    text = bench.mlrun("replay", first)
    assert "accuracy.f1: 90.5 (equal)" in text.stdout and "ratio 1.000" in text.stdout
    table = {line.split()[0]: line for line in bench.mlrun("runs").stdout.splitlines()[1:]}
    assert table[replayed["run"]].endswith("ok (replay)") and table[first].endswith(" ok"), table   # was unmarked
    assert json.loads(bench.mlrun("runs", "--json").stdout)[-1]["replay_exact"] is True


def test_replay_uses_the_recorded_recipes_when_the_local_ones_changed(bench):
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    script = os.path.join(bench.recipes, "app", "score.sh")
    with open(script, "a") as f:
        f.write("echo changed locally\n")
    # The record's copy is code that came with the run (from a bundle, a teammate's): never run unasked. Was: run,
    # and handed the replayer's secrets, for any unsigned bundle whose recipes differed.
    refused = bench.mlrun("replay", first)
    assert_user_error(refused, 2, "the run's recipes differ from the local ones (app): replaying it would run the "
                                  "copies its record holds", "--recorded-recipes runs them")
    replayed = bench.mlrun("replay", first, "--recorded-recipes")
    assert replayed.returncode == 0, replayed.stderr
    assert "recipe app: the local one differs or is missing; using the recorded copy" in replayed.stdout


def test_a_run_killed_mid_step_has_its_recipes_recorded_and_its_replay_sees_them_changed(bench, tmp_path):
    """run.json named the recipes only at the run's end: a run SIGKILLed kept "recipes": {}, and its replay after a
    `git pull` said "the local ones are the recorded ones" and ran the new recipes, marked exact."""
    from conftest import kill_group, wait_for
    started = tmp_path / "started"
    bench.recipe("slow", f"tags: slow\ncache: false\ndeps: [{{name: tool, query: get tool}}]\n"
                         f"run: touch {started}; sleep 60\n")
    proc = bench.popen("slow")
    assert wait_for(started.exists, timeout=60)
    kill_group(proc)
    [run_id] = [n for n in os.listdir(bench.runs) if not n.startswith(".")]
    record = record_of(bench, run_id)
    assert record["status"] == "running" and sorted(record["recipes"]) == ["slow", "tool"]
    bench.recipe("slow", f"tags: slow\ncache: false\ndeps: [{{name: tool, query: get tool}}]\nrun: sleep 61\n")
    assert_user_error(bench.mlrun("replay", run_id), 2, "the run's recipes differ from the local ones (slow)")
    # a record made before this fix: no recipes named, its folder's copy read instead
    path = os.path.join(bench.runs, run_id, "run.json")
    json.dump({**record, "recipes": {}}, open(path, "w"))
    assert_user_error(bench.mlrun("replay", run_id), 2, "the run's recipes differ from the local ones (slow)")


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_replay_on_another_machine_takes_a_file_of_the_recorded_cache_from_its_own(ws, tmp_path):
    """A TEST01 run's --audit_config named a file in the recording machine's cache: replayed elsewhere (a bundle
    that carried the entry) it was "no such file"; a file of the person's that is not here is said so."""
    import shutil
    ws.recipe("conf", "tags: get conf\nrun: echo 'x = 1' > audit.config\n")
    ws.recipe("app", """\
        tags: app reads
        cache: false
        inputs:
          conf: {type: path, file: true, content: true}
          mine: {type: path, file: true, content: true}
        deps: [{name: conf, query: get conf}]
        run: cat "$MLRUN_INPUT_CONF" "$MLRUN_INPUT_MINE" > seen.txt
        """)
    built = run_json(ws, "get conf")
    conf = os.path.join(built["path"], "audit.config")
    mine = tmp_path / "mine.txt"
    mine.write_text("y = 2\n")
    ran = run_json(ws, "app reads", f"--conf={conf}", f"--mine={mine}")["run"]
    shutil.move(ws.cache, str(tmp_path / "elsewhere"))   # this machine's cache lies elsewhere: same entries
    env = ws.env(MLRUN_CACHE=str(tmp_path / "elsewhere"))
    replayed = ws.mlrun("replay", ran, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"of the recording machine's cache is {tmp_path / 'elsewhere'}" in replayed.stdout
    # given relative where it ran: "no such file" replayed from another folder
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "theirs.txt").write_text("y = 2\n")
    relative = json.loads(ws.mlrun("app reads", f"--conf={tmp_path / 'elsewhere' / os.path.relpath(conf, ws.cache)}",
                                   "--mine=theirs.txt", "--json", env=env, cwd=str(tmp_path / "sub")).stdout)["run"]
    (tmp_path / "theirs.txt").write_text("another file of that name, here\n")   # it was taken: "cannot be exact"
    replayed = ws.mlrun("replay", relative, env=env)
    assert replayed.returncode == 0 and f"--mine: theirs.txt is {tmp_path / 'sub' / 'theirs.txt'}, relative to where " \
        "the run was started" in replayed.stdout, replayed.stdout + replayed.stderr
    # the exact replay is no difference of its run's request: diff said "request.inputs.mine: theirs.txt -> /..."
    again = json.loads(ws.mlrun("replay", relative, "--json", env=env).stdout)["run"]
    same = ws.mlrun("diff", relative, again, "--json", env=env)
    assert not [d for d in json.loads(same.stdout)["request"] if d["what"].startswith("request.inputs")], same.stdout
    mine.unlink()
    assert_user_error(ws.mlrun("replay", ran, env=env), 2, f"--mine: {mine}, a file the run read where it ran, "
                      "is not on this machine", "put a copy there (its content: sha256:")
    os.rename(tmp_path / "elsewhere", tmp_path / "gone")   # nor an entry of this cache of that name
    mine.write_text("y = 2\n")
    assert_user_error(ws.mlrun("replay", ran, env=ws.env(MLRUN_CACHE=str(tmp_path / "empty"))), 2,
                      "is a file of the recording machine's cache entry conf-", "which this cache does not hold",
                      "import the run's bundle made with --with-cache")


@pytest.mark.slow   # about 0.7 s on the EPYC
def test_a_run_records_the_mlrun_that_made_it(bench):
    """A replay refused for changed recipes said "replay it with the mlrun version that made it": no record said
    which one."""
    from engine.version import __version__
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    second = run_json(bench, "app bench", "--mode=accuracy")["run"]
    made = record_of(bench, first)["mlrun"]
    assert made.startswith(__version__ + " (commit ") or made == __version__, made
    assert f"mlrun {made}" in bench.mlrun("runs", "show", first).stdout
    path = os.path.join(bench.runs, second, "run.json")
    record = record_of(bench, second)
    json.dump(dict(record, mlrun="0.1.0 (commit 0123456789ab)"), open(path, "w"))
    shown = bench.mlrun("diff", first, second)
    assert "mlrun" in shown.stdout and "0123456789ab" in shown.stdout, shown.stdout
    with open(os.path.join(bench.recipes, "app", "score.sh"), "a") as f:
        f.write("echo changed locally\n")
    assert_user_error(bench.mlrun("replay", second), 2, "or replay it with the mlrun version that made it "
                                                        "(mlrun 0.1.0 (commit 0123456789ab))")
    # made by this very mlrun: no other version to offer
    assert_user_error(bench.mlrun("replay", first), 2, "this mlrun made the run: the recipes (yours, or their "
                                                       "sources) changed since")
    # which of the recipe's files changed, not its two digests only
    third = run_json(bench, "app bench", "--mode=accuracy")["run"]
    assert "recipe app (files that differ: score.sh)" in bench.mlrun("diff", first, third).stdout


def test_a_worktrees_run_records_its_commit(tmp_path, monkeypatch):
    """A checkout made by `git worktree add` has a .git file: its runs recorded the version alone, so a replay in a
    clone at the same commit listed "mlrun: recorded "0.15.0", here "0.15.0 (commit ...)"" as a host difference and
    `diff` of the run and its replay exited 1."""
    import subprocess
    from engine import settings, usage
    main, tree = tmp_path / "main", tmp_path / "tree"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q", str(main)], check=True)
    subprocess.run(git + ["-C", str(main), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(git + ["-C", str(main), "worktree", "add", "-q", "-b", "other", str(tree)], check=True)
    head = subprocess.run(["git", "-C", str(main), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for checkout in (main, tree):
        monkeypatch.setattr(settings, "CHECKOUT", str(checkout))
        assert usage.recorded_version().endswith(f" (commit {head[:12]})"), checkout
    subprocess.run(git + ["-C", str(main), "pack-refs", "--all"], check=True)   # its branch packed by git gc
    assert usage.recorded_version().endswith(f" (commit {head[:12]})")


def test_a_corrupt_git_file_records_the_version_alone(tmp_path, monkeypatch):
    """A .git file or HEAD holding a NUL byte (a corrupt checkout): recorded_version raised ValueError ("embedded
    null byte"), a traceback of every run; it records the version alone."""
    from engine import settings, usage
    from engine.version import __version__
    monkeypatch.setattr(settings, "CHECKOUT", str(tmp_path))
    (tmp_path / ".git").write_text("gitdir: a\0b\n")
    assert usage.recorded_version() == __version__
    (tmp_path / ".git").unlink()
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/a\0b\n")
    assert usage.recorded_version() == __version__


def test_allow_differences_replays_with_the_changed_local_recipes(ws):
    """A teammate's newer recipes: `replay --allow-differences` ("run even when the plan cannot be the recorded one")
    was refused as if not given, its hint naming only --recorded-recipes; it now runs the local recipes, inexact."""
    ws.recipe("low", "tags: low\nrun: echo a > out.txt\n")
    ws.recipe("top", "tags: top\ncache: false\ndeps: [low]\nrun: 'true'\n")
    ran = run_json(ws, "top")["run"]
    ws.recipe("low", "tags: low\nrun: echo b > out.txt\n")
    assert_user_error(ws.mlrun("replay", ran), 2, "the run's recipes differ from the local ones (low)",
                      "--allow-differences runs your local ones, marked inexact")
    replayed = json.loads(ws.mlrun("replay", ran, "--allow-differences", "--json").stdout)
    assert record_of(ws, replayed["run"])["exact"] is False, replayed
    assert "recipe low: the local one differs from the run's; used, as --allow-differences asks" in \
        replayed["notes"], replayed


def model_file_app(ws, tmp_path):
    """Recipes `app m --model=FILE` whose model step reads FILE by content, as app-mlperf-bert's; the file."""
    ws.recipe("get-m", "tags: [get, m]\ninputs:\n  path: {type: path, file: true, content: true}\n"
                       "run: cp \"$MLRUN_INPUT_PATH\" model.onnx\n")
    ws.recipe("app-m", "tags: [app, m]\ncache: false\ninputs:\n  model: {type: path, file: true}\n"
                       "deps: [{name: m, query: get m, inputs: {path: \"{input.model}\"}}]\nrun: 'true'\n")
    mine = tmp_path / "mine.onnx"
    mine.write_text("weights 42\n")
    return mine


def test_replay_takes_a_missing_file_input_from_the_entry_made_of_it(ws, tmp_path):
    """--model=FILE: the bundle made --with-cache carried the model's entry, yet the replay wanted the file at the
    recording machine's path, and named no sha256 (the model step held it, not the app's)."""
    mine = model_file_app(ws, tmp_path)
    ran = run_json(ws, "app m", f"--model={mine}")["run"]
    mine.write_text("weights 43\n")   # changed since: said which file, not two digests alone
    assert_user_error(ws.mlrun("replay", ran), 2, f"(the file {mine} holds other bytes than the run read)")
    mine.unlink()
    replayed = ws.mlrun("replay", ran)
    assert replayed.returncode == 0, replayed.stderr
    assert f"--model: {mine} is not on this machine; " in replayed.stdout and "model.onnx of this cache holds its " \
        "content (sha256:" in replayed.stdout, replayed.stdout
    # diff of the run and its exact replay: the model's path is no difference (it listed the request and the step)
    again = json.loads(ws.mlrun("replay", ran, "--json").stdout)["run"]
    same = json.loads(ws.mlrun("diff", ran, again, "--json").stdout)
    assert not [d for d in same["request"] + same["plan"] if "model" in d["what"]], same
    ws.mlrun("rm", "cache", "--all", "-y")
    assert_user_error(ws.mlrun("replay", ran), 2, f"--model: {mine}, a file the run read where it ran, is not on "
                      "this machine", "put a copy there (its content: sha256:")


def test_a_teammates_model_file_run_replays_from_the_bundle(ws, tmp_path):
    """--model=FILE, a file its model step reads by content, was refused from an unsigned bundle as "settings that
    came with the bundle, which run code here", exit 2: the teammate's --with-cache bundle of a --model run never
    replayed without --recorded-recipes. Its zoo:/hf: forms are no file: still judged as text."""
    mine = model_file_app(ws, tmp_path)
    bundle = str(tmp_path / "b.tar.gz")
    assert ws.mlrun("export", run_json(ws, "app m", f"--model={mine}")["run"], "-o", bundle,
                    "--with-cache").returncode == 0
    mine.unlink()   # the teammate has the bundle only
    replayed = ws.mlrun("replay", bundle, env=ws.env(MLRUN_CACHE=str(tmp_path / "c2"), MLRUN_RUNS=str(tmp_path / "r2")))
    assert replayed.returncode == 0, replayed.stderr
    assert f"--model: {mine} is not on this machine; " in replayed.stdout, replayed.stdout
    from engine.replay import _data
    assert not _data("hf:org/name", {"type": "path", "file": True})


def test_a_bundles_model_file_that_never_ends_is_refused_not_read(ws, tmp_path):
    """--model=FILE is data to a replay of an unsigned bundle, which names the path: one naming a kernel file whose
    reading never ends (/proc/self/pagemap: 256 GiB of a process's page table, its size 0) hung the replay while it
    hashed it; a /proc or /sys file is refused (exit 2) before it is read."""
    mine = model_file_app(ws, tmp_path)
    link = tmp_path / "model.onnx"
    link.symlink_to(mine)
    bundle = str(tmp_path / "b.tar.gz")
    assert ws.mlrun("export", run_json(ws, "app m", f"--model={link}")["run"], "-o", bundle).returncode == 0
    link.unlink()
    link.symlink_to("/proc/self/pagemap")   # the path the bundle names, here a kernel file
    assert_user_error(ws.mlrun("replay", bundle, timeout=30), 2, "a file of the kernel's")


def test_a_text_input_that_looks_like_a_path_is_no_file_to_replay(ws):
    """--label=/api/v1/predict (type: str) was refused as 'a file the run read where it ran'."""
    ws.recipe("echo", "tags: [echo]\ncache: false\ninputs:\n  label: {type: str, default: x}\nrun: 'true'\n")
    ran = run_json(ws, "echo", "--label=/api/v1/predict")["run"]
    replayed = ws.mlrun("replay", ran)
    assert replayed.returncode == 0, replayed.stderr


def test_replay_finds_the_recorded_copy_of_recipes_from_a_folder_of_another_name(bench):
    """A run with --recipes DIR keeps its copy in snapshot/DIR/: replay looked in snapshot/recipes/ only."""
    mine = os.path.join(bench.root, "team-recipes")
    os.rename(bench.recipes, mine)
    first = run_json(bench, "--recipes", mine, "app bench", "--mode=accuracy")["run"]
    assert os.path.isdir(os.path.join(bench.runs, first, "snapshot", "team-recipes", "app"))
    with open(os.path.join(mine, "app", "score.sh"), "a") as f:
        f.write("echo changed locally\n")
    replayed = bench.mlrun("--recipes", mine, "replay", first, "--recorded-recipes")
    assert replayed.returncode == 0, replayed.stderr
    assert "recipe app: the local one differs or is missing; using the recorded copy" in replayed.stdout
    # a record edited to name a copy elsewhere is refused
    path = os.path.join(bench.runs, first, "run.json")
    record = json.load(open(path))
    record["recipes"]["app"]["snapshot"] = "../../elsewhere/app"
    json.dump(record, open(path, "w"))
    assert_user_error(bench.mlrun("--recipes", mine, "replay", first, "--recorded-recipes"), 2,
                      "outside its run folder")


def test_a_replay_of_a_run_that_took_a_file_from_its_mirror_says_to_give_it(ws, tmp_path):
    """An int8 run's calibration list is keyed by the mirror's copy (a probe): replayed without that mirror, even
    from a bundle holding every entry, the hint offered only --allow-differences, which then downloads (offline:
    fails)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "list.txt").write_text("1\n2\n")
    ws.recipe("listed", """\
        tags: get listed
        probe:
          copy: [sh, -c, 'if [ -f "$1" ]; then echo "mirror copy $(cksum < "$1")"; else echo "none in the mirror"; fi',
                 sh, "${MLRUN_MIRROR}/list.txt"]
        run: echo ok > ok.txt
        """)
    first = run_json(ws, "get listed", "--mirror", str(mirror))["run"]
    assert run_json(ws, "replay", first, "--mirror", str(mirror))["equal"] is True
    # not given: the run's own mirror, where it is here too (the replay went to the network)
    taken = ws.mlrun("replay", first, "--json")
    assert taken.returncode == 0 and json.loads(taken.stdout)["equal"] is True, taken.stderr
    assert f"replay: the run's mirror {mirror} is used (--mirror DIR gives another)" in taken.stderr
    os.rename(mirror, tmp_path / "moved")
    refused = ws.mlrun("replay", first)
    assert f"replay: the run's mirror {mirror} is not here: what is not in the cache is downloaded" in refused.stderr
    assert_user_error(refused, 2, "probe.copy was 'mirror copy", f"the run took a file from its mirror ({mirror}): "
                      "replay with --mirror DIR holding the same file", "--allow-differences")


def test_a_replayed_step_that_refuses_its_request_exits_2_as_run_directly(ws):
    ws.recipe("picky", """\
        tags: app picky
        cache: false
        run: 'echo "error: not on this machine" >&2; exit 78'
        """)
    assert_user_error(ws.mlrun("app picky"), 2, "not on this machine")
    first = json.loads(ws.mlrun("runs", "--json").stdout)[0]["run"]
    assert_user_error(ws.mlrun("replay", first), 2, "the replay of run", "not on this machine")   # it was exit 1
    failed = ws.mlrun("replay", first, "--json")   # as run --json: the failed run said (stdout was empty)
    said = json.loads(failed.stdout)
    assert failed.returncode == 2 and said["status"] == "error" and said["replay_of"] == first, failed.stdout


def test_replay_that_cannot_be_exact_says_what_differs(bench):
    first = run_json(bench, "app bench", "--mode=accuracy", env=bench.env(TOOL_FLAVOUR="a"))["run"]
    refused = bench.mlrun("replay", first, env=bench.env(TOOL_FLAVOUR="b"))
    assert_user_error(refused, 2, "cannot be exact", "tool: hash_env.TOOL_FLAVOUR was 'a', now 'b'",
                      "--allow-differences")
    anyway = run_json(bench, "replay", first, "--allow-differences", env=bench.env(TOOL_FLAVOUR="b"))
    assert any("cannot be exact" in note for note in anyway["notes"])
    assert record_of(bench, anyway["run"])["exact"] is False
    said = bench.mlrun("replay", first, "--allow-differences", env=bench.env(TOOL_FLAVOUR="b")).stdout
    # each difference under the heading (they were at its indent)
    assert "\n  the replay cannot be exact:\n    tool: hash_env.TOOL_FLAVOUR was 'a', now 'b'" in said, said
    # `runs` marks it inexact (it read "ok (replay)" as an exact one), and says so to scripts
    table = {line.split()[0]: line for line in bench.mlrun("runs").stdout.splitlines()[1:]}
    assert table[anyway["run"]].endswith("ok (inexact replay)"), table
    rows = {r["run"]: r for r in json.loads(bench.mlrun("runs", "--json").stdout)}
    assert (rows[anyway["run"]]["replay_of"], rows[anyway["run"]]["replay_exact"]) == (first, False)


def test_replay_reports_a_changed_accuracy(bench):
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    r = record_of(bench, first)
    r["results"]["accuracy"]["f1"] = 91.0   # as if the recorded run had scored otherwise
    with open(os.path.join(bench.runs, first, "run.json"), "w") as f:
        json.dump(r, f)
    result = bench.mlrun("replay", first)
    assert_user_error(result, 1, "gave a different accuracy", f"hint: mlrun diff {first} ")
    assert "DIFFERS: recorded 91.0" in result.stdout
    # a copy elsewhere: the hint's diff reads that copy (it named the id: no such run, or the untouched original)
    copy = os.path.join(bench.root, "copy of it")
    shutil.copytree(os.path.join(bench.runs, first), copy)
    result = bench.mlrun("replay", os.path.join(copy, "run.json"))
    assert_user_error(result, 1, "gave a different accuracy", f"hint: mlrun diff '{copy}' ")


def test_diff_and_replay_take_mlruns_folders_for_places_not_differences(bench):
    """A sweep's points run with MLRUN_RECIPES set; a replay elsewhere has other folders. Only contents count: the
    recipes are compared by content, downloads by checksum (was: 'host.env.MLRUN_RECIPES: recorded ..., here None')."""
    import shutil
    copy = bench.path("recipes-copy")
    shutil.copytree(bench.recipes, copy)
    a = run_json(bench, "app bench", "--mode=accuracy")["run"]
    b = run_json(bench, "app bench", "--mode=accuracy", env=bench.env(MLRUN_RECIPES=copy, MLRUN_MIRROR=copy))["run"]
    out = bench.mlrun("diff", a, b)
    assert "host.env" not in out.stdout, out.stdout
    replayed = bench.mlrun("replay", b)
    assert replayed.returncode == 0 and "host.env" not in replayed.stdout, replayed.stdout


def test_diff_names_the_differences(bench):
    a = run_json(bench, "app bench", "--mode=accuracy")["run"]
    b = run_json(bench, "app bench _int8", "--mode=performance")["run"]
    path = os.path.join(bench.runs, b, "run.json")   # B twice as fast: diff says the ratio, as replay does
    record = json.load(open(path))
    record["results"]["loadgen"]["metric"]["samples per second"] = 25.0
    json.dump(record, open(path, "w"))
    out = bench.mlrun("diff", a, b)
    assert "metric.samples per second: 12.5 -> 25.0 (B/A 2.000)" in out.stdout, out.stdout
    assert {"what": "metric.samples per second", "a": 12.5, "b": 25.0, "ratio": 2.0} in \
        json.loads(bench.mlrun("diff", a, b, "--json").stdout)["results"]
    assert out.returncode == 1, out.stderr   # like diff(1): 1 when the runs differ
    assert 'request.query: "app bench" -> "app bench _int8"' in out.stdout
    assert 'step app: variations: ["fp32"] -> ["int8"]' in out.stdout
    assert 'step app: env.SCORE: "90.5" -> "89.1"' in out.stdout
    assert "accuracy.f1: 90.5 -> 89.1" in out.stdout
    assert "step tool" not in out.stdout    # the shared dependency is the same entry
    as_json = bench.mlrun("diff", a, b, "--json")
    assert as_json.returncode == 1
    as_json = json.loads(as_json.stdout)
    assert {"what": "step app: inputs.mode", "a": "accuracy", "b": "performance"} in as_json["plan"]
    # which runs, and each input that differs on its own row (two whole dicts cut at 80 characters hid where)
    assert (as_json["a"], as_json["b"]) == (a, b)
    assert {"what": "request.inputs.mode", "a": "accuracy", "b": "performance"} in as_json["request"]
    assert 'request.inputs.mode: "accuracy" -> "performance"' in out.stdout
    same = bench.mlrun("diff", a, a)
    assert "no differences" in same.stdout and same.returncode == 0
    assert_user_error(bench.mlrun("diff", a, "no-such-run"), 2, "no-such-run")


def test_diff_puts_the_packages_of_a_venv_only_one_run_has_on_one_line(bench):
    """An OpenVINO int8 run against an fp32 one listed NNCF's layer package by package (16 lines)."""
    a = run_json(bench, "app bench")["run"]
    b = run_json(bench, "app bench")["run"]
    path = os.path.join(bench.runs, b, "run.json")
    record = json.load(open(path))
    step = next(s for s in record["steps"] if isinstance((s.get("record") or {}).get("packages"), list))
    step["record"]["packages"] += ["nncf==3.4.0", "networkx==3.4", "rich==14.0.0", "pydot==3.0.4", "numpy==2.3.5"]
    json.dump(record, open(path, "w"))
    out = bench.mlrun("diff", a, b).stdout
    assert "  only in B: networkx 3.4, nncf 3.4.0, pydot 3.0.4, rich 14.0.0\n" in out, out
    assert 'package numpy: "2.3.4" -> "2.3.5"' in out and "package nncf" not in out, out
    rows = json.loads(bench.mlrun("diff", a, b, "--json").stdout)["packages"]   # --json keeps a row each
    assert {"what": "package nncf", "a": None, "b": "3.4.0"} in rows   # missing: null, never a string


def test_diff_of_packages_sees_every_venv():
    """Two venvs merged into one dict: the backend's 1.23.2 hid the model's 1.22.1, and diff said nothing."""
    from engine import compare

    def record(*venvs):
        return {"steps": [{"label": "get-python-venv _onnxruntime", "key": str(i) * 64,
                           "record": {"packages": [f"onnxruntime=={v}", "numpy==2.3.4"]}} for i, v in enumerate(venvs)]}
    assert compare.packages(record("1.23.2"), record("1.22.1", "1.23.2")) == [
        ("package onnxruntime", "1.23.2", "1.22.1, 1.23.2")]
    assert compare.packages(record("1.23.2", "1.23.2"), record("1.23.2")) == []


def test_diff_says_a_dependency_s_difference_above_its_dependents():
    """Rows went by label: 'step app: its dependencies differ (see above)' came above the venv's probe.python."""
    from engine import compare

    def record(python):
        venv = {"recipe": "venv", "key": python * 64, "node": {"material": {"probes": {"python": python}}}}
        app = {"recipe": "app", "key": python.upper() * 64,
               "node": {"material": {"deps": [["python", python * 64]]}}}
        return {"steps": [venv, app]}
    rows = [what for what, _, _ in compare.plan(record("a"), record("b"))]
    # which dependency is named (int8 against fp32 said only 'its dependencies differ')
    assert rows == ["step venv: probes.python", "step app: its dependencies differ: python (see their rows)"]


def test_replay_of_a_run_that_stopped_early_runs_the_rest(ws, tmp_path):
    """A run that failed at its second venv-like step: replay said '... _a: not in the recorded plan' and
    '... _a: in the recorded plan, not in this one' at once (steps named without the rest of the plan), then
    with --allow-differences failed on 'a different accuracy' (recorded: none)."""
    marker = tmp_path / "broken"
    ws.recipe("lib", f"""\
        tags: get lib
        variations:
          a: {{group: flavour, default: true}}
          b: {{group: flavour, env: {{FLAVOUR: b}}}}
        run: '[ "$FLAVOUR" != b ] || [ ! -e {marker} ] || exit 3; echo lib > lib.txt'
        """)
    ws.recipe("app", """\
        tags: app
        cache: false
        deps: [{name: one, query: get lib _a}, {name: two, query: get lib _b}]
        run: |
          echo '{"accuracy": {"f1": 1.0}}' > summary.json
        record: {results: summary.json}
        """)
    marker.write_text("")
    failed = ws.mlrun("app", "--json")
    assert failed.returncode == 1, failed.stderr
    first = json.loads(failed.stdout)["run"]
    marker.unlink()
    replayed = ws.mlrun("replay", first)
    assert replayed.returncode == 0, replayed.stderr
    assert "not in the recorded plan" not in replayed.stdout + replayed.stderr
    assert "no results to compare" in replayed.stdout, replayed.stdout
    again = json.loads(ws.mlrun("runs", "--json", "--last", "1").stdout)[0]["run"]
    diff = ws.mlrun("diff", first, again).stdout
    assert "step app: \"not reached\" -> \"present\"" in diff and "step get" not in diff, diff   # was: its first lib absent, then present
    assert "accuracy.f1: absent -> 1.0" in diff, diff   # a missing value reads "absent" (was null, "" or "absent")


def test_diff_and_replay_say_how_each_run_ran():
    """An fp32 and an int8 OpenVINO run: diff compared their metrics and the precision asked, not what ran (the
    operators compiled int8, the instances the rule chose); a warm-up's rate (a float) is a measurement, not a fact."""
    from engine import compare, replay

    def record(precision, int8_ops, instances, warmup):
        return {"status": "ok", "results": {
            "accuracy": {"f1": 50.0}, "loadgen": {"metric": {"samples per second": 10.0}, "result": "VALID"},
            "model": f"/runs/{precision}/model.onnx", "warmup_qps": warmup, "sequence_handling": "exact lengths",
            "openvino": {"precision": precision, "int8_operators": int8_ops, "streams": instances},
            "parallelism": {"instances": instances, "rule": "Offline"}}}
    fp32, int8 = record("fp32", 0, 2, 9.5), record("int8", 43, 1, 30.1)
    # a fact that echoes the setting asked (the request says it) and a rule's sentence quoting a measurement are not
    # how it ran differently
    asked = {**int8, "request": {"inputs": {"precision": "int8"}}}
    asked["results"] = {**int8["results"], "rule": "Server: slowest warm-up sample 4.0 ms x 2 cores"}
    # (a real record's settings hold the inputs' defaults too: fp32 echoes there as well)
    again = {**fp32, "request": {"inputs": {"precision": "fp32"}},
             "results": {**fp32["results"], "rule": "Server: slowest warm-up sample 3.8 ms x 2 cores"}}
    assert [what for what, _, _ in compare.ran(again, asked)] == [
        "ran.openvino.int8_operators", "ran.openvino.streams", "ran.parallelism.instances"]
    # an input with no default left to a rule in one run and given in the other: what the rule chose is said (the
    # request's row said only "absent -> 1", and the rule's batch of 4 went unsaid)
    ruled = {"status": "ok", "request": {"inputs": {}}, "results": {"batch_size": 4, "batching": {"batch_size": 4}}}
    given = {"status": "ok", "request": {"inputs": {"batch_size": 1}},
             "results": {"batch_size": 1, "batching": {"batch_size": 1}}}
    assert compare.ran(ruled, given) == [("ran.batch_size", 4, 1)]
    assert compare.ran({**ruled, "request": {"inputs": {"batch_size": 4}}}, given) == []   # both given: the request's row
    assert compare.ran(fp32, int8) == [("ran.openvino.precision", "fp32", "int8"),
                                       ("ran.openvino.int8_operators", 0, 43), ("ran.openvino.streams", 2, 1),
                                       ("ran.parallelism.instances", 2, 1)]
    assert compare.ran(fp32, record("fp32", 0, 2, 8.7)) == []   # model paths and warm-up rates are not facts
    assert compare.ran(fp32, {"results": None})[0] == ("ran.sequence_handling", "exact lengths", None)
    assert compare.everything(fp32, int8)["ran"] == compare.ran(fp32, int8)
    lines, ok = replay.verdict(fp32, record("fp32", 0, 1, 9.5))
    assert ok and lines[-3:] == ["how it ran differs:", "  ran.openvino.streams: recorded 2, here 1",
                                 "  ran.parallelism.instances: recorded 2, here 1"]
    # a record made before `instances` was kept beside parallelism.instances: not "absent -> 2" (an upgrade's diff)
    newer = {**fp32, "results": {**fp32["results"], "instances": 2}}
    assert compare.ran(fp32, newer) == [] and compare.ran(newer, fp32) == []
    assert compare.ran(fp32, {**int8, "results": {**int8["results"], "instances": 1}})[-1] == \
        ("ran.parallelism.instances", 2, 1)


def test_diff_compares_values_as_typed_settings_as_facts_and_nan_as_itself():
    """A submission's count 32 against a typed "32" exited 1; user.conf's 2.5 against 4.5 QPS was no difference (a
    float: "a measurement"); a lone f1 was a performance figure; a run against itself said 'NaN -> NaN'."""
    from engine import compare
    a = {"request": {"inputs": {"count": 32, "min_duration": 1000}, "dep_overrides": {"model": {"layers": "2"}}},
         "results": {"settings": {"target_qps": 200.4}, "user_settings": {"target_qps": 2.5}}}
    b = {"request": {"inputs": {"count": "32", "min_duration": "1000"}, "dep_overrides": {"model": {"layers": "+2"}}},
         "results": {"settings": {"target_qps": 350.7}, "user_settings": {"target_qps": 4.5}}}
    assert compare.request(a, b) == []
    # the user.conf's is a setting; the harness's own target, measured anew each run, is not (two identical runs
    # differed by it)
    assert compare.ran(a, b) == [("ran.user_settings.target_qps", 2.5, 4.5)]
    x, y = ({"results": {"f1": f1, "rate": float("nan")}} for f1 in (8.7, 8.1))
    assert ("accuracy.f1", 8.7, 8.1) in compare.results(x, y)
    assert compare.everything(x, x)["results"] == []


@pytest.mark.parametrize("query, name, inputs", [
    ("app mlperf bert _onnxruntime _random", "user_conf", {"mode": "accuracy"}),
    ("app mlperf bert _onnxruntime _random", "audit_config", {"mode": "performance"}),
    ("app mlperf bert _onnxruntime _random", "questions", {"mode": "accuracy"}),
    ("app bert qa _random", "passage_file", {"question": "who?"}),
    ("app bert qa _random", "question_file", {"passage": "a text"}),
])
@pytest.mark.slow  # about 0.9 s on the 2-core EPYC
def test_a_file_the_app_reads_is_in_its_key_by_content(tmp_path, query, name, inputs):
    """An edited --user_conf at the same path gave the same key: `replay` said the run was exact, `diff` of the two
    runs said 'no differences' (a user's trial)."""
    from engine.resolver import resolve
    from engine.settings import Settings
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(root, "recipes"),
                                          "MLRUN_CACHE": str(tmp_path / "cache")})
    given = tmp_path / "given.txt"

    def key():
        plan = resolve(settings.index(), query, inputs={**inputs, name: str(given)}, host_env=dict(os.environ),
                       prober=settings.prober())
        return plan.root.key
    given.write_text("min_query_count = 20\n")
    first = key()
    assert key() == first
    given.write_text("min_query_count = 30\n")
    assert key() != first
    # a folder is refused at once, never hashed whole first (--passage_file=/usr/lib took 37 s to be refused)
    from engine.errors import ResolutionError
    with pytest.raises(ResolutionError, match="is a folder, not a file"):
        resolve(settings.index(), query, inputs={**inputs, name: str(tmp_path)}, host_env=dict(os.environ),
                prober=settings.prober())


def test_a_secret_set_in_one_shell_only_is_no_host_difference():
    """A run given --env.HF_TOKEN, replayed with HF_TOKEN in the shell (replay needs it there): every replay listed
    'host.env.HF_TOKEN: recorded None, here <redacted>' and diff of the two runs never came out clean."""
    from engine import compare
    from engine.secrets import MASK
    run = {"host": {"cpu": "x", "env": {"OMP_NUM_THREADS": "2"}}}
    replayed = {"host": {"cpu": "x", "env": {"OMP_NUM_THREADS": "2", "HF_TOKEN": MASK}}}
    assert compare.host(run, replayed) == []
    other = {"host": {"cpu": "x", "env": {"OMP_NUM_THREADS": "1", "HF_TOKEN": MASK}}}
    assert compare.host(run, other) == [("host.env.OMP_NUM_THREADS", "2", "1")]


def test_how_it_ran_leaves_out_a_settings_echo_under_another_name_and_a_fact_kept_twice():
    """count 20 against 40 listed LoadGen's min_query_count, performance_sample_count_override and the batches (the
    count under other names), and threads beside parallelism.threads (a user's trial)."""
    from engine import compare

    def record(count, threads):
        return {"request": {"inputs": {"count": str(count)}}, "results": {
            "threads": threads, "parallelism": {"threads": threads, "instances": 3 - threads},
            "settings": {"min_query_count": count, "performance_sample_count_override": count},
            "batching": {"batches": count}}}
    assert compare.ran(record(20, 1), record(40, 2)) == [("ran.threads", 1, 2), ("ran.parallelism.instances", 2, 1)]
    assert compare.ran(record(20, 1), record(20, 1)) == []


def test_usage_errors_of_the_run_verbs_name_what_a_user_types(bench):
    """`mlrun diff X` said 'needs run_b' (argparse's name); `mlrun show run X` pointed at show's help only."""
    assert_user_error(bench.mlrun("diff", "x"), 2, "mlrun diff needs RUN_B")
    assert_user_error(bench.mlrun("show", "run", "x"), 2, "hint: `mlrun runs show RUN` shows a run's record")


@pytest.mark.slow  # about 0.8 s on the 2-core EPYC
def test_diff_reads_a_bundle_in_place(bench, tmp_path):
    """replay took a teammate's bundle, diff said "no run 'X.tar.gz'": it had to be imported first."""
    first = run_json(bench, "app bench", "--mode=accuracy")["run"]
    second = run_json(bench, "app bench _int8", "--mode=accuracy")["run"]
    bundle = str(tmp_path / "first.tar.gz")
    assert bench.mlrun("export", first, "-o", bundle).returncode == 0
    shutil.rmtree(os.path.join(bench.runs, first))   # not imported by diff: read where it is
    out = bench.mlrun("diff", bundle, second, "--json")
    assert out.returncode == 1, out.stderr
    said = json.loads(out.stdout)
    assert (said["a"], said["b"]) == (first, second) and said["request"][0]["what"] == "request.query", said
    assert not os.path.exists(os.path.join(bench.runs, first))
    assert bench.mlrun("diff", bundle, bundle).returncode == 0
    (tmp_path / "cut.tar.gz").write_bytes(open(bundle, "rb").read()[:200])
    assert_user_error(bench.mlrun("diff", str(tmp_path / "cut.tar.gz"), second), 2, "cannot read the bundle")
    assert_user_error(bench.mlrun("diff", str(tmp_path / "gone.tgz"), second), 2, "no such file")
    # cut after its run.json, or a member import refuses: it said "no differences" (exit 0)
    data = open(bundle, "rb").read()
    (tmp_path / "half.tar.gz").write_bytes(data[:len(data) // 2])
    assert_user_error(bench.mlrun("diff", str(tmp_path / "half.tar.gz"), bundle), 2, "cannot read the bundle")
    import tarfile
    with tarfile.open(bundle) as tar, tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as out:
        for member in tar.getmembers():
            out.addfile(member, tar.extractfile(member) if member.isfile() else None)
        evil = tarfile.TarInfo(f"run/{first}/../../evil.txt")
        out.addfile(evil, io.BytesIO(b""))
    assert_user_error(bench.mlrun("diff", str(tmp_path / "bad.tar.gz"), bundle), 2,
                      f"refusing to read {tmp_path / 'bad.tar.gz'}", "'..'")
