"""Published entries stay as they were: read-only modes and a stat signature checked on every use.

Re-hashing an entry on every use would cost seconds; comparing the stat signature recorded when it
was published (every file's and link's path, type, size and mtime_ns, and every folder's path) costs
one lstat per file and catches what a later process wrote, added or removed. The root folder's own
times are not recorded: the publishing rename may touch them. `mlrun cache verify` re-hashes.
"""
import json
import os
import stat

from .errors import os_errors
from .oserrors import explain

STAT_FILE = "stat.json"   # in the entry's .mlrun/; not part of the signature itself
STAT_REL = ".mlrun/" + STAT_FILE
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def signature(root):
    """{relative path: "d" | "f SIZE MTIME_NS" | "l SIZE MTIME_NS" | "o<file type> SIZE MTIME_NS"} of the tree."""
    out = {}
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                rel = prefix + e.name
                if e.is_dir(follow_symlinks=False):
                    out[rel] = "d"
                    stack.append((rel + "/", e.path))
                elif rel != STAT_REL:
                    st = e.stat(follow_symlinks=False)
                    kind = "f" if stat.S_ISREG(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else \
                        f"o{stat.S_IFMT(st.st_mode):o}"
                    out[rel] = f"{kind} {st.st_size} {st.st_mtime_ns}"
    return out


def seal(root):
    """Record root's stat signature in .mlrun/stat.json, then make every file and folder read-only
    (and readable by the group, whatever the builder's umask) but root itself: moving a folder to
    another parent needs its write bit; read_only(root) once it is in place. chmod leaves mtimes alone."""
    _record(root)
    set_modes(root, frozen=True)
    writable(root)


def reseal(root):
    """Record a published entry's stat signature anew (once its content verified)."""
    meta = os.path.dirname(os.path.join(root, STAT_REL))
    writable(meta)
    try:
        _record(root)
    finally:
        read_only(meta)


def _record(root):
    path = os.path.join(root, STAT_REL)
    recorded = {"format": 1, "signature": signature(root)}   # before its own file (and .tmp) exists
    with os_errors("cannot write", path + ".tmp"):   # a full disk named no file ("mlrun run: cannot use")
        with open(path + ".tmp", "w") as f:
            json.dump(recorded, f, sort_keys=True)
        os.replace(path + ".tmp", path)


def read_only(folder):
    os.chmod(folder, stat.S_IMODE(os.lstat(folder).st_mode) & ~WRITE_BITS)


def stat_problems(root):
    """How root differs from its recorded signature: ["modified: x", "missing: y", "added: z"];
    [] when it matches or when it has none (entries of format 1 were published without one)."""
    try:
        with open(os.path.join(root, STAT_REL)) as f:
            recorded = json.load(f)["signature"]
    except FileNotFoundError:
        return [] if _old_format(root) else [f"missing: {STAT_REL}"]
    except (IsADirectoryError, ValueError, KeyError, TypeError):
        return [f"modified: {STAT_REL}"]
    except OSError as e:   # too many open files, EIO...: this process's trouble, not a changed entry to remove
        raise explain(e, "cannot read", os.path.join(root, STAT_REL)) from None
    now = signature(root)
    if now == recorded:
        return []
    # a size or kind that changed is said so: no copy changes it (the reseal hint is for times alone)
    problems = [f"modified: {rel}" + ("" if now[rel].split()[:2] == recorded[rel].split()[:2] else " (its size)")
                for rel in sorted(recorded) if rel in now and now[rel] != recorded[rel]]
    problems += [f"missing: {rel}" for rel in sorted(set(recorded) - set(now))]
    return problems + [f"added: {rel}" for rel in sorted(set(now) - set(recorded))]


def _old_format(root):
    try:
        with open(os.path.join(root, ".mlrun", "entry.json")) as f:
            return "entry_digest" not in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def set_modes(root, frozen=False):
    """Let the group read every file (and enter every folder) of root; frozen: take every write bit away."""
    for folder, dirs, files in os.walk(root):
        if frozen:   # before the folder loses its write bit
            for f in files:
                _own_copy(os.path.join(folder, f))
        for name in [folder] + [os.path.join(folder, f) for f in files]:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = stat.S_IRGRP | (stat.S_IXGRP if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR else 0)
            mode = (st.st_mode | extra) & ~(WRITE_BITS if frozen else 0)
            if mode != st.st_mode:
                os.chmod(name, stat.S_IMODE(mode))


def _own_copy(path):
    """A hard link to a file outside (a step's `ln /data/x x`) becomes the entry's own copy, times kept: sealing made
    the person's file read-only, and the entry changed with it."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        import shutil
        import tempfile
        # a short name of its own: NAME.mlrun-copy took the step's own file of that name, or grew past NAME_MAX
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mlrun-")
        os.close(fd)
        try:
            shutil.copy2(path, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)


def thaw(root):
    """Give the owner back full access to root's folders, so a non-root user can delete what is in them."""
    writable(root)
    for folder, dirs, files in os.walk(root):
        for d in dirs:   # before os.walk lists them
            writable(os.path.join(folder, d))


def writable(folder):
    """Give the owner full access to one folder (a link or a file is left as it is)."""
    mode = os.lstat(folder).st_mode
    if stat.S_ISDIR(mode) and mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(folder, stat.S_IMODE(mode) | stat.S_IRWXU)
