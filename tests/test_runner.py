"""The runner, in process: the environment a step sees, failed builds, statuses, run records."""
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from engine import Cache, StepError, resolve
from engine.errors import MlrunError
from engine.runner import Runner, RunReporter
from conftest import MLRUN, assert_user_error, run_ids


class Recorder(RunReporter):
    """Keeps final status lines as 'label: status' and extra lines as they come."""

    def __init__(self):
        super().__init__(io.StringIO())
        self.steps, self.lines = [], []

    def step(self, i, total, node, status, detail="", final=True, log=None):
        if final:
            self.steps.append(f"{node.label}: {status}")

    def line(self, text):
        self.lines.append(text)


def run(ws, query, inputs=None, env_overrides=None, host_env=None, reporter=None):
    plan = resolve(ws.index(), query, inputs=inputs, host_env=host_env or os.environ, env_overrides=env_overrides)
    runner = Runner(Cache(ws.cache), ws.runs, reporter=reporter or Recorder(), host_env=host_env, stream_root=False)
    return runner.run(plan, argv=["mlrun", query])


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f.read().split("\0"):
            if "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


DUMP_ENV = "env -0 > env.txt"


@pytest.fixture
def chain(ws):
    """top -> mid -> low, each exporting X and a PATH entry; top reads them."""
    ws.recipe("low", """\
        tags: low
        exports:
          X: low
          LOW_ONLY: "{entry}/low.txt"
          PATH: {prepend: ["{entry}/bin"]}
          MLRUN_PYTHON: /opt/low/python
        run: echo low > low.txt
        """)
    ws.recipe("mid", """\
        tags: mid
        deps: [low]
        exports:
          X: mid
          FROM_LOW: "${LOW_ONLY}"
          PATH: {prepend: ["{entry}/bin"], append: ["{entry}/late"]}
        run: "true"
        """)
    ws.recipe("top", f"""\
        tags: top
        deps: [{{name: m, query: mid}}]
        hash_env: [MY_CC]
        inputs:
          count: {{type: int, default: 3}}
          flag: {{type: bool, default: false, env: FLAG}}
          unset: {{type: str}}
        env:
          SEEN_X: "${{X}}"
          MINE: "mine"
          OVERRIDDEN: "by recipe"
          HERE: "{{entry}}"
          RECIPE: "{{recipe}}"
        variations:
          loud: {{env: {{MINE: loud}}}}
        run: {DUMP_ENV}
        """)
    return ws


def test_env_order(chain):
    host = dict(os.environ, MY_CC="gcc-13", SECRET_HOST_VAR="leak", PATH="/usr/bin:/bin")
    record = run(chain, "top _loud", env_overrides={"OVERRIDDEN": "by --env", "EXTRA": "1"}, host_env=host)
    paths = {s["recipe"]: s["path"] for s in record["steps"]}
    env = read_env(os.path.join(paths["top"], "env.txt"))
    # The direct dep's exports apply after its own dep's: mid wins over low.
    assert env["X"] == "mid" and env["SEEN_X"] == "mid"
    # Exports resolve {entry} to each dep's own cache entry, and ${VAR} against what came before.
    assert env["LOW_ONLY"] == os.path.join(paths["low"], "low.txt")
    assert env["FROM_LOW"] == env["LOW_ONLY"]
    # Path lists: the later (shallower) prepend goes first, host PATH kept after them, appends last.
    assert env["PATH"].split(os.pathsep) == [os.path.join(paths["mid"], "bin"), os.path.join(paths["low"], "bin"),
                                             "/usr/bin", "/bin", os.path.join(paths["mid"], "late")]
    # Then the recipe's env (after variations), then --env overrides.
    assert env["MINE"] == "loud"
    assert env["OVERRIDDEN"] == "by --env" and env["EXTRA"] == "1"
    # {entry} is the folder the step builds in; {recipe} the recipe's folder.
    assert env["HERE"] == env["MLRUN_ENTRY"]
    assert env["RECIPE"] == env["MLRUN_RECIPE_DIR"] == os.path.join(chain.recipes, "top")
    # Inputs, by their variables; unset ones absent; bools as true/false.
    assert env["MLRUN_INPUT_COUNT"] == "3" and env["FLAG"] == "false" and "MLRUN_INPUT_UNSET" not in env
    # hash_env is passed through; other host variables are not; a dep may replace MLRUN_PYTHON.
    assert env["MY_CC"] == "gcc-13"
    assert "SECRET_HOST_VAR" not in env
    assert env["MLRUN_PYTHON"] == "/opt/low/python"


@pytest.mark.parametrize("order", ["b-first", "a-first"])
def test_own_variables_expand_whatever_order_they_are_written_in(ws, order):
    """Keys hash env and exports sorted: `B: ${A}-b` written above `A: one` gave B '-b' under the key that
    gives 'one-b' when written below, so an entry built one way was reused for the other."""
    b, a = 'B: "${A}-b"', 'A: "one"'
    first, second = (b, a) if order == "b-first" else (a, b)
    ws.recipe("dep", f"tags: dep\nexports:\n  Y: \"${{X}}-y\"\n  X: x\n  P: {{prepend: [p]}}\n"
                     "  Q: \"${P}\"\nrun: \"true\"\n")
    ws.recipe("own", f"tags: own\ndeps: [dep]\nenv:\n  {first}\n  {second}\n  PATH: \"${{PATH}}:/own\"\n"
                     f"run: {DUMP_ENV}\n")
    record = run(ws, "own", host_env=dict(os.environ, PATH="/usr/bin"))
    env = read_env(os.path.join({s["recipe"]: s["path"] for s in record["steps"]}["own"], "env.txt"))
    assert (env["A"], env["B"], env["Y"], env["Q"]) == ("one", "one-b", "x-y", "p")
    assert env["PATH"] == "/usr/bin:/own"   # a variable naming itself: the value before


def test_variables_that_name_each_other_in_a_circle_are_refused_with_the_circle(ws):
    from engine import ResolutionError
    ws.recipe("loop", 'tags: loop\nenv:\n  B: "${A}-b"\n  A: "${C}"\n  C: "${B}"\nrun: "true"\n')
    with pytest.raises(ResolutionError, match=r"loop: its env variables refer to each other in a circle: "
                                              r"B -> A -> C -> B"):
        resolve(ws.index(), "loop")
    ws.recipe("over", 'tags: over\nenv:\n  B: "${A}-b"\nrun: "true"\n')
    with pytest.raises(ResolutionError, match="circle: B -> A -> B"):   # --env.A='${B}' closes one
        resolve(ws.index(), "over", env_overrides={"A": "${B}"})


def test_default_python_is_mlruns_own(ws):
    ws.recipe("a", f"tags: a\nrun: {DUMP_ENV}\n")
    record = run(ws, "a")
    env = read_env(os.path.join(record["steps"][-1]["path"], "env.txt"))
    assert env["MLRUN_PYTHON"] == sys.executable


def test_env_and_command_are_kept_to_rerun_by_hand(chain, tmp_path):
    record = run(chain, "top", inputs={"count": "7"})
    entry = record["steps"][-1]["path"]
    meta = os.path.join(entry, ".mlrun")
    assert {"env.sh", "command.sh", "build.log", "entry.json", "files.json"} <= set(os.listdir(meta))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run([os.path.join(meta, "command.sh"), str(scratch)], check=True, env={"PATH": os.environ["PATH"]},
                   capture_output=True)
    again = read_env(scratch / "env.txt")
    first = read_env(os.path.join(entry, "env.txt"))
    assert again["MLRUN_INPUT_COUNT"] == first["MLRUN_INPUT_COUNT"] == "7"
    assert again["PATH"] == first["PATH"] and again["X"] == first["X"]
    entry_json = json.load(open(os.path.join(meta, "entry.json")))
    assert entry_json["key"] == record["steps"][-1]["key"]
    assert entry_json["inputs"]["count"] == 7


def test_statuses_built_then_cached(chain):
    first, second = Recorder(), Recorder()
    r1 = run(chain, "top", reporter=first)
    r2 = run(chain, "top", reporter=second)
    assert [s["status"] for s in r1["steps"]] == ["built", "built", "built"]
    assert [s["status"] for s in r2["steps"]] == ["cached", "cached", "cached"]
    assert [s.split(": ")[1].split()[0] for s in first.steps] == ["built"] * 3
    assert second.steps == ["low: cached", "mid: cached", "top: cached"]
    assert [s["path"] for s in r1["steps"]] == [s["path"] for s in r2["steps"]]
    assert r1["id"] != r2["id"]
    saved = json.load(open(os.path.join(r2["run_dir"], "run.json")))
    assert saved["status"] == "ok" and [s["status"] for s in saved["steps"]] == ["cached"] * 3


def test_root_exports_are_resolved_against_its_entry(chain):
    record = run(chain, "mid")
    assert record["exports"]["X"] == "mid"
    assert record["exports"]["PATH"].split(os.pathsep)[0] == os.path.join(record["steps"][-1]["path"], "bin")


def test_uncached_step_runs_every_time_in_the_run_folder(ws, tmp_path):
    counter = tmp_path / "counter"
    ws.recipe("lib", "tags: lib\nrun: echo lib > lib.txt\nexports: {LIB: '{entry}/lib.txt'}\n")
    ws.recipe("bench", f"tags: bench\ncache: false\ndeps: [lib]\nrun: echo run >> {counter}; cat $LIB > seen\n")
    run(ws, "bench")
    r2 = run(ws, "bench")
    assert counter.read_text() == "run\nrun\n"
    assert [s["status"] for s in r2["steps"]] == ["cached", "ran"]
    folder = r2["steps"][-1]["path"]
    assert folder == os.path.join(r2["run_dir"], "bench")
    assert open(os.path.join(folder, "seen")).read() == "lib\n"
    assert os.path.isfile(os.path.join(folder, ".mlrun", "step.json"))
    assert ws.entries() == ws.entries("lib")   # nothing of bench is in the cache


def test_two_uncached_steps_of_one_recipe_each_get_their_own_folder(ws):
    """Variations _a and _b of one cache:false recipe wrote one folder: the second's output read as both."""
    ws.recipe("bench", """\
        tags: bench
        cache: false
        variations:
          a: {env: {WORD: a}, exports: {A_OUT: "{entry}/out.txt"}}
          b: {env: {WORD: b}, exports: {B_OUT: "{entry}/out.txt"}}
        run: echo $WORD > out.txt
        """)
    ws.recipe("both", "tags: both\ncache: false\ndeps: [{name: a, query: 'bench _a'}, {name: b, query: 'bench _b'}]\nrun: echo $(cat $A_OUT) $(cat $B_OUT) > seen\n")
    ws.recipe("snapshot", "tags: snap\ncache: false\nrun: ls > seen\n")
    record = run(ws, "both")
    a, b, both = (step["path"] for step in record["steps"])
    assert len({a, b}) == 2 and os.path.basename(a).startswith("bench-")
    assert open(os.path.join(both, "seen")).read() == "a b\n" and both == os.path.join(record["run_dir"], "both")
    # a recipe named as the run's copy of its recipes runs beside it, not inside it
    record = run(ws, "snap")
    assert os.path.basename(record["steps"][0]["path"]).startswith("snapshot-")
    assert open(os.path.join(record["steps"][0]["path"], "seen")).read() == "seen\n"   # no recipe copies


def test_an_entry_built_before_its_download_was_renamed_is_named(ws, server):
    """A download's file name is not in the key: the old entry was reused and the step reading it failed with
    'No such file'."""
    import hashlib
    server.files["/a.txt"] = b"words\n"
    digest = hashlib.sha256(b"words\n").hexdigest()
    text = 'tags: dl\ndownload: {url: "%s/a.txt", file: %s, sha256: "%s"}\n'
    ws.recipe("dl", text % (server.url, "a.txt", digest))
    run(ws, "dl")
    ws.recipe("dl", text % (server.url, "b.txt", digest))
    with pytest.raises(MlrunError) as refused:
        run(ws, "dl")
    assert "holds no b.txt, which its recipe downloads" in refused.value.message
    assert "mlrun rm cache" in refused.value.hint and refused.value.exit_code == 2


FAILING = """\
tags: bad
run: |
  echo "first line"
  for i in $(seq 1 30); do echo "line $i"; done
  echo "attempt $ATTEMPT" > partial.txt
  echo "the real cause"
  exit 3
"""


def test_a_failed_step_that_says_why_is_quoted_in_the_error(ws):
    """A sweep point's or a submission run's error said only 'exited with code 2'; the step's own `error: `
    line (the last one) now follows it."""
    ws.recipe("bad", "tags: bad\nrun: |\n  echo 'error: first'; echo 'error: the model is fixed at 16'; exit 2\n")
    with pytest.raises(StepError) as info:
        run(ws, "bad")
    assert info.value.message == "step bad failed: exited with code 2: the model is fixed at 16"
    # argparse's way (`prog.py: error: ...`) is a step saying why too; a line merely holding "error: " is not
    ws.recipe("bad", "tags: bad\nrun: |\n  echo 'usage: random_model.py [-h]'\n"
              "  echo \"random_model.py: error: seq must be a positive integer or 'dynamic', not 'xyz'\"; exit 2\n")
    with pytest.raises(StepError) as info:
        run(ws, "bad")
    assert info.value.message.endswith("exited with code 2: seq must be a positive integer or 'dynamic', not 'xyz'")
    ws.recipe("bad", "tags: bad\nrun: |\n  echo 'no cause given, an error: somewhere'; exit 2\n")
    with pytest.raises(StepError) as info:
        run(ws, "bad")
    assert info.value.message == "step bad failed: exited with code 2"
    # pip's way (a venv whose package set names a version that does not exist): was not quoted
    ws.recipe("bad", "tags: bad\nrun: |\n  echo 'ERROR: No matching distribution found for onnxruntime==9.9.9'; exit 1\n")
    with pytest.raises(StepError) as info:
        run(ws, "bad")
    assert info.value.message == ("step bad failed: exited with code 1: No matching distribution found for "
                                  "onnxruntime==9.9.9")
    # a Python step that died of an exception: its traceback's last line (a --model file that was no ONNX said
    # only "exited with code 1"); an exception the step caught and printed on the way is not the cause
    ws.recipe("bad", "tags: bad\nrun: |\n  python3 -c 'print(\"KeyError: was handled\")\n"
              "  import json; json.loads(\"{x\")'\n")
    with pytest.raises(StepError) as info:
        run(ws, "bad")
    assert info.value.message == ("step bad failed: exited with code 1: JSONDecodeError: Expecting property name "
                                  "enclosed in double quotes: line 1 column 2 (char 1)"), info.value.message


def test_failed_build_publishes_nothing_and_keeps_its_log(ws):
    ws.recipe("bad", FAILING)
    reporter = Recorder()
    with pytest.raises(StepError) as info:
        run(ws, "bad", reporter=reporter, env_overrides={"ATTEMPT": "1"})
    assert info.value.exit_code == 1
    assert "step bad failed: exited with code 3" in info.value.message
    assert ws.entries() == []
    assert not os.listdir(os.path.join(ws.cache, ".tmp"))   # the build folder is gone too
    logs = Cache(ws.cache).failed_logs()
    assert len(logs) == 1 and info.value.hint == f"full log: {logs[0]}"
    text = open(logs[0]).read()
    assert "first line" in text and "the real cause" in text
    assert reporter.steps[-1].startswith("bad: FAILED after")
    tail = "\n".join(reporter.lines)
    assert "the real cause" in tail and "first line" not in tail   # the last lines only
    runs = os.listdir(ws.runs)
    assert json.load(open(os.path.join(ws.runs, runs[0], "run.json")))["status"] == "failed"


def test_each_failure_keeps_its_own_log(ws):
    """Two failures in the same second must not mix their logs."""
    ws.recipe("bad", FAILING)
    hints = []
    for attempt in ("1", "2"):
        with pytest.raises(StepError) as info:
            run(ws, "bad", env_overrides={"ATTEMPT": attempt})
        hints.append(info.value.hint)
    logs = Cache(ws.cache).failed_logs()
    assert len(logs) == 2 and hints == [f"full log: {p}" for p in logs]
    assert all(os.path.isfile(p) for p in logs)


def test_a_failed_download_keeps_a_log_naming_the_cause(ws, server):
    url = f"{server.url}/m.bin"   # not served: 404
    ws.recipe("dl", """\
        tags: dl
        download: {url: "%s", file: m.bin, sha256: "%s"}
        """ % (url, "0" * 64))
    with pytest.raises(StepError) as info:
        run(ws, "dl")
    assert url in info.value.message and "HTTP 404" in info.value.message
    logs = Cache(ws.cache).failed_logs()
    assert len(logs) == 1 and os.path.isfile(logs[0])
    assert url in open(logs[0]).read()
    assert ws.entries() == []


def test_a_failed_dep_stops_the_run(ws, tmp_path):
    marker = tmp_path / "top-ran"
    ws.recipe("bad", FAILING)
    ws.recipe("top", f"tags: top\ndeps: [bad]\nrun: touch {marker}\n")
    with pytest.raises(StepError, match="step bad failed"):
        run(ws, "top")
    assert not marker.exists() and ws.entries() == []


def test_leftovers_of_a_killed_build_are_cleared(ws):
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    node = resolve(ws.index(), "a").root
    stale = os.path.join(ws.cache, ".tmp", f"{node.entry_name}.99999999")
    os.makedirs(os.path.join(stale, ".mlrun"))
    record = run(ws, "a")
    assert not os.path.exists(stale)
    assert sorted(os.listdir(record["steps"][-1]["path"])) == [".mlrun", "a.txt"]


def test_two_runs_drawing_the_same_run_id_both_get_a_folder(ws, monkeypatch):
    from engine import runner
    ids = iter(["20260101-000000-aaaa", "20260101-000000-aaaa", "20260101-000000-bbbb"])
    monkeypatch.setattr(runner, "new_run_id", lambda: next(ids))
    ws.recipe("a", "tags: a\nrun: 'true'\n")
    first, second = run(ws, "a"), run(ws, "a")
    assert (first["id"], second["id"]) == ("20260101-000000-aaaa", "20260101-000000-bbbb")
    assert sorted(os.listdir(ws.runs)) == [first["id"], second["id"]]


def test_pass_env_reaches_the_step_unhashed_and_secrets_are_never_written(ws, tmp_path):
    ws.recipe("fetch", """\
        tags: fetch
        pass_env: [HF_TOKEN, HF_HOME]
        run: echo "$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-16) $HF_HOME ${MLRUN_MIRROR:-none}" > seen.txt
        """)   # (its hash: a secret written into a step's text output is masked there)
    mirror = str(tmp_path / "mirror")
    os.makedirs(mirror)
    first = ws.mlrun("fetch", "--json", f"--mirror={mirror}", env=ws.env(HF_TOKEN="hf_secret", HF_HOME="/h1"))
    assert first.returncode == 0, first.stderr
    path = json.loads(first.stdout)["path"]
    import hashlib
    token = hashlib.sha256(b"hf_secret").hexdigest()[:16]
    assert open(os.path.join(path, "seen.txt")).read() == f"{token} /h1 {mirror}\n"
    # Not hashed: another token or HF_HOME reuses the entry.
    again = ws.mlrun("fetch", "--json", env=ws.env(HF_TOKEN="other", HF_HOME="/h2"))
    assert json.loads(again.stdout)["steps"][0]["status"] == "cached"
    # Never written down: not in the entry's metadata, env file, nor the run record.
    for root, _, files in os.walk(ws.root):
        for name in files:
            if name.endswith((".json", ".sh", ".log")):
                assert "hf_secret" not in open(os.path.join(root, name), errors="replace").read(), name


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_a_long_step_says_it_is_under_way_where_no_terminal_shows_it(ws):
    """In a log file (CI, a batch job) a step's line came only when it ended: minutes of nothing looked hung.
    Now it says every HEARTBEAT_S (here 0.2 s) that it is still building, with its log; never after it ended."""
    ws.recipe("slow", """\
        tags: slow
        run: echo first line; sleep 1.1; grep -c "^first line" .mlrun/build.log > out.txt
        """)
    stream = io.StringIO()   # not a terminal
    run(ws, "slow", reporter=RunReporter(stream, heartbeat=0.2))
    lines = stream.getvalue().splitlines()
    beats = [x for x in lines if re.search(r"^\[1/1\] slow +building for \d+ s  log: .*/\.mlrun/build\.log$", x)]
    assert len(beats) >= 3, lines
    assert re.search(r"^\[1/1\] slow +built in ", lines[-1]), lines
    time.sleep(0.5)
    assert stream.getvalue().splitlines() == lines   # the heartbeat stopped with the step
    # and the log it names had the step's output as it came (was: buffered until 8 KB or the end)
    [entry] = [e for e in os.listdir(ws.cache) if e.startswith("slow-")]
    assert open(os.path.join(ws.cache, entry, "out.txt")).read() == "1\n"


def test_a_publish_that_fails_with_its_cache_root_says_why_publishing_failed(ws, monkeypatch):
    """When the cache root stops taking writes while an entry is published, setting the build aside in .failed
    fails too: the error was that one (".failed: File exists"), hiding the rename that failed. Now the
    rename's error is raised, and the build is left in .tmp for gc."""
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    os.makedirs(ws.cache, exist_ok=True)
    open(os.path.join(ws.cache, ".failed"), "w").close()   # keep_failed's makedirs fails on it

    def refused(self, staged, final):
        raise PermissionError(13, "Permission denied", staged, None, final)
    monkeypatch.setattr(Cache, "place", refused)
    with pytest.raises(PermissionError) as info:
        run(ws, "a")
    assert info.value.filename.startswith(os.path.join(ws.cache, ".tmp")) and ".failed" not in str(info.value)
    assert ws.entries() == []


def test_a_value_naming_the_entry_reruns_by_hand_in_the_folder_given(ws, tmp_path):
    """env: {OUT: "{entry}/out.txt"} was kept as the temporary build folder's path, gone after publishing:
    command.sh failed 'No such file or directory'."""
    ws.recipe("e", 'tags: e\nenv:\n  OUT: "{entry}/out $x.txt"\nrun: echo built > "$OUT"\n')
    entry = run(ws, "e")["steps"][-1]["path"]
    assert open(os.path.join(entry, "out $x.txt")).read() == "built\n"
    env_sh = open(os.path.join(entry, ".mlrun", "env.sh")).read()
    assert ".tmp" not in env_sh and env_sh.startswith(f'export MLRUN_ENTRY="${{MLRUN_ENTRY:-{entry}}}"\n')
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run([os.path.join(entry, ".mlrun", "command.sh"), str(scratch)], check=True,
                   env={"PATH": os.environ["PATH"]}, capture_output=True)
    assert (scratch / "out $x.txt").read_text() == "built\n"
    (tmp_path / "rel").mkdir()   # a relative DIR: it named another folder once inside it
    subprocess.run(["bash", os.path.join(entry, ".mlrun", "command.sh"), "rel"], check=True, cwd=tmp_path,
                   env={"PATH": os.environ["PATH"]}, capture_output=True)
    assert (tmp_path / "rel" / "out $x.txt").read_text() == "built\n"
    sourced = subprocess.run(["bash", "-c", f'. "{entry}/.mlrun/env.sh"; echo "$OUT"'], capture_output=True,
                             text=True, env={"PATH": os.environ["PATH"]})
    assert sourced.stdout == f"{entry}/out $x.txt\n"   # sourced alone: the published entry


@pytest.mark.parametrize("cache", [True, False])
def test_command_sh_reruns_a_run_naming_its_entry_in_the_folder_given(ws, tmp_path, cache):
    """`run: echo hi > {entry}/out.txt`: command.sh DIR wrote into the build folder (gone: 'No such file'), and
    for a cache: false step appended to the recorded run's own output; pass_env and secret values were exported
    as '<redacted>' over the user's own."""
    ws.recipe("e", f"tags: e\ncache: {str(cache).lower()}\npass_env: [MYDIR]\n"
                   "run: echo \"hi $MYDIR\" > \"{entry}/out.txt\"\n")
    step = run(ws, "e", host_env={**os.environ, "MYDIR": "/data"})["steps"][-1]["path"]
    assert open(os.path.join(step, "out.txt")).read() == "hi /data\n"
    scratch = tmp_path / "scratch dir"
    scratch.mkdir()
    done = subprocess.run([os.path.join(step, ".mlrun", "command.sh"), str(scratch)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "MYDIR": "/mine"})
    assert done.returncode == 0, done.stderr
    assert (scratch / "out.txt").read_text() == "hi /mine\n"
    assert open(os.path.join(step, "out.txt")).read() == "hi /data\n"   # the recorded output as it was
    assert "# MYDIR: not written here" in open(os.path.join(step, ".mlrun", "env.sh")).read()


def test_command_sh_leaves_another_programs_c_argument_as_it_is(ws, tmp_path):
    """`python3 -c "open('{entry}/x.txt')..."` got ${MLRUN_ENTRY} in single quotes: python opened that name."""
    ws.recipe("p", "tags: p\nrun: [python3, -c, \"open('{entry}/x.txt', 'w').write('1')\"]\n")
    entry = run(ws, "p")["steps"][-1]["path"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([os.path.join(entry, ".mlrun", "command.sh"), str(scratch)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0 and (scratch / "x.txt").read_text() == "1", done.stderr


def test_a_recorded_file_the_step_did_not_write_is_said(ws):
    """`record: {packages: missing.txt}`: exit 0 and an empty record, nothing said of the misspelt name."""
    ws.recipe("r", "tags: r\nrecord: {packages: pkgs.txt, version: missing.txt}\nrun: echo a==1 > pkgs.txt\n")
    result = ws.mlrun("r")
    assert result.returncode == 0, result.stderr
    assert "note: r wrote no missing.txt, which its recipe records (record:)" in result.stdout + result.stderr
    assert "pkgs.txt" not in (result.stdout + result.stderr).split("note:")[-1]


def test_recorded_packages_that_are_not_lines_of_text_leave_a_finished_record(ws):
    """A packages file of JSON numbers: a TypeError in the run's `finally` ("a bug", exit 2), the record left
    "running" (`runs`: died)."""
    ws.recipe("pk", "tags: pk\ncache: false\nrecord: {packages: packages.json}\n"
                    "run: echo '[1, \"a==1\"]' > packages.json\n")
    result = ws.mlrun("pk")
    assert result.returncode == 0, result.stderr
    record = json.load(open(os.path.join(ws.runs, run_ids(ws.runs)[-1], "run.json")))
    assert record["status"] == "ok" and list(record["packages"].values()) == [{"a": "1"}]


def test_a_runs_folder_full_at_the_start_leaves_no_folder(ws, monkeypatch):
    """The recipes' copy failed (a full disk) after run.json was written: the folder stayed, 'died' for ever."""
    import shutil
    from engine import records
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")

    def full(*args, **kwargs):
        raise shutil.Error([("/r/a/recipe.yaml", "/runs/x/recipe.yaml", "[Errno 28] No space left on device")])
    monkeypatch.setattr(records, "_snapshot", full)
    with pytest.raises(MlrunError) as e:
        run(ws, "a")
    assert "cannot copy the recipes into the run record: /runs/x/recipe.yaml: No space left on device" in e.value.message
    assert e.value.hint.startswith("the disk is full")
    assert (not os.path.exists(ws.runs) or os.listdir(ws.runs) == []) and ws.entries() == []


def test_a_runs_folder_full_at_the_end_keeps_how_the_run_ended(ws, monkeypatch):
    """The final record could not be written: run.json said 'running', and `mlrun runs` showed 'died' for ever."""
    import errno
    from engine import runner as runner_module
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    real = runner_module.write_json

    def full_at_the_end(path, value, **kwargs):
        if path.endswith("run.json") and value.get("status") != "running":
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")
        return real(path, value, **kwargs)
    monkeypatch.setattr(runner_module, "write_json", full_at_the_end)
    with pytest.raises(MlrunError, match="the run succeeded; only its record is missing"):
        run(ws, "a")
    [run_id] = os.listdir(ws.runs)
    kept = json.load(open(os.path.join(ws.runs, run_id, "run.json")))
    assert kept["status"] == "ok" and kept["finished"] >= kept["started"] and "disk was full" in kept["record_incomplete"]
    assert ws.mlrun("runs", "--json").stdout.count('"ok"') == 1
    shown = ws.mlrun("runs", "show", run_id).stdout
    assert "record incomplete: the disk was full" in shown and "not recorded" in shown and "not run" not in shown


def test_the_build_log_writes_the_command_as_a_shell_takes_it_back(ws):
    ws.recipe("q", "tags: q\nrun: echo \"working\" > out.txt\n")
    entry = run(ws, "q")["steps"][-1]["path"]
    first = open(os.path.join(entry, ".mlrun", "build.log")).readline()
    assert first == "$ bash -e -o pipefail -c 'echo \"working\" > out.txt'\n", first   # was unquoted


def test_a_dumb_terminal_gets_no_escape_codes(monkeypatch):
    """TERM=dumb showed '\\x1b[2K' before every step's line."""
    from types import SimpleNamespace

    class Tty(io.StringIO):
        def isatty(self):
            return True
    node = SimpleNamespace(label="get thing")
    for term, escaped in (("dumb", False), ("xterm", True)):
        monkeypatch.setenv("TERM", term)
        out = Tty()
        reporter = RunReporter(out, heartbeat=0)
        reporter.step(1, 1, node, "building a long while", final=False)
        reporter.step(1, 1, node, "built")
        assert ("\x1b" in out.getvalue()) == escaped
        building, built = out.getvalue().split("\r")
        assert built.replace("\x1b[2K", "").startswith("[1/1] get thing")
        if not escaped:   # spaces cover what the longer line under way showed
            assert len(built.rstrip("\n")) >= len(building)


def test_a_step_stopped_by_a_full_disk_is_the_machines_trouble(ws):
    """pip on a full disk: 'ERROR: ... [Errno 28] No space left on device', and mlrun's exit 1 (a step failed)."""
    ws.recipe("pipfull", "tags: pipfull\nrun: |\n  echo 'ERROR: Could not install packages due to an OSError: "
                         "[Errno 28] No space left on device' >&2\n  exit 1\n")
    result = ws.mlrun("pipfull")
    assert result.returncode == 2, result.stderr
    assert "exited with code 1 (the disk is full: Could not install packages due to an OSError: [Errno 28] No " \
        "space left on device)" in result.stderr
    assert "hint: free some space on the disk that line names" in result.stderr
    # A full disk mentioned on the way is not the cause: the step's own failure stays a failed step (exit 1).
    ws.recipe("warned", "tags: warned\nrun: |\n  echo 'WARNING: could not write the http cache: [Errno 28] No space "
                        "left on device (ignored)'\n  echo 'error: accuracy 0.1 below 0.9'\n  exit 1\n")
    result = ws.mlrun("warned")
    assert result.returncode == 1 and "accuracy 0.1 below 0.9" in result.stderr and "disk is full" not in result.stderr


def test_a_step_that_cannot_start_for_a_limit_is_the_machines_trouble(ws, monkeypatch):
    """`ulimit -n` low: 'cannot start bash: Too many open files', exit 1 as a failed step, no hint."""
    import errno
    import subprocess

    def no_more_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    monkeypatch.setattr(subprocess, "Popen", no_more_files)
    with pytest.raises(StepError) as e:
        run(ws, "a")
    assert "cannot start bash: Too many open files" in e.value.message and e.value.exit_code == 2
    assert "ulimit -n" in e.value.hint


def test_a_json_write_that_fails_leaves_no_tmp_file(tmp_path, monkeypatch):
    """A full disk left run.json.tmp and step.json.tmp (0 bytes) beside the records."""
    import errno
    from engine import cache as cache_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_module.json, "dump", full)
    with pytest.raises(OSError) as e:
        cache_module.write_json(str(tmp_path / "run.json"), {"a": 1})
    import threading   # its own name: this process's and thread's (a sweep's threads write one record too)
    assert e.value.filename == str(tmp_path / f"run.json.{os.getpid()}-{threading.get_ident()}.tmp")
    assert os.listdir(tmp_path) == []


def test_a_json_write_leaves_another_writers_temporary_file_alone(tmp_path):
    """Two mlruns writing one shared .index file used one name for their temporary file: each could rename the
    other's half-written one into place."""
    from engine.cache import write_json
    other = tmp_path / "probes.json.tmp"
    other.write_text('{"half": ')   # another process is writing it now
    write_json(str(tmp_path / "probes.json"), {"a": 1})
    assert other.read_text() == '{"half": ' and json.loads((tmp_path / "probes.json").read_text()) == {"a": 1}


def test_a_stop_while_the_recipes_are_copied_is_an_interrupted_run(ws, monkeypatch):
    """A SIGTERM then (a sweep's point stopped early) left run.json at 'running', shown 'died' for ever."""
    from engine import records

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    monkeypatch.setattr(records, "_snapshot", stopped)
    with pytest.raises(KeyboardInterrupt):
        run(ws, "a")
    [run_id] = os.listdir(ws.runs)
    assert json.load(open(os.path.join(ws.runs, run_id, "run.json")))["status"] == "interrupted"


def test_a_live_steps_failure_is_said_once_then_named_by_mlrun(ws):
    """The benchmark's own output shows as it runs: its last lines were printed again under FAILED, and the
    error a third time in mlrun's own line (OpenVINO's refusal of --instances, three times on one screen), then
    twice; mlrun's line now names the step and its exit, and points above."""
    ws.recipe("top", "tags: top\ncache: false\nrun: |\n  echo 'error: the cause said once'; exit 1\n")
    ws.recipe("dep", FAILING.replace("tags: bad", "tags: dep"))
    def both(*args):   # stdout and stderr on one screen, as a terminal shows them
        return subprocess.run([MLRUN, *args], env=ws.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60, cwd=ws.root)
    result = both("top")
    assert result.returncode == 1 and "Traceback" not in result.stdout
    assert result.stdout.count("the cause said once") == 1, result.stdout
    assert "mlrun: error: step top failed, as it said above: exited with code 1" in result.stdout, result.stdout
    apart = ws.mlrun("top")   # `2>err.log`: the tail under FAILED is all stderr has of the cause
    assert "\n    error: the cause said once\n" in apart.stderr and apart.stdout == "error: the cause said once\n"
    ws.recipe("wrap", "tags: wrap\ndeps: [dep]\nrun: 'true'\n")
    result = both("wrap")   # a dep's output was not shown: its last lines under FAILED, as before
    assert result.returncode == 1 and result.stdout.count("the real cause") == 1


@pytest.mark.parametrize("run, cached", [("rm -rf .mlrun", True), ('rm -rf "$PWD"', False), ("rm -rf .mlrun", False),
                                         ('d=$PWD; cd /; rm -rf "$d"; echo x > "$d"', True),
                                         ('d=$PWD; cd /; rm -rf "$d"; echo x > "$d"', False),
                                         # a link in its place: published as the entry, the folder it named sealed
                                         ('d=$PWD; o=$(dirname "$d")/../../out; mkdir -p "$o"; cp -a . "$o"/; cd /;'
                                          ' rm -rf "$d"; ln -s "$o" "$d"', True)])
def test_a_step_that_removes_its_own_folder_failed_exit_1(ws, run, cached):
    """It was "mlrun run: cannot use .../.mlrun/files.json...: No such file or directory", exit 2, no log; then its
    kept log held only mlrun's line: what the step said went with its folder."""
    ws.recipe("rmself", f"tags: rmself\ncache: {str(cached).lower()}\nrun: 'echo important output; {run}'\n")
    result = ws.mlrun("rmself")
    assert result.returncode == 1 and "it removed its own folder, its .mlrun/ or its log" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr and ws.entries() == []
    log = re.search(r"full log: (\S+)", result.stderr)[1]
    assert "important output" in open(log).read()


def test_a_live_steps_own_error_is_said_once_where_its_output_shows(ws):
    """A step that refused its request (exit 78) printed its error and hint live, then mlrun's error quoted both
    again: the same text twice on one screen. Where its output went elsewhere (2>err.log), the quote stays."""
    ws.recipe("app", """\
        tags: app refuses
        cache: false
        run: |
          echo 'error: OpenVINO runs at most 2 threads'; echo 'hint: --instances within the cores'; exit 78
        """)
    together = subprocess.run([MLRUN, "app refuses"], env=ws.env(), cwd=ws.root, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert together.returncode == 2 and "Traceback" not in together.stdout, together.stdout
    assert together.stdout.count("OpenVINO runs at most 2 threads") == 1, together.stdout
    assert together.stdout.count("--instances within the cores") == 1, together.stdout
    assert "mlrun: error: step app failed, as it said above: exited with code 78 (the step refused this " \
           "machine or request)" in together.stdout, together.stdout
    apart = ws.mlrun("app refuses")   # stdout and stderr to two pipes: stderr alone has mlrun's line
    assert_user_error(apart, 2, "failed: exited with code 78 (the step refused this machine or request): OpenVINO "
                                "runs at most 2 threads", "hint: --instances within the cores")
    record = json.loads(ws.mlrun("runs", "show", "--json", os.listdir(ws.runs)[0]).stdout)
    assert "OpenVINO runs at most 2 threads" in record["error"]   # the record keeps the cause whole
    # not carried out (exit 2), as `mlrun runs --status error` finds it: it was recorded `failed`, mlrun's exit 1's word
    assert record["status"] == "error" and record["steps"][-1]["status"] == "error", record


def test_control_bytes_and_long_lines_of_a_step_are_escaped_and_cut_in_what_mlrun_says(ws):
    """ESC sequences, BEL, backspace and bytes that are not UTF-8 reached mlrun's error line, its tail of the log
    and run.json; a 50 MB line of output was printed 8 KB long."""
    ws.recipe("noisy", """\
        tags: noisy
        run: |
          head -c 20000 /dev/zero | tr '\\0' a; echo
          printf 'error: \\033[2J\\033]0;TITLE\\007red\\b \\377\\n'; exit 1
        """)
    result = subprocess.run([MLRUN, "noisy"], env=ws.env(), cwd=ws.root, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, errors="replace", timeout=60)   # stdout: its output, raw
    assert result.returncode == 1 and "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "failed: exited with code 1: \\x1b[2J\\x1b]0;TITLE\\x07red\\x08 \ufffd" in result.stderr, result.stderr
    assert max(map(len, result.stderr.splitlines())) < 1000 and "a...(cut)" in result.stderr
    record = json.loads(ws.mlrun("runs", "show", "--json", os.listdir(ws.runs)[0]).stdout)
    assert "\x1b" not in record["error"] and "\\x1b[2J" in record["error"]


def test_an_export_naming_a_path_the_step_did_not_make_gets_a_note(ws):
    """MY_FILE: "{entry}/missing.txt" passed silently; its users found nothing there."""
    ws.recipe("exp", """\
        tags: exp
        run: 'echo x > real.txt'
        exports:
          MY_FILE: "{entry}/missing.txt"
          REAL: "{entry}/real.txt"
          MY_BIN: {prepend: ["{entry}/nobin"]}
        """)
    result = ws.mlrun("exp")
    assert result.returncode == 0, result.stderr
    assert "note: exp exports MY_FILE naming {entry}/missing.txt, MY_BIN naming {entry}/nobin, which it did not " \
           "make" in result.stderr and "REAL" not in result.stderr


def test_an_argument_or_variable_over_max_arg_strlen_is_named_with_that_limit(ws):
    """One 140 KB variable got the hint 'getconf ARG_MAX' (2 MiB): the limit is 128 KiB a string."""
    ws.recipe("big", "tags: big\nenv:\n  BIG: " + "a" * 140000 + "\nrun: 'true'\n")
    result = ws.mlrun("big")
    assert result.returncode == 2 and "the variable BIG is over the system's limit for one argument or variable " \
                                      "(MAX_ARG_STRLEN, 131072 bytes)" in result.stderr, result.stderr[-2000:]
