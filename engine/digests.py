"""File and tree digests, streamed so multi-GB models never sit in memory.

Only regular files, folders and symbolic links can be recorded: a FIFO would block
the reader forever, a device has no fixed content, and a name that is not UTF-8
cannot be written to JSON. Those are refused with an error naming the path.
"""
import hashlib
import os
import stat

from .errors import UnrecordableFileError

SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
           (stat.S_ISBLK, "a block device"))


def check_kind(path, mode):
    """Refuse anything but a regular file, a folder or a link (mode from os.stat or os.lstat)."""
    for test, what in SPECIAL:
        if test(mode):
            raise UnrecordableFileError(path, f"is {what}; only files, folders and links can be hashed or cached")


def hash_into(path, hashers):
    """Feed a file's bytes to each hasher, reading it once. A FIFO is never opened: opening it for reading woke a
    writer waiting on it (its kind is checked again once open: something put in its place meanwhile)."""
    check_kind(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    with open(fd, "rb") as f:
        check_kind(path, os.fstat(fd).st_mode)
        while chunk := f.read(1 << 20):
            for h in hashers:
                h.update(chunk)


def file_digests(path, algos=("sha256", "md5")):
    """{algo: hex digest} of a file, reading it once whatever the number of algos."""
    hashers = {algo: hashlib.new(algo) for algo in algos}
    hash_into(path, hashers.values())
    return {algo: h.hexdigest() for algo, h in hashers.items()}


def file_digest(path, algo="sha256"):
    return file_digests(path, (algo,))[algo]


def walk(root, skip=(), specials=None):
    """(relative path, path, lstat) of everything under root but `skip`, sorted; refuses what cannot be recorded.
    specials: a list to append (relative path, UnrecordableFileError) to for each FIFO, socket or device, passed
    over instead of refused (a check that goes on to the tree's other problems)."""
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(rel_folder, d)) not in skip)
        for name in dirs + sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if rel in skip:
                continue
            _check_utf8(path, rel, "the name")
            st = os.lstat(path)
            try:
                check_kind(path, st.st_mode)
            except UnrecordableFileError as e:
                if specials is None:
                    raise
                specials.append((rel, e))
                continue
            if stat.S_ISLNK(st.st_mode):
                _check_utf8(path, os.readlink(path), "the link's target")
            yield rel, path, st


def check_tree(root, skip=()):
    """Raise UnrecordableFileError for the first thing under root that cannot be recorded."""
    for _ in walk(root, skip):
        pass


def _check_utf8(path, text, what):
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UnrecordableFileError(path, f"{what} is not UTF-8 text") from None


def tree_digests(root, skip=(), specials=None):
    """{relative path: digest} for every file under root; links are recorded by their target (specials: see walk)."""
    out = {}
    for rel, path, st in walk(root, skip, specials):
        if stat.S_ISLNK(st.st_mode):
            out[rel] = "link:" + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = file_digest(path)
    return out


def summary(digests):
    """One digest for a whole {path: digest} map."""
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()


# Version-control metadata changes without the content changing (git rewrites its index on status).
VCS_DIRS = (".git", ".hg", ".svn")


def content_digest(path):
    """sha256 of a file, or one digest over a folder's files (version-control folders at its top left out): what a
    `content: true` input puts into a key."""
    if os.path.isdir(path):
        out, real = {}, os.path.realpath(path)
        _content_tree(path, "", out, {real}, real)
        return summary(out)
    return file_digest(path)


def _content_tree(folder, rel_folder, out, seen, top):
    """{relative path: digest} of the files a reader of the folder sees: links followed (a link was recorded by
    its target's name: the linked content changed and the entry built from a copy of it was reused). A link is
    recorded by its target's name where following it cannot be done or would not end: dangling, to a folder seen
    already (a loop; links fanning out to one folder doubled the walk at each level), to a folder holding the
    input (a link to /), or to what cannot be read or recorded (/proc, /dev)."""
    for name in sorted(os.listdir(folder)):
        path, rel = os.path.join(folder, name), os.path.join(rel_folder, name)
        if rel in VCS_DIRS:
            continue
        _check_utf8(path, rel, "the name")
        link = os.path.islink(path)
        real = os.path.realpath(path)
        try:
            if os.path.isdir(path):
                if real in seen or top.startswith(real.rstrip(os.sep) + os.sep):
                    out[rel] = "link:" + os.readlink(path)
                    continue
                seen.add(real)
                if not link:
                    _content_tree(path, rel, out, seen, top)
                    continue
                inner = {}
                _content_tree(path, rel, inner, seen, top)   # all of it or, failing, the link's name
                out.update(inner)
            elif os.path.exists(path):
                out[rel] = file_digest(path)   # refuses a FIFO or device in the folder itself, as the walk did
            else:
                out[rel] = "link:" + os.readlink(path)
        except (OSError, UnrecordableFileError):
            if not link:
                raise
            out[rel] = "link:" + os.readlink(path)
