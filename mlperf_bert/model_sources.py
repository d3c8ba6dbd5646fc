"""Fetch a BERT question-answering ONNX model from SparseZoo or the Hugging Face Hub into a folder.

    python -m mlperf_bert.model_sources sparsezoo --stub zoo:nlp/question_answering/... --out DIR
    python -m mlperf_bert.model_sources huggingface --repo hf:ORG/NAME[@REV] [--revision REV] --out DIR [--export]

Both leave DIR/model.onnx (with its external data file, if any) and DIR/source.json, which records
where the model came from (stub, or repo with the requested and the resolved revision), the sha256 of
each file and the model's input/output names.

SparseZoo: the model's own ONNX file, unchanged (the harness maps its input names). A mirror folder
(--mirror, default $MLRUN_MIRROR) is looked at first: `<mirror>/sparsezoo/<stub without zoo:>/`
holding the model's files as SparseZoo lays them out (deployment/model.onnx, model.onnx or
model.onnx.tar.gz) or just a model.onnx. Only without one is the `sparsezoo` package asked.

Hugging Face: a mirror folder is looked at first too, `<mirror>/huggingface/ORG/NAME/` (or
`ORG/NAME@REV/` for a pinned revision) holding the repo's files as the Hub lists them; it is used with
no network and without huggingface_hub, each file checked against the digest and commit `hf download
--local-dir` recorded beside it (check_mirror_copy). Otherwise
`huggingface_hub` downloads into its own cache (HF_HOME, HF_HUB_CACHE), honours
HF_ENDPOINT, HF_HUB_OFFLINE and the token (HF_TOKEN or `hf auth login`), and falls back to that
cache when the Hub cannot be reached. An ONNX file of the repo is used when there is one, with its
tensors renamed to the official MLPerf names; otherwise (with --export) the PyTorch weights are
exported with transformers + torch.

Nothing here imports sparsezoo, huggingface_hub, transformers or torch before it needs them: the
parsing, mirror and cache-layout code runs in any venv that has onnx.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tarfile
from dataclasses import dataclass

from engine.digests import file_digest, hash_into
from engine.errors import MlrunError, StepError, UsageError

OFFICIAL_INPUTS = ("input_ids", "input_mask", "segment_ids")
OFFICIAL_OUTPUTS = ("output_start_logits", "output_end_logits")
MODEL_FILE = "model.onnx"
SOURCE_FILE = "source.json"

# -- SparseZoo ---------------------------------------------------------------------------------------

ZOO_PREFIX = "zoo:"
_SEGMENT = r"[A-Za-z0-9_.]+"
# domain/sub_domain/architecture[-sub]/framework/repo/dataset[-scheme]/sparse_tag, as sparsezoo parses them
_STUB_V1 = re.compile(rf"^{_SEGMENT}/{_SEGMENT}/{_SEGMENT}(-{_SEGMENT})?/{_SEGMENT}/{_SEGMENT}/"
                      rf"{_SEGMENT}(-{_SEGMENT})?/[A-Za-z0-9_.-]+$")
# the newer one-word stubs: zoo:bert-large-squad_wikipedia_bookcorpus-pruned80.4block_quantized
_STUB_V2 = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STUB_EXAMPLE = "zoo:nlp/question_answering/bert-large/pytorch/huggingface/squad/pruned80_quant-none-vnni"
# Where a SparseZoo model's ONNX file may sit in its folder, best first.
ZOO_ONNX_CANDIDATES = ("deployment/model.onnx", "model.onnx", "onnx/model.onnx")
ZOO_ONNX_ARCHIVES = ("model.onnx.tar.gz", "deployment.tar.gz")


@dataclass(frozen=True)
class Stub:
    path: str  # the stub without zoo:, e.g. nlp/question_answering/bert-large/.../pruned80_quant-none-vnni

    @property
    def stub(self):
        return ZOO_PREFIX + self.path

    def __str__(self):
        return self.stub


def parse_stub(text):
    """'zoo:DOMAIN/.../SPARSE_TAG' (zoo: optional) -> Stub; MlrunError for anything else."""
    path = (text or "").strip()
    if path.startswith(ZOO_PREFIX):
        path = path[len(ZOO_PREFIX):]
    if ".." in path.split("/") or not (_STUB_V1.match(path) or _STUB_V2.match(path)) or ".." in path:
        raise MlrunError(f"not a SparseZoo stub: {text!r}",
                         hint=f"a stub reads zoo:DOMAIN/SUB_DOMAIN/ARCHITECTURE/FRAMEWORK/REPO/DATASET/SPARSE_TAG, "
                              f"e.g. {STUB_EXAMPLE}")
    return Stub(path)


def mirror_folder(mirror, stub):
    """The folder a mirror keeps a SparseZoo model in: <mirror>/sparsezoo/<stub path>."""
    return os.path.join(mirror, "sparsezoo", *stub.path.split("/"))


def find_zoo_onnx(folder):
    """The ONNX file of a SparseZoo model folder (extracting model.onnx.tar.gz in place if that is all)."""
    for rel in ZOO_ONNX_CANDIDATES:
        path = os.path.join(folder, rel)
        if os.path.isfile(path):
            return path
    found = sorted(os.path.relpath(os.path.join(root, name), folder)
                   for root, _, names in os.walk(folder) for name in names if name.endswith(".onnx"))
    found = [f for f in found if not f.startswith("training" + os.sep)]
    if len(found) == 1:
        return os.path.join(folder, found[0])
    if len(found) > 1:
        raise MlrunError(f"{folder} holds several ONNX files ({', '.join(found)}); cannot tell which is the model",
                         hint="keep one, or put it at deployment/model.onnx")
    return None


def _extract_onnx(archive, dest_dir):
    """model.onnx out of a SparseZoo tar.gz into dest_dir; its path, or None if it holds none."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".onnx")]
        if not members:
            return None
        member = sorted(members, key=lambda m: (os.path.basename(m.name) != MODEL_FILE, len(m.name)))[0]
        source = tar.extractfile(member)
        dest = os.path.join(dest_dir, ".extracted-" + os.path.basename(member.name))
        with open(dest, "wb") as out:
            shutil.copyfileobj(source, out)
        return dest


def fetch_sparsezoo(stub_text, out, mirror=None, known=None):
    """Put the SparseZoo model `stub_text` (or the known stub of a variation) into `out`; returns source.json's dict."""
    if stub_text and known and parse_stub(stub_text) != parse_stub(known):
        raise UsageError(f"--stub={stub_text} differs from the stub of the chosen variation ({known})",
                         hint="give one or the other")
    if not (stub_text or known):   # the person's request (exit 2 through the runner), not a failed download
        raise UsageError("_sparsezoo needs --stub=zoo:... (the SparseZoo model to fetch), and none was given",
                         hint=f"e.g. mlrun \"get ml-model bert _sparsezoo\" --stub={STUB_EXAMPLE}, a known model "
                              "(_bert-large-pruned80-quant), or for the benchmark --model=zoo:STUB")
    stub = parse_stub(stub_text or known)
    os.makedirs(out, exist_ok=True)
    mirrored = mirror_folder(mirror, stub) if mirror else None
    if mirrored and os.path.isdir(mirrored):
        onnx_path = find_zoo_onnx(mirrored) or _first_archive(mirrored, out)
        if onnx_path is None:
            raise MlrunError(f"the mirror folder {mirrored} for {stub} holds no ONNX model",
                             hint="put the model's model.onnx (or its SparseZoo files) there")
        origin = f"mirror {mirrored}"
        _copy_model(onnx_path, out, move=onnx_path.startswith(os.path.join(out, "")))
    else:
        download = os.path.join(out, ".sparsezoo-download")
        onnx_path = _download_from_sparsezoo(stub, download, mirror)
        origin = "sparsezoo"
        _copy_model(onnx_path, out, move=True)
        shutil.rmtree(download, ignore_errors=True)
    _check_quantised(os.path.join(out, MODEL_FILE), stub, origin)
    return _describe(out, {"source": "sparsezoo", "stub": stub.stub, "from": origin})


# the operators a quantised ONNX model runs int8 with (QDQ pairs, integer products, onnxruntime's fused ones): a
# superset of quantize.QUANTISED, kept here because importing quantize makes every recipe that imports this
# module source it and seq_plan, the MiniLM trainer's too (a new key: every trained model trained again)
INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
            "ConvInteger", "QLinearConv", "QAttention", "DynamicQuantizeMatMul", "QGemm"}


def _check_quantised(path, stub, origin):
    """A stub that names a quantised model (its tag says _quant, as every known one does) whose file has no int8
    operator is not that model: a mirror's fp32 file was taken as pruned80_quant, under its key for every user."""
    if "quant" not in stub.stub.rsplit("/", 1)[-1].lower():
        return
    import onnx
    ops = {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}
    if not ops & INT8_OPS:
        raise MlrunError(f"{stub} names a quantised model, but the file from {origin} has no int8 operator "
                         f"({', '.join(sorted(INT8_OPS)[:3])}, ...): it is not that model",
                         hint="put the stub's own model.onnx (SparseZoo's deployment/model.onnx) there, or use "
                              "--model=FILE for a model of your own")


def _first_archive(folder, out):
    for name in ZOO_ONNX_ARCHIVES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return _extract_onnx(path, out)
    return None


def _download_from_sparsezoo(stub, download, mirror):
    where = mirror_folder(mirror or "<mirror>", stub)
    offline_hint = (f"offline, put the model's files (or just its model.onnx) in {where}/ and pass --mirror DIR "
                    "(or set MLRUN_MIRROR)")
    # sparsezoo reports to an analytics service and checks for a newer version on import: not from here.
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    os.environ.setdefault("NM_VERSION_CHECK", "false")
    try:
        import sparsezoo
    except ImportError:
        raise MlrunError("the sparsezoo package is not installed in this Python",
                         hint="run it through its recipe: mlrun \"get ml-model bert _sparsezoo\" --stub=...; "
                              + offline_hint) from None
    try:
        model = sparsezoo.Model(stub.stub, download_path=download)
        onnx_file = getattr(model, "onnx_model", None)
        path = onnx_file.path if onnx_file is not None else None
        if not path or not os.path.isfile(path):
            deployment = getattr(model, "deployment", None)
            path = find_zoo_onnx(deployment.path) if deployment is not None else None
    except MlrunError:
        raise
    except Exception as error:  # sparsezoo raises requests', its own and plain exceptions
        if _is_network_error(error):
            raise StepError(f"cannot download SparseZoo model {stub}: the SparseZoo servers cannot be reached "
                            f"({_first_line(error)})", hint=offline_hint) from None
        raise StepError(f"SparseZoo could not fetch {stub}: {type(error).__name__}: {_first_line(error)}",
                        hint="check the stub (sparsezoo.neuralmagic.com lists them); " + offline_hint) from None
    if not path or not os.path.isfile(path):
        found = find_zoo_onnx(download) if os.path.isdir(download) else None
        if not found:
            raise StepError(f"SparseZoo model {stub} has no ONNX file")
        path = found
    return path


def _is_network_error(error):
    """True for connection failures anywhere in the exception chain (requests', urllib3's, socket's)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = {cls.__name__ for cls in type(error).__mro__}
        if isinstance(error, (ConnectionError, TimeoutError)) or names & {
                "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "NewConnectionError",
                "NameResolutionError", "MaxRetryError", "gaierror", "ConnectError", "TimeoutException"}:
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


# -- Hugging Face Hub ---------------------------------------------------------------------------------

HF_PREFIX = "hf:"
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")
WEIGHT_PATTERNS = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                   "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")
ONNX_DATA_SUFFIXES = (".onnx_data", ".onnx.data", ".data")
# Preferred ONNX files of a repo with several (optimum lays them out like this), best first.
PREFERRED_ONNX = ("model.onnx", "onnx/model.onnx")


def parse_repo(text, revision=None):
    """'hf:ORG/NAME[@REV]' (hf: optional) and an optional --revision -> (repo_id, revision or None)."""
    repo = (text or "").strip()
    if repo.startswith(HF_PREFIX):
        repo = repo[len(HF_PREFIX):]
    rev = None
    if "@" in repo:
        repo, rev = repo.split("@", 1)
        if not rev:
            raise MlrunError(f"{text!r}: nothing after @", hint="write hf:ORG/NAME@REVISION (a branch, tag or commit)")
    if not _REPO_ID.match(repo) or "--" in repo or ".." in repo:
        raise MlrunError(f"not a Hugging Face model repo: {text!r}",
                         hint="write hf:ORG/NAME, optionally @REVISION (a branch, tag or commit)")
    revision = (revision or "").strip() or None
    if rev and revision and rev != revision:
        raise MlrunError(f"two revisions for {repo}: @{rev} in the name and --revision={revision}",
                         hint="give one")
    rev = rev or revision
    if rev and (rev.startswith("/") or ".." in rev.split("/")):   # the mirror's NAME@REV folder: never outside it
        raise MlrunError(f"not a revision of {repo}: {rev!r}", hint="give a branch, a tag or a commit of the repo")
    return repo, rev


def choose_onnx(files, wanted=None):
    """The ONNX file of a repo listing to use: `wanted`, else model.onnx / onnx/model.onnx, else the only one."""
    onnx_files = sorted(f for f in files if f.endswith(".onnx"))
    if wanted:
        if wanted not in files:
            raise MlrunError(f"the repo has no file {wanted}",
                             hint="its ONNX files: " + (", ".join(onnx_files) or "none"))
        return wanted
    for name in PREFERRED_ONNX:
        if name in onnx_files:
            return name
    if len(onnx_files) == 1:
        return onnx_files[0]
    if onnx_files:
        raise MlrunError(f"the repo holds several ONNX files: {', '.join(onnx_files)}",
                         hint="choose one with --file=PATH")
    return None


def onnx_data_files(files, onnx_name):
    """External-data files that belong to `onnx_name` (model.onnx_data, model.onnx.data, model.data)."""
    folder, base = os.path.split(onnx_name)
    stem = base[:-len(".onnx")]
    out = []
    for f in files:
        f_folder, f_base = os.path.split(f)
        if f_folder == folder and f != onnx_name and f_base.startswith(stem) and f_base.endswith(ONNX_DATA_SUFFIXES):
            out.append(f)
    return sorted(out)


def weight_files(files):
    """What an export needs: config.json and the weights (safetensors preferred over pickles)."""
    names = set(files)
    if "config.json" not in names:
        return None
    if "model.safetensors" in names:
        return ["config.json", "model.safetensors"]
    if "model.safetensors.index.json" in names:
        return ["config.json", "model.safetensors.index.json"] + sorted(
            f for f in names if re.fullmatch(r"model-\d+-of-\d+\.safetensors", f))
    if "pytorch_model.bin" in names:
        return ["config.json", "pytorch_model.bin"]
    if "pytorch_model.bin.index.json" in names:
        return ["config.json", "pytorch_model.bin.index.json"] + sorted(
            f for f in names if re.fullmatch(r"pytorch_model-\d+-of-\d+\.bin", f))
    return None


def cached_listing(cache_dir, repo, revision):
    """(commit, [files]) of a repo's snapshot in a huggingface_hub cache folder, or (None, []) if none.

    The layout is huggingface_hub's documented one: models--ORG--NAME/refs/<revision> holds the
    commit of a branch or tag, snapshots/<commit>/ the files downloaded at that commit.
    """
    storage = os.path.join(cache_dir, "models--" + repo.replace("/", "--"))
    commit = None
    if re.fullmatch(r"[0-9a-f]{40}", revision or ""):
        commit = revision
    else:
        try:
            with open(os.path.join(storage, "refs", revision or "main")) as f:
                commit = f.read().strip()
        except OSError:
            pass
    snapshot = os.path.join(storage, "snapshots", commit) if commit else None
    if not snapshot or not os.path.isdir(snapshot):
        return None, []
    files = sorted(os.path.relpath(os.path.join(root, name), snapshot).replace(os.sep, "/")
                   for root, _, names in os.walk(snapshot) for name in names)
    return commit, files


def mirror_hf_folder(mirror, repo, rev=None):
    """The folder a mirror keeps a Hugging Face repo in: <mirror>/huggingface/ORG/NAME (a pinned revision:
    ORG/NAME@REV), holding the repo's files as the Hub lists them (onnx/model.onnx, config.json ...)."""
    folder = os.path.join(mirror, "huggingface", *repo.split("/"))
    return f"{folder}@{rev}" if rev else folder


def _folder_files(folder):
    """The repo's files in a folder, without `hf download --local-dir`'s own records (.cache/huggingface/)."""
    files = sorted(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                   for root, _, names in os.walk(folder) for name in names)
    return [f for f in files if not f.startswith(".cache/huggingface/")]


def _git_blob_sha1(path):
    """The id git (and the Hub's ETag of a file kept in git, not LFS) gives a file's content."""
    import hashlib
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    hash_into(path, [h])
    return h.hexdigest()


def check_mirror_copy(folder, files, repo, rev):
    """Check a mirror folder's files against the records `hf download --local-dir` left beside them.

    For each file it downloaded, huggingface_hub keeps .cache/huggingface/download/<file>.metadata: the commit,
    then the Hub's ETag (the sha256 of a file kept in LFS, the git blob id of one kept in git), then a time.
    A file whose bytes are not those (truncated or changed by a copy) would be this repo's cache entry for every
    run; a file of another commit than a pinned one, another revision's. Returns (the commit the records name, or
    None, {file: "sha256" | "git-sha1" | "no record"}); raises StepError on a difference."""
    label = f"hf:{repo}" + (f"@{rev}" if rev else "")
    again = f" --revision {rev}" if rev else ""
    record_dir = os.path.join(folder, ".cache", "huggingface", "download")
    commits, checked = set(), {}
    for name in files:
        path = os.path.join(folder, *name.split("/"))
        if not os.path.isfile(path):   # a link to nothing (a copy that kept links to a cache it left behind)
            raise StepError(f"{label}: the mirror's {name} is " + ("a link to nothing" if os.path.islink(path) else
                                                                   "not a file") + f" ({path})",
                            hint="copy the repo's files themselves into the mirror folder (cp -L, rsync -L)")
        try:
            with open(os.path.join(record_dir, *name.split("/")) + ".metadata") as f:
                commit, etag = f.readline().strip(), f.readline().strip().strip('"')
        except (FileNotFoundError, NotADirectoryError):
            checked[name] = "no record"
            continue
        except (OSError, UnicodeDecodeError) as error:
            raise StepError(f"{label}: the mirror's download record of {name} cannot be read ({error})") from None
        kind = "sha256" if re.fullmatch(r"[0-9a-f]{64}", etag) else "git-sha1" if re.fullmatch(r"[0-9a-f]{40}", etag) \
            else None
        if kind is None:
            checked[name] = "no record"   # an ETag of another form: nothing to compare with
            continue
        try:
            actual = file_digest(path) if kind == "sha256" else _git_blob_sha1(path)
        except OSError as error:
            raise StepError(f"{label}: the mirror's {name} cannot be read ({error.strerror or error})") from None
        if actual != etag:
            raise StepError(f"{label}: the mirror's {name} is not the file hf download fetched ({kind} {actual[:16]}, "
                            f"its download record says {etag[:16]}): truncated or changed since",
                            hint=f"download it again into the mirror: hf download {repo} {name} --local-dir {folder}"
                                 + again)
        checked[name] = kind
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            commits.add(commit)
    if len(commits) > 1:
        raise StepError(f"{label}: the mirror folder {folder} holds files of {len(commits)} commits "
                        f"({', '.join(sorted(c[:12] for c in commits))}): not one revision of the repo",
                        hint=f"download the repo again into an empty folder: hf download {repo}{again} "
                             "--local-dir FOLDER")
    commit = commits.pop() if commits else None
    if commit and re.fullmatch(r"[0-9a-f]{40}", rev or "") and commit != rev:
        raise StepError(f"{label}: the mirror folder {folder} holds commit {commit[:12]}'s files, not {rev[:12]}'s",
                        hint=f"download that commit into it: hf download {repo}{again} --local-dir {folder}")
    return commit, checked


def _recorded_names(folder):
    """The files `hf download --local-dir` fetched into folder, by its records (.cache/huggingface/download/)."""
    record_dir = os.path.join(folder, ".cache", "huggingface", "download")
    return [os.path.relpath(os.path.join(root, name), record_dir).replace(os.sep, "/")[:-len(".metadata")]
            for root, _, names in os.walk(record_dir) for name in names if name.endswith(".metadata")]


def _refuse_missing_copies(folder, missing, repo, rev, label):
    """A file the step needs, named by the mirror's download records but not in the folder (a copy that left it
    behind): the error said the repo had no such file, as if the Hub lacked it."""
    if missing:
        names = ", ".join(missing)
        raise StepError(f"{label}: the mirror folder {folder} lacks {names}, which its hf download records "
                        "(.cache/huggingface/download/) name: an incomplete copy of the repo",
                        hint=f"copy {'it' if len(missing) == 1 else 'them'} into {folder} again (cp -L, rsync -L), "
                             "or fetch it there on a connected machine: mlrun mirror fetch \"QUERY\" -o MIRROR, or "
                             f"hf download {repo} {' '.join(missing)} --local-dir {folder}"
                             + (f" --revision {rev}" if rev else ""))


def fetch_huggingface(repo_text, out, revision=None, export=False, wanted=None, mirror=None):
    """Put hf:ORG/NAME[@REV] into `out` as an ONNX QA model with the official tensor names.

    A mirror folder (--mirror, default $MLRUN_MIRROR) holding mirror_hf_folder() is used first, with no
    network and no huggingface_hub: an air-gapped machine gets Hugging Face models as it gets SparseZoo ones.
    """
    repo, rev = parse_repo(repo_text, revision)
    mirrored = mirror_hf_folder(mirror, repo, rev) if mirror else None
    if mirrored and os.path.isdir(mirrored):
        os.makedirs(out, exist_ok=True)
        files = _folder_files(mirrored)
        label = f"hf:{repo}" + (f"@{rev}" if rev else "")
        # the files hf download recorded count too: one missing from the copy is the mirror's lack, not the repo's
        onnx_name, wanted_files = _files_to_use(sorted(set(files) | set(_recorded_names(mirrored))), wanted, export,
                                                label, repo_text)
        _refuse_missing_copies(mirrored, [name for name in wanted_files if name not in files], repo, rev, label)
        recorded, checked = check_mirror_copy(mirrored, wanted_files, repo, rev)
        unchecked = [name for name, kind in checked.items() if kind == "no record"]
        if unchecked:
            print(f"{label}: no hf download record of {', '.join(unchecked)} in the mirror "
                  "(.cache/huggingface/download/): taken as it is, unchecked", flush=True)
        how = _model_from_folder(mirrored, out, onnx_name, wanted_files)
        commit = rev if re.fullmatch(r"[0-9a-f]{40}", rev or "") else recorded
        return _describe(out, {"source": "huggingface", "repo": repo, "revision": rev or "main", "commit": commit,
                               "from": f"mirror {mirrored}", "files": wanted_files, "how": how,
                               "checked": checked})
    # No telemetry and no agent-registry request to the Hub from a build step.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import huggingface_hub
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise MlrunError("the huggingface_hub package is not installed in this Python",
                         hint="run it through its recipe: mlrun \"get ml-model bert _huggingface\" --repo=ORG/NAME") from None
    os.makedirs(out, exist_ok=True)
    cache_dir = constants.HF_HUB_CACHE
    label = f"hf:{repo}" + (f"@{rev}" if rev else "")
    commit, files, reached = _list_repo(huggingface_hub, hf_errors, repo, rev, cache_dir, label)
    onnx_name, wanted_files = _files_to_use(files, wanted, export, label, repo_text)
    try:
        folder = snapshot_download(repo, revision=commit if not reached else (rev or "main"),
                                   allow_patterns=wanted_files)
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as error:
        raise _offline_error(label, cache_dir, error) from None
    except hf_errors.HfHubHTTPError as error:
        raise StepError(f"the Hugging Face Hub refused {label}: {_first_line(error)}",
                        hint=_token_hint()) from None
    except Exception as error:
        if _is_network_error(error):
            raise _offline_error(label, cache_dir, error) from None
        raise
    commit = os.path.basename(os.path.normpath(folder)) if re.fullmatch(
        r"[0-9a-f]{40}", os.path.basename(os.path.normpath(folder))) else commit
    how = _model_from_folder(folder, out, onnx_name, wanted_files)
    record = {"source": "huggingface", "repo": repo, "revision": rev or "main", "commit": commit,
              "endpoint": constants.ENDPOINT, "from": ("the Hub" if reached else f"the Hugging Face cache {cache_dir}"),
              "files": wanted_files, "how": how}
    return _describe(out, record)


def _files_to_use(files, wanted, export, label, repo_text):
    """(the ONNX file or None, the files to fetch) of a repo listing: an ONNX model and its data, else weights."""
    onnx_name = choose_onnx(files, wanted)
    if onnx_name:
        return onnx_name, [onnx_name] + onnx_data_files(files, onnx_name)
    wanted_files = weight_files(files)
    if not wanted_files:
        raise MlrunError(f"{label} has neither an ONNX file nor config.json with PyTorch/safetensors weights",
                         hint="its files: " + (", ".join(files[:20]) or "none"))
    if not export:
        raise MlrunError(f"{label} has no ONNX file; exporting its PyTorch weights needs transformers and torch",
                         hint="add the _export variation: mlrun \"get ml-model bert _huggingface _export\" "
                              f"--repo={repo_text}, or for the benchmark --dep.model.tags=_export")
    return None, wanted_files


def _model_from_folder(folder, out, onnx_name, wanted_files):
    """out/model.onnx from a repo's files in folder (a Hub snapshot or a mirror folder); says how."""
    if onnx_name:
        _copy_model(os.path.join(folder, onnx_name), out, data_files=[os.path.join(folder, f) for f in wanted_files[1:]])
        renamed = rename_to_official(os.path.join(out, MODEL_FILE))
        return "onnx file of the repo" + (", tensors renamed to the official names" if renamed else "")
    export_with_transformers(folder, os.path.join(out, MODEL_FILE))
    return "exported from the PyTorch weights with transformers + torch"


def _list_repo(huggingface_hub, hf_errors, repo, rev, cache_dir, label):
    """(commit, files, reached the Hub) from the Hub, or from the local cache when offline or unreachable."""
    why_offline = None
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        why_offline = "HF_HUB_OFFLINE is set"
    else:
        try:
            info = huggingface_hub.HfApi().model_info(repo, revision=rev)
            return info.sha, sorted(s.rfilename for s in info.siblings or []), True
        except hf_errors.RevisionNotFoundError:
            raise MlrunError(f"{label}: the repo has no revision {rev}",
                             hint="give a branch, a tag or a commit of the repo") from None
        except hf_errors.RepositoryNotFoundError:
            raise StepError(f"{label}: no such model repo on {huggingface_hub.constants.ENDPOINT}, "
                            "or it is private or gated", hint=_token_hint()) from None
        except hf_errors.OfflineModeIsEnabled:
            why_offline = "HF_HUB_OFFLINE is set"
        except Exception as error:  # connection refused, DNS, timeouts, 5xx: try the cache like huggingface_hub does
            if not (_is_network_error(error) or isinstance(error, hf_errors.HfHubHTTPError)):
                raise
            why_offline = f"the Hub cannot be reached ({_first_line(error)})"
    commit, files = cached_listing(cache_dir, repo, rev)
    if commit is None:
        raise _offline_error(label, cache_dir, why_offline)
    print(f"{label}: {why_offline}; using the cached snapshot {commit}", flush=True)
    return commit, files, False


def _offline_error(label, cache_dir, why):
    why = why if isinstance(why, str) else _first_line(why)
    return StepError(f"cannot get {label}: {why}, and the Hugging Face cache ({cache_dir}) has no complete copy of it",
                     hint="connect (HF_ENDPOINT names the Hub or a mirror of it), download it once where the Hub "
                          "is reachable into the same HF_HOME and copy that folder here, or put the repo's files in "
                          "MIRROR/huggingface/ORG/NAME/ (ORG/NAME@REV for a pinned revision) and pass --mirror MIRROR")


def _token_hint():
    return ("for a private or gated repo, set HF_TOKEN (or run `hf auth login`); "
            "check the name on the Hub (HF_ENDPOINT, if set, names the server asked)")


def rename_to_official(path):
    """Rename a QA model's inputs/outputs to input_ids/input_mask/segment_ids, output_start/end_logits.

    Returns True if anything changed. A model with one [..., 2] output keeps it (the harness splits it).
    """
    import onnx
    from mlperf_bert import model_adapter

    io = model_adapter.inspect(path)
    mapping = dict(zip((io.ids, io.mask, io.segments), OFFICIAL_INPUTS))
    if io.end is not None:
        mapping.update(zip((io.start, io.end), OFFICIAL_OUTPUTS))
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return False
    model = onnx.load(path, load_external_data=False)
    taken = _tensor_names(model.graph) - set(mapping)
    clash = sorted(set(mapping.values()) & taken)
    if clash:
        raise MlrunError(f"{path}: cannot rename to the official names: {', '.join(clash)} already name other tensors")
    _rename_graph(model.graph, mapping)
    onnx.save(model, path)
    return True


def _tensor_names(graph):
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
    return names


def _rename_graph(graph, mapping):
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attr in node.attribute:  # If/Loop bodies may read outer names
            if attr.HasField("g"):
                _rename_graph(attr.g, mapping)
            for sub in attr.graphs:
                _rename_graph(sub, mapping)


def export_with_transformers(folder, dest, opset=17, probe_length=48):
    """Export a transformers question-answering checkpoint to ONNX with the official names and dynamic axes."""
    import inspect as pyinspect

    import numpy as np
    import torch
    import transformers

    try:
        model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder, attn_implementation="eager")
    except Exception as error:
        raise StepError(f"transformers cannot load a question-answering model from {folder}: "
                        f"{_first_line(error)}") from None
    model.eval()
    takes_segments = "token_type_ids" in pyinspect.signature(model.forward).parameters

    class QaGraph(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, input_mask, segment_ids):
            kwargs = {"input_ids": input_ids, "attention_mask": input_mask}
            if takes_segments:
                kwargs["token_type_ids"] = segment_ids
            out = self.inner(**kwargs)
            start, end = out.start_logits, out.end_logits
            if not takes_segments:  # keep the input in the graph: every MLPerf model takes segment ids
                zero = (segment_ids[:, :1] * 0).to(start.dtype)
                start, end = start + zero, end + zero
            return start, end

    from mlperf_bert.model_adapter import probe_inputs
    ids, mask, segments = probe_inputs([probe_length, probe_length // 2], probe_length)
    wrapper = QaGraph(model).eval()  # export restores the mode it found, recursively: eval, no dropout
    dynamic = {name: {0: "batch", 1: "seq"} for name in OFFICIAL_INPUTS + OFFICIAL_OUTPUTS}
    with torch.no_grad():
        torch.onnx.export(wrapper, tuple(torch.from_numpy(a) for a in (ids, mask, segments)), dest,
                          input_names=list(OFFICIAL_INPUTS), output_names=list(OFFICIAL_OUTPUTS),
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False)
    # The exported graph must give torch's logits, at other batch sizes and lengths than the traced ones.
    import onnxruntime as ort
    session = ort.InferenceSession(dest, providers=["CPUExecutionProvider"])
    worst = 0.0
    for lengths, width in (([probe_length], probe_length), ([37, 20, 11], 40)):
        feeds = probe_inputs(lengths, width, seed=1)
        with torch.no_grad():
            want = [t.numpy() for t in wrapper(*(torch.from_numpy(a) for a in feeds))]
        got = session.run(list(OFFICIAL_OUTPUTS), dict(zip(OFFICIAL_INPUTS, feeds)))
        if not all(np.isfinite(a).all() for a in got + want):   # NaN against NaN passed as "max difference 0"
            raise StepError("the exported model's logits are not finite (NaN or inf) on the probe inputs: its "
                            "weights are broken (a training that diverged?)")
        worst = max([worst] + [float(np.abs(g - w).max()) for g, w in zip(got, want)])
    if worst > 1e-3:
        raise StepError(f"the exported ONNX model differs from the PyTorch model by {worst:.3g} on the probe inputs")
    print(f"exported {dest} (opset {opset}); ONNX vs PyTorch max difference {worst:.2g}", flush=True)


# -- both ------------------------------------------------------------------------------------------


def external_data(onnx_path):
    """The files an ONNX model's tensors keep their data in ("location", relative to its folder), in the order met;
    [] for a model whose weights are inside it."""
    import onnx
    model = onnx_header(onnx_path)
    found = []

    def tensors(graph):   # initializers, and the tensors of node attributes (Constant's), subgraphs included
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from tensors(sub)
    for tensor in tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), None)
            if location and location not in found:
                found.append(location)
    return found


NOT_ONNX_HINT = ("give an ONNX file of a BERT question-answering model (as onnx.save or an exporter writes it), or "
                 "zoo:STUB / hf:ORG/NAME for a SparseZoo or Hugging Face model")


def onnx_header(path):
    """The ONNX model at path, its external data not loaded; UsageError naming the file when it is not one (a text
    file or random bytes were onnx's DecodeError traceback, exit 1; an empty file parses as an empty model)."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:   # protobuf's DecodeError, and others, for bytes that are not a model
        raise UsageError(f"{path} is not an ONNX model: onnx cannot parse it ({_first_line(error)})",
                         hint=NOT_ONNX_HINT) from None
    if not model.HasField("graph"):
        raise UsageError(f"{path} is not an ONNX model: " + ("the file is empty" if os.path.getsize(path) == 0
                                                              else "it holds no ONNX graph"), hint=NOT_ONNX_HINT)
    return model


def refuse_external_data(path):
    """A --model file is keyed by its own bytes: weights kept in other files would not be (a file of other weights
    beside the same .onnx reused the first one's entry; a dynamic-axis copy left them behind, an entry no run could
    load). Refused before anything is made, with the fix."""
    files = external_data(path)
    if files:
        raise MlrunError(f"{path} keeps its weights in other files ({', '.join(files[:3])}"
                         + (f" and {len(files) - 3} more" if len(files) > 3 else "") + "): mlrun keys a --model "
                         "file by its own bytes, so other weights beside it would reuse this one's entry",
                         hint="save it as one file: python -c \"import onnx; onnx.save(onnx.load('IN.onnx'), "
                              "'OUT.onnx')\" (models under 2 GB), then pass OUT.onnx",
                         exit_code=78)   # sysexits EX_CONFIG: the runner makes it mlrun's exit 2


def _copy_model(onnx_path, out, data_files=None, move=False):
    """onnx_path -> out/model.onnx; external data files keep their names beside it."""
    dest = os.path.join(out, MODEL_FILE)
    folder = os.path.dirname(onnx_path)
    if data_files is None:  # a plain folder: take the data files that sit beside the model
        stem = os.path.basename(onnx_path)[:-len(".onnx")]
        data_files = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                      if n.startswith(stem) and n.endswith(ONNX_DATA_SUFFIXES)]
    # and those its tensors name, whatever their names (w.data was left behind: an entry no run could load)
    data_files += [os.path.join(folder, n) for n in external_data(onnx_path)
                   if os.path.join(folder, n) not in data_files and os.path.isfile(os.path.join(folder, n))]
    for src, name in [(onnx_path, MODEL_FILE)] + [(d, os.path.basename(d)) for d in data_files]:
        target = os.path.join(out, name)
        if move:
            os.replace(src, target)
        else:
            shutil.copyfile(src, target)  # follows the HF cache's symlinks to the blobs
        os.chmod(target, 0o644)
    return dest


def _describe(out, record):
    """Inspect out/model.onnx, write out/source.json and return its dict."""
    from mlperf_bert import model_adapter

    path = os.path.join(out, MODEL_FILE)
    missing = [name for name in external_data(path) if not os.path.isfile(os.path.join(out, name))]
    if missing:   # published, it failed every run ("No such file or directory [.../w.data]")
        raise MlrunError(f"the model's tensors keep their data in {', '.join(missing)}, which its source "
                         f"({record.get('stub') or record.get('repo')}) did not provide beside it",
                         hint="put those files beside the model (in the mirror folder), or save the model as one "
                              "file")
    io = model_adapter.inspect(path)
    record = dict(record)
    record["model"] = MODEL_FILE
    record["sha256"] = {name: file_digest(os.path.join(out, name)) for name in sorted(os.listdir(out))
                        if os.path.isfile(os.path.join(out, name)) and name != SOURCE_FILE and not name.startswith(".")}
    record["inputs"] = {"ids": io.ids, "mask": io.mask, "segments": io.segments}
    record["outputs"] = {"start": io.start, "end": io.end}
    record["seq_len"] = io.seq_len or "dynamic"
    with open(os.path.join(out, SOURCE_FILE), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    what = record.get("stub") or f"hf:{record.get('repo')}@{record.get('commit')}"
    print(f"{what} -> {path}: inputs {io.ids}, {io.mask}, {io.segments}; "
          f"sequence {record['seq_len']}", flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mlperf_bert.model_sources", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)
    zoo = sub.add_parser("sparsezoo", help="a model by its SparseZoo stub")
    zoo.add_argument("--stub", default="", help="zoo:DOMAIN/.../SPARSE_TAG")
    zoo.add_argument("--known", default="", help="the stub a known-model variation names")
    zoo.add_argument("--mirror", default=os.environ.get("MLRUN_MIRROR", ""),
                     help="mirror folder holding sparsezoo/<stub path>/ (default: $MLRUN_MIRROR)")
    hf = sub.add_parser("huggingface", help="a model repo of the Hugging Face Hub")
    hf.add_argument("--repo", required=True, help="hf:ORG/NAME[@REVISION] (hf: optional)")
    hf.add_argument("--revision", default="", help="branch, tag or commit (default: main)")
    hf.add_argument("--file", default="", help="the ONNX file of the repo, when it holds several")
    hf.add_argument("--export", action="store_true", help="export the PyTorch weights when the repo has no ONNX file")
    hf.add_argument("--mirror", default=os.environ.get("MLRUN_MIRROR", ""),
                    help="mirror folder holding huggingface/ORG/NAME[@REV]/ (default: $MLRUN_MIRROR)")
    for p in (zoo, hf):
        p.add_argument("--out", required=True, help="output folder")
    local = sub.add_parser("file", help="check a local ONNX model (--model=FILE) before its entry is made")
    local.add_argument("--path", required=True, help="the model file")
    args = parser.parse_args(argv)
    try:
        if args.source == "file":
            refuse_external_data(args.path)
        elif args.source == "sparsezoo":
            fetch_sparsezoo(args.stub, args.out, mirror=args.mirror or None, known=args.known or None)
        else:
            fetch_huggingface(args.repo, args.out, revision=args.revision or None, export=args.export,
                              wanted=args.file or None, mirror=args.mirror or None)
    except MlrunError as error:
        print(f"error: {error}", file=sys.stderr)
        # the person's request refused: mlrun's exit 2 through the runner's EX_CONFIG (a step's exit 2 is a failure)
        return 78 if isinstance(error, UsageError) and error.exit_code == UsageError.exit_code else error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
