"""A mirror is a folder of files found by checksum, not by name.

Offline machines get their downloads from a mirror: any folder (possibly
read-only, possibly nested) holding the files that recipes declare. Files are
matched by sha256 (or md5), so their names do not matter. Hashing a big mirror
on every lookup would be slow, so digests are kept in a small JSON index in the
user's cache (never inside the mirror, which may be read-only), keyed by
absolute path and invalidated by size and mtime_ns.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from engine.digests import file_digest, file_digests
from engine.errors import MlrunError

INDEX_VERSION = 1


class _Index:
    """Digests of mirror files, persisted at `path` (or in memory when None)."""

    def __init__(self, path):
        self.path = path
        self.entries = self._load()
        self.dirty = False

    def _load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (TypeError, OSError, ValueError):  # no path, no file, or garbage
            return {}
        return data.get("files", {}) if data.get("version") == INDEX_VERSION else {}

    def known(self, path, st):
        entry = self.entries.get(path)
        # ctime and inode too: a file replaced by `cp -p` (same size and time) kept the old one's digest
        return bool(entry) and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns \
            and entry.get("ctime_ns") == st.st_ctime_ns and entry.get("ino") == st.st_ino

    def digests(self, path, st):
        """{sha256, md5} of a file, hashing it only if it changed since indexed."""
        if self.known(path, st):
            return self.entries[path]
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
                 **file_digests(path)}
        self.entries[path] = entry
        self.dirty = True
        return entry

    def forget_missing(self, mirror_dir, seen):
        """Drop entries of files that left this mirror, so the index stays small."""
        prefix = os.path.join(mirror_dir, "")
        gone = [p for p in self.entries if p.startswith(prefix) and p not in seen]
        for p in gone:
            del self.entries[p]
        self.dirty = self.dirty or bool(gone)

    def forget(self, path):
        """Drop one file's digests: found damaged (bit rot keeps size and time), it is hashed again."""
        self.dirty = self.entries.pop(path, None) is not None or self.dirty

    def save(self):
        if not (self.path and self.dirty):
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        try:   # the cache's .index/, the group's as the cache's own folders are (teammates' writes failed)
            from .cache import shared_dir
            shared_dir(folder, top=os.path.dirname(folder))
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mirror-index-", suffix=".tmp")
        except OSError:
            return   # a cache that cannot be written (read-only, full) costs the hashing again, nothing more
        try:
            os.fchmod(fd, 0o664)   # mkstemp's 0600: a teammate sharing the cache hashed every mirror file again
            with os.fdopen(fd, "w") as f:
                json.dump({"version": INDEX_VERSION, "files": self.entries}, f)
            os.replace(tmp, self.path)  # readers never see a half-written index
        except BaseException:
            os.unlink(tmp)
            raise
        self.dirty = False


def _files(mirror_dir):
    """(absolute path, stat) of every regular file in the mirror, any depth."""
    found, seen_dirs = [], set()
    for root, dirs, names in os.walk(mirror_dir, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop: walk each folder once
            dirs.clear()
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # dangling symlink or vanished file
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((path, st))
    return found


def _scan(mirror_dir, index_path):
    """The mirror's files, and the index minus entries of files that left it."""
    mirror_dir = os.path.abspath(mirror_dir)
    files = _files(mirror_dir) if os.path.isdir(mirror_dir) else []
    index = _Index(index_path)
    index.forget_missing(mirror_dir, {p for p, _ in files})
    return files, index


def _matches(entry, sha256, md5):
    return (not sha256 or entry["sha256"] == sha256) and (not md5 or entry["md5"] == md5)


def _lookup(files, index, sha256, md5, size):
    candidates = [(p, st) for p, st in files if size is None or st.st_size == size]
    # Already-indexed files cost nothing to compare: try them before hashing any.
    candidates.sort(key=lambda c: not index.known(*c))
    for path, st in candidates:
        if _matches(index.digests(path, st), sha256, md5):
            return path
    return None


def _norm(digest):
    return digest.strip().lower() if digest else None


def find(mirror_dir, *, sha256=None, md5=None, size=None, index_path=None):
    """Path of a file in `mirror_dir` with the given checksum(s), or None."""
    sha256, md5 = _norm(sha256), _norm(md5)
    if not (sha256 or md5):
        raise ValueError("mirror.find needs sha256 or md5")
    files, index = _scan(mirror_dir, index_path)
    try:
        return _lookup(files, index, sha256, md5, size)
    finally:
        index.save()


def forget(path, index_path):
    """A mirror file whose content was found not to be what the index holds: its next lookup hashes it."""
    index = _Index(index_path)
    index.forget(os.path.abspath(path))
    index.save()


def _copy_in(src, dest):
    """Copy atomically so a crash never leaves a truncated file in the mirror."""
    folder = os.path.dirname(dest)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mirror-add-", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


def add(mirror_dir, files, wanted=None, index_path=None):
    """Copy `files` into the mirror; return one (src, dest, sha256, status) per file, status one of
    "added", "already there" (the same content is in the mirror; dest is that file) or "not needed"
    (no item of `wanted`, the downloads recipes declare, has its checksum; not copied; dest None).

    A file keeps its name; if a different file already has that name, it goes
    to a subfolder named by its sha256 prefix.
    """
    out = []
    held, index = _scan(mirror_dir, index_path)   # matched by checksum at any depth, as lookups do
    for src in files:
        if not os.path.isfile(src):
            raise MlrunError(f"mirror add: {src} is not a file")
        digests = file_digests(src)
        sha256 = digests["sha256"]
        if wanted is not None and not any(_matches(digests, _norm(w.get("sha256")), _norm(w.get("md5")))
                                          for w in wanted if w.get("sha256") or w.get("md5")):
            out.append((src, None, sha256, "not needed"))
            continue
        there = _lookup(held, index, sha256, None, os.path.getsize(src)) or next(   # only files of its size hashed
            (dest for _, dest, sha, status in out if status == "added" and sha == sha256), None)   # (or this call's)
        if there:   # in a subfolder or under another name: a second copy of a 1.3 GB model was made
            out.append((src, there, sha256, "already there"))
            continue
        name = os.path.basename(src)
        for dest in (os.path.join(mirror_dir, name), os.path.join(mirror_dir, sha256[:16], name)):
            if not os.path.exists(dest):
                try:
                    _copy_in(src, dest)
                except OSError as e:   # a read-only mirror was told to point --cache/--runs elsewhere
                    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                        raise
                    raise MlrunError(f"cannot add {src} to the mirror {mirror_dir}: {e.strerror}",
                                     hint="add into a mirror folder you may write (--mirror DIR), then use that "
                                          "folder read-only where it runs") from None
                out.append((src, dest, sha256, "added"))
                break
            if file_digest(dest) == sha256:
                out.append((src, dest, sha256, "already there"))
                break  # same content already in the mirror
    index.save()
    return out


def _row(item, name, status, path=None):
    """What a user needs to fetch a file elsewhere: its URL, size and checksum, beside where it is here."""
    return {"name": name, "status": status, "path": path, "url": item.get("url"), "file": item.get("file"),
            "size": item.get("size"), "sha256": _norm(item.get("sha256")), "md5": _norm(item.get("md5"))}


# Folders of the mirror laid out by a model source's own rules (docs/mirrors.md), not by declared downloads: their
# files are never taken by name for a download that went bad ("corrupt ... the damaged copy can go" of a Hub model).
OWN_LAYOUTS = ("huggingface", "sparsezoo")


def _check_one(item, files, by_file_name, index):
    file_name = item.get("file") or os.path.basename(item.get("url", "").rstrip("/")) or item.get("name")
    name = item.get("name") or file_name
    sha256, md5, size = _norm(item.get("sha256")), _norm(item.get("md5")), item.get("size")
    same_name = by_file_name.get(file_name, [])
    if sha256 or md5:
        path = _lookup(files, index, sha256, md5, size)
        unsized = _lookup(files, index, sha256, md5, None) if not path and size is not None else None
        if unsized:   # its checksum decides: the file is there, the recipe's size is not its size
            return _row(item, name, "wrong size", unsized)
    else:  # without a checksum only the name (and size, if declared) can be audited
        path = next((p for p, st in same_name if size is None or st.st_size == size), None)
    if path:
        return _row(item, name, "present", path)
    # A file with the wanted name but other content is worth pointing at.
    return _row(item, name, "corrupt", same_name[0][0]) if same_name else _row(item, name, "missing")


def check(mirror_dir, wanted, *, index_path=None):
    """Audit which `wanted` downloads the mirror holds.

    wanted: dicts with url, file, sha256, md5, size as recipes declare them,
    plus an optional display name. Returns one {name, status, path, url, file, size, sha256, md5} per item,
    status being present, missing, corrupt (a file of that name whose
    content differs) or wrong size (the file is there: the recipe's declared size is not its size).
    """
    files, index = _scan(mirror_dir, index_path)
    by_file_name = {}
    own = tuple(os.path.join(os.path.abspath(mirror_dir), d) + os.sep for d in OWN_LAYOUTS)
    for path, st in files:
        if not os.path.abspath(path).startswith(own):   # a Hub model's model.onnx is no declared model.onnx gone bad
            by_file_name.setdefault(os.path.basename(path), []).append((path, st))
    try:
        return [_check_one(item, files, by_file_name, index) for item in wanted]
    finally:
        index.save()


def declared(recipes):
    """Every download the recipes declare (their variations' too), each with a display name."""
    wanted = []
    for r in recipes:
        items = list(r["download"]) + [d for v in r["variations"].values() for d in (v["download"] or [])]
        wanted += [dict(d, name=f"{r['name']}: {d['file']}") for d in items]
    return wanted


def plan_downloads(plan, only=None):
    """The downloads of a plan's nodes (only those whose key is in `only`, when given), each once."""
    out, seen = [], set()
    for node in plan.nodes:
        if only is not None and node.key not in only:
            continue
        for d in node.download or []:
            ident = _norm(d.get("sha256")) or _norm(d.get("md5")) or d.get("url")
            if ident not in seen:
                seen.add(ident)
                out.append(dict(d, name=f"{node.name}: {d['file']}"))
    return out


def fetch_into(folder, items, fetch, index_path=None):
    """Download each item (url, file, checksum) into `folder`, a mirror to carry to an offline machine.

    fetch(url, dest, sha256=, md5=, size=) downloads and verifies (engine.download.fetch). A file whose
    checksum the folder already holds is not fetched again. A failed download does not stop the others (a
    mirror carried over half-filled is worth more than none): returns [(item, path, "fetched" | "already
    there" | "failed", error or None)].
    """
    from .errors import DownloadError
    os.makedirs(folder, exist_ok=True)
    out = []
    for item in items:
        sha256, md5 = _norm(item.get("sha256")), _norm(item.get("md5"))
        there = find(folder, sha256=sha256, md5=md5, size=item.get("size"), index_path=index_path) \
            if (sha256 or md5) else None
        if there:
            out.append((item, there, "already there", None))
            continue
        dest = os.path.join(folder, item["file"])
        if os.path.exists(dest):   # another file of that name: keep both, as `mirror add` does
            dest = os.path.join(folder, (sha256 or md5)[:16], item["file"])
        try:
            fetch(item["url"], dest, sha256=sha256, md5=md5, size=item.get("size"))
        except DownloadError as e:
            if os.path.dirname(dest) != folder:   # the folder made beside a file of that name: not left empty
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(dest))
            out.append((item, dest, "failed", e))
            continue
        out.append((item, dest, "fetched", None))
    return out


def by_name(plan, only=None):
    """The files a plan's nodes take from a mirror by their path there (recipe `mirror_files`, no checksum declared:
    the calibration list), each once: {name, url, path, sha256}, ${VAR} expanded with the node's variables."""
    from .envs import expand
    out, seen = [], set()
    for node in plan.nodes:
        if only is not None and node.key not in only:
            continue
        env = {**{k: v for k, v in (node.env or {}).items() if isinstance(v, str)},
               **{var: "" if node.inputs.get(name) is None else str(node.inputs[name])
                  for name, var in (node.input_vars or {}).items() if var}}
        for item in node.mirror_files or []:
            url, sha256 = expand(item["url"], env), _norm(expand(item.get("sha256", ""), env))
            if (item["path"], url) not in seen:
                seen.add((item["path"], url))
                out.append({"name": f"{node.name}: {item['path']}", "url": url, "path": item["path"],
                            "also": item.get("also", []), "sha256": sha256, "url_as_written": item["url"]})
    return out


def declared_by_name(recipes):
    """Every recipe's `mirror_files` for `mirror check` (no plan: ${VAR} in url and sha256 expanded with the inputs'
    defaults and the recipe's own strings, as a plan with no flags would), each as by_name() gives it."""
    from .envs import expand
    out = []
    for r in recipes:
        env = {**{k: v for k, v in (r.get("env") or {}).items() if isinstance(v, str)},
               **{s["env"]: "" if s.get("default") is None else str(s["default"]) for s in r["inputs"].values()}}
        for item in r.get("mirror_files") or []:
            out.append({"name": f"{r['name']}: {item['path']}", "url": expand(item["url"], env) or None,
                        "path": item["path"], "also": item.get("also", []),
                        "sha256": _norm(expand(item.get("sha256", ""), env))})
    return out


def check_by_name(mirror_dir, items):
    """Audit by_name()/declared_by_name() items: check()'s rows, found by their path in the mirror (present; corrupt:
    another file there, by its sha256 where one is given, or a folder; missing; unreadable), with mirror_path added."""
    rows = []
    for item in items:
        status, where = found_by_name(mirror_dir, item)
        rows.append({"name": item["name"], "status": status, "path": where, "url": item["url"],
                     "file": os.path.basename(item["path"]),
                     "size": os.path.getsize(where) if status == "present" else None,
                     "sha256": item["sha256"] or None, "md5": None, "mirror_path": item["path"]})
    return rows


def found_by_name(mirror_dir, item):
    """(status, path) of a by_name() item in mirror_dir, as its step finds it: the first file at its `also` paths
    (looked at first) or its path is the one taken, "present" (with its sha256 where one is given) or "corrupt";
    "unreadable"; no file: "corrupt" for something else at its path (a folder), else ("missing", None)."""
    for rel in list(item.get("also") or []) + [item["path"]]:
        where = os.path.join(mirror_dir, *rel.split("/"))
        if os.path.isfile(where):
            try:
                return ("present" if not item["sha256"] or file_digest(where) == item["sha256"] else "corrupt"), where
            except OSError:   # a file this user cannot read: the step could not either
                return "unreadable", where
    where = os.path.join(mirror_dir, *item["path"].split("/"))
    return ("corrupt", where) if os.path.lexists(where) else ("missing", None)


def fetch_by_name(folder, items, fetch):
    """Each by_name() item's url to its path in `folder`: kept when the step would find it there (found_by_name),
    else fetched (a failed one does not stop the others). Returns [(item, path, "fetched" | "already there" |
    "failed", error or None)], as fetch_into."""
    from .errors import DownloadError
    out = []
    for item in items:
        dest = os.path.join(folder, *item["path"].split("/"))
        status, there = found_by_name(folder, item)
        if status == "present":   # at its path, or where else the step takes it
            out.append((item, there, "already there", None))
            continue
        if there and there != dest:   # a file the step takes before the one fetched would be
            out.append((item, there, "failed", DownloadError(f"{there} is what the step takes (before {dest}), and "
                                                             "it is not the file asked for: remove it and fetch "
                                                             "again")))
            continue
        if os.path.lexists(dest) and not os.path.isfile(dest):   # a move would put the file inside a folder
            out.append((item, dest, "failed", DownloadError(f"{dest} is there and is not a file, which the step "
                                                            "would not take: remove it and fetch again")))
            continue
        if not item["url"]:   # an input's variable not set: "cannot download : Invalid URL ''", then "run it again"
            out.append((item, dest, "failed", DownloadError(
                f"its url {item.get('url_as_written')} is empty in this plan: the input that gives it is not set; "
                "give it (QUERY --help lists the inputs), then fetch again")))
            continue
        try:
            fetch(item["url"], dest, sha256=item["sha256"])
        except DownloadError as e:
            out.append((item, dest, "failed", e))
            continue
        out.append((item, dest, "fetched", None))
    return out


# hf:[ORG/]NAME[@REV], as --model and the model recipes take it (the step's own parser says more of a bad one)
HUB_REFERENCE = re.compile(r"hf:((?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?")
# Weights for frameworks no step reads (TensorFlow, Flax, Rust, TF Lite, Core ML), 1.3 GB each of BERT-Large's:
# the steps take a repo's ONNX file, or its config and PyTorch/safetensors weights to export.
HUB_SKIPPED = ["*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel", "*.mlpackage/*", "coreml/*"]


def hub_reference(value, revision=None):
    """The hf: reference a node's input names, pinned by the node's own `revision` input (the model recipes' and
    `hf download`'s word) when the reference has no @REV: the step looks in NAME@REV then."""
    m = HUB_REFERENCE.fullmatch(value)
    return f"{value}@{revision}" if m and not m[2] and isinstance(revision, str) and revision.strip() else value


def hub_folder(folder, reference):
    """Where a mirror keeps a Hugging Face repo (docs/mirrors.md): huggingface/ORG/NAME, NAME@REV when pinned."""
    m = HUB_REFERENCE.fullmatch(reference)
    return os.path.join(folder, "huggingface", *m[1].split("/")) + (f"@{m[2]}" if m[2] else "")


def fetch_hub_repo(folder, reference):
    """A Hugging Face repo into the mirror folder as `hf download ORG/NAME --local-dir` lays it out: its files (but
    HUB_SKIPPED's) and beside them (.cache/huggingface/download/) the commit and digest of each, which the model
    step checks on the offline machine. huggingface_hub honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE as usual;
    it writes no token there. Returns (path, "fetched" | "failed", error message or None)."""
    m = HUB_REFERENCE.fullmatch(reference)
    if not m or (m[2] or "").startswith("/") or ".." in (m[2] or "").split("/"):   # NAME@../..: outside DIR
        return None, "failed", f"{reference} is not hf:ORG/NAME[@REVISION]"
    dest = hub_folder(folder, reference)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return dest, "failed", "huggingface_hub is not installed in mlrun's Python (pip install -r requirements.txt)"
    # a first fetch goes to NAME.partial (kept to resume), then is renamed: the offline machine's step takes a
    # folder of that name as the whole repo; a folder already there is brought up to date in place
    target = dest if os.path.isdir(dest) else dest + ".partial"
    try:
        snapshot_download(m[1], revision=m[2], local_dir=target, ignore_patterns=HUB_SKIPPED)
        if target != dest:
            os.replace(target, dest)
    except Exception as error:   # noqa: BLE001  (not found, gated, offline, refused: said, the other files go on)
        from huggingface_hub import constants
        lines = [line for line in str(error).splitlines() if line.strip()]
        return dest, "failed", f"from {constants.ENDPOINT}: {type(error).__name__}: {lines[0] if lines else error}"
    return dest, "fetched", None


def hub_references(plan, only=None):
    """The hf: references of a plan's nodes (only those whose key is in `only`, when given), each once: a node's
    own `revision` pins one written without @REV, and an unpinned one the same repo's pinned one stands for (the
    app's --model=hf:X beside its model's repo=hf:X with revision=V) goes."""
    refs = {hub_reference(value, node.inputs.get("revision")) for node in plan.nodes
            if only is None or node.key in only for value in node.inputs.values()
            if isinstance(value, str) and HUB_REFERENCE.fullmatch(value)}
    pinned = {ref.split("@")[0] for ref in refs if "@" in ref}
    return sorted(ref for ref in refs if "@" in ref or ref not in pinned)


def hub_in_mirror(mirror_dir, reference):
    """(folder, its file count, how many of them `hf download` recorded) of a Hub repo in the mirror, or (folder,
    None, 0) where the mirror has no folder for it."""
    folder = hub_folder(mirror_dir, reference)
    if not os.path.isdir(folder):
        return folder, None, 0
    files = [os.path.relpath(os.path.join(root, n), folder) for root, _, names in os.walk(folder) for n in names]
    repo_files = [f for f in files if not f.startswith(os.path.join(".cache", "huggingface") + os.sep)]
    records = os.path.join(folder, ".cache", "huggingface", "download")
    recorded = sum(1 for f in repo_files if os.path.isfile(os.path.join(records, f + ".metadata")))
    return folder, len(repo_files), recorded
