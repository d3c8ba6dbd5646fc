"""The cache: one immutable folder per artifact, named `<recipe>-<key prefix>`.

An entry is built in `.tmp/`, then published by one atomic rename while its
per-entry lock is held, so readers never see a half-built entry and two
processes never build the same one. Each entry describes itself in
`.mlrun/entry.json`; any index can be rebuilt from those files alone.

A published entry is read-only and never changes: `files.json` holds the digest
of every file (metadata included, but the build log), `entry.json` a digest of
itself (`entry_digest`) and of files.json, and `stat.json` a stat signature that
every use compares cheaply (see engine/integrity.py).

Locks live in `.locks/`: `<entry>.lock` while an entry is built, `<entry>.use`
held shared by every mlrun whose plan uses the entry (its mtime: the last use),
`tmp/<name>.lock` held by the process that owns `.tmp/<name>`. `mlrun gc`
removes only what it can lock.
"""
import contextlib
import errno
import json
import os
import re
import threading
import time

from . import digests, integrity, secrets
from .errors import MlrunError, UnrecordableFileError, printable
from .shapes import mistyped

META_DIR = ".mlrun"
ENTRY_FILE = "entry.json"
ENTRY_NAME = r"[^/]+-[0-9a-f]{16}"   # an entry's folder: ResolvedNode.entry_name, <recipe>-<key[:16]>
FILES_FILE = "files.json"
ENTRY_FORMAT = 2   # 1: files.json skipped .mlrun/ and entry.json had no entry_digest
HIDDEN = (".tmp", ".locks", ".failed", ".index", ".partial")
# What files.json does not cover: the build log, and the files that hold the digests (protected another way).
UNDIGESTED = {f"{META_DIR}/build.log", f"{META_DIR}/{FILES_FILE}", f"{META_DIR}/{ENTRY_FILE}",
              f"{META_DIR}/{integrity.STAT_FILE}"}


class DamagedEntry(MlrunError):
    """A published entry changed since: refused, never reused."""


class Cache:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self._held = {}   # lock file path -> fd of the use and temp-folder locks this process holds
        self.resealed = 0   # entries the last reseal() recorded anew
        self.unreadable = []   # [(path, why)] the last verify() could not read

    # -- paths ---------------------------------------------------------------

    def path(self, node):
        return os.path.join(self.root, node.entry_name)

    def lookup(self, node):
        """The published entry's path, or None. A published entry is complete by construction;
        one changed since (its stat signature differs) raises DamagedEntry."""
        path = self.path(node)
        if not os.path.isfile(os.path.join(path, META_DIR, ENTRY_FILE)):
            if self.private(path):   # a teammate's entry made private: it was rebuilt, then failed "not permitted"
                raise private_entry(path)
            return None
        meta = read_entry(path)
        if meta is None:   # the key cannot be checked: it was used, while `cache verify` said it is not
            if self.private(path):
                raise private_entry(path)
            raise DamagedEntry(f"the cache entry {path} has a .mlrun/entry.json mlrun cannot read; it is not used",
                               hint=f"remove it with `{removal_command(path)}`; the next run rebuilds it")
        if meta["key"] != node.key:   # an entry copied or renamed onto this key's folder
            raise DamagedEntry(f"the cache entry {path} holds {filed_as(meta)}, not this key ({node.key[:16]}); "
                               "it is not used", hint=f"remove it with `{removal_command(path)}`; the next run rebuilds "
                               "it (copy or move entries whole, under their own names)")
        problems = integrity.stat_problems(path)
        if problems:   # --reseal is offered where a copy may be the cause: times changed, nothing added or gone
            copied = copy_damage_only([f"stat-damage: {p}" for p in problems])
            raise DamagedEntry(f"the cache entry {path} changed after it was published ({few(problems)}); "
                               "it is not used", hint=f"remove it with `{removal_command(path)}`; the next run rebuilds "
                               "it" + (" (a cache copied without its file times: `mlrun cache verify --reseal`)"
                                       if copied else ""))
        return path

    def lock(self, node):
        # Group-writable lock files: several users' processes may share one cache (e.g. on NFS).
        return path_lock(self.lock_path(node.entry_name + ".lock"))

    def lock_path(self, name):
        """The path of a lock file under .locks/ (its folder made, shared with the group, when missing)."""
        folder = os.path.dirname(os.path.join(self.root, ".locks", name))
        shared_dir(folder, top=self.root, said=True)   # and each missing folder above it: .locks/, the cache folder
        return os.path.join(self.root, ".locks", name)

    def drop_build_lock(self, entry_name):
        """Unlink a removed entry's build lock unless a builder holds it (.locks/ only grew): under the lock,
        which builders take by path_lock."""
        path = os.path.join(self.root, ".locks", entry_name + ".lock")
        try:
            fd = flock(path, wait=False) if os.path.lexists(path) else None
        except OSError:
            return   # not this user's to take: gc names it later
        if fd is not None:
            try:
                if not os.path.lexists(os.path.join(self.root, entry_name)):
                    os.unlink(path)
            except OSError:
                pass
            finally:
                os.close(fd)

    def use_lock(self, entry_name):
        """The lock a running mlrun holds (shared) on an entry it uses; gc and rm take it exclusive."""
        return self.lock_path(entry_name + ".use")

    def use(self, node):
        """Hold the entry's use lock (shared) until release_uses, and note now as its last use.

        Take it before looking the entry up: `mlrun gc` removes an entry only under this lock, exclusive."""
        self.use_entry(node.entry_name)

    def use_entry(self, entry_name, touch=True):
        """use() by the entry's name (an export reading it: `rm` removed it under the export); touch: note now as
        its last use (an export is none: gc's age of an old entry stays)."""
        try:
            path = self.use_lock(entry_name)
            if path in self._held:
                return
            fd = flock(path, shared=True, no_use=not touch)
        except OSError:
            return   # a cache this user may only read: using it must still work (unprotected from gc)
        try:
            if touch:
                os.utime(fd)   # the last-used time, kept outside the read-only entry
        except OSError:
            pass   # another user's use file: their lock still protects the entry
        self._held[path] = fd

    def release_uses(self):
        for path in [p for p in self._held if p.endswith(".use")]:
            os.close(self._held.pop(path))

    def new_temp_dir(self, prefix, create=True):
        """A fresh path .tmp/<prefix><pid>-<random> owned (locked) by this process until drop_temp;
        `mlrun gc` removes it only once nobody holds that lock (a killed import, a killed removal)."""
        tmp_root = os.path.join(self.root, ".tmp")
        shared_dir(tmp_root, top=self.root, said=True)
        name = f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"
        lock = self.lock_path(f"tmp/{name}.lock")
        self._held[lock] = flock(lock)   # before the folder exists: gc never sees it unowned
        path = os.path.join(tmp_root, name)
        if create:
            try:
                os.makedirs(path)
            except OSError:   # (a full disk): its lock, held and made for nothing, goes too
                os.unlink(lock)
                os.close(self._held.pop(lock))
                raise
        return path

    def drop_temp(self, path):
        """Delete a folder made by new_temp_dir, then give up its lock."""
        remove_tree(path)
        lock = self.lock_path(f"tmp/{os.path.basename(path)}.lock")
        os.unlink(lock)   # still held: nobody else can be waiting for a name that only this process made
        os.close(self._held.pop(lock))

    def partial_dir(self):
        """Where unfinished downloads are kept, by checksum, so the next run resumes them."""
        path = os.path.join(self.root, ".partial")
        shared_dir(path, top=self.root)
        return path

    # -- building --------------------------------------------------------------

    def new_build_dir(self, node):
        """A fresh temporary folder for a build; call with the entry's lock held."""
        from . import guard
        tmp_root = os.path.join(self.root, ".tmp")
        shared_dir(tmp_root, top=self.root, said=True)
        # Leftovers of a killed build of this entry: no mlrun owns them while we hold the lock, but its
        # step may still run (guard killed too), so that is killed first. The log goes where `mlrun show
        # failed` looks, the rest is deleted.
        for name in os.listdir(tmp_root):
            if name.startswith(node.entry_name + "."):
                leftover = os.path.join(tmp_root, name)
                try:
                    guard.kill_recorded(os.path.join(leftover, META_DIR, guard.RECORD))
                    self.keep_failed(leftover, node, why="killed")
                except OSError:
                    # a teammate's killed build, made under a umask that keeps the group out: this build, in a
                    # folder of its own name, needs nothing of it (every build of the entry failed "cannot use
                    # build.log: Permission denied"); its owner's `mlrun gc` removes it
                    continue
        path = os.path.join(tmp_root, f"{node.entry_name}.{os.getpid()}")
        os.makedirs(os.path.join(path, META_DIR))
        for folder in (path, os.path.join(path, META_DIR)):   # a teammate can set its log aside if it is killed
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o2775)
        return path

    def being_built(self, node):
        """True while another process holds node's build lock (a build; an rm or import, briefly). A shared lock
        tried without waiting and let go at once: `plan` makes no lock file and holds none."""
        return bool(lock_held(os.path.join(self.root, ".locks", node.entry_name + ".lock")))

    def builder(self, node):
        """' (pid N, since HH:MM:SS; its log: PATH)' of the process building node's entry now, from its build folder
        (.tmp/ENTRY.PID); '' when none is (a removal or an import holds the lock, briefly)."""
        tmp_root = os.path.join(self.root, ".tmp")
        try:
            names = [n for n in os.listdir(tmp_root) if re.fullmatch(re.escape(node.entry_name) + r"\.\d+", n)]
            folder = os.path.join(tmp_root, max(names, key=lambda n: os.path.getmtime(os.path.join(tmp_root, n))))
            since = time.strftime("%H:%M:%S", time.localtime(os.path.getmtime(folder)))
        except (OSError, ValueError):
            return ""
        return f" (pid {folder.rsplit('.', 1)[1]}, since {since}; its log: {os.path.join(folder, META_DIR, 'build.log')})"

    def publish(self, build_dir, node, meta):
        """Record what the build produced, seal it read-only, then rename it into place (atomic on one
        file system); call with the entry's lock held."""
        files = digests.tree_digests(build_dir, skip=UNDIGESTED)
        content = [rel for rel in files if not rel.startswith(META_DIR + "/")]
        size = sum(os.lstat(os.path.join(build_dir, rel)).st_size for rel in content)
        meta = dict(secrets.scrub(meta), format=ENTRY_FORMAT, files=len(content), size=size,
                    files_digest=digests.summary(files))   # scrubbed as write_json writes it: the digest holds
        meta["entry_digest"] = entry_digest(meta)
        write_json(os.path.join(build_dir, META_DIR, FILES_FILE), files, sort_keys=True)
        write_json(os.path.join(build_dir, META_DIR, ENTRY_FILE), meta, sort_keys=True)
        final = self.path(node)
        self.place(build_dir, final)
        return final

    def place(self, staged, final):
        """Seal a finished entry read-only and rename it to final; call with the entry's lock held."""
        integrity.seal(staged)
        if os.path.lexists(final):   # only a damaged leftover can stand there (no readable entry.json)
            self._discard(final)
        os.rename(staged, final)
        integrity.read_only(final)

    def _discard(self, path):
        """Rename path out of sight (never seen half-deleted), then delete it."""
        doomed = self.new_temp_dir(f"rm-{os.path.basename(path)}.", create=False)
        try:
            integrity.writable(path)   # moving a folder to another parent needs its write bit
            os.rename(path, doomed)
        finally:
            self.drop_temp(doomed)
        return doomed

    def keep_failed(self, build_dir, node, why="failed"):
        """Move a failed build's log and metadata aside (nothing is published) and return the log path."""
        import shutil
        if not os.path.isdir(os.path.join(build_dir, META_DIR)):
            remove_tree(build_dir)
            return None
        stamp = time.strftime('%Y%m%d-%H%M%S') + (f"-{why}" if why != "failed" else "")  # show failed tells them apart
        failed = base = os.path.join(self.root, ".failed", f"{node.entry_name}-{stamp}")
        n = 1
        while os.path.exists(failed):  # failed again within the same second: never move into the older one
            failed, n = f"{base}-{n}", n + 1
        shared_dir(os.path.dirname(failed), top=self.root)   # the group's, as .tmp/ is: a teammate's failed logs were lost
        for folder in (build_dir, os.path.join(build_dir, META_DIR)):   # a step may have made them read-only
            integrity.writable(folder)
        shutil.move(os.path.join(build_dir, META_DIR), failed)
        remove_tree(build_dir)
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

    def strays(self):
        """Folders of the cache that are no entry (their .mlrun/entry.json missing or unreadable), sorted;
        a build in progress or a removal is under .tmp/, never here."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.root, n) for n in names if not n.startswith(".")
                      and os.path.isdir(os.path.join(self.root, n)) and read_entry(os.path.join(self.root, n)) is None)

    @staticmethod
    def private(path):
        """A folder of the cache this user may not enter or read (a teammate's, made private, or its entry.json):
        not damaged."""
        meta = os.path.join(path, META_DIR, ENTRY_FILE)   # (a link to nothing there is damage, not privacy)
        return os.path.isdir(path) and (not os.access(path, os.R_OK | os.X_OK) or
                                        os.path.exists(meta) and not os.access(meta, os.R_OK))

    @staticmethod
    def is_damaged(path):
        """A folder named as an entry whose entry.json is missing or unreadable: an entry gone bad (removable by
        `mlrun rm cache PATH`; the next build of it replaces one whose entry.json is gone, a run refuses one whose
        entry.json is unreadable), unlike any other folder."""
        return bool(re.fullmatch(ENTRY_NAME, os.path.basename(path))) and os.path.isdir(path) \
            and read_entry(path) is None and not Cache.private(path)

    def failed_logs(self):
        folder = os.path.join(self.root, ".failed")
        if not os.path.isdir(folder):
            return []
        def when(log):   # a kept folder without its log (a full disk as it was kept): the folder's time
            try:
                return os.path.getmtime(log if os.path.exists(log) else os.path.dirname(log))
            except OSError:
                return 0   # removed meanwhile
        return sorted((os.path.join(folder, n, "build.log") for n in os.listdir(folder)), key=when)

    def remove_failed(self, logs):
        """Delete the folders of failed_logs(); those it could not (a teammate's) are named, the rest go."""
        for log in logs:
            remove_tree(os.path.dirname(log))
        left = [os.path.dirname(log) for log in logs if os.path.lexists(os.path.dirname(log))]
        if left:   # rmtree ignores errors: it said "removed" of a teammate's folder the group may not write
            try:   # root, on a read-only file system, was told to ask the owner (root)
                read_only = bool(os.statvfs(left[0]).f_flag & os.ST_RDONLY)
            except OSError:
                read_only = False
            raise MlrunError(f"could not remove {few([f'{p} (owner: {owner(p)})' for p in left])}"
                             + (f"; the other {len(logs) - len(left)} removed" if len(left) < len(logs) else ""),
                             hint="the cache is on a read-only file system" if read_only else
                             "its owner (or root) can remove it")

    def verify(self, entries=None):
        """Re-hash each entry (files and metadata) and compare its stat signature:
        [(meta, [problems])] for the entries that do not match."""
        bad = []
        self.unreadable = []   # [(path, why)]: a teammate's files this user may not read, not checked
        for meta in entries if entries is not None else self.entries():
            try:
                _readable_throughout(meta["path"])   # the digests' walk passes over a folder it cannot list
                problems = entry_problems(meta["path"], meta)
                stat_damage = integrity.stat_problems(meta["path"])
            except PermissionError as e:   # the first such file ended the whole check
                self.unreadable.append((meta["path"], f"{e.strerror}: {e.filename} (owner: {owner(e.filename)})"))
                continue
            except UnrecordableFileError as e:   # a FIFO put in an entry ended the whole check, exit 2
                rel = os.path.relpath(str(e.path), meta["path"]) if isinstance(e.path, str) else str(e.path)
                bad.append((meta, [f"added: {printable(rel)} ({e.message.rsplit(': ', 1)[-1]})"]))
                continue
            except (MlrunError, FileNotFoundError):
                if not os.path.lexists(os.path.join(meta["path"], META_DIR, ENTRY_FILE)):
                    continue   # removed (mlrun rm, gc) while it was checked: nothing left to verify
                raise
            if problems and not os.path.lexists(os.path.join(meta["path"], META_DIR, ENTRY_FILE)):
                continue   # removed while it was walked: its files "missing", not damage
            if filed_as(meta) != os.path.basename(meta["path"]):   # runs would take it for another key's
                problems.insert(0, f"misfiled: its {ENTRY_FILE} belongs to the entry {filed_as(meta)}")
            flagged = {_subject(p) for p in problems}   # a changed file is not listed twice
            problems += [f"stat-damage: {p}" for p in stat_damage if _subject(p) not in flagged]
            if problems:
                bad.append((meta, problems))
        return bad

    def reseal(self, entries):
        """Record anew the stat signature of entries whose digests verified and whose stat did not
        (a copy that did not keep file times): [(meta, [problems])] of the others, left as they were."""
        left, self.resealed = [], 0
        for meta, problems in self.verify(entries):
            if copy_damage_only(problems):
                integrity.reseal(meta["path"])
                self.resealed += 1
            else:
                left.append((meta, problems))
        return left

    def removable(self, entries):
        """Refuse anything that is not a direct child entry of this cache, named as entries are (`rm cache PATH`
        takes the path's folder as the cache: a person's own copy of an entry, renamed, went)."""
        for meta in entries:  # check them all before deleting any
            path = os.path.realpath(meta["path"])
            if os.path.dirname(path) != os.path.realpath(self.root) or not re.fullmatch(
                    ENTRY_NAME, os.path.basename(path)) or (
                    read_entry(path) is None and not (meta.get("damaged") and self.is_damaged(path))):
                link = os.path.islink(meta["path"].rstrip(os.sep))
                raise MlrunError(f"refusing to delete {meta['path']}: it is " + (
                    f"a symbolic link to {path}, not an entry of the cache {self.root}" if link else
                    f"not an entry of the cache {self.root}"), hint=f"remove the link, not what it names: "
                    f"{removal_command(meta['path'])}" if link else "mlrun removes only the folders it made in a "
                    "cache (<recipe>-<16 hex digits>); remove another yourself")

    def remove(self, entries):
        """Delete entries (see removable)."""
        self.removable(entries)
        self._discard_all(entries)

    def _discard_all(self, entries):
        failed, errors = [], set()
        for meta in entries:   # all it can: `rm` stopped at a teammate's entry, saying nothing of those removed
            path = os.path.realpath(meta["path"])
            try:
                doomed = self._discard(path)
                if os.path.lexists(doomed):   # "removed", its bytes still there (chattr +i, NFS's .nfsXXXX files)
                    raise OSError(errno.ENOTEMPTY, f"it is out of the cache, but {what_stays(doomed)} could not be "
                                  "deleted: mlrun gc deletes it once that is fixed")
            except OSError as e:
                whose = f"owner: {owner(path)}: " if os.path.lexists(path) else ""
                failed.append(f"{os.path.basename(path)} ({whose}{e.strerror or e})")
                errors.add(e.errno)
        if failed:
            done = len(entries) - len(failed)
            # the hint for what happened: root was told to ask the builder on a read-only file system
            hint = "the cache is on a read-only file system" if errno.EROFS in errors else \
                "a sealed entry is removed by the user who built it (or root)" if errors & {errno.EPERM, errno.EACCES} \
                else None
            raise MlrunError(f"could not remove {few(failed)}" + (f"; the other {done} removed" if done else ""),
                             hint=hint)

    def remove_unused(self, entries):
        """remove(), refusing while a running mlrun uses any of them (holds its use lock): the run would end
        with a false "a step changed its dependency". Their use locks are held, exclusive, while they go."""
        held, busy = [], []
        self.removable(entries)   # before a use lock is made: no .locks/ in a folder that is no cache
        try:
            for meta in entries:
                use = self.use_lock(os.path.basename(meta["path"]))
                try:
                    fd = flock(use, wait=False, no_use=True)
                except OSError:
                    continue   # a lock this user cannot open: removing will say what it can do
                (held.append((fd, use)) if fd is not None else busy.append(os.path.basename(meta["path"])))
            if busy:
                raise MlrunError(f"{few(busy)} {'is' if len(busy) == 1 else 'are'} in use by a running mlrun; "
                                 "nothing was removed", hint=f"remove {'it' if len(busy) == 1 else 'them'} once "
                                 "that mlrun ends (a run: `mlrun runs` shows it; or an export, a sweep)")
            self._discard_all(entries)   # checked by removable() above
            for _, use in held:   # under their locks: one waiting on one opens the path again (flock)
                with contextlib.suppress(OSError):
                    os.unlink(use)
            for meta in entries:
                self.drop_build_lock(os.path.basename(meta["path"]))
        finally:
            for fd, _ in held:
                os.close(fd)


def copy_damage_only(problems):
    """Whether an entry's problems are only times and inodes changed (a copy that did not keep them), which
    `cache verify --reseal` records anew; a file or folder added or gone is no copy's doing."""
    return all(p.startswith("stat-damage: modified: ") and not p.endswith(" (its size)") for p in problems)


def _readable_throughout(path):
    """Raise PermissionError for the first folder of the entry this user cannot list (a teammate's chmod 700:
    the digests' walk passed over it, its files read "missing", and the stat check ended `cache verify`)."""
    def refused(error):
        if isinstance(error, PermissionError):
            raise error
    for _ in os.walk(path, onerror=refused):
        pass


def removal_command(path):
    """The command that removes the entry at path, whatever cache is configured; a link put in the cache in an
    entry's place: the link (rm cache refuses it, and would not remove what it names)."""
    import shlex
    if os.path.islink(path.rstrip(os.sep)):
        return f"rm {shlex.quote(path.rstrip(os.sep))}"
    return f"mlrun rm cache {shlex.quote(path)} -y"


def _subject(problem):
    """The path a problem line names ("changed: x/y (why)" -> "x/y")."""
    return problem.split(": ", 1)[-1].split(" (", 1)[0]


def few(problems, n=3):
    return ", ".join(problems[:n]) + (f" and {len(problems) - n} more" if len(problems) > n else "")


def filed_as(meta):
    """The folder name an entry's metadata gives it (ResolvedNode.entry_name): <recipe>-<key[:16]>."""
    return f"{meta.get('recipe')}-{str(meta.get('key'))[:16]}"


def entry_digest(meta):
    """sha256 of entry.json's canonical content, without `entry_digest` itself (and the `path` read_entry adds)."""
    import hashlib
    body = {k: v for k, v in meta.items() if k not in ("entry_digest", "path")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def entry_problems(path, meta=None):
    """The shared verification of an entry: how its files and metadata differ from its recorded digests
    (["changed: x", "missing: y", "added: z", "edited metadata: ..."]); [] when it matches.

    Old-format entries (no entry_digest) verify their files only: entry_meta_covered(meta) says which."""
    meta = read_entry(path) if meta is None else meta
    if meta is None:
        return [f"edited metadata: {META_DIR}/{ENTRY_FILE} is missing or unreadable"]
    recorded = recorded_files(path)
    if recorded is None:
        return [f"edited metadata: {META_DIR}/{FILES_FILE} is missing or unreadable"]
    problems = []
    if entry_meta_covered(meta) and meta["entry_digest"] != entry_digest(meta):
        problems.append(f"edited metadata: {META_DIR}/{ENTRY_FILE} (its entry_digest does not match)")
    if digests.summary(recorded) != meta.get("files_digest"):
        problems.append(f"edited metadata: {META_DIR}/{FILES_FILE} (the files_digest of {ENTRY_FILE} does not match)")
    skip = UNDIGESTED if entry_meta_covered(meta) else {META_DIR}
    return problems + file_problems(path, recorded, skip)


def entry_meta_covered(meta):
    """Whether the entry's digests cover its metadata (entries of format 1 cover only their files)."""
    return "entry_digest" in meta


def recorded_files(path):
    """An entry's files.json ({relative path: digest}), or None when it is missing or unreadable."""
    try:
        with open(os.path.join(path, META_DIR, FILES_FILE)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def file_problems(path, recorded, skip=UNDIGESTED):
    """How an entry's files differ from what it recorded: ["changed: x", "missing: y", "added: z"]
    (a changed file of .mlrun/ reads "edited metadata: .mlrun/x")."""
    specials = []   # a FIFO (socket, device) is said as such, and the check goes on: it hid the entry's other problems
    actual = digests.tree_digests(path, skip=skip, specials=specials)
    kinds = {rel: e.message.rsplit(": ", 1)[-1] for rel, e in specials}
    problems = [f"{'edited metadata' if rel.startswith(META_DIR + '/') else 'changed'}: {rel}"
                + (f" ({kinds[rel]})" if rel in kinds else "")
                for rel in sorted(recorded) if rel in kinds or rel in actual and actual[rel] != recorded[rel]]
    problems += [f"missing: {rel}" for rel in sorted(set(recorded) - set(actual) - set(kinds))]
    problems += [f"added: {rel}" + (f" ({kinds[rel]})" if rel in kinds else "")
                 for rel in sorted((set(actual) | set(kinds)) - set(recorded))]
    return problems


def private_entry(path):
    """The error for a teammate's entry this user may not read (its folder, or its entry.json), naming the owner."""
    meta = os.path.join(path, META_DIR, ENTRY_FILE)
    whose = meta if os.access(path, os.R_OK | os.X_OK) else path
    return MlrunError(f"the cache entry {path} is not readable by you (owner: {owner(whose)})",
                      hint="its owner can make it readable to the group (chmod -R g+rX), or remove it")


def what_stays(path):
    """The first thing under a folder that could not be deleted, with its owner: "a teammate's", "immutable" or
    "held open on NFS" were guesses."""
    deepest = path
    for folder, dirs, files in os.walk(path):
        deepest = os.path.join(folder, (files or dirs or [""])[0]).rstrip(os.sep)
        if files:
            break
    return f"{deepest} (owner: {owner(deepest)})"


def owner(path):
    """The user name that owns path (its uid when the name is unknown here)."""
    import pwd
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def shared_dir(path, top=None, said=False):
    """A cache folder other users of the group can also create files in; so is each missing folder above it that
    this makes up to `top`, mlrun's own place it lies in (cache/ made by its .index/ first kept the umask's mode: a
    teammate's build could not be renamed in). Folders above `top` are the user's: `--cache ~/new/cache` opened
    ~/new to the group. said: a file where the folder goes is an error that says so (the cache's own folders;
    a memo's folder is skipped quietly by its caller's OSError)."""
    if os.path.isdir(path):
        return
    path = os.path.abspath(path)
    # a file or a dangling link where it goes ("cannot use .locks: File exists"); isdir again: a step built alongside
    # may have made the folder since the first look (it was said to be "a file")
    if said and os.path.lexists(path) and not os.path.isdir(path):
        what = "a link to nothing" if os.path.islink(path) else "a file"
        raise MlrunError(f"{path} is {what}, not the folder mlrun keeps there",
                         hint=f"move it away (mv {path} {path}.old) and run again")
    top = os.path.abspath(top or path)
    made, up = [], path
    while not os.path.exists(up) and (up == top or up.startswith(top.rstrip(os.sep) + os.sep)):
        made.append(up)
        up = os.path.dirname(up)
    os.makedirs(path, exist_ok=True)
    for folder in made:
        try:
            os.chmod(folder, 0o2775)
        except OSError:
            pass


def group_readable(root):
    """Let the group read every file of an entry (and enter its folders), whatever the builder's umask."""
    integrity.set_modes(root)


def remove_tree(path):
    """Delete a folder mlrun made (an entry, a build, a temp folder), read-only parts included."""
    import shutil
    if not os.path.isdir(path) or os.path.islink(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    integrity.thaw(path)
    shutil.rmtree(path, ignore_errors=True)


class path_lock:
    """An exclusive lock of the file at path (made group-writable), for builds and downloads: `with`, or
    acquire(timeout=) and release(). flock() below takes it, so once held it is of the file the path names
    (gc unlinks a build lock nobody holds, under its lock; one who opened the path just before then locked a file
    nobody sees while the next builder locked the new one). Not filelock's FileLock: its import (asyncio's) was
    40 ms of every mlrun that builds, and checking which file it held reached into its private fields."""

    def __init__(self, path):
        self.path, self.fd = path, None

    def acquire(self, timeout=None):
        """True once held: at once, or within timeout seconds (None: however long it takes), else False."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.fd = flock(self.path, wait=deadline is None)
            if self.fd is not None or time.monotonic() >= deadline:
                return self.fd is not None
            time.sleep(0.05)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def flock(path, shared=False, wait=True, no_use=False):
    """An fd holding a flock on path (created group-writable), or None when wait is False and it is taken.
    no_use: a use file this makes says no use (time 0): gc and export take the lock, and gc read the time they
    made as the entry's last use ("used since", skipped, its age reset).

    The lock is of the file the path names once it is held: gc and rm unlink the use file of an entry they
    removed, under its lock; one who opened it before then locks a file nobody will see, and opens the path again.
    flock, unlike pids, works for processes of several users and hosts (NFS maps it to byte-range locks)."""
    while True:
        fd = _flock_once(path, shared, wait, no_use)
        if fd is None:
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def lock_held(path, exclusive=False):
    """Whether another process holds a lock on path that a shared (exclusive: any) lock, tried without waiting,
    meets; None where the file cannot be opened for reading (none there, a link, another user's). Read-only: it
    makes no file and changes none (`plan`, and `gc --dry-run` on a read-only cache, only look)."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)   # the lock, if taken, goes with it


def _flock_once(path, shared, wait, no_use):
    import fcntl
    if no_use and not os.path.lexists(path):
        # made whole under another name, then linked in: a run's use between a create and a utime lost its time
        made = f"{path}.{os.getpid()}.new"
        try:
            os.close(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664))   # EXCL: follows no link
            os.utime(made, (0, 0))
            os.link(made, path)
        except OSError:
            pass   # there already (its time is a use's), or not ours to make: the open below says which
        finally:
            with contextlib.suppress(OSError):
                os.unlink(made)
    # .locks/ is the group's to write: a link a teammate put there must not make this user create, chmod or
    # touch the file it names (O_NOFOLLOW; the link is refused, never followed)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o664)
        except PermissionError as denied:   # another user's lock file the group may not write: flock needs no write
            if not os.path.lexists(path):
                raise denied from None   # no lock to read: this folder is not writable ("No such file" said otherwise)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MlrunError(f"{path} is a symbolic link, not a lock file: mlrun follows no link in the cache's "
                             ".locks/ (one there may be another user's, naming a file of yours)",
                             hint=f"remove it (rm {path}) and run again") from None
        raise
    try:
        if os.fstat(fd).st_mode & 0o664 != 0o664:   # the umask took the group's write bit
            try:
                os.fchmod(fd, 0o664)
            except OSError:
                pass   # another user's file: they gave it its mode
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_entry(path):
    """entry.json's content with `path`, or None: missing, unreadable, or not what mlrun writes there
    (an object whose key, recipe and finished time have their types)."""
    try:
        with open(os.path.join(path, META_DIR, ENTRY_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and isinstance(meta.get("key"), str) and isinstance(meta.get("recipe"), str)
            and isinstance(meta.get("finished"), (int, float))):
        return None
    if mistyped(meta, ENTRY_SHAPE):   # `show cache` said "unexpected TypeError ... a bug"
        return None
    meta["path"] = path
    return meta


# The other fields the readers (show cache, rm cache, explain, gc) take as they come
ENTRY_SHAPE = {"tags": list, "variations": list, "inputs": dict, "node": dict, "exports": dict, "env": dict,
               "material": dict, "version": str, "size": int, "files": int, "seconds": (int, float),
               "started": (int, float), "entry_digest": str, "files_digest": str}


def write_json(path, value, sort_keys=False):
    """Readable JSON, written to a temporary file then renamed: a reader never sees half of it; no secret in it."""
    # its own: two mlruns (or two threads of a sweep) writing one shared file renamed each other's half
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(secrets.scrub(value), f, indent=1, sort_keys=sort_keys, default=str)
            f.write("\n")
    except OSError as e:
        e.filename = e.filename or tmp  # a failed write names no file (a full disk): say which
        with contextlib.suppress(OSError):   # no half-written leftover beside the file
            os.remove(tmp)
        raise
    os.replace(tmp, path)
