"""One download helper for every recipe.

fetch() gets a URL into a path: from a mirror folder when one holds a file
with the expected checksum (no network at all), otherwise over HTTP into
a .part file, resuming it with a Range request and retrying transient
failures with exponential backoff. Every byte received is kept, and retries
are bounded however the server behaves: at most `retries` attempts in a row
that bring no new byte, `attempts` in all, and no new attempt after `budget`
seconds. With `partial_dir` (the cache's `.partial/`) the .part file is named
by checksum and outlives the run, so the next run resumes a killed or failed
download; a lock beside it keeps two downloads of one file apart. The checksum
is verified before the .part file is moved, so `dest` only ever holds a
verified file.

requests, urllib3 and tqdm are imported inside the functions that
use them: the CLI imports this module and must start fast.
"""

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import sys
import time

from engine.digests import file_digest, hash_into
from engine.errors import DownloadError, MlrunError
from engine.words import plural

CHUNK = 1 << 20  # the most read at once; a read returns whatever has arrived, so a dropped link loses nothing


class _Transient(Exception):
    """A failure worth retrying (5xx, refused resume, early end of body)."""


class _Fatal(Exception):
    """A failure that retrying cannot fix (4xx and the like)."""


class _Part:
    """The .part file and a running hash of exactly the bytes it holds.

    Keeping the hash alongside the file means a resumed download reads the old
    bytes once (to seed the hash) and never hashes the whole file again.
    """

    def __init__(self, path, algo, total=None, kept=False):
        self.path, self.algo, self.total, self.kept = path, algo, total, kept  # kept: outlives the run
        self.hasher = hashlib.new(algo) if algo else None
        self.size = os.path.getsize(path) if os.path.isfile(path) else 0
        if self.hasher and self.size:
            hash_into(path, [self.hasher])

    def reset(self):
        open(self.path, "wb").close()
        self.hasher = hashlib.new(self.algo) if self.algo else None
        self.size = 0

    def append(self, f, chunk):
        f.write(chunk)
        if self.hasher:
            self.hasher.update(chunk)
        self.size += len(chunk)

    def hexdigest(self):
        return self.hasher.hexdigest() if self.hasher else None

    def progress(self):
        return f"{self.size} of {self.total if self.total is not None else '?'} bytes"


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _expected(sha256, md5):
    """(algo, hex digest) to verify with: sha256 preferred, md5 when only that is known."""
    if sha256:
        return "sha256", sha256.strip().lower()
    if md5:
        return "md5", md5.strip().lower()
    return None, None


def _mirror_hint(algo, expected, mirror, name=None):
    if not expected:
        return "no checksum is declared for this download, so a mirror cannot serve it"
    hint = (f"put a file with {algo} {expected} in a folder and pass --mirror DIR "
            f"or set MLRUN_MIRROR=DIR (mlrun mirror add FILE...)")
    if not mirror:
        return hint
    # a file of that name is there (at any depth, as the mirror is searched) but not with that checksum: damaged
    # or another version, named (the hint said only that the mirror had no such file); the shallowest first
    named = sorted((p for p in glob.glob(os.path.join(glob.escape(mirror), "**", glob.escape(name)), recursive=True)
                    if os.path.isfile(p)), key=lambda p: (p.count(os.sep), p)) if name else []
    if named:
        return (f"{named[0]} in the mirror is not the file asked for ({algo} {expected}): damaged or another version; "
                f"replace it with the right one (mlrun mirror check lists what is wrong)")
    return f"mirror {mirror} has no file with {algo} {expected}; {hint}"


def _verify(path, source, algo, expected, size, got=None):
    """Delete `path` and raise unless it has the expected checksum (or size)."""
    if expected:
        got = got or file_digest(path, algo)
        if got != expected:
            _remove(path)
            raise DownloadError(
                f"checksum mismatch for {source}: expected {algo} {expected}, got {algo} {got}",
                hint="the file changed upstream or arrived corrupt; if the new file is "
                     "trusted, update the checksum in the recipe")
        if size is not None and os.path.getsize(path) != size:   # the right file: the recipe's size is wrong
            raise DownloadError(f"the recipe's download.size for {source} is {size} bytes; the file, whose {algo} "
                                f"matches, has {os.path.getsize(path)}", hint="correct download.size in the recipe "
                                "(or leave it out: the checksum decides)", exit_code=2)
    elif size is not None and os.path.getsize(path) != size:
        got_size = os.path.getsize(path)
        _remove(path)
        raise DownloadError(f"size mismatch for {source}: expected {size} bytes, got {got_size}")


def _from_mirror(mirror, dest_path, part_path, algo, expected, size, index_path):
    """Place the mirror's copy at dest_path; False when the mirror lacks it."""
    from engine import mirror as mirrors

    found = mirrors.find(mirror, size=size, index_path=index_path, **{algo: expected})
    if not found and size is not None:   # the declared size picks the files to hash; a wrong one is said (_verify)
        found = mirrors.find(mirror, index_path=index_path, **{algo: expected})
    if not found:
        return False
    _remove(part_path)
    # A copy, never a hard link: sealing the entry would make the person's mirror file read-only, and an
    # edit or a touch of it would change a published entry. A clone shares the blocks where the file system can.
    _clone_or_copy(found, part_path)
    got = file_digest(part_path, algo)
    if got != expected:   # its indexed digest held, its bytes did not (bit rot): hashed anew next time
        _remove(part_path)
        mirrors.forget(found, index_path)
        raise DownloadError(f"the mirror's copy {found} is damaged: expected {algo} {expected}, got {algo} {got}",
                            hint="put a good copy there (mlrun mirror add FILE) or remove it; mlrun mirror check "
                                 "hashes it again")
    _verify(part_path, found, algo, expected, size, got=got)   # the size the recipe declares
    os.replace(part_path, dest_path)
    return True


def _clone_or_copy(src, dst):
    import fcntl
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), 0x40049409, fin.fileno())   # FICLONE (btrfs, XFS): instant, no extra disk
            return
        except OSError:
            pass
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        if e.errno == errno.ENOSPC:   # copyfile names the file read first: the one that could not be written
            e.filename, e.filename2 = dst, None
        raise


def _range_start_total(response):
    """(start, total) from a Content-Range header such as 'bytes 10-99/100' or 'bytes */100'."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _open_response(session, url, part, timeout):
    """GET the rest of the file: (response, total size), or None if `part` is complete.

    Leaves `part` ready for the body's first byte.
    """
    headers = {"Accept-Encoding": "identity"}  # checksums are of the bytes as stored
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    r = session.get(url, headers=headers, stream=True, timeout=timeout)
    status = r.status_code
    start, total = _range_start_total(r)
    if status == 416 and total == part.size:
        r.close()
        return None  # the .part already holds the whole file
    if status == 416 or (status == 206 and start != part.size):
        r.close()
        offset = part.size
        part.reset()
        raise _Transient(f"server refused to resume at byte {offset}")
    if status >= 500:
        r.close()
        raise _Transient(f"HTTP {status} {r.reason}")
    if status >= 400:
        r.close()
        raise _Fatal(f"HTTP {status} {r.reason}")
    if status != 206 and part.size:
        part.reset()  # the server ignored Range and sends everything: start over
    length = r.headers.get("Content-Length")
    return r, total or (part.size + int(length) if length else None)


def _attempt(session, url, part, size, label, timeout):
    import urllib3
    from tqdm import tqdm

    if size is not None and part.size > size:
        part.reset()
    if part.size and part.size == size:
        return
    opened = _open_response(session, url, part, timeout)
    if opened is None:
        return
    r, total = opened
    part.total = total or size
    with r, open(part.path, "ab") as f, tqdm(
            total=part.total, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, file=sys.stderr, disable=label is None, leave=False) as bar:
        # read1, not iter_content: iter_content drops a whole partly read chunk when the link breaks.
        try:
            while chunk := r.raw.read1(CHUNK, decode_content=True):
                part.append(f, chunk)
                bar.update(len(chunk))
                if size is not None and part.size > size:   # a server that never stops filled the disk (3.4 GB
                    f.truncate(0)                            # in 25 s for a file of 3 MB)
                    part.reset()
                    raise _Fatal(f"the server sent more than the {size} bytes the recipe declares")
        except urllib3.exceptions.ProtocolError as e:
            raise _Transient("connection lost") from e
    # the declared size where the server gave no length: a body cut short is resumed, not hashed as the file
    if part.total and part.size < part.total:
        raise _Transient("connection closed early")


def _reason(e, timeout):
    """The root cause in a few words rather than urllib3's nested reprs."""
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
    if errno_text:
        return errno_text[1].strip()  # "Connection refused", "Name or service not known"...
    if "timed out" in str(e).lower():
        return f"no answer within {timeout} s"
    return str(e)


def _download(url, part, size, label, limits, timeout, hint):
    import requests
    import urllib3

    retries, attempts, budget, backoff = limits
    transient = (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, _Transient)
    started = time.monotonic()
    tried = stalled = 0
    # Progress means bytes never held before: a server that drops the link and then refuses to
    # resume refills the same first bytes forever, which must not count as progress.
    most = part.size
    with requests.Session() as session:
        while True:
            tried += 1
            try:
                return _attempt(session, url, part, size, label, timeout)
            except transient as e:
                stalled = 1 if part.size > most else stalled + 1
                most = max(most, part.size)
                pause = backoff * 2 ** (stalled - 1)
                elapsed = time.monotonic() - started
                why = (f"{plural(stalled, 'attempt')} in a row without new data" if stalled > retries else
                       plural(tried, "attempt") if tried >= attempts else
                       f"{plural(tried, 'attempt')}: no retry after {budget:g} s" if elapsed + pause > budget else None)
                if why:
                    kept = ", kept for the next run to resume" if part.kept and part.size else ""
                    raise DownloadError(f"cannot download {url}: {_reason(e, timeout)} (gave up after {why}; "
                                        f"{part.progress()} received{kept})", hint=hint) from e
                time.sleep(pause)
            except _Fatal as e:
                raise DownloadError(f"{e} for {url}", hint=hint) from e
            except requests.RequestException as e:  # invalid URL, too many redirects...
                raise DownloadError(f"cannot download {url}: {e}", hint=hint) from e   # the mirror serves it too


def _kept_part(partial_dir, algo, expected):
    """The .part file kept across runs for this checksum, and the lock that gives it to one download."""
    from .cache import path_lock
    path = os.path.join(partial_dir, f"{algo}-{expected}.part")
    if not os.path.exists(path):  # group-writable: in a shared cache another user's run may resume it
        open(path, "ab").close()
        os.chmod(path, 0o664)
    return path, path_lock(path + ".lock")   # gc unlinks a finished download's lock


def _write_error(e, url, path, part):
    """An OSError of the file system (not of the network) as an environment error, exit 2."""
    got = f" (downloaded {part.progress()})" if part else ""
    if e.errno == errno.ENOSPC:
        resume = ": the download resumes where it stopped" if part and part.kept else ""
        return MlrunError(f"no space left on device while writing {path}{got}",
                          hint="free some space there (or use a cache on another disk: --cache DIR or "
                               f"MLRUN_CACHE=DIR) and run again{resume}")
    return MlrunError(f"cannot download {url}: {e.strerror or e}: {path}{got}")


def fetch(url, dest_path, *, sha256=None, md5=None, size=None, mirror=None, progress=None,
          retries=4, attempts=100, budget=3600, backoff=0.5, timeout=30, index_path=None, partial_dir=None):
    """Download `url` to `dest_path` (verified) and return the path.

    mirror: a folder searched by checksum before any network access (the CLI
    resolves --mirror / $MLRUN_MIRROR); index_path: where the mirror's hash
    index is kept (None: not kept).
    partial_dir: where the unfinished download is kept between runs, by
    checksum (None, or no checksum: `dest_path + ".part"`, lost with its folder).
    progress: tqdm bar on stderr; default only when stderr is a terminal.
    Retries: a transient failure (5xx, dropped link, refused resume) is retried,
    sleeping backoff * 2**n seconds, until `retries` attempts in a row brought
    no new byte, `attempts` were made in all, or `budget` seconds have passed;
    timeout is per connect/read, in seconds.
    """
    dest_path = os.fspath(dest_path)
    algo, expected = _expected(sha256, md5)
    kept = bool(partial_dir and expected)
    part, part_path, lock = None, dest_path + ".part", contextlib.nullcontext()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
        if mirror and expected and _from_mirror(mirror, dest_path, part_path, algo, expected, size,
                                                index_path):
            return dest_path
        if kept:
            part_path, lock = _kept_part(partial_dir, algo, expected)
        show = sys.stderr.isatty() if progress is None else progress
        with lock:  # another download of the same file finishes (or fails) first
            part = _Part(part_path, algo, size, kept)
            # a kept part that is the whole file already (a run that failed after it, on a wrong size) needs no
            # network: the next run without one said "cannot download ... 20 of ? bytes received, kept"
            if not (part.size and expected and part.hexdigest() == expected):
                _download(url, part, size, os.path.basename(dest_path) if show else None,
                          (retries, attempts, budget, backoff), timeout,
                          _mirror_hint(algo, expected, mirror, os.path.basename(dest_path)))
            _verify(part_path, url, algo, expected, size, got=part.hexdigest())
            shutil.move(part_path, dest_path)  # a rename, unless the cache is on another disk
            with contextlib.suppress(OSError):  # no longer shared once it is the build's own file
                os.chmod(dest_path, os.stat(dest_path).st_mode & ~0o022)
    except OSError as e:  # disk full, permission denied... (network errors are handled above)
        raise _write_error(e, url, e.filename or part_path, part) from e
    return dest_path
