"""`mlrun gc`: remove what no live process owns; with an age, also cache entries unused that long.

Ownership is decided by locks, never by pids, so it holds for a cache shared by several users and
hosts: a build folder `.tmp/<entry>.<pid>` is owned while its entry lock is held, an import or removal
folder `.tmp/<name>` while `.locks/tmp/<name>.lock` is, an entry while any mlrun holds its use lock
(`.locks/<entry>.use`, whose mtime is its last use). gc takes each lock without waiting, skips what it
cannot take, and holds it while it deletes. What has no owner to ask goes by age: partial downloads
and failed build logs (the age given, 7 days by default), run folders without a record (10 minutes).
"""
import os
import re
import time

from .cache import ENTRY_NAME as ENTRY, flock, lock_held, read_entry, remove_tree, what_stays
from .errors import MlrunError, UsageError

DEFAULT_AGE = 7 * 86400
RECORDLESS_AGE = 600   # the runner writes run.json right after it creates the run folder
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")   # runner.new_run_id's names
# The names the cache gives what gc may remove (anything else in a folder given as --cache is not ours):
BUILD = re.compile(rf"({ENTRY})\.\d+")                                 # Cache.new_build_dir
TEMP = re.compile(rf"(import-|rm-{ENTRY}\.)\d+-[0-9a-f]{{8}}")          # Cache.new_temp_dir
FAILED = re.compile(rf"{ENTRY}-\d{{8}}-\d{{6}}(-[a-z]+)?(-\d+)?")       # Cache.keep_failed
PARTIAL = re.compile(r"[a-z0-9]+-[0-9a-f]{32,128}\.part(\.lock)?")    # download._kept_part
SWEEP_MARKER = re.compile(r"\.sweep-[0-9a-f]{32}")   # sweeps.remote.Shared's: a SIGKILLed sweep left them
MARKER_AGE = 30 * 86400   # a cluster sweep's nodes look for its markers while it runs: long sweeps keep theirs
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Item:
    """One thing to remove: what it is, where, its size, and the lock that says nobody owns it."""

    def __init__(self, kind, path, lock=None, entry=False, unlink_lock=False):
        self.kind, self.path, self.lock, self.entry, self.unlink_lock = kind, path, lock, entry, unlink_lock
        self.bytes = tree_size(path)
        self.why = None   # why it was skipped


def parse_age(text, flag="--older-than"):
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not m:   # say what is wrong with what was written ("-1d" and "1y" were both "write a number and a unit")
        near = re.fullmatch(r"([-+]?)(\d+(?:\.\d+)?)(\s*)([a-zA-Z]*)", text.strip())
        why = "write a number and a unit" if not near else "an age is not negative" if near[1] == "-" else \
            "no unit (s, m, h, d or w)" if not near[4] else \
            f"{near[4]!r} is no unit (s, m, h, d or w)" if near[4] not in UNITS else \
            f"write it as {near[2]}{near[4]}"
        raise UsageError(f"{flag} {text!r}: {why}", hint="e.g. 30d, 12h, 90m, 2w")
    return float(m[1]) * UNITS[m[2]]


def find(cache, runs_dir, older_than=None, now=None):
    """What gc would remove now: [Item]. Cache entries only with older_than (seconds unused)."""
    now = time.time() if now is None else now
    age = DEFAULT_AGE if older_than is None else older_than
    items, building = [], set()   # building: entries with a build folder, whose lock goes with it, not alone
    tmp = os.path.join(cache.root, ".tmp")
    for name in _names(tmp):
        if TEMP.fullmatch(name):
            kind = "killed import" if name.startswith("import-") else "interrupted removal"
            item = (kind, os.path.join(tmp, name), cache.lock_path(f"tmp/{name}.lock"), True)
        elif build := BUILD.fullmatch(name):   # <entry>.<pid>: a build killed before it could publish
            building.add(build[1])
            # its lock goes with it when no entry was published under it (held while deleting: path_lock)
            item = ("build leftover", os.path.join(tmp, name), cache.lock_path(build[1] + ".lock"),
                    not os.path.lexists(os.path.join(cache.root, build[1])))
        else:
            continue
        # still there once its lock is free: a removal or import that ended meanwhile left nothing (it was said
        # to be an 'interrupted removal' of 0 B)
        if not _owned(item[2]) and os.path.lexists(item[1]):
            items.append(Item(*item[:3], unlink_lock=item[3]))
    locks = os.path.join(cache.root, ".locks", "tmp")
    for name in _names(locks):   # the owner died between deleting its folder and its lock
        lock = os.path.join(locks, name)
        if name.endswith(".lock") and TEMP.fullmatch(name[:-5]) and not os.path.lexists(os.path.join(tmp, name[:-5])) \
                and not _owned(lock):
            items.append(Item("stale lock", lock, lock, unlink_lock=True))
    for item in _aged("partial download", os.path.join(cache.root, ".partial"), age, now,
                      lambda name, path: PARTIAL.fullmatch(name)):
        # a .part is a live download's while its lock is held (the lock's mtime is when it was taken, hours ago
        # for a long download: gc removed it by age, and a second download appended to the same .part)
        if not item.path.endswith(".lock"):
            item.lock = item.path + ".lock"
            if _owned(item.lock):
                continue   # a live download's: it was listed as "would free", then "in use again since"
        elif os.path.lexists(item.path[:-5]) or _owned(item.path):
            continue   # goes with its .part, or held
        else:   # a finished download's lock: no partial download (a 0 B "partial download" of every fetch)
            item.kind, item.lock, item.unlink_lock = "download lock", item.path, True
        items.append(item)
    items += _aged("failed build log", os.path.join(cache.root, ".failed"), age, now,
                   lambda name, path: FAILED.fullmatch(name))
    items += _aged("run without a record", runs_dir, RECORDLESS_AGE, now,
                   # a folder named as mlrun names runs, never another file or folder kept there
                   lambda name, path: RUN_ID.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path)
                      and not os.path.exists(os.path.join(path, "run.json")))
    items += _aged("killed run import", runs_dir, RECORDLESS_AGE, now, lambda name, path: name.startswith(".import-"))
    items += _aged("interrupted run removal", runs_dir, RECORDLESS_AGE, now,
                   lambda name, path: re.fullmatch(rf"\.removing-{RUN_ID.pattern}\.\d+", name))
    # `runs`' memo being written when it was killed (written whole in well under a second)
    items += _aged("killed memo write", os.path.join(runs_dir, ".index"), RECORDLESS_AGE, now,
                   lambda name, path: re.fullmatch(r"rows-\d+\.json\.\d+\.tmp", name))
    for folder in (cache.root, runs_dir):
        items += _aged("sweep marker", folder, max(age, MARKER_AGE), now,
                       lambda name, path: SWEEP_MARKER.fullmatch(name))
    # a use file a killed mlrun was making (flock's no_use: made whole, then linked in)
    items += _aged("stale use file", os.path.join(cache.root, ".locks"), 3600, now,
                   lambda name, path: re.fullmatch(r".+\.use\.\d+\.new", name))
    for name in _names(os.path.join(cache.root, ".locks")):   # a failed or removed entry's: .locks/ only grew
        lock = os.path.join(cache.root, ".locks", name)
        if name.endswith(".use") and not os.path.lexists(os.path.join(cache.root, name[:-4])) and not _owned(lock):
            items.append(Item("stale use file", lock, lock, unlink_lock=True))
        # an entry's build lock once no entry and no build is there; unlinked under its lock, which builders
        # take by cache.path_lock (it tries again when the file it locked is no longer the path's)
        elif name.endswith(".lock") and re.fullmatch(ENTRY, name[:-5]) and name[:-5] not in building and \
                not os.path.lexists(os.path.join(cache.root, name[:-5])) and not _owned(lock):
            items.append(Item("stale build lock", lock, lock, unlink_lock=True))
    if older_than is not None:
        for meta in cache.entries():
            use = _use_lock(cache, meta["path"])
            if now - last_used(meta, use) >= older_than and not _owned(use):
                items.append(Item("unused entry", meta["path"], use, entry=True))
    return items


def remove(cache, items, older_than=None, now=None):
    """Remove each item whose lock gc can take now (an entry also only if still unused for older_than):
    returns (removed items, skipped items)."""
    removed, skipped = [], []
    for item in items:
        try:
            fd = flock(item.lock, wait=False, no_use=item.entry) if item.lock else None
        except OSError as e:   # a lock of a folder this user may not write in
            item.why = f"not removable by you: {e.strerror or e}"
            skipped.append(item)
            continue
        if item.lock and fd is None:
            item.why = "in use again since"   # an owner came back since gc looked
            skipped.append(item)
            continue
        try:
            meta = read_entry(item.path) if item.entry else None
            if item.entry and (meta is None or (time.time() if now is None else now) - last_used(meta, item.lock)
                               < older_than):
                item.why = "used since" if meta is not None else "removed meanwhile by another"
                skipped.append(item)   # used (or removed) since gc looked
                continue
            try:
                _delete(cache, item, meta)
            except MlrunError as e:   # a teammate's: the rest still goes (gc stopped at the first of them)
                item.why = e.message
                skipped.append(item)
                continue
            if os.path.lexists(item.path):   # a teammate's leftover under a umask that keeps the group out
                mine = os.lstat(item.path).st_uid == os.geteuid()   # else: immutable, held open on NFS, ...
                item.why = f"{'could not all be deleted' if mine else 'not removable by you'}: {what_stays(item.path)}"
            (skipped if os.path.lexists(item.path) else removed).append(item)
        finally:
            if fd is not None:
                os.close(fd)
    return removed, skipped


def _delete(cache, item, meta):
    try:
        if item.kind == "build leftover":   # its mlrun was killed, its step may run on: stopped first
            from . import guard
            from .cache import META_DIR
            guard.kill_recorded(os.path.join(item.path, META_DIR, guard.RECORD))
        if meta:
            cache.remove([meta])
            try:
                os.unlink(item.lock)   # under its lock: one waiting on it opens the path again (cache.flock)
            except OSError:
                pass   # the entry is gone, as said; its use file goes with the next gc
            cache.drop_build_lock(os.path.basename(item.path))
        elif item.path != item.lock:
            remove_tree(item.path)
        if item.unlink_lock:   # named after a temp folder that is gone: nobody takes it again
            os.unlink(item.lock)
    except OSError as e:
        raise MlrunError(f"cannot remove {item.path}: {e.strerror or e}",
                         hint="is it on a read-only file system, or owned by another user?") from None


def last_used(meta, use_lock):
    """When an entry was last used: its use file's mtime, else (no use noted: none, or time 0) when it was built."""
    try:
        used = os.stat(use_lock).st_mtime
    except OSError:
        used = 0
    return used or meta.get("finished") or 0


def tree_size(path):
    """Bytes of the files (and links) under path, or of path itself."""
    try:
        if not os.path.isdir(path) or os.path.islink(path):
            return os.lstat(path).st_size
    except OSError:
        return 0
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _use_lock(cache, entry_path):
    return cache.use_lock(os.path.basename(entry_path))


def _owned(lock):
    """Whether a live process holds this lock (an absent lock file: nobody does)."""
    if not os.path.exists(lock):
        return False
    held = lock_held(lock, exclusive=True)   # looking needs no write: a read-only cache's `gc --dry-run` failed
    if held is not None:                     # here ("Read-only file system")
        return held
    fd = flock(lock, wait=False)   # what it says (a link, a file this user may not read) is said there
    if fd is None:
        return True
    os.close(fd)
    return False


def _aged(kind, folder, age, now, wanted=lambda name, path: True):
    """Items for the wanted children of folder, each last changed (it or what it holds) age seconds ago or more."""
    out = []
    for name in _names(folder):
        path = os.path.join(folder, name)
        if not wanted(name, path):
            continue
        try:
            inside = os.listdir(path) if os.path.isdir(path) and not os.path.islink(path) else []
            changed = max([os.lstat(path).st_mtime] + [os.lstat(os.path.join(path, n)).st_mtime for n in inside])
        except OSError:
            continue
        if now - changed >= age:
            out.append(Item(kind, path))
    return out


def _names(folder):
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []

