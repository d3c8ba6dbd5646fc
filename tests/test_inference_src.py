"""Recipe get-mlperf-inference-src: a local copy hashed by content, git at a commit, clear failures. Offline:
the shared copy of the official sources stands in for GitHub, a local git repository for its remote."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import MLRUN, ROOT, assert_user_error
from engine.digests import content_digest

SHARED_SRC = os.path.join(os.path.dirname(ROOT), "shared", "mlperf-inference")
QUERY = "get mlperf inference src"


@pytest.fixture
def mlrun(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(tmp_path / "cache"), MLRUN_RUNS=str(tmp_path / "runs"))

    def run(*args, **extra):
        return subprocess.run([MLRUN, *args], env=dict(env, **extra), capture_output=True, text=True, timeout=120,
                              cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    return run


def key_of(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["nodes"][-1]["key"]


def test_local_copy_lands_in_inference_with_its_digest(mlrun):
    result = mlrun(QUERY, "--path", SHARED_SRC, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    entry = out["path"]
    assert out["exports"]["MLPERF_INFERENCE_SRC"] == os.path.join(entry, "inference")
    assert os.path.isfile(os.path.join(entry, "inference", "tools", "submission", "submission_checker", "main.py"))
    source = json.load(open(os.path.join(entry, "source.json")))
    assert source["source"] == "path" and os.path.samefile(source["path"], SHARED_SRC)
    assert source["tree_sha256"] == content_digest(SHARED_SRC)
    # The entry records the content digest in its key material.
    meta = json.load(open(os.path.join(entry, ".mlrun", "entry.json")))
    assert meta["material"]["inputs"]["path"] == "sha256:" + content_digest(SHARED_SRC)


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_an_edited_copy_gets_a_new_key(mlrun, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(SHARED_SRC, copy)
    first = key_of(mlrun("plan", QUERY, "--path", str(copy), "--json"))
    assert key_of(mlrun("plan", QUERY, "--path", str(copy), "--json")) == first
    (copy / ".git").mkdir()   # version-control metadata is not content
    (copy / ".git" / "index").write_text("x")
    assert key_of(mlrun("plan", QUERY, "--path", str(copy), "--json")) == first
    with open(copy / "loadgen" / "mlperf.conf", "a") as f:
        f.write("# edited\n")
    assert key_of(mlrun("plan", QUERY, "--path", str(copy), "--json")) != first
    built = mlrun(QUERY, "--path", str(copy))
    assert built.returncode == 0, built.stderr
    explain = mlrun("explain", QUERY, "--path", str(copy))
    assert "cached" in explain.stdout
    with open(copy / "loadgen" / "mlperf.conf", "a") as f:
        f.write("# edited again\n")
    explain = mlrun("explain", QUERY, "--path", str(copy))
    assert "inputs.path" in explain.stdout, explain.stdout


def test_a_copy_without_the_checker_is_refused_naming_what_is_missing(mlrun, tmp_path):
    copy = tmp_path / "partial"
    shutil.copytree(SHARED_SRC, copy)
    shutil.rmtree(copy / "tools" / "submission" / "submission_checker")
    os.remove(copy / "loadgen" / "mlperf.conf")
    result = mlrun(QUERY, "--path", str(copy))
    assert_user_error(result, 1, "tools/submission/submission_checker/main.py", "loadgen/mlperf.conf")
    assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith("get-mlperf-inference-src")]


def test_without_network_git_fails_fast_naming_path(mlrun):
    # A refused port stands in for a machine without internet: nothing reaches the network.
    result = mlrun(QUERY, "--url", "http://127.0.0.1:9/mlcommons/inference")
    err = assert_user_error(result, 1, "cannot fetch http://127.0.0.1:9/mlcommons/inference", "--path DIR",
                            "--inference-src DIR")
    assert "b66003e10e2db4b8c36a448b0545ec90fcc6e9e9" in err


@pytest.fixture
def git_remote(tmp_path):
    repo = tmp_path / "remote"
    shutil.copytree(SHARED_SRC, repo)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "sources"]):
        subprocess.run(git + args, check=True, capture_output=True, timeout=60)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return f"file://{repo}", head


def test_git_fetches_the_commit_sparsely_and_records_it(mlrun, git_remote):
    url, commit = git_remote
    result = mlrun(QUERY, "--url", url, "--commit", commit, "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["path"]
    source = json.load(open(os.path.join(entry, "source.json")))
    assert source["source"] == "git" and source["commit"] == commit and source["url"] == url
    tree = os.path.join(entry, "inference")
    assert source["tree_sha256"] == content_digest(tree)
    assert not os.path.exists(os.path.join(tree, ".git"))
    assert not os.path.exists(os.path.join(tree, "SOURCES.md"))   # only the paths a submission needs
    assert os.path.isfile(os.path.join(tree, "compliance", "TEST01", "run_verification.py"))


def test_git_with_an_unknown_commit_fails_clearly(mlrun, git_remote):
    url, _ = git_remote
    result = mlrun(QUERY, "--url", url, "--commit", "0" * 40)
    assert_user_error(result, 1, f"cannot fetch {url} at {'0' * 40}")


# -- the engine's `content: true` path inputs -----------------------------------------------------------


def test_content_input_of_a_file_hashes_its_bytes(ws, tmp_path):
    ws.recipe("use-file", """
        tags: [use, file]
        inputs:
          file: {type: path, content: true}
          plain: {type: path}
        run: cat "$MLRUN_INPUT_FILE" > copy.txt
        """)
    data = tmp_path / "data.txt"
    data.write_text("one\n")

    def key(*args):
        result = ws.mlrun("plan", "use file", *args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["nodes"][-1]["key"]
    first = key(f"--file={data}")
    assert key(f"--file={data}", f"--plain={data}") != first   # a plain path input: its name only
    with_plain = key(f"--file={data}", f"--plain={data}")
    data.write_text("two\n")
    assert key(f"--file={data}") != first
    assert key(f"--file={data}", f"--plain={data}") != with_plain
    assert key() == key()   # unset: nothing to hash


def test_a_file_here_whose_name_looks_like_a_reference_is_that_file(ws):
    """`--file=model:v2.onnx` with that file in the current folder was kept as a reference (zoo:STUB, hf:ORG/NAME):
    not made absolute, not hashed, and the step, run in its own folder, found no such file."""
    ws.recipe("use-file", """
        tags: [use, file]
        inputs:
          file: {type: path, content: true}
        run: cat "$MLRUN_INPUT_FILE" > copy.txt
        """)
    import pathlib
    here = pathlib.Path(ws.root)
    (here / "model:v2.txt").write_text("one\n")

    def plan(value):
        result = ws.mlrun("plan", "use file", f"--file={value}", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["nodes"][-1]
    node = plan("model:v2.txt")
    assert node["inputs"]["file"] == str(here / "model:v2.txt")
    (here / "model:v2.txt").write_text("two\n")
    assert plan("model:v2.txt")["key"] != node["key"]   # its bytes are in the key
    assert plan("zoo:nlp/x")["inputs"]["file"] == "zoo:nlp/x"   # no such file: a reference, as before
    assert ws.mlrun("use file", "--file=model:v2.txt").returncode == 0


def test_content_needs_a_path_input(ws):
    path = ws.recipe("bad", """
        tags: [bad]
        inputs:
          name: {type: str, content: true}
        """)
    result = ws.mlrun("plan", "bad")
    assert_user_error(result, 2, f"{path}:4", "content: true needs type: path")
