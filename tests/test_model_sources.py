"""Model sources: SparseZoo stubs and Hugging Face Hub repos, offline.

SparseZoo is tested up to the network boundary: stub parsing, the mirror layout, and what happens
when the `sparsezoo` package cannot reach its servers (a stand-in module raises what requests raises).
Hugging Face downloads go through the real `huggingface_hub` against a small hub on 127.0.0.1
(HF_ENDPOINT) that answers the endpoints it uses, serving a tiny random-weight model made here.
"""
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import onnx
import pytest

from conftest import MLRUN, ROOT, SHARED_DATA
from engine.errors import MlrunError, ResolutionError
from engine.index import RecipeIndex
from engine.resolver import resolve
from mlperf_bert import model_adapter, model_check, model_sources, random_model

STUB = "zoo:nlp/question_answering/bert-large/pytorch/huggingface/squad/pruned80_quant-none-vnni"
STUB_PATH = STUB[len("zoo:"):]


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """Bytes of a tiny random BERT QA model with the Hugging Face input names, fixed 384 axis."""
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    onnx.save(random_model.build(layers=1, hidden=32, heads=2, seq=384, input_names="hf"), str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_zoo_model(tmp_path_factory, tiny_hf_model):
    """The tiny model quantised (onnxruntime's dynamic int8), as the known stubs (..._quant) are."""
    from onnxruntime.quantization import quantize_dynamic
    folder = tmp_path_factory.mktemp("zoo")
    (folder / "fp32.onnx").write_bytes(tiny_hf_model)
    quantize_dynamic(str(folder / "fp32.onnx"), str(folder / "model.onnx"))
    return (folder / "model.onnx").read_bytes()


# -- SparseZoo: stubs, mirror, offline ---------------------------------------------------------------


@pytest.mark.parametrize("text, path", [
    (STUB, STUB_PATH),
    (STUB_PATH, STUB_PATH),
    ("zoo:nlp/question_answering/mobilebert-none/pytorch/huggingface/squad/14layer_pruned50_quant-none-vnni",
     "nlp/question_answering/mobilebert-none/pytorch/huggingface/squad/14layer_pruned50_quant-none-vnni"),
    ("zoo:bert-large-squad_wikipedia_bookcorpus-pruned80.4block_quantized",
     "bert-large-squad_wikipedia_bookcorpus-pruned80.4block_quantized"),
])
def test_stubs_parse(text, path):
    stub = model_sources.parse_stub(text)
    assert stub.path == path and stub.stub == "zoo:" + path


@pytest.mark.parametrize("text", ["", "zoo:", "zoo:a/b", "zoo:nlp/../../../etc/passwd/x/y/z", "hf:org/name",
                                  "zoo:nlp/qa/bert/pytorch/hf/squad/tag?recipe=x", "zoo:a b"])
def test_bad_stubs_are_refused_with_an_example(text):
    with pytest.raises(MlrunError) as info:
        model_sources.parse_stub(text)
    assert "not a SparseZoo stub" in info.value.message and "zoo:nlp/question_answering" in info.value.hint


GOOD_STUBS = [STUB, "zoo:bert-large-squad_wikipedia_bookcorpus-pruned80.4block_quantized",
              "zoo:nlp/question_answering/mobilebert-none/pytorch/huggingface/squad/14layer_pruned50_quant-none-vnni"]
BAD_STUBS = ["zoo:", "zoo:a/b", "zoo:nlp/../../../etc/passwd/x/y/z", "zoo:nlp/qa/bert/pytorch/hf/squad/tag?recipe=x",
             "zoo:a b", "zoo:..", "zoo:nlp/x"]
GOOD_REPOS = ["hf:org/name", "hf:org/name@main", "hf:bert-base-uncased", "hf:o.rg/na_me@v1.0-rc",
              "hf:org/name@refs/pr/1", "hf:org/name@v1..2"]
# a revision of .. or from / put the mirror's NAME@REV folder outside the mirror
BAD_REPOS = ["hf:", "hf:a/b/c", "hf:org--x/name", "hf:org/../x", "hf:org/name@", "hf:/name", "hf:org/",
             "hf:org/name@../../x", "hf:org/name@a/..", "hf:org/name@/etc"]


@pytest.mark.parametrize("app", ["app-mlperf-bert", "app-bert-qa"])
def test_the_apps_model_pattern_refuses_what_the_model_steps_would(app):
    """A malformed stub or repo is refused when the plan is made (it failed in the model's step, after its
    venv was built): the apps' --model pattern takes the names the steps' parsers take, any path, and no other
    scheme (s3:, http: named no model dep at all, and the harness failed on the text as a path)."""
    recipe = next(r for r in RecipeIndex([os.path.join(ROOT, "recipes")]).recipes if r["name"] == app)
    pattern = recipe["inputs"]["model"]["pattern"]
    for parse, good, bad in ((model_sources.parse_stub, GOOD_STUBS, BAD_STUBS),
                             (model_sources.parse_repo, GOOD_REPOS, BAD_REPOS)):
        for text in good:
            parse(text)
            assert re.fullmatch(pattern, text), text
        for text in bad:
            with pytest.raises(MlrunError):
                parse(text)
            assert not re.fullmatch(pattern, text), text
    for text in ("", "model.onnx", "/tmp/x/model.onnx", "~/m.onnx", "dir/zoo:x.onnx", "./hf:y"):
        assert re.fullmatch(pattern, text), text
    for text in ("s3://bucket/model.onnx", "http://host/model.onnx", "file:///m.onnx", "gs:m"):
        assert not re.fullmatch(pattern, text), text


@pytest.mark.parametrize("model", ["zoo:", "hf:", "hf:org/name@", "s3://bucket/model.onnx"])
def test_a_malformed_model_reference_is_refused_by_the_plan(model):
    with pytest.raises(ResolutionError) as info:
        _plan("app mlperf bert _onnxruntime _cpu", {"model": model})
    assert f"--model={model} is not of the form the input takes" in info.value.message


def test_mirror_layout_is_the_stub_path_under_sparsezoo(tmp_path):
    folder = model_sources.mirror_folder(str(tmp_path), model_sources.parse_stub(STUB))
    assert folder == os.path.join(str(tmp_path), "sparsezoo", *STUB_PATH.split("/"))


class _NoZoo(types.ModuleType):
    """A `sparsezoo` that fails the test if anything asks it for a model."""

    def __getattr__(self, name):
        raise AssertionError(f"sparsezoo.{name} used although the mirror has the model")


def _zoo(monkeypatch, model_class):
    fake = types.ModuleType("sparsezoo")
    fake.Model = model_class
    monkeypatch.setitem(sys.modules, "sparsezoo", fake)


@pytest.mark.parametrize("layout", ["deployment/model.onnx", "model.onnx", "model.onnx.tar.gz"])
def test_sparsezoo_model_from_the_mirror(tmp_path, monkeypatch, tiny_zoo_model, layout):
    monkeypatch.setitem(sys.modules, "sparsezoo", _NoZoo("sparsezoo"))
    folder = tmp_path / "mirror" / "sparsezoo" / STUB_PATH
    target = folder / layout
    target.parent.mkdir(parents=True)
    if layout.endswith(".tar.gz"):
        with tarfile.open(target, "w:gz") as tar:
            info = tarfile.TarInfo("model/model.onnx")
            info.size = len(tiny_zoo_model)
            tar.addfile(info, io.BytesIO(tiny_zoo_model))
    else:
        target.write_bytes(tiny_zoo_model)
        (folder / "README.md").write_text("model card\n")
    out = tmp_path / "entry"
    record = model_sources.fetch_sparsezoo(STUB, str(out), mirror=str(tmp_path / "mirror"))
    # The model's own bytes: SparseZoo models are used as published; the harness maps their names.
    assert (out / "model.onnx").read_bytes() == tiny_zoo_model
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "source.json"]
    assert record == json.loads((out / "source.json").read_text())
    assert record["stub"] == STUB and record["from"] == f"mirror {folder}"
    assert record["inputs"] == {"ids": "input_ids", "mask": "attention_mask", "segments": "token_type_ids"}
    assert record["seq_len"] == 384
    assert record["sha256"]["model.onnx"] == hashlib.sha256(tiny_zoo_model).hexdigest()


def _with_external_data(model_bytes, folder, location="w.data"):
    """A copy of the model in folder/model.onnx whose weights sit in folder/<location>, as onnx.save writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(model_bytes)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    return folder / "model.onnx"


def test_a_model_file_with_external_data_is_refused(tmp_path, tiny_zoo_model):
    """--model=FILE is keyed by the .onnx bytes: other weights in w.data beside the same file reused the first one's
    entry, and a dynamic-axis model's entry was published without w.data (every run then failed to load it)."""
    path = _with_external_data(tiny_zoo_model, tmp_path / "split")
    assert model_sources.external_data(str(path)) == ["w.data"]
    with pytest.raises(MlrunError) as refused:
        model_sources.refuse_external_data(str(path))
    assert refused.value.exit_code == 78 and "keeps its weights in other files (w.data)" in refused.value.message
    assert "onnx.save(onnx.load('IN.onnx'), 'OUT.onnx')" in refused.value.hint
    whole = tmp_path / "whole.onnx"
    whole.write_bytes(tiny_zoo_model)
    model_sources.refuse_external_data(str(whole))   # one file: nothing to say
    assert model_sources.external_data(str(whole)) == []
    step = subprocess.run([sys.executable, "-m", "mlperf_bert.model_sources", "file", "--path", str(path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert step.returncode == 78 and step.stderr.startswith(f"error: {path} keeps its weights"), step.stderr


@pytest.mark.parametrize("content, why", [(b"just some text\n", "onnx cannot parse it"),
                                          (bytes(range(256)) * 8, "onnx cannot parse it"),
                                          (b"", "the file is empty")], ids=["text", "bytes", "empty"])
def test_a_model_file_that_is_not_onnx_is_named_and_refused_as_a_usage_error(tmp_path, capsys, content, why):
    """--model=FILE of a text file or random bytes printed onnx's DecodeError traceback (exit 1); an empty file
    parsed as an empty model and failed later ("cannot map the inputs ... it has (none)")."""
    path = tmp_path / "notes.onnx"
    path.write_bytes(content)
    code = model_sources.main(["file", "--path", str(path)])
    err = capsys.readouterr().err
    # 78: sysexits EX_CONFIG, which the runner makes mlrun's exit 2
    assert code == 78 and err.startswith(f"error: {path} is not an ONNX model: {why}"), err
    assert "hint: give an ONNX file of a BERT question-answering model" in err and "Traceback" not in err


def test_a_model_file_that_is_not_a_bert_qa_model_is_refused_as_a_usage_error(tmp_path, capsys, tiny_zoo_model):
    """Inputs the harness cannot map: the model step failed (exit 1) in seq_plan; the step that first reads the file
    refuses it now, with the same words (78: the runner's EX_CONFIG, mlrun's exit 2)."""
    path = tmp_path / "odd.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["tokens"], ["logits"])], "odd",
        [onnx.helper.make_tensor_value_info("tokens", onnx.TensorProto.INT64, ["batch", 384])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.INT64, ["batch", 384])])
    onnx.save(onnx.helper.make_model(graph), path)
    assert model_check.main(["--path", str(path)]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot map the inputs of {path}: it has tokens[batch, 384]; expected ids: "), err
    assert "\nhint: no input found for ids, mask, segments; give an ONNX file of a BERT question-answering" in err
    assert len(err.splitlines()) == 2 and "Traceback" not in err
    good = tmp_path / "good.onnx"
    good.write_bytes(tiny_zoo_model)
    assert model_check.main(["--path", str(good)]) == 0 and capsys.readouterr().err == ""


def test_a_mirrored_model_takes_the_data_files_its_tensors_name(tmp_path, monkeypatch, tiny_zoo_model):
    """A mirror folder's model.onnx with w.data (a name not of the model.onnx_data kind) was copied alone: a
    published entry that no run could load."""
    monkeypatch.setitem(sys.modules, "sparsezoo", _NoZoo("sparsezoo"))
    folder = tmp_path / "mirror" / "sparsezoo" / STUB_PATH
    _with_external_data(tiny_zoo_model, folder)
    out = tmp_path / "entry"
    record = model_sources.fetch_sparsezoo(STUB, str(out), mirror=str(tmp_path / "mirror"))
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "source.json", "w.data"]
    assert set(record["sha256"]) == {"model.onnx", "w.data"}
    (folder / "w.data").unlink()   # named by the model, not there: said, nothing described as made
    with pytest.raises(MlrunError, match=r"keep their data in w.data, which its source \(zoo:"):
        model_sources.fetch_sparsezoo(STUB, str(tmp_path / "entry2"), mirror=str(tmp_path / "mirror"))


def test_sparsezoo_download_keeps_only_the_model(tmp_path, monkeypatch, tiny_zoo_model):
    calls = []

    class Model:  # the part of sparsezoo.Model the fetch uses
        def __init__(self, source, download_path=None):
            calls.append((source, download_path))
            self.folder = download_path

        @property
        def onnx_model(self):
            folder = self.folder

            class File:
                @property
                def path(self):
                    os.makedirs(folder, exist_ok=True)
                    with open(os.path.join(folder, "model.onnx"), "wb") as f:
                        f.write(tiny_zoo_model)
                    return os.path.join(folder, "model.onnx")
            return File()
    _zoo(monkeypatch, Model)
    out = tmp_path / "entry"
    record = model_sources.fetch_sparsezoo("", str(out), known=STUB)  # the stub of a known-model variation
    assert calls == [(STUB, str(out / ".sparsezoo-download"))]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "source.json"]
    assert record["from"] == "sparsezoo" and record["stub"] == STUB


def test_sparsezoo_offline_names_the_stub_and_the_mirror(tmp_path, monkeypatch, capsys):
    requests = pytest.importorskip("requests")

    class Model:
        def __init__(self, source, download_path=None):
            raise requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='api.neuralmagic.com', port=443): Max retries exceeded")
    _zoo(monkeypatch, Model)
    mirror = tmp_path / "mirror"
    mirror.mkdir()  # a mirror without this model
    code = model_sources.main(["sparsezoo", "--stub", STUB, "--mirror", str(mirror), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert STUB in err and "cannot be reached" in err
    assert os.path.join(str(mirror), "sparsezoo", *STUB_PATH.split("/")) in err and "--mirror" in err
    assert "Traceback" not in err


def test_sparsezoo_stub_and_variation_must_agree(tmp_path):
    other = STUB.replace("pruned80", "pruned90")
    with pytest.raises(MlrunError, match="differs from the stub of the chosen variation"):
        model_sources.fetch_sparsezoo(other, str(tmp_path), known=STUB)
    with pytest.raises(MlrunError, match="needs --stub"):
        model_sources.fetch_sparsezoo("", str(tmp_path))


def test_sparsezoo_without_a_stub_is_a_usage_error(tmp_path, capsys):
    """`get ml-model bert _sparsezoo` with no --stub: the step exited 2, a failed step for mlrun (exit 1)."""
    code = model_sources.main(["sparsezoo", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 78 and err.startswith("error: _sparsezoo needs --stub=zoo:... (the SparseZoo model to fetch)"), err
    assert f"hint: e.g. mlrun \"get ml-model bert _sparsezoo\" --stub={STUB}" in err


# -- Hugging Face: names, file choice ---------------------------------------------------------------


@pytest.mark.parametrize("text, revision, want", [
    ("hf:org/name", None, ("org/name", None)),
    ("org/name", "v1", ("org/name", "v1")),
    ("hf:org/name@0123456789abcdef0123456789abcdef01234567", None,
     ("org/name", "0123456789abcdef0123456789abcdef01234567")),
    ("hf:org/name@main", "main", ("org/name", "main")),
    ("hf:bert-base-uncased", None, ("bert-base-uncased", None)),
])
def test_repo_names_parse(text, revision, want):
    assert model_sources.parse_repo(text, revision) == want


@pytest.mark.parametrize("text, revision, fragment", [
    ("hf:", None, "not a Hugging Face model repo"),
    ("hf:a/b/c", None, "not a Hugging Face model repo"),
    ("hf:org--x/name", None, "not a Hugging Face model repo"),
    ("hf:org/../x", None, "not a Hugging Face model repo"),
    ("hf:org/name@", None, "nothing after @"),
    ("hf:org/name@v1", "v2", "two revisions"),
    ("hf:org/name@../../../tmp", None, "not a revision of org/name"),   # the mirror folder NAME@REV went outside it
    ("org/name", "/etc", "not a revision of org/name"),
])
def test_bad_repo_names_are_refused(text, revision, fragment):
    with pytest.raises(MlrunError, match=fragment):
        model_sources.parse_repo(text, revision)


def test_onnx_file_choice():
    files = ["README.md", "onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/model.onnx_data", "config.json"]
    assert model_sources.choose_onnx(files) == "onnx/model.onnx"
    assert model_sources.onnx_data_files(files, "onnx/model.onnx") == ["onnx/model.onnx_data"]
    assert model_sources.choose_onnx(["a/bert-squad.onnx", "config.json"]) == "a/bert-squad.onnx"
    assert model_sources.choose_onnx(["config.json", "model.safetensors"]) is None
    with pytest.raises(MlrunError, match="several ONNX files") as info:
        model_sources.choose_onnx(["fp32.onnx", "int8.onnx"])
    assert "--file" in info.value.hint
    assert model_sources.choose_onnx(["fp32.onnx", "int8.onnx"], "int8.onnx") == "int8.onnx"
    assert model_sources.weight_files(["config.json", "pytorch_model.bin", "model.safetensors"]) == \
        ["config.json", "model.safetensors"]
    assert model_sources.weight_files(["model.safetensors"]) is None


def test_rename_to_official_names(tmp_path, tiny_hf_model):
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_hf_model)
    assert model_sources.rename_to_official(str(path)) is True
    io_ = model_adapter.inspect(str(path))
    assert (io_.ids, io_.mask, io_.segments, io_.start, io_.end) == (
        "input_ids", "input_mask", "segment_ids", "output_start_logits", "output_end_logits")
    assert model_sources.rename_to_official(str(path)) is False  # already official


def test_cached_listing_reads_the_huggingface_cache_layout(tmp_path):
    sha = "a" * 40
    storage = tmp_path / "models--org--tiny"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(sha)
    (storage / "snapshots" / sha / "onnx").mkdir(parents=True)
    (storage / "snapshots" / sha / "onnx" / "model.onnx").write_bytes(b"x")
    assert model_sources.cached_listing(str(tmp_path), "org/tiny", None) == (sha, ["onnx/model.onnx"])
    assert model_sources.cached_listing(str(tmp_path), "org/tiny", sha) == (sha, ["onnx/model.onnx"])
    assert model_sources.cached_listing(str(tmp_path), "org/tiny", "v2") == (None, [])
    assert model_sources.cached_listing(str(tmp_path), "org/other", None) == (None, [])


# -- Hugging Face: a real huggingface_hub download from a hub on 127.0.0.1 --------------------------------


class _Hub(BaseHTTPRequestHandler):
    """The endpoints hf_hub_download/snapshot_download call: model info, tree, resolve (HEAD and GET)."""

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head):
        hub = self.server
        url = urlsplit(self.path)
        path = unquote(url.path)
        with hub.lock:
            hub.requests.append({"method": self.command, "path": path,
                                 "authorization": self.headers.get("Authorization")})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            repo, commit = self._repo_commit(m[1], m[2] or "main")
            if repo is not None:
                body = {"id": m[1], "sha": commit, "private": False,
                        "siblings": [{"rfilename": name} for name in sorted(repo["files"])]}
                self._send(200, json.dumps(body).encode(), head, {"Content-Type": "application/json"})
            return
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
        if m:
            repo, commit = self._repo_commit(m[1], m[2])
            if repo is not None:
                body = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in sorted(repo["files"].items())]
                self._send(200, json.dumps(body).encode(), head, {"Content-Type": "application/json"})
            return
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo, commit = self._repo_commit(m[1], m[2])
            if repo is None:
                return
            data = repo["files"].get(m[3])
            if data is None:
                return self._send(404, b"", head, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            # The Hub's ETag: a file kept in LFS (the models) its sha256, a file kept in git its git blob id.
            etag = hashlib.sha256(data).hexdigest() if m[3].endswith(".onnx") else \
                hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            self._send(200, data, head, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                         "Content-Type": "application/octet-stream"})
            return
        self._send(404, b"", head, {})

    def _repo_commit(self, repo_id, revision):
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._send(401, b"", self.command == "HEAD", {"X-Error-Code": "RepoNotFound"})
            return None, None
        commit = repo["refs"].get(revision, revision if revision == repo["sha"] else None)
        if commit is None:
            self._send(404, b"", self.command == "HEAD", {"X-Error-Code": "RevisionNotFound"})
            return None, None
        return repo, commit

    def _send(self, status, body, head, headers):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    """A threaded Hugging Face Hub stand-in on 127.0.0.1; hub.add(repo_id, files) publishes a repo."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.repos = [], {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"

    def add(repo_id, files):
        sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        srv.repos[repo_id] = {"sha": sha, "files": files, "refs": {"main": sha}}
        return sha
    srv.add = add
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch_hf(tmp_path, out, *args, **env):
    """python -m mlperf_bert.model_sources huggingface ... in a clean environment (as a step runs it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "MLRUN_"))}
    base.update(PYTHONPATH=ROOT, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    base.update({k: str(v) for k, v in env.items()})
    return subprocess.run([sys.executable, "-m", "mlperf_bert.model_sources", "huggingface", *args, "--out", str(out)],
                          env=base, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_huggingface_download_then_offline_from_the_warm_cache(tmp_path, hub, tiny_hf_model):
    pytest.importorskip("huggingface_hub")
    commit = hub.add("org/tiny-squad", {"onnx/model.onnx": tiny_hf_model, "README.md": b"# tiny\n",
                                        "config.json": b"{}", "onnx/model_quantized.onnx": b"not fetched"})
    first = _fetch_hf(tmp_path, tmp_path / "a", "--repo", "hf:org/tiny-squad", HF_ENDPOINT=hub.url, HF_TOKEN="hf_test")
    assert first.returncode == 0, first.stderr
    record = json.loads((tmp_path / "a" / "source.json").read_text())
    assert record["repo"] == "org/tiny-squad" and record["revision"] == "main" and record["commit"] == commit
    assert record["files"] == ["onnx/model.onnx"] and record["endpoint"] == hub.url
    # The official names, whatever the repo's file called them.
    assert record["inputs"] == {"ids": "input_ids", "mask": "input_mask", "segments": "segment_ids"}
    assert record["outputs"] == {"start": "output_start_logits", "end": "output_end_logits"}
    # Through huggingface_hub: its cache holds the file, the token went to the hub, only the model was fetched.
    storage = tmp_path / "hf-home" / "hub" / "models--org--tiny-squad"
    assert (storage / "refs" / "main").read_text() == commit
    assert (storage / "snapshots" / commit / "onnx" / "model.onnx").read_bytes() == tiny_hf_model
    assert {r["authorization"] for r in hub.requests} == {"Bearer hf_test"}
    fetched = [r["path"] for r in hub.requests if "/resolve/" in r["path"] and r["method"] == "GET"]
    assert fetched == [f"/org/tiny-squad/resolve/{commit}/onnx/model.onnx"] or \
        fetched == ["/org/tiny-squad/resolve/main/onnx/model.onnx"]

    # HF_HUB_OFFLINE with the warm cache: the same model, and not one request.
    seen = len(hub.requests)
    offline = _fetch_hf(tmp_path, tmp_path / "b", "--repo", "hf:org/tiny-squad", HF_ENDPOINT=hub.url,
                        HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert len(hub.requests) == seen
    again = json.loads((tmp_path / "b" / "source.json").read_text())
    assert again["commit"] == commit and again["sha256"] == record["sha256"]
    assert "HF_HUB_OFFLINE is set" in offline.stdout
    # A run of it says which commit ran, and that an unpinned repo stays at its first fetch's (it said nothing).
    from mlperf_bert import harness
    source = harness.model_source(tmp_path / "a" / "model.onnx")
    assert source == {"repo": "org/tiny-squad", "revision": "main", "commit": commit, "from": "the Hub"}
    line = harness.model_source_line(source)
    assert line.startswith(f"  model: hf:org/tiny-squad@main, commit {commit} (from the Hub)\n    not pinned: its "
                           "cache entry keeps the commit its first fetch resolved") and f"@{commit})" in line
    assert "not pinned" not in harness.model_source_line(dict(source, revision=commit))
    # a mirror's copy names no commit: it offered "--model=hf:org/tiny-squad@unknown", which then failed
    mirrored = harness.model_source_line(dict(source, commit=None, **{"from": "mirror /m/huggingface/org/tiny-squad"}))
    assert "commit unknown" in mirrored and "@unknown" not in mirrored and "huggingface/org/tiny-squad@REV/" in mirrored
    assert harness.model_source(tmp_path / "nowhere" / "model.onnx") is None

    # The hub gone (a closed port) and no HF_HUB_OFFLINE: the cache still serves, like huggingface_hub does.
    gone = _fetch_hf(tmp_path, tmp_path / "c", "--repo", f"org/tiny-squad@{commit}", HF_ENDPOINT="http://127.0.0.1:9")
    assert gone.returncode == 0, gone.stderr
    assert json.loads((tmp_path / "c" / "source.json").read_text())["sha256"] == record["sha256"]


def _hf_download(tmp_path, hub, *args):
    """The `hf` CLI of huggingface_hub against the stand-in Hub, as a user fills a mirror on a connected machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "MLRUN_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home-cli"), HF_HUB_DISABLE_TELEMETRY="1")
    result = subprocess.run([sys.executable, "-c", "from huggingface_hub.cli.hf import main; main()", "download",
                             *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_mirror_filled_by_hf_download_is_checked_against_its_download_records(tmp_path, hub, tiny_hf_model):
    """The mirror's copy of a repo was taken as it was: a truncated model (a copy to the cluster cut short) became
    that repo's cache entry for every run. `hf download --local-dir` records each file's commit and the Hub's ETag
    (sha256 of an LFS file, git blob id of another) beside it: the step checks them, and records the commit."""
    pytest.importorskip("huggingface_hub")
    files = {"onnx/model.onnx": tiny_hf_model, "config.json": b'{"model_type": "bert"}\n', "README.md": b"# tiny\n"}
    commit = hub.add("org/tiny-squad", files)
    mirror = tmp_path / "mirror"
    folder = mirror / "huggingface" / "org" / "tiny-squad"
    _hf_download(tmp_path, hub, "org/tiny-squad", "--local-dir", str(folder))
    assert (folder / ".cache" / "huggingface" / "download" / "onnx" / "model.onnx.metadata").is_file()

    ok = _fetch_hf(tmp_path, tmp_path / "a", "--repo", "hf:org/tiny-squad", "--mirror", str(mirror))
    assert ok.returncode == 0, ok.stderr
    record = json.loads((tmp_path / "a" / "source.json").read_text())
    # the commit the records name (a mirror's copy said "commit unknown"), the model checked by its sha256
    assert record["commit"] == commit and record["checked"] == {"onnx/model.onnx": "sha256"}
    assert record["files"] == ["onnx/model.onnx"] and "unchecked" not in ok.stdout
    # a git-kept file (config.json, as _export takes it) is checked by its git blob id
    assert model_sources.check_mirror_copy(str(folder), ["config.json"], "org/tiny-squad", None) == \
        (commit, {"config.json": "git-sha1"})

    # A pinned revision whose folder holds another commit's files.
    pinned = mirror / "huggingface" / "org" / f"tiny-squad@{'0' * 40}"
    _hf_download(tmp_path, hub, "org/tiny-squad", "--local-dir", str(pinned))
    other = _fetch_hf(tmp_path, tmp_path / "p", "--repo", f"hf:org/tiny-squad@{'0' * 40}", "--mirror", str(mirror))
    assert other.returncode == 1 and f"holds commit {commit[:12]}'s files, not {'0' * 12}'s" in other.stderr
    assert "--revision " + "0" * 40 in other.stderr and "Traceback" not in other.stderr

    # One byte changed, then the file cut short: refused, naming the file, both digests and how to fetch it again.
    model = folder / "onnx" / "model.onnx"
    for damaged in (tiny_hf_model[:-1] + bytes([tiny_hf_model[-1] ^ 1]), tiny_hf_model[: len(tiny_hf_model) // 2]):
        model.write_bytes(damaged)
        bad = _fetch_hf(tmp_path, tmp_path / "b", "--repo", "hf:org/tiny-squad", "--mirror", str(mirror))
        assert bad.returncode == 1 and "the mirror's onnx/model.onnx is not the file hf download fetched" in bad.stderr
        assert hashlib.sha256(damaged).hexdigest()[:16] in bad.stderr
        assert hashlib.sha256(tiny_hf_model).hexdigest()[:16] in bad.stderr
        assert f"hf download org/tiny-squad onnx/model.onnx --local-dir {folder}" in bad.stderr
        assert not (tmp_path / "b" / "source.json").exists() and "Traceback" not in bad.stderr

    # Files copied another way (no records): taken as they are, and the build log says so.
    model.write_bytes(tiny_hf_model)
    plain = mirror / "huggingface" / "org" / "plain"
    (plain / "onnx").mkdir(parents=True)
    (plain / "onnx" / "model.onnx").write_bytes(tiny_hf_model)
    copied = _fetch_hf(tmp_path, tmp_path / "c", "--repo", "hf:org/plain", "--mirror", str(mirror))
    assert copied.returncode == 0, copied.stderr
    assert "no hf download record of onnx/model.onnx in the mirror" in copied.stdout
    assert json.loads((tmp_path / "c" / "source.json").read_text())["checked"] == {"onnx/model.onnx": "no record"}
    # A copy that kept the links into a Hugging Face cache it left behind: said, not a traceback.
    (plain / "onnx" / "model.onnx").unlink()
    (plain / "onnx" / "model.onnx").symlink_to(tmp_path / "left-behind" / "blob")
    linked = _fetch_hf(tmp_path, tmp_path / "d", "--repo", "hf:org/plain", "--mirror", str(mirror))
    assert linked.returncode == 1 and "the mirror's onnx/model.onnx is a link to nothing" in linked.stderr
    assert "cp -L" in linked.stderr and "Traceback" not in linked.stderr


def test_a_mirror_copy_missing_a_file_its_download_records_name_blames_the_mirror(tmp_path, capsys):
    """A mirror folder filled by hf download, then copied without onnx/model.onnx: the error said the repo had
    neither an ONNX file nor weights, as if the Hub lacked them."""
    folder = tmp_path / "mirror" / "huggingface" / "org" / "tiny-squad"
    records = folder / ".cache" / "huggingface" / "download"
    (records / "onnx").mkdir(parents=True)
    (folder / "README.md").write_text("# tiny\n")
    for name in ("README.md", "onnx/model.onnx"):
        (records / f"{name}.metadata").write_text(f"{'1' * 40}\n{'2' * 64}\n1700000000.0\n")
    code = model_sources.main(["huggingface", "--repo", "hf:org/tiny-squad", "--mirror", str(tmp_path / "mirror"),
                               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: hf:org/tiny-squad: the mirror folder {folder} lacks onnx/model.onnx, "
                                        "which its hf download records"), err
    assert "mlrun mirror fetch" in err and f"hf download org/tiny-squad onnx/model.onnx --local-dir {folder}" in err
    assert "has neither an ONNX file" not in err and not (tmp_path / "o" / "source.json").exists()


@pytest.mark.slow
def test_mirror_fetch_takes_a_hub_model_of_the_plan_and_the_offline_step_checks_it(tmp_path, hub, tiny_hf_model):
    """`mirror fetch` said of --model=hf:ORG/NAME "put its files in the mirror yourself": it now fetches the repo
    as `hf download --local-dir` lays it out (its download records beside it), and the model step on the offline
    side takes and checks that copy. A repo it cannot fetch is said, exit 1, leaving no folder of its name."""
    pytest.importorskip("huggingface_hub")
    commit = hub.add("org/tiny-squad", {"onnx/model.onnx": tiny_hf_model, "config.json": b"{}\n",
                                        "tf_model.h5": b"TensorFlow weights", "flax_model.msgpack": b"Flax weights"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "MLRUN_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN="hf_secret_token_123",
               MLRUN_CACHE=str(tmp_path / "cache"), MLRUN_RUNS=str(tmp_path / "runs"), MLRUN_MIRROR=SHARED_DATA)
    out = tmp_path / "carry"

    def fetch(*refs):
        return subprocess.run([MLRUN, "mirror", "fetch", "app mlperf bert _onnxruntime _cpu", *refs, "-o", str(out)],
                              env=env, capture_output=True, text=True, timeout=120)
    done = fetch("--model=hf:org/tiny-squad")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = out / "huggingface" / "org" / "tiny-squad"
    assert f"fetched       hf:org/tiny-squad  {folder}" in done.stdout and "put its files" not in done.stdout
    assert (folder / "onnx" / "model.onnx").read_bytes() == tiny_hf_model and (folder / "config.json").exists()
    assert not (folder.parent / "tiny-squad.partial").exists()
    assert not (folder / "tf_model.h5").exists() and not (folder / "flax_model.msgpack").exists()   # no step reads
    assert {r["authorization"] for r in hub.requests} == {"Bearer hf_secret_token_123"}
    for root, _, names in os.walk(out):   # the token reached the Hub, and no file of the mirror
        for name in names:
            assert b"hf_secret_token_123" not in open(os.path.join(root, name), "rb").read(), name

    # The offline machine: the model step takes the copy, checked against its records, and names its commit.
    offline = _fetch_hf(tmp_path, tmp_path / "entry", "--repo", "hf:org/tiny-squad", "--mirror", str(out),
                        HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    record = json.loads((tmp_path / "entry" / "source.json").read_text())
    assert record["commit"] == commit and record["checked"] == {"onnx/model.onnx": "sha256"}

    # `plan` says which Hub models the mirror holds, before anything runs.
    plan = subprocess.run([MLRUN, "plan", "app mlperf bert _onnxruntime _cpu", "--model=hf:org/tiny-squad",
                           "--mirror", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert f"  hf:org/tiny-squad  in the mirror: {folder} (2 files, 2 with hf download's record to check)" \
        in plan.stdout, plan.stdout + plan.stderr
    plan = subprocess.run([MLRUN, "plan", "app mlperf bert _onnxruntime _cpu", "--model=hf:org/other",
                           "--dep.model.revision=v3", "--mirror", str(out)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert f"  hf:org/other@v3  not in the mirror ({out / 'huggingface' / 'org' / 'other@v3'}): fetched from the " \
        "Hub" in plan.stdout and plan.stdout.count("\n  hf:org/other") == 1, plan.stdout + plan.stderr

    # Pinned by the model's --revision (not @REV): fetched into NAME@REV, where the step looks, and only there.
    pinned = fetch("--model=hf:org/tiny-squad", f"--dep.model.revision={commit}")
    assert pinned.returncode == 0 and pinned.stdout.count("hf:org/tiny-squad") == 1, pinned.stdout
    offline = _fetch_hf(tmp_path, tmp_path / "pinned", "--repo", "hf:org/tiny-squad", "--revision", commit,
                        "--mirror", str(out), HF_HUB_OFFLINE="1")
    assert offline.returncode == 0 and f"tiny-squad@{commit}" in json.loads(
        (tmp_path / "pinned" / "source.json").read_text())["from"], offline.stderr

    # Again: brought up to date in place. A repo the Hub does not have: said, exit 1, no folder of its name.
    again = fetch("--model=hf:org/tiny-squad")
    assert again.returncode == 0 and (folder / "onnx" / "model.onnx").read_bytes() == tiny_hf_model, again.stdout
    missing = fetch("--model=hf:org/nothing@v2")
    assert missing.returncode == 1 and "failed        hf:org/nothing@v2" in missing.stdout, missing.stdout
    assert "RepositoryNotFoundError" in missing.stdout and "1 failed (above)" in missing.stdout
    assert not (out / "huggingface" / "org" / "nothing@v2").exists() and "Traceback" not in missing.stderr
    zoo = fetch("--model=zoo:nlp/question_answering/obert-base/pytorch/huggingface/squad/pruned90_quant-none")
    assert zoo.returncode == 0 and zoo.stdout.count("note: ") == 1 and "put its files in the mirror" in zoo.stdout
    canonical = fetch("--model=hf:bert-base-uncased")   # a repo of no org, as the oldest ones are named
    assert f"failed        hf:bert-base-uncased  {out / 'huggingface' / 'bert-base-uncased'}\n" in canonical.stdout
    assert canonical.returncode == 1 and "Traceback" not in canonical.stderr
    listed = json.loads(subprocess.run([MLRUN, "mirror", "fetch", "app mlperf bert _onnxruntime _cpu",
                                        "--model=hf:org/tiny-squad", "-o", str(out), "--json"], env=env,
                                       capture_output=True, text=True, timeout=120).stdout)
    assert {"name": "hf:org/tiny-squad", "url": None, "status": "fetched", "path": str(folder), "error": None} in listed


def test_huggingface_offline_without_a_cache_says_so(tmp_path, hub):
    pytest.importorskip("huggingface_hub")
    result = _fetch_hf(tmp_path, tmp_path / "out", "--repo", "hf:org/tiny-squad@v1", HF_ENDPOINT=hub.url,
                       HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    assert "cannot get hf:org/tiny-squad@v1: HF_HUB_OFFLINE is set" in result.stderr
    assert os.path.join("hf-home", "hub") in result.stderr and "Traceback" not in result.stderr
    assert hub.requests == []


@pytest.mark.slow  # about 1.1 s on the 2-core EPYC
def test_huggingface_errors_name_the_repo(tmp_path, hub):
    pytest.importorskip("huggingface_hub")
    hub.add("org/weights-only", {"config.json": b"{}", "model.safetensors": b"weights"})
    no_onnx = _fetch_hf(tmp_path, tmp_path / "a", "--repo", "hf:org/weights-only", HF_ENDPOINT=hub.url)
    assert no_onnx.returncode == 2
    assert "hf:org/weights-only has no ONNX file" in no_onnx.stderr and "_export" in no_onnx.stderr
    assert not any("/resolve/" in r["path"] for r in hub.requests)  # nothing downloaded for nothing
    missing = _fetch_hf(tmp_path, tmp_path / "b", "--repo", "hf:org/nope", HF_ENDPOINT=hub.url)
    assert missing.returncode == 1 and "hf:org/nope: no such model repo" in missing.stderr
    assert "HF_TOKEN" in missing.stderr
    bad_rev = _fetch_hf(tmp_path, tmp_path / "c", "--repo", "hf:org/weights-only@v9", HF_ENDPOINT=hub.url)
    assert bad_rev.returncode == 2 and "has no revision v9" in bad_rev.stderr


# -- the recipes ------------------------------------------------------------------------------------


def _plan(query, inputs=None, host_env=None, dep_overrides=None):
    plan = resolve(RecipeIndex([os.path.join(ROOT, "recipes")]), query, inputs=inputs or {},
                   host_env=host_env or {}, dep_overrides=dep_overrides)
    return {n.name: n for n in plan.nodes}, plan


def _venv(node):
    """The packages of the venv a node runs in: its named set (get-python-venv's variations) and --packages."""
    venv = dict(node.deps)["python"]
    return " ".join([venv.env.get("MLRUN_VENV_SET", ""), venv.env.get("MLRUN_VENV_SET_MORE", ""),
                     venv.inputs["packages"]])


def test_the_benchmark_takes_zoo_and_hf_references():
    nodes, _ = _plan("app mlperf bert _onnxruntime _cpu", {"model": STUB, "mode": "accuracy"})
    model = nodes["get-ml-model-bert"]
    assert "sparsezoo" in model.variations and model.inputs["stub"] == STUB
    nodes, _ = _plan("app mlperf bert _onnxruntime _cpu", {"model": "hf:org/name@v1"})
    model = nodes["get-ml-model-bert"]
    assert "huggingface" in model.variations and model.inputs["repo"] == "hf:org/name@v1"
    assert "get-ml-model-bert-large" not in nodes
    nodes, _ = _plan("app mlperf bert _onnxruntime _cpu", {"model": "hf:org/name"}, dep_overrides={
        "model": {"tags": "_export"}})
    assert "export" in nodes["get-ml-model-bert"].variations
    assert "torch==2.13.0" in _venv(nodes["get-ml-model-bert"])


@pytest.mark.slow   # over 2 s on the EPYC
def test_entry_keys_follow_the_source_not_the_token_or_cache_folder():
    def key(query, inputs, **env):
        return _plan(query, inputs, host_env=env)[0]["get-ml-model-bert"].key
    hf = ("get ml-model bert _huggingface", {"repo": "org/name"})
    base = key(*hf)
    assert key(*hf, HF_TOKEN="hf_a", HF_HOME="/x", HF_HUB_OFFLINE="1") == base
    assert key(*hf, HF_ENDPOINT="http://mirror.example") != base
    assert key("get ml-model bert _huggingface", {"repo": "org/name@v2"}) != base
    zoo = key("get ml-model bert _sparsezoo", {"stub": STUB})
    assert zoo != key("get ml-model bert _sparsezoo", {"stub": STUB.replace("pruned80", "pruned90")})
    # Only the export path installs torch.
    nodes, _ = _plan(*hf)
    assert "torch" not in _venv(nodes["get-ml-model-bert"])


def test_known_stubs_are_variations_with_their_expected_f1():
    recipe = next(r for r in RecipeIndex([os.path.join(ROOT, "recipes")]).recipes if r["name"] == "get-ml-model-bert")
    known = {name: v for name, v in recipe["variations"].items() if v["group"] == "zoo-model"}
    assert len(known) == 3
    for name, spec in known.items():
        model_sources.parse_stub(spec["env"]["MODEL_STUB"])
        assert spec["base"] == ["sparsezoo"]
        assert re.search(r"expected F1 \d\d\.\d+", spec["description"]), name
    nodes, _ = _plan("get ml-model bert _obert-large-pruned95-quant")
    assert "sparsezoo" in nodes["get-ml-model-bert"].variations
    assert "sparsezoo==1.8.1" in _venv(nodes["get-ml-model-bert"])


def test_a_quantised_stub_whose_file_has_no_int8_operator_is_refused(tmp_path, monkeypatch, tiny_hf_model):
    """A 2-layer fp32 random model in the mirror's folder of pruned80_quant became that stub's entry, for every
    user of the cache."""
    monkeypatch.setitem(sys.modules, "sparsezoo", _NoZoo("sparsezoo"))
    folder = tmp_path / "mirror" / "sparsezoo" / STUB_PATH
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(tiny_hf_model)
    with pytest.raises(MlrunError, match=r"names a quantised model, but the file from mirror .* has no int8 operator"):
        model_sources.fetch_sparsezoo(STUB, str(tmp_path / "entry"), mirror=str(tmp_path / "mirror"))
    plain = "zoo:nlp/question_answering/bert-base/pytorch/huggingface/squad/pruned90-none"   # no _quant: fp32 is fine
    other = tmp_path / "mirror" / "sparsezoo" / plain[len("zoo:"):]
    other.mkdir(parents=True)
    (other / "model.onnx").write_bytes(tiny_hf_model)
    assert model_sources.fetch_sparsezoo(plain, str(tmp_path / "plain"), mirror=str(tmp_path / "mirror"))["stub"] == plain
