"""Downloads declared by recipes, through bin/mlrun, against a local HTTP server on 127.0.0.1."""
import hashlib
import json
import os
import re
import socket

import pytest
import yaml

from conftest import ROOT, SHARED_DATA, assert_user_error
from engine.recipe import normalize

PAYLOAD = b"squad-like bytes\n" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(server):
    server.files["/data.json"] = PAYLOAD
    return server


def _recipe(ws, url, sha=SHA):
    ws.recipe("get-thing", f"""
        tags: [get, thing]
        download: {{url: "{url}", file: data.json, sha256: "{sha}"}}
        exports: {{THING: "{{entry}}/data.json"}}
    """)


def test_download_recipe_builds_from_http(ws, server):
    _recipe(ws, server.url + "/data.json")
    result = ws.mlrun("get thing")
    assert result.returncode == 0, result.stderr
    entry = ws.entries("get-thing")[0]
    assert open(os.path.join(ws.cache, entry, "data.json"), "rb").read() == PAYLOAD
    assert f"THING={os.path.join(ws.cache, entry, 'data.json')}" in result.stdout
    assert len(server.requests) == 1
    assert ws.mlrun("get thing").returncode == 0 and len(server.requests) == 1  # cached: no request


def test_checksum_mismatch_fails_with_both_checksums_and_publishes_nothing(ws, server):
    wrong = "0" * 64
    _recipe(ws, server.url + "/data.json", sha=wrong)
    err = assert_user_error(ws.mlrun("get thing"), 1, wrong, SHA, server.url)
    assert "get-thing" in err
    assert ws.entries() == []
    assert not any(os.scandir(os.path.join(ws.cache, ".tmp")))


@pytest.mark.slow
def test_server_down_names_the_url_and_the_mirror(ws):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.json"
    _recipe(ws, url)
    assert_user_error(ws.mlrun("get thing"), 1, url, "--mirror")
    assert ws.entries() == []


def test_mirror_hit_makes_no_request(ws, server, tmp_path):
    _recipe(ws, server.url + "/data.json")
    mirror = tmp_path / "mirror" / "deep" / "er"
    mirror.mkdir(parents=True)
    (mirror / "renamed.bin").write_bytes(PAYLOAD)
    (mirror / "renamed.bin").chmod(0o644)
    result = ws.mlrun("get thing", f"--mirror={tmp_path / 'mirror'}")
    assert result.returncode == 0, result.stderr
    assert server.requests == []
    # The entry holds a copy: the person's file keeps its mode and stays theirs to touch (was a hard link:
    # made read-only by the entry's seal, and a touch broke the published entry)
    held = os.stat(mirror / "renamed.bin")
    assert (held.st_mode & 0o777, held.st_nlink) == (0o644, 1)
    os.utime(mirror / "renamed.bin")
    assert ws.mlrun("cache", "verify").returncode == 0
    assert ws.mlrun("get thing", f"--mirror={tmp_path / 'mirror'}").returncode == 0


def test_mirror_add_and_check_through_the_cli(ws, server, tmp_path):
    _recipe(ws, server.url + "/data.json")
    mirror = tmp_path / "m"
    src = tmp_path / "data.json"
    src.write_bytes(PAYLOAD)
    mirror.mkdir()
    check = ws.mlrun("mirror", "check", f"--mirror={mirror}")
    assert check.returncode == 0 and re.search(r"missing\s+get-thing: data.json", check.stdout), check.stdout
    added = ws.mlrun("mirror", "add", str(src), f"--mirror={mirror}")
    assert added.returncode == 0, added.stderr
    check = ws.mlrun("mirror", "check", f"--mirror={mirror}")
    assert re.search(r"present\s+get-thing: data.json", check.stdout), check.stdout
    assert_user_error(ws.mlrun("mirror", "check"), 2, "--mirror")


def test_shared_data_mirror_holds_the_official_squad_and_vocab(ws):
    env = ws.env(MLRUN_RECIPES=os.path.join(ROOT, "recipes"), MLRUN_MIRROR=SHARED_DATA)
    check = ws.mlrun("mirror", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert re.search(r"present\s+get-dataset-squad: dev-v1.1.json", check.stdout), check.stdout
    assert re.search(r"present\s+get-bert-vocab: vocab.txt", check.stdout), check.stdout
    assert re.search(r"missing\s+get-ml-model-bert-large: model.onnx", check.stdout), check.stdout
    rows = json.loads(ws.mlrun("mirror", "check", "--json", env=env).stdout)
    assert {"name": "get-bert-vocab: vocab.txt", "status": "present",
            "path": os.path.join(SHARED_DATA, "bert-vocab", "vocab.txt")} in [
        {k: r[k] for k in ("name", "status", "path")} for r in rows]


def test_docs_example_recipe_is_valid():
    """The complete example in docs/recipes.md passes the schema check."""
    text = open(os.path.join(ROOT, "docs", "recipes.md")).read()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    recipe = normalize(yaml.safe_load(block), "docs/recipes.md", {}, "example")
    assert recipe["name"] == "get-ml-model-bert-random"
    assert set(recipe["variations"]) == {"base", "large", "tiny", "fast", "batch_size", "hf-names"}
