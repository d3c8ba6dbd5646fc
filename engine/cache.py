"""The cache: one immutable folder per artifact, named `<recipe>-<key prefix>`.

An entry is built in `.tmp/`, then published by one atomic rename while its
per-entry lock is held, so readers never see a half-built entry and two
processes never build the same one. Each entry describes itself in
`.mlrun/entry.json`; any index can be rebuilt from those files alone.
"""
import json
import os
import time

from . import digests, secrets
from .errors import MlrunError

META_DIR = ".mlrun"
ENTRY_FILE = "entry.json"
FILES_FILE = "files.json"
ENTRY_FORMAT = 1
HIDDEN = (".tmp", ".locks", ".failed", ".index", ".partial")


class Cache:
    def __init__(self, root):
        self.root = os.path.abspath(root)

    # -- paths ---------------------------------------------------------------

    def path(self, node):
        return os.path.join(self.root, node.entry_name)

    def lookup(self, node):
        """The published entry's path, or None. A published entry is complete by construction."""
        path = self.path(node)
        return path if os.path.isfile(os.path.join(path, META_DIR, ENTRY_FILE)) else None

    def lock(self, node):
        from filelock import FileLock  # only builds pay for the import
        _shared_dir(os.path.join(self.root, ".locks"))
        # Group-writable lock files: several users' processes may share one cache (e.g. on NFS).
        return FileLock(os.path.join(self.root, ".locks", node.entry_name + ".lock"), mode=0o664)

    def partial_dir(self):
        """Where unfinished downloads are kept, by checksum, so the next run resumes them."""
        path = os.path.join(self.root, ".partial")
        _shared_dir(path)
        return path

    # -- building --------------------------------------------------------------

    def new_build_dir(self, node):
        """A fresh temporary folder for a build; call with the entry's lock held."""
        from . import guard
        tmp_root = os.path.join(self.root, ".tmp")
        _shared_dir(tmp_root)
        # Leftovers of a killed build of this entry: no mlrun owns them while we hold the lock, but its
        # step may still run (guard killed too), so that is killed first. The log goes where `mlrun show
        # failed` looks, the rest is deleted.
        for name in os.listdir(tmp_root):
            if name.startswith(node.entry_name + "."):
                leftover = os.path.join(tmp_root, name)
                guard.kill_recorded(os.path.join(leftover, META_DIR, guard.RECORD))
                self.keep_failed(leftover, node, why="killed")
        path = os.path.join(tmp_root, f"{node.entry_name}.{os.getpid()}")
        os.makedirs(os.path.join(path, META_DIR))
        return path

    def publish(self, build_dir, node, meta):
        """Record what the build produced, then rename it into place (atomic on one file system)."""
        files = digests.tree_digests(build_dir, skip={META_DIR})
        size = sum(os.lstat(os.path.join(build_dir, rel)).st_size for rel in files)
        meta.update({"format": ENTRY_FORMAT, "files": len(files), "size": size,
                     "files_digest": digests.summary(files)})
        write_json(os.path.join(build_dir, META_DIR, FILES_FILE), files, sort_keys=True)
        write_json(os.path.join(build_dir, META_DIR, ENTRY_FILE), meta, sort_keys=True)
        group_readable(build_dir)
        final = self.path(node)
        os.rename(build_dir, final)
        return final

    def keep_failed(self, build_dir, node, why="failed"):
        """Move a failed build's log and metadata aside (nothing is published) and return the log path."""
        import shutil
        if not os.path.isdir(os.path.join(build_dir, META_DIR)):
            shutil.rmtree(build_dir, ignore_errors=True)
            return None
        stamp = time.strftime('%Y%m%d-%H%M%S') + ("-killed" if why == "killed" else "")
        failed = base = os.path.join(self.root, ".failed", f"{node.entry_name}-{stamp}")
        n = 1
        while os.path.exists(failed):  # failed again within the same second: never move into the older one
            failed, n = f"{base}-{n}", n + 1
        os.makedirs(os.path.dirname(failed), exist_ok=True)
        shutil.move(os.path.join(build_dir, META_DIR), failed)
        shutil.rmtree(build_dir, ignore_errors=True)
        return os.path.join(failed, "build.log")

    # -- inspecting ------------------------------------------------------------

    def entries(self):
        """Metadata of every published entry (with its `path`), newest first."""
        out = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return out
        for name in names:
            if name in HIDDEN:
                continue
            meta = read_entry(os.path.join(self.root, name))
            if meta is not None:
                out.append(meta)
        out.sort(key=lambda m: m.get("finished", 0), reverse=True)
        return out

    def failed_logs(self):
        folder = os.path.join(self.root, ".failed")
        if not os.path.isdir(folder):
            return []
        return sorted((os.path.join(folder, n, "build.log") for n in os.listdir(folder)), key=os.path.getmtime)

    def verify(self, entries=None):
        """Re-hash each entry's files: [(meta, [problems])] for the entries that do not match."""
        bad = []
        for meta in entries if entries is not None else self.entries():
            recorded = recorded_files(meta["path"])
            problems = ["files.json is missing or unreadable"] if recorded is None else \
                file_problems(meta["path"], recorded)
            if problems:
                bad.append((meta, problems))
        return bad

    def remove(self, entries):
        """Delete entries; refuses anything that is not a direct child entry of this cache."""
        import shutil
        for meta in entries:  # check them all before deleting any
            path = os.path.realpath(meta["path"])
            if os.path.dirname(path) != os.path.realpath(self.root) or read_entry(path) is None:
                raise MlrunError(f"refusing to delete {meta['path']}: it is not an entry of the cache {self.root}")
        for meta in entries:
            path = os.path.realpath(meta["path"])
            # Rename first so a half-deleted entry is never seen as published.
            doomed = os.path.join(self.root, ".tmp", f"rm-{os.path.basename(path)}.{os.getpid()}")
            os.makedirs(os.path.dirname(doomed), exist_ok=True)
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def recorded_files(path):
    """An entry's files.json ({relative path: digest}), or None when it is missing or unreadable."""
    try:
        with open(os.path.join(path, META_DIR, FILES_FILE)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def file_problems(path, recorded):
    """How an entry's files differ from what it recorded: ["changed: x", "missing: y", "added: z"]."""
    actual = digests.tree_digests(path, skip={META_DIR})
    problems = [f"changed: {rel}" for rel in sorted(recorded) if rel in actual and actual[rel] != recorded[rel]]
    problems += [f"missing: {rel}" for rel in sorted(set(recorded) - set(actual))]
    problems += [f"added: {rel}" for rel in sorted(set(actual) - set(recorded))]
    return problems


def _shared_dir(path):
    """A cache folder other users of the group can also create files in."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        try:
            os.chmod(path, 0o2775)
        except OSError:
            pass


def group_readable(root):
    """Let the group read every file of an entry (and enter its folders), whatever the builder's umask."""
    import stat
    for folder, dirs, files in os.walk(root):
        for name in [folder] + [os.path.join(folder, f) for f in files]:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = stat.S_IRGRP | (stat.S_IXGRP if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR else 0)
            if st.st_mode & extra != extra:
                os.chmod(name, st.st_mode | extra)


def read_entry(path):
    try:
        with open(os.path.join(path, META_DIR, ENTRY_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    meta["path"] = path
    return meta


def write_json(path, value, sort_keys=False):
    """Readable JSON, written to a temporary file then renamed: a reader never sees half of it; no secret in it."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(secrets.scrub(value), f, indent=1, sort_keys=sort_keys, default=str)
            f.write("\n")
    except OSError as e:
        e.filename = e.filename or tmp  # a failed write names no file (a full disk): say which
        raise
    os.replace(tmp, path)
