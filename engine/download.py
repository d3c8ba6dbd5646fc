"""One download helper for every recipe.

fetch() gets a URL into a path: from a mirror folder when one holds a file
with the expected checksum (no network at all), otherwise over HTTP into
`dest + ".part"`, resuming a partial file with a Range request and retrying
transient failures with exponential backoff. The checksum is verified before
the .part file is renamed, so `dest` only ever holds a verified file.

requests and tqdm are imported inside the functions that use them: the CLI
imports this module and must start fast.
"""

import hashlib
import os
import re
import shutil
import sys
import time

from engine.digests import file_digest, hash_into
from engine.errors import DownloadError

CHUNK = 1 << 20


class _Transient(Exception):
    """A failure worth retrying (5xx, refused resume, early end of body)."""


class _Fatal(Exception):
    """A failure that retrying cannot fix (4xx and the like)."""


class _Part:
    """The .part file and a running hash of exactly the bytes it holds.

    Keeping the hash alongside the file means a resumed download reads the old
    bytes once (to seed the hash) and never hashes the whole file again.
    """

    def __init__(self, path, algo):
        self.path, self.algo = path, algo
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


def _mirror_hint(algo, expected, mirror):
    if not expected:
        return "no checksum is declared for this download, so a mirror cannot serve it"
    hint = (f"put a file with {algo} {expected} in a folder and pass --mirror DIR "
            f"or set MLRUN_MIRROR=DIR (mlrun mirror add FILE...)")
    return f"mirror {mirror} has no file with {algo} {expected}; {hint}" if mirror else hint


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
    elif size is not None and os.path.getsize(path) != size:
        got_size = os.path.getsize(path)
        _remove(path)
        raise DownloadError(f"size mismatch for {source}: expected {size} bytes, got {got_size}")


def _from_mirror(mirror, dest_path, part_path, algo, expected, size, index_path):
    """Place the mirror's copy at dest_path; False when the mirror lacks it."""
    from engine import mirror as mirrors

    found = mirrors.find(mirror, size=size, index_path=index_path, **{algo: expected})
    if not found:
        return False
    _remove(part_path)
    try:
        os.link(found, part_path)  # instant and no extra disk on the same filesystem
    except OSError:
        shutil.copyfile(found, part_path)
    _verify(part_path, found, algo, expected, size)
    os.replace(part_path, dest_path)
    return True


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


def _attempt(session, url, part, size, show, timeout):
    from tqdm import tqdm

    if size is not None and part.size > size:
        part.reset()
    if part.size and part.size == size:
        return
    opened = _open_response(session, url, part, timeout)
    if opened is None:
        return
    r, total = opened
    name = os.path.basename(part.path).removesuffix(".part")
    with r, open(part.path, "ab") as f, tqdm(
            total=total or size, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, file=sys.stderr, disable=not show, leave=False) as bar:
        for chunk in r.iter_content(CHUNK):
            part.append(f, chunk)
            bar.update(len(chunk))
    if total and part.size < total:
        raise _Transient(f"connection closed at byte {part.size} of {total}")


def _reason(e, timeout):
    """The root cause in a few words rather than urllib3's nested reprs."""
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
    if errno_text:
        return errno_text[1].strip()  # "Connection refused", "Name or service not known"...
    if "timed out" in str(e).lower():
        return f"no answer within {timeout} s"
    return str(e)


def _download(url, part, size, show, retries, backoff, timeout, hint):
    import requests

    transient = (requests.ConnectionError, requests.Timeout,
                 requests.exceptions.ChunkedEncodingError, _Transient)
    failures = 0
    with requests.Session() as session:
        while True:
            before = part.size
            try:
                return _attempt(session, url, part, size, show, timeout)
            except transient as e:
                # A failure after progress resets the count: the link works, keep resuming.
                failures = 1 if part.size > before else failures + 1
                if failures > retries:
                    raise DownloadError(f"cannot download {url}: {_reason(e, timeout)} "
                                        f"(after {failures} attempts)", hint=hint) from e
                time.sleep(backoff * 2 ** (failures - 1))
            except _Fatal as e:
                raise DownloadError(f"{e} for {url}", hint=hint) from e
            except requests.RequestException as e:  # invalid URL, too many redirects...
                raise DownloadError(f"cannot download {url}: {e}") from e


def fetch(url, dest_path, *, sha256=None, md5=None, size=None, mirror=None, progress=None,
          retries=4, backoff=0.5, timeout=30, index_path=None):
    """Download `url` to `dest_path` (verified) and return the path.

    mirror: a folder searched by checksum before any network access (the CLI
    resolves --mirror / $MLRUN_MIRROR); index_path: where the mirror's hash
    index is kept (None: not kept).
    progress: tqdm bar on stderr; default only when stderr is a terminal.
    retries/backoff: transient failures are retried `retries` times, sleeping
    backoff * 2**n seconds; timeout is per connect/read, in seconds.
    """
    dest_path = os.fspath(dest_path)
    part_path = dest_path + ".part"
    algo, expected = _expected(sha256, md5)
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    if mirror and expected and _from_mirror(mirror, dest_path, part_path, algo, expected, size,
                                            index_path):
        return dest_path
    show = sys.stderr.isatty() if progress is None else progress
    try:
        part = _Part(part_path, algo)
        _download(url, part, size, show, retries, backoff, timeout,
                  _mirror_hint(algo, expected, mirror))
    except OSError as e:  # disk full, permission denied... (network errors are handled above)
        raise DownloadError(f"cannot write {part_path}: {e}") from e
    _verify(part_path, url, algo, expected, size, got=part.hexdigest())
    os.replace(part_path, dest_path)
    return dest_path
