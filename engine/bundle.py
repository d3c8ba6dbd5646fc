"""Share a run: export its folder (and the cache entries it used) as one .tar.gz; import it elsewhere.

An import trusts nothing in the archive: it reads the stream once, and every
member is inspected before it is extracted, into a staging folder of the cache's
own (removed when anything is refused); every bundled entry is re-hashed against
its own files.json, and the signature checked, before anything is published, and
entries are published the way builds are (atomic rename under the entry lock),
never over an existing one.

Layout of a bundle: `run/<id>/...` (the whole run folder) and, optionally,
`cache/<recipe>-<key16>/...` (whole cache entries, .mlrun/ included). A signed
bundle ends with one more member, SIGNATURE: an SSH signature (engine.signing) of
the sha256 of the uncompressed tar stream before it, so it covers every member's
header and bytes, and travels inside the one bundle file. It is checked before
anything is published.
"""
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import tarfile
import time
import types
import zlib

from . import integrity, keys, secrets, signing
from .cache import (ENTRY_FILE, ENTRY_NAME, META_DIR, entry_problems, few, filed_as, group_readable, read_entry,
                    removal_command, shared_dir, write_json)
from .errors import MlrunError, UsageError, printable
from .gc import RUN_ID, tree_size
from .records import check_shape, status
from .words import size_words

RUN_DIR, CACHE_DIR = "run", "cache"
REUSED = ("cached", "built")   # statuses of the steps whose folder is a cache entry
SIGNATURE = "mlrun-signature.sig"   # the last member of a signed bundle
TAMPERED = "the bundle was not made by `mlrun export`, or was changed since; nothing was imported"


# -- export --------------------------------------------------------------------------------------


def export_run(run_dir, cache, out_path, with_cache=False, sign=None):
    """Write run_dir (and, with_cache, the entries its steps used) to the .tar.gz out_path, signed with
    the SSH key sign when given."""
    run_dir, out_path = os.path.realpath(run_dir), os.path.realpath(out_path)   # runs/latest may be a link
    record = _read_record(run_dir)
    now = status(record)
    if now == "running":   # its steps not recorded yet: imported, it read as died, every step "not run"
        raise MlrunError(f"run {record['id']} is still running: its record is not written until it ends",
                         hint="export it once it has ended (mlrun runs shows its status)")
    if now == "running?":   # another host's run in a shared runs folder: this one cannot tell live from died
        host = (record.get("process") or {}).get("host") or record.get("host") or "the host that ran it"
        raise MlrunError(f"run {record['id']} may still be running on {host}: its record is not written until it "
                         "ends, and only that host can tell whether its mlrun is alive",
                         hint=f"export it on {host} (a run that died exports there, shown as died), or once "
                              "`mlrun runs` there shows it ended")
    try:
        return _export(record, run_dir, cache, out_path, with_cache, sign)
    finally:
        cache.release_uses()


def _export(record, run_dir, cache, out_path, with_cache, sign):
    run_id = record["id"]
    entries = _used_entries(record, cache) if with_cache else []
    for folder, what in ((run_dir, "the run folder it exports"), (os.path.realpath(cache.root), "the cache")):
        if _inside(out_path, folder):   # in the cache it lands in an entry (damaged: runs refuse it) or its .tmp
            raise MlrunError(f"cannot write the bundle {out_path} inside {what}",
                             hint="write it somewhere else, e.g. the current folder")
    if os.path.exists(out_path) and not os.path.isfile(out_path):   # os.replace would swap /dev/null for a file
        raise UsageError(f"cannot write the bundle to {out_path}: it exists and is not a file",
                         hint="give a file name for the .tar.gz, e.g. -o run.tar.gz")
    if sign:
        signing.require(key=sign)
    _drop_killed_parts(out_path)
    # a killed export never leaves a truncated bundle behind; named by where its pid means something (another
    # host or container writing the same folder over NFS had its live export's part removed)
    part = f"{out_path}.{_where()}-{os.getpid()}.part"
    try:
        # Level 1: a run's 500 MB of entries (venvs, LoadGen, features) packed in 11 s to 136 MB, against 24 s and
        # 119 MB at zlib's default 6 (and 45 s at Python's 9): faster end to end on any link over about 10 Mbit/s.
        # ISA-L's level 1 packs no larger than zlib's, 11x as fast (_gzip).
        with open(part, "wb") as raw, _gzip().write(raw) as gz:
            stream = _Hashing(gz, hashing=bool(sign))
            logs = _kept_logs(record, run_dir, cache)
            trees = [run_dir] + [log for _, log in logs] + [os.path.join(cache.root, name) for name in entries]
            with tarfile.open(fileobj=stream, mode="w") as tar:
                # gone before ssh-keygen asks for a passphrase
                with _Bar(f"packing {os.path.basename(out_path)}", lambda: sum(map(tree_size, trees))) as bar:
                    size = _add_tree(tar, run_dir, f"{RUN_DIR}/{run_id}", f"run {run_id}", bar=bar)
                    for label, log in logs:   # a teammate auditing it got one line
                        size += _add_tree(tar, log, f"{RUN_DIR}/{run_id}/{FAILED_LOGS}/{label}", f"run {run_id}",
                                          bar=bar)
                    for name in entries:
                        size += _add_tree(tar, os.path.join(cache.root, name), f"{CACHE_DIR}/{name}",
                                          f"the cache entry {name}", bar=bar)
                if sign:
                    signature = signing.sign(_signed_message(stream.sha256.hexdigest()), sign)
                    info = tarfile.TarInfo(SIGNATURE)
                    info.size, info.mode, info.mtime = len(signature), 0o644, int(time.time())
                    tar.addfile(info, io.BytesIO(signature))
        replaced = os.path.isfile(out_path)
        os.replace(part, out_path)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return {"run_id": run_id, "path": out_path, "entries": entries, "bytes": size, "status": status(record),
            "archive_bytes": os.path.getsize(out_path), "replaced": replaced}


FAILED_LOGS = "failed-logs"   # in a bundle's run folder: the logs of its failed cached steps, kept in the cache


def _kept_logs(record, run_dir, cache):
    """[(step label, its log)] of the run's failed steps whose log the cache keeps (.failed/), not its own folder:
    its failed step's, and those of steps built alongside that failed as it ended (failed_meanwhile)."""
    out = []
    for step in (record.get("steps") or []) + (record.get("failed_meanwhile") or []):
        log = step.get("log") if isinstance(step, dict) else None
        if isinstance(log, str) and os.path.isfile(log) and not _inside(os.path.realpath(log), run_dir) \
                and _inside(os.path.realpath(log), os.path.realpath(cache.root)) \
                and not os.path.exists(os.path.join(run_dir, FAILED_LOGS)):
            out.append((failed_log_name(step.get("label")), log))
    return out


def failed_log_name(label):
    """The file name, in a bundle's failed-logs/, of the log of a failed step so labelled."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label or "step")) + ".log"


def _where():
    """This process's host, boot and pid namespace, as a short word: a pid means something there only."""
    from .guard import machine
    here = machine()
    return hashlib.sha256(f"{here['host']} {here['boot']} {here['pid_ns']}".encode()).hexdigest()[:8]


def _drop_killed_parts(out_path):
    """The .part files of exports to out_path, made here, whose process is gone (SIGKILL: no cleanup ran); hundreds
    of MB each. Another machine's or container's are left alone: its pid says nothing here."""
    folder, base = os.path.split(out_path)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(base) + r"\.([0-9a-f]{8})-(\d+)\.part", name)
        if not m or m.group(1) != _where():
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue   # its export is running
        except (ProcessLookupError, OverflowError):
            pass
        except OSError:
            continue   # another user's: alive
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass


def _read_record(run_dir):
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise MlrunError(f"{run_dir} is not a run folder: it has no run.json",
                         hint="runs live in runs/<id>/ (or $MLRUN_RUNS); pass one of those folders") from None
    except (OSError, ValueError) as e:   # as the other verbs say it (was "not a run folder", in a run folder)
        raise MlrunError(f"cannot read run record {path}: {e}") from None
    if isinstance(record, dict) and "steps" in record:   # what is wrong, as `runs show` says it ("its steps is str")
        check_shape(record, path)
    if not isinstance(record, dict) or not _plain_name(record.get("id")) or not isinstance(record.get("steps"), list):
        raise MlrunError(f"{run_dir}/run.json is not an mlrun run record (no valid run id or steps)",
                         hint="is it a run record written by mlrun? (`mlrun runs show` reads it)")
    return record


def _used_entries(record, cache):
    """Sorted names of the entries the run's cached and built steps used; each must be in cache."""
    names = set()
    for name, step in _step_entries(record):
        if name:   # held until the bundle is written: rm and gc leave it (an entry removed under it failed the export)
            cache.use_entry(name, touch=False)
        path = os.path.join(cache.root, name)
        meta = read_entry(path) if name else None   # read once: the checks below and the build it is
        used = os.path.dirname(step["path"]) if isinstance(step.get("path"), str) else None
        if used and os.path.realpath(used) != os.path.realpath(cache.root) and os.path.isdir(step["path"]) and (
                meta is None or step.get("entry_digest") and meta.get("entry_digest") != step["entry_digest"]):
            # exported with another cache than the run's, which is here (--cache given to the run only): "was rebuilt
            # after run ... used it" and a hint to export without the entries, where this cache's were never the run's
            raise MlrunError(f"run {record['id']} used the cache {used}, not {cache.root}: its entry {name} "
                             f"of step {step.get('label')} is " + ("not" if meta is None else "another build")
                             + " here", hint=f"export with that cache: mlrun --cache {shlex.quote(used)} export "
                             f"{record['id']} -o FILE --with-cache")
        if meta is None:
            raise MlrunError(f"the cache entry {name or '?'} of step {step.get('label')} of run {record['id']} "
                             f"is not in the cache {cache.root}",
                             hint="it was removed since (mlrun rm cache), or the run used another cache: "
                                  "pass that one with --cache, or export without the cache entries")
        # its stat signature, then its content (bit rot keeps size and time): import refused a damaged entry
        # with "the bundle was not made by mlrun export, or was changed since"
        damage = integrity.stat_problems(path) or entry_problems(path, meta)
        if damage:
            raise MlrunError(f"the cache entry {name} of step {step.get('label')} changed after it was published "
                             f"({few(damage)}): its receiver would refuse the bundle",
                             hint=f"`{removal_command(path)}` and a rerun rebuild it; "
                                  "`mlrun cache verify` checks the other entries")
        built = step.get("entry_digest")
        if built and meta.get("entry_digest") != built:
            raise MlrunError(f"the cache entry {name} of step {step.get('label')} was rebuilt after run "
                             f"{record['id']} used it: the bundle would carry another build than the run's",
                             hint="export without --with-cache (the receiver builds the entry from the recipes the "
                                  "bundle carries), or rerun and export the new run")
        names.add(name)
    return sorted(names)


def _gzip(isal=True):
    """How bundles are packed and read: ISA-L's gzip (python-isal, in requirements.txt) where it is installed,
    compressing on threads of its own and decompressing on one beside tarfile's work, else Python's gzip inline.
    The same format either way, each reads the other's. On the README run's bundle (533 MB), this EPYC: ISA-L
    packed its stream 11x as fast as zlib at level 1 (600 MB of it in 1.4 s against 15.9 s, the same size), and
    its threads took export 9.1-9.5 -> 6.6-7.0 s, import 14.2-15.2 -> 11.4-13.8 s."""
    if isal:
        try:
            from isal import igzip_threaded, isal_zlib
        except ImportError:
            pass
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = min(8, cores)   # past that, building the tar is the bottleneck
            return types.SimpleNamespace(
                name="isal", errors=(OSError, EOFError, zlib.error, isal_zlib.error),
                write=lambda raw: _Abandoned(igzip_threaded.open(raw, "wb", compresslevel=1, threads=threads)),
                read=lambda raw: igzip_threaded.open(raw, "rb", threads=1))
    return types.SimpleNamespace(
        name="gzip", errors=(OSError, EOFError, zlib.error),
        write=lambda raw: gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1),
        read=lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"))


class _Abandoned:
    """ISA-L's threaded writer in a `with`: an export stopped or failed stops its threads without finishing the
    stream (its file is removed). Its own close() finishes every queued block first, and a Ctrl-C in that wait left
    a compressing thread blocked for ever on a full queue whose reader had returned (python-isal 1.9.1's stop()
    skips a full queue's sentinel, then joins that thread): the export hung."""

    def __init__(self, gz):
        self.gz = gz

    def __enter__(self):
        return self.gz

    def __exit__(self, kind, *_):
        if kind is None:
            try:
                self.gz.flush()   # the wait for the queued blocks, where a Ctrl-C lands
            except BaseException:
                _abandon(self.gz)
                raise
            self.gz.close()
        else:
            _abandon(self.gz)


def _abandon(gz):
    """Stop a threaded ISA-L writer's threads now, its queued blocks dropped (taken off the queues, so none waits
    on a full one); a version without those parts is closed as usual."""
    import contextlib
    import queue
    inner = getattr(gz, "raw", gz)
    parts = ("running", "input_queues", "output_queues", "compression_workers", "output_worker", "_closed")
    if not all(hasattr(inner, part) for part in parts):
        gz.close()
        return
    inner.running = False
    threads = [*inner.compression_workers, inner.output_worker]
    while any(thread.is_alive() for thread in threads):
        for pending in inner.input_queues + inner.output_queues:
            with contextlib.suppress(queue.Empty):
                while True:
                    pending.get_nowait()
        for thread in threads:
            thread.join(0.01)
    inner._closed = True   # its close() would wait on blocks taken away
    with contextlib.suppress(ValueError, OSError):
        gz.close()   # the buffer above it, which writes to the closed writer


class _Hashing:
    """A write-only file passing what it gets on to f, hashing it when it is to be signed: the uncompressed tar
    stream (1.3 s of a BERT bundle's export, for nothing when it is not signed)."""

    def __init__(self, f, hashing=True):
        self.f, self.sha256, self.size, self.hashing = f, hashlib.sha256(), 0, hashing

    def write(self, data):
        if self.hashing:
            self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self):
        return self.size


def _signed_message(tar_sha256):
    return f"mlrun bundle: sha256 of the tar stream before its signature {tar_sha256}\n".encode()


def _add_tree(tar, path, arcname, what, root=None, bar=None):
    """Add path under arcname, children in sorted order; returns the bytes of file content added.

    Refuses what `mlrun import` would refuse (an absolute or outward symlink, a fifo...), naming it,
    rather than writing a bundle nobody can import; what names the folder ("run ID", "the cache entry X").
    """
    root = root or path
    info = tar.gettarinfo(path, arcname)
    if info is None:   # a socket: nothing to share
        return 0
    if info.islnk():   # a file linked twice (downloads are hard-linked from the mirror): ship each copy whole
        info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.lstat(path).st_size
    problem = _member_problem(info, arcname.split("/"))
    if not problem and info.issym() and not _inside(os.path.realpath(path), os.path.realpath(root)):
        problem = f"symlink {info.linkname!r} resolves to {os.path.realpath(path)}, outside its folder"
    if problem:
        raise MlrunError(f"cannot export {what}: {os.path.relpath(path, root)}: {problem}; a bundle carries only "
                         "files, folders and symlinks that stay inside their folder",
                         hint=_UNEXPORTABLE[arcname.startswith(CACHE_DIR + "/")])
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, bar.reader(f) if bar else f)
        return info.size
    tar.addfile(info)   # symlinks stay symlinks: gettarinfo does not follow them
    if not info.isdir():
        return 0
    return sum(_add_tree(tar, os.path.join(path, n), f"{arcname}/{n}", what, root, bar)
               for n in sorted(os.listdir(path)))


class _Bar:
    """A progress bar on stderr where it is a terminal (tqdm, as downloads draw theirs), else nothing at all: a
    2 GB bundle packed or unpacked for a minute in silence. total: a function, called only for a terminal."""

    def __init__(self, label, total, unit="B"):
        self.bar = None
        if sys.stderr is not None and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total(), desc=label, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                            file=sys.stderr, leave=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def add(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def to(self, where):
        """Move on to where() (asked only when a bar is drawn)."""
        if self.bar is not None:
            n = where()
            if n > self.bar.n:
                self.bar.update(n - self.bar.n)

    def reader(self, f):
        """f, counting what is read of it (tarfile copies a file in 16 KB reads)."""
        return f if self.bar is None else _Counted(f, self.bar)


class _Counted:
    """A file being read, its bytes counted on a tqdm bar."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, n=-1):
        data = self.f.read(n)
        self.bar.update(len(data))
        return data


_UNEXPORTABLE = {   # hint, by whether the culprit is in a cache entry
    True: "an entry must not depend on what lies outside it: make its recipe write relative links inside its "
          "folder or copies (python -m venv --copies), rebuild it, or export without --with-cache",
    False: "replace that link in the run folder by a copy of what it points to (or remove it), then export again"}


# -- import --------------------------------------------------------------------------------------


def import_bundle(path, cache, runs_dir, trust=None):
    """Check, verify, then publish a bundle's entries into cache and its run into runs_dir.

    trust: an allowed_signers file; then only a bundle signed by a key it lists is accepted."""
    if trust:
        signing.require(allowed_signers=trust)
    # In the cache's .tmp/ (same file system: publishing is a rename), locked so `mlrun gc` leaves it be.
    tmp = cache.new_temp_dir("import-")
    try:
        read = _read(path, trust, dest=tmp)
        run_id, entries = read.run_id, read.entries
        staged_run = os.path.join(tmp, RUN_DIR, run_id)
        _verify_run(staged_run, run_id, path)
        used, unchecked = _entries_of(os.path.join(staged_run, "run.json")), []
        with _Bar("verifying entries", lambda: len(entries), unit=" entries") as bar:
            for name in entries:   # all of them before publishing any
                if _verify_entry(os.path.join(tmp, CACHE_DIR, name), name, path, used):
                    unchecked.append(name)
                bar.add(1)
        _check_places(cache, entries, runs_dir, run_id)   # likewise: an import stopped half-way said nothing
        added, present, damaged, other = _publish_entries(cache, os.path.join(tmp, CACHE_DIR), entries)
        run_dir, run_existed = _place_run(staged_run, runs_dir, run_id)
        if not run_existed:   # a replay by its id is a replay of the bundle: its settings are as carried
            _mark_imported(runs_dir, run_id, path, read.signed_by if trust else None)
        # A run of that id here already is kept: whether it is the bundle's decides what a replay compares with
        run_same = run_existed and _same_tree(staged_run, run_dir)
    finally:
        cache.drop_temp(tmp)
    return {"run_id": run_id, "run_dir": run_dir, "run_existed": run_existed, "run_same": run_same,
            "added": added, "present": present,
            "damaged_here": damaged, "other_build_here": other, "key_unchecked": unchecked,
            "signed": read.signature is not None, "signed_by": read.signed_by, "verified": bool(trust)}


def read_record(path):
    """The run record a bundle carries, read without importing it (`mlrun diff` of a teammate's bundle), after the
    checks import makes: the whole stream (gzip's CRC), every member's name and kind, and a signature that must
    match (a cut, tampered or re-signed bundle read as "no differences")."""
    read = _read(path, verb="read")
    run_id = read.run_id
    try:
        record = json.loads(read.run_json.decode())
    except (ValueError, RecursionError):   # not UTF-8 JSON (it said "'utf-16-le' codec can't decode ..."), or
        # nested deeper than Python reads
        raise _refuse(path, f"run {run_id}", "its run.json is no JSON text mlrun reads", verb="read") from None
    if not isinstance(record, dict) or record.get("id") != run_id or not isinstance(record.get("steps"), list):
        raise _refuse(path, f"run {run_id}", "its run.json is no run record or names another run", verb="read")
    check_shape(record, f"{path}: {RUN_DIR}/{run_id}/run.json")
    record["_dir"] = os.path.abspath(path)
    return record


def _read(path, trust=None, verb="import", dest=None):
    """Read the bundle once, front to back: each member checked as the stream reaches it and, with dest,
    extracted into dest only once checked; the stream to its end (gzip's CRC); then the whole bundle's checks and
    its signature (with trust, its signer). A `_Members` with run_id, entries, signature, signed_by, run_json.

    One read, not one to check and another to extract (and, for a signed bundle, two more: its digest from the
    start, then its signature member, each a seek back in a gzip stream, which decompresses from the start).
    dest is a private staging folder that the caller removes when this raises, so what a refused bundle wrote
    there never reaches the cache or the runs."""
    check = _Members(path, verb, hashing=bool(trust) or signing.available())
    if dest:
        check.room = _room(dest)
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise _unreadable(path, e) from None
    label = f"{'unpacking' if dest else 'checking'} {os.path.basename(path)}"
    with raw, _Bar(label, lambda: os.fstat(raw.fileno()).st_size) as bar:
        packed, unpacked, read_whole = _gzip(), None, False
        try:
            unpacked = packed.read(raw)   # closed below in any case: ISA-L's reads on a thread until it is
            stream = _Tapped(unpacked, check.hashing, packed.errors)
            with tarfile.open(fileobj=stream, mode="r:", copybufsize=_Tapped.CHUNK) as tar:
                members = check.walk(tar, stream, bar, raw.tell, keep_run_json=dest is None)
                if dest is None:
                    for _ in members:
                        pass
                else:
                    _extract(tar, members, dest, path)
                # tarfile ends at a header it cannot read as it ends at the archive's end (zero blocks): a tar cut
                # or damaged inside a whole gzip stream imported its first half, exit 0
                if stream.last_block != bytes(tarfile.BLOCKSIZE):
                    raise _Broken(tarfile.ReadError(f"the archive ends at a damaged or missing header at byte "
                                                    f"{tar.offset}, not at its end marker"))
            # tarfile takes a damaged header for the archive's end: gzip's CRC, read to the end, says it is not
            while stream.read(_Tapped.CHUNK):
                pass
            read_whole = True
        except _Broken as e:
            raise _unreadable(path, e.error) from None
        except (OSError, EOFError, zlib.error, tarfile.ReadError) as e:   # a gzip stream whose tar is cut
            raise _unreadable(path, e) from None
        finally:
            try:
                if unpacked is not None:
                    unpacked.close()
            except packed.errors as e:   # what stopped the read said it already; where nothing did, ISA-L's
                if read_whole:           # reading thread may say only now what it met (rarely, a flipped byte)
                    raise _unreadable(path, e) from None
    check.finish()
    check.signed_by = _check_signature(check, trust, path, verb=verb)
    return check


class _Broken(Exception):
    """Reading the bundle's stream failed (cut, corrupt): kept apart from the errors of writing what it holds."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class _Tapped:
    """The uncompressed tar stream, read once front to back (a seek only skips ahead), hashed on the way when asked.
    A signature covers the stream before its own member, the last one: the newest HOLD bytes are hashed only once
    more follow, so the digest up to any point among them can still be taken (tarfile reads a header ahead at
    most). tarfile reads it as a file, not in its stream mode, which copies what it holds at each read."""
    CHUNK = 1 << 20
    HOLD = 1 << 21
    MOST = 1 << 26   # one read: a pax header, a long name, run.json (the signature is 64 KB at most)

    def __init__(self, f, hashing, errors):
        self.f, self.hashing, self.pos, self.errors = f, hashing, 0, errors
        self.sha256, self.hashed, self.held = hashlib.sha256(), 0, bytearray()
        self.last_block = None

    def read(self, n=-1):
        if n is not None and n > self.MOST:   # members' data come in CHUNKs: one read this large is a header's
            # (a pax record of 500 MB in a bundle of 490 KB took 1.5 GB; 5 MB would take 15)
            raise _Broken(tarfile.ReadError(f"a header or run.json of {n} bytes, more than a bundle holds"))
        try:
            data = self.f.read(n)
        except self.errors as e:
            raise _Broken(e) from None
        if n == tarfile.BLOCKSIZE:   # a header, or the archive's end: tarfile reads both a block at a time
            self.last_block = data
        self.pos += len(data)
        if self.hashing:
            self.held += data
            if len(self.held) > 2 * self.HOLD:
                cut = len(self.held) - self.HOLD
                with memoryview(self.held) as view, view[:cut] as done:
                    self.sha256.update(done)
                del self.held[:cut]
                self.hashed += cut
        return data

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        if whence != 0 or pos < self.pos:   # tarfile reads members in order: never happens
            raise io.UnsupportedOperation(f"the bundle's stream is read once: no seek back to {pos} from {self.pos}")
        while pos > self.pos:
            if not self.read(min(self.CHUNK, pos - self.pos)):
                break
        return self.pos

    def digest_to(self, offset):
        """The sha256 of the stream's first offset bytes, or None where they are not all at hand."""
        if not self.hashing or not self.hashed <= offset <= self.hashed + len(self.held):
            return None
        h = self.sha256.copy()
        h.update(self.held[:offset - self.hashed])
        return h.hexdigest()


class _Members:
    """The checks of a bundle's members, each made as the stream reaches it (before it is extracted), then those of
    the whole (finish): plain files, folders and inward symlinks of one run and of cache entries, nothing twice,
    nothing under a symlink, a run.json, a signature only as the last member."""

    def __init__(self, bundle, verb, hashing):
        self.bundle, self.verb, self.hashing = bundle, verb, hashing
        self.seen, self.links, self.files, self.runs, self.entries = set(), set(), set(), set(), set()
        self.under = {}   # each folder path some member lies in -> the first such member
        self.signature = self.signature_member = self.digest = self.run_json = self.signed_by = None
        self.run_id = None
        self.room, self.unpacked = None, 0   # bytes the import may write; bytes its members declare so far

    def refuse(self, what, problem):
        return _refuse(self.bundle, what, problem, verb=self.verb)

    def walk(self, tar, stream, bar, where, keep_run_json):
        """tar's members, each checked before it is handed on; the signature is kept, not handed on."""
        for m in tar:
            bar.to(where)
            if self.signature_member is not None:   # the signature is the last member: one before more is a stray
                raise self.refuse(f"member {self.signature_member.name!r}", f"not the last member ({m.name!r} "
                                  "follows it): a signature ends the bundle")
            if m.name == SIGNATURE:
                self.take_signature(tar, m, stream)
                continue
            parts = self.check(m)
            if keep_run_json and len(parts) == 3 and parts[0] == RUN_DIR and parts[2] == "run.json" and m.isreg():
                self.run_json = tar.extractfile(m).read()
                continue
            yield m
        bar.to(where)

    def check(self, m):
        parts = _parts(m.name)
        problem = _member_problem(m, parts)
        if problem:
            raise self.refuse(f"member {m.name!r}", problem)
        rel = "/".join(parts)
        if rel in self.seen:   # a second copy would silently replace the first on extraction
            raise self.refuse(f"member {m.name!r}", "appears twice")
        self.seen.add(rel)
        # nothing may be written through a symlink, whichever of the two comes first
        for i in range(3, len(parts)):
            folder = "/".join(parts[:i])
            if folder in self.links:
                raise self.refuse(f"member {rel!r}", "lies under a symlink")
            self.under.setdefault(folder, rel)
        if m.issym():
            if rel in self.under:
                raise self.refuse(f"member {self.under[rel]!r}", "lies under a symlink")
            self.links.add(rel)
        if m.isfile():
            self.files.add(rel)
            self.unpacked += m.size
            if self.room is not None and self.unpacked > self.room[0]:
                # A 1 MB bundle of zeros unpacked 1 GiB: refused at the header that would pass the room, before
                # its bytes are written (a full disk would stop every other job on it too)
                raise MlrunError(f"cannot import {self.bundle}: it unpacks to more than {self.room[1]}",
                                 hint="free space there (`mlrun gc`), or import into another cache (--cache DIR); "
                                      "nothing was imported")
        if len(parts) > 1:
            if parts[0] == RUN_DIR:
                if not RUN_ID.fullmatch(parts[1]):   # printed raw by import and runs (an escape sequence cleared the
                    # screen), or read as a word `runs show` takes (`last`)
                    raise self.refuse(f"run {printable(parts[1])!r}", "not named as mlrun names runs "
                                      "(YYYYMMDD-HHMMSS-xxxx)")
                self.runs.add(parts[1])
                if len(self.runs) > 1:
                    raise self.refuse("its content", f"{len(self.runs)} run folders where a bundle holds exactly one")
            elif parts[1] not in self.entries:   # else a folder `mlrun rm` and gc take for none of the cache's
                if not re.fullmatch(ENTRY_NAME, parts[1]):
                    raise self.refuse(f"cache entry {parts[1]!r}", "not named as mlrun names entries (RECIPE-KEY16)")
                self.entries.add(parts[1])
        return parts

    def take_signature(self, tar, m, stream):
        if not m.isreg() or m.size > 64 * 1024:
            raise self.refuse(f"member {m.name!r}", "not an SSH signature")
        self.signature_member = m
        self.digest = stream.digest_to(m.offset)
        self.signature = tar.extractfile(m).read()

    def finish(self):
        """The checks of the whole bundle, once every member passed its own."""
        if len(self.runs) != 1:
            raise self.refuse("its content", f"{len(self.runs)} run folders where a bundle holds exactly one")
        self.run_id = next(iter(self.runs))
        self.entries = sorted(self.entries)
        if f"{RUN_DIR}/{self.run_id}/run.json" not in self.seen:
            raise self.refuse(f"run {self.run_id}", "it has no run.json")
        if f"{RUN_DIR}/{self.run_id}/run.json" not in self.files:   # a folder or a link: diff read None ("a bug")
            raise self.refuse(f"run {self.run_id}", "its run.json is no file")


def _room(dest):
    """(bytes an import into dest may unpack, its words): the file system's free space less a reserve of 5% of
    its size, at most 1 GiB, kept for the runs and builds that share it."""
    try:
        fs = os.statvfs(dest)
    except OSError:   # unknowable: the extraction's own error says a full disk
        return None
    free, size = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    if not size:   # a file system that reports no size (tmpfs size=0, some FUSE, 9p): unknowable
        return None
    room = max(0, free - min(size // 20, 1 << 30))
    return room, f"the {size_words(room)} this file system can spare ({size_words(free)} free, less a reserve)"


def _unreadable(bundle, error):
    return MlrunError(f"cannot read the bundle {bundle}: {error}",
                      hint="a bundle is a .tar.gz made by `mlrun export`; this one may be truncated or corrupt")


def _refuse(bundle, what, problem, hint=TAMPERED, verb="import"):
    if verb != "import" and hint:   # diff reads a bundle in place: "nothing was imported" said of no import
        hint = hint.replace("; nothing was imported", "")
    return MlrunError(f"refusing to {verb} {bundle}: {what}: {problem}", hint=hint)


def _check_signature(read, trust, bundle, verb="import"):
    """Who signed the bundle ('alice@example.com (ED25519 key SHA256:...)' when trust lists the key, else
    the key alone), or None when it is unsigned, or unchecked for want of ssh-keygen and of trust.
    Refuses a bad signature, and with trust, an unsigned bundle or a key trust does not list."""
    untrusted = f"nothing was imported; ask for a bundle exported with --sign by a key {trust} lists"
    if read.signature is None:
        if trust:
            raise _refuse(bundle, "its signature", "it is not signed, and --trust accepts only signed bundles",
                          hint=untrusted)
        return None
    if not trust and not signing.available():
        return None
    message = _signed_message(read.digest) if read.digest else None
    key = signing.signer(message, read.signature) if message else None
    if key is None:
        raise _refuse(bundle, "its signature", "it does not match the bundle's content, which was changed after "
                      "it was signed", verb=verb)
    if not trust:
        return key
    who = signing.principal(message, read.signature, trust)
    if who is None:
        problem = signing.allowed_signers_problem(trust)   # the file's own mistake, where it shows one
        raise _refuse(bundle, "its signature", f"it was made by the {key}, which {trust} does not list"
                      + (f" ({problem})" if problem else ""), hint=untrusted)
    return f"{who} ({key})"


def _parts(name):
    """A member's path split, without empty and '.' parts (`./run/ID/./run.json` is `run/ID/run.json`)."""
    return [p for p in name.split("/") if p not in ("", ".")]


MOST_DEPTH = 64   # path components of a member (a venv's deepest file lies about 20 down)


def _member_problem(m, parts):
    """What is wrong with one member (parts: its path split, without empty and '.' parts), or None."""
    if m.name.startswith("/"):
        return "absolute path"
    if ".." in parts:
        return "path with a '..' component"
    if not parts or parts[0] not in (RUN_DIR, CACHE_DIR):
        return f"outside {RUN_DIR}/ and {CACHE_DIR}/"
    if len(parts) > 1 and parts[1].startswith("."):
        return "hidden run or entry name"
    if len(parts) > MOST_DEPTH:   # 1,500 folders deep: 66 s, then a RecursionError in import and in every later gc
        return f"{len(parts)} folders deep, more than a run or an entry holds ({MOST_DEPTH})"
    if m.islnk():
        return "hard link"
    if m.ischr() or m.isblk() or m.isfifo():
        return "device or fifo"
    if not (m.isreg() or m.isdir() or m.issym()):
        return "unsupported member type"
    if len(parts) <= 2 and not m.isdir():
        return "not a folder (a run or an entry is a folder)"
    if m.issym():
        if m.linkname.startswith("/"):
            return f"symlink to the absolute path {m.linkname!r}"
        target = os.path.normpath(os.path.join(*parts[2:-1], m.linkname))
        if target == ".." or target.startswith("../"):
            return f"symlink {m.linkname!r} points outside its {'run' if parts[0] == RUN_DIR else 'entry'} folder"
    return None


def _extract(tar, members, dest, bundle):
    try:
        if hasattr(tarfile, "data_filter"):   # Python 3.11.4+: a second guard behind our own checks
            tar.extractall(dest, members, filter="data")
        else:   # our checks passed; still extract plain, owner-writable modes and no foreign owners
            tar.extractall(dest, _plain(members))
    except getattr(tarfile, "FilterError", ()) as e:
        raise _refuse(bundle, f"member {e.tarinfo.name!r}", str(e)) from None
    except (_Broken, tarfile.ReadError):   # the stream's: said as such by _read
        raise
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise MlrunError(f"cannot extract the bundle {bundle}: {e}",
                         hint="the disk may be full, or the bundle corrupt; nothing was imported") from None


def _plain(members):
    for m in members:
        if not m.issym():
            m.mode = m.mode & 0o755 | (0o700 if m.isdir() else 0o600)
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        yield m


def _verify_run(folder, run_id, bundle):
    try:
        with open(os.path.join(folder, "run.json")) as f:
            record = json.load(f)
    except (OSError, ValueError, RecursionError):   # 100,000 lists deep: "unexpected RecursionError ... a bug"
        record = None
    if not isinstance(record, dict) or record.get("id") != run_id or not isinstance(record.get("steps"), list):
        raise _refuse(bundle, f"run {run_id}", "its run.json is unreadable, no run record or names another run")
    try:   # a record every reader here would refuse ("started": "yesterday") is not imported to be refused later
        check_shape(record, "run.json")
    except MlrunError as e:
        raise _refuse(bundle, f"run {run_id}", e.message.replace("run.json is not an mlrun run record: ", "")) from None
    _check_links(folder, bundle, f"run {run_id}")


def _step_entries(record):
    """(entry name, step) of each step whose folder is a cache entry (built or reused): what export packs."""
    for step in record.get("steps") or []:
        if isinstance(step, dict) and step.get("status") in REUSED:
            path = step.get("path")
            yield os.path.basename(path if isinstance(path, str) else ""), step


def _entries_of(run_json):
    """{entry name: the build's entry_digest (or None)} of the entries the run's steps used (_step_entries)."""
    with open(run_json) as f:
        record = json.load(f)
    return {name: step.get("entry_digest") for name, step in _step_entries(record) if name}


def _verify_entry(folder, name, bundle, used=None):
    """Refuse unless the entry's files are exactly those its files.json lists, and its metadata agrees: its key is
    its material's, and a step of the run used it, that build (used: _entries_of; None: not checked)."""
    what = f"cache entry {name}"
    meta = read_entry(folder)
    if meta is None:
        raise _refuse(bundle, what, f"{META_DIR}/{ENTRY_FILE} is missing or unreadable")
    if name != filed_as(meta):
        raise _refuse(bundle, what, f"its {ENTRY_FILE} belongs to the entry {filed_as(meta)}")
    # what export packs, and nothing else: an entry no step used, or a key that is not its material's, was
    # published and served later runs (any bytes under any key)
    if used is not None and name not in used:
        raise _refuse(bundle, what, "no step of the run used it")
    # (material that held a secret is written masked, keyed before: its key cannot be checked here)
    masked = secrets.MASK in json.dumps(meta.get("material"))
    if not isinstance(meta.get("material"), dict) or not masked and keys.key(meta["material"]) != meta["key"]:
        raise _refuse(bundle, what, "its key is not the key of what it records it was built from (its material)")
    if used and used.get(name) and meta.get("entry_digest") != used[name]:
        raise _refuse(bundle, what, "another build than the one the run used (its entry_digest)")
    problems = entry_problems(folder, meta)   # the check `mlrun cache verify` makes
    if problems:
        raise _refuse(bundle, what, f"its files or metadata do not match its digests ({few(problems)})")
    _check_links(folder, bundle, what)
    return masked


def _check_links(folder, bundle, what):
    """Each symlink, followed to the end of its chain, must stay inside folder (the member checks are lexical)."""
    root = os.path.realpath(folder)
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                rel = os.path.relpath(path, folder)
                raise _refuse(bundle, what, f"the symlink {rel} -> {os.readlink(path)} resolves outside its folder")


def _publish_entries(cache, staged, names):
    """Rename each verified entry into the cache under its lock; returns (added, present, damaged) names, damaged
    those present here that changed since they were published."""
    added, present, damaged, other = [], [], [], []
    for name in names:
        final = os.path.join(cache.root, name)
        with cache.lock(types.SimpleNamespace(entry_name=name)):
            here = read_entry(final)
            if here is not None:   # entries are immutable: never replace one
                present.append(name)
                if integrity.stat_problems(final) or _content_differs(final, here):   # but say so when the one
                    damaged.append(name)   # here changed since (a flipped byte passed: "already present", used)
                elif here.get("entry_digest") != (read_entry(os.path.join(staged, name)) or {}).get("entry_digest"):
                    other.append(name)   # another build of the key (a signed bundle's replay used it, unsaid)
                continue
            if os.path.lexists(final):   # put there since _check_places looked
                raise _not_an_entry(name, final)
            cache.place(os.path.join(staged, name), final)   # sealed with this file system's stat signature
            added.append(name)
    # Imported now counts as used now: `gc --older-than 30d` went by the build time on the other machine and
    # removed a month-old teammate's entries the moment they arrived.
    for name in added + present:
        cache.use(types.SimpleNamespace(entry_name=name))
    cache.release_uses()
    return added, present, damaged, other


def _content_differs(path, meta):
    """Whether an entry here no longer holds the bytes it was published with (`cache verify`'s re-hash): the
    bundle's copy, verified, is at hand to say so; one this user may not read is not judged."""
    try:
        return bool(entry_problems(path, meta))
    except (OSError, MlrunError):
        return False


def _check_places(cache, names, runs_dir, run_id):
    """Refuse, before anything is published, a bundle whose entries or run would land on something else there."""
    for name in names:
        final = os.path.join(cache.root, name)
        if os.path.lexists(final) and read_entry(final) is None:
            raise _not_an_entry(name, final)
    final = os.path.join(os.path.abspath(runs_dir), run_id)
    if os.path.lexists(final) and not os.path.isfile(os.path.join(final, "run.json")):
        raise MlrunError(f"cannot import the run {run_id}: {final} exists but holds no run record; nothing was "
                         "imported", hint="move it out of the runs folder, then import again")
    if not os.path.lexists(final):   # a read-only runs folder: said before the entries are published, not after
        existing = os.path.abspath(runs_dir)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK):
            raise MlrunError(f"cannot import the run {run_id}: the runs folder {existing} cannot be written; nothing "
                             "was imported", hint="point --runs (or MLRUN_RUNS) at a writable folder")


def _not_an_entry(name, final):
    return MlrunError(f"cannot import the cache entry {name}: {final} exists but is not an entry; nothing was "
                      "imported", hint="move it out of the cache, then import again")


def _place_run(staged, runs_dir, run_id):
    """Move the run folder to runs_dir/<id> unless that exists; returns (its path, whether it existed)."""
    runs_dir = os.path.abspath(runs_dir)
    final = os.path.join(runs_dir, run_id)
    if os.path.lexists(final):
        return final, True
    shared_dir(runs_dir)   # the group's, as a run makes it: a teammate's runs go there too
    group_readable(staged)
    # Moved next to its final place first (a copy when runs_dir is on another file system), then
    # renamed, so a half-copied run never shows up under its id.
    landing = os.path.join(runs_dir, f".import-{run_id}.{os.getpid()}")
    try:
        shutil.move(staged, landing)
        os.rename(landing, final)
    finally:
        shutil.rmtree(landing, ignore_errors=True)
    return final, False


IMPORTED = os.path.join(".index", "imported")   # runs/.index/imported/<run id>.json: the bundle a run came in, and
# whether its signer was trusted (beside the runs memo: one hidden folder in runs/)


def _mark_imported(runs_dir, run_id, bundle, verified_by):
    folder = os.path.join(runs_dir, IMPORTED)
    shared_dir(folder)
    write_json(os.path.join(folder, f"{run_id}.json"), {"bundle": os.path.abspath(bundle), "verified": bool(
        verified_by), "signed_by": verified_by, "imported": time.time()})


def import_mark(runs_dir, run_id):
    """What import left of the run run_id here (a dict), or None for a run made here."""
    try:
        with open(os.path.join(runs_dir, IMPORTED, f"{run_id}.json")) as f:
            mark = json.load(f)
    except (OSError, ValueError, TypeError):
        return None
    return mark if isinstance(mark, dict) else None


def _same_tree(a, b):
    """Whether folders a and b hold the same files with the same bytes."""
    import filecmp

    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)
    names = files(a)
    return names == files(b) and all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)
                                     for n in names)


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _plain_name(name):
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and not name.startswith(".")
