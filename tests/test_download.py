"""engine.download against a real HTTP server on 127.0.0.1 started by the tests."""

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import stat
import sys

import pytest

from engine import digests, download
from engine.errors import DownloadError

DATA = random.Random(0).randbytes(3 * 1024 * 1024 + 517)  # a few chunks, odd tail
SHA256 = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
FAST = {"retries": 2, "backoff": 0.01, "timeout": 5, "progress": False}


@pytest.fixture
def server(server):
    """The local server of conftest, serving DATA at /data.bin."""
    server.files["/data.bin"] = DATA
    return server


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("checksum", [{"sha256": SHA256}, {"md5": MD5}, {"sha256": SHA256.upper()}])
def test_plain_download(server, tmp_path, checksum):
    dest = tmp_path / "sub" / "data.bin"
    assert download.fetch(f"{server.url}/data.bin", dest, **checksum, **FAST) == str(dest)
    assert _read(dest) == DATA
    assert not os.path.exists(f"{dest}.part")
    assert server.requests[0]["range"] is None


def test_file_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert digests.file_digest(path, "sha256") == SHA256
    assert digests.file_digests(path) == {"sha256": SHA256, "md5": MD5}


def test_resume_after_dropped_connection(server, tmp_path):
    server.drop_after = 1024 * 1024 + 123
    dest = tmp_path / "data.bin"
    download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, **FAST)
    assert _read(dest) == DATA
    assert len(server.requests) == 2
    offset = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1]["range"])[1])
    assert 0 < offset <= server.drop_after


def test_resume_of_part_left_by_earlier_run(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA[:5000])
    download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, **FAST)
    assert _read(dest) == DATA
    assert [r["range"] for r in server.requests] == ["bytes=5000-"]


def test_complete_part_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA)
    download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, **FAST)
    assert _read(dest) == DATA
    assert server.requests == []   # its checksum is the file's: no request (one was made, answered 416)


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA[:5000])
    download.fetch(f"{server.url}/data.bin", dest, md5=MD5, **FAST)
    assert _read(dest) == DATA


def test_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = f"{server.url}/data.bin"
    with pytest.raises(DownloadError) as err:
        download.fetch(url, dest, sha256=wrong, **FAST)
    message = str(err.value)
    assert url in message and wrong in message and SHA256 in message
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()
    assert err.value.exit_code == 1


def test_server_down(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(DownloadError) as err:
        download.fetch(url, tmp_path / "data.bin", sha256=SHA256, **FAST)
    assert url in err.value.message
    assert "--mirror" in err.value.hint and "MLRUN_MIRROR" in err.value.hint
    assert SHA256 in err.value.hint


def test_silent_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/data.bin"
        with pytest.raises(DownloadError) as err:
            download.fetch(url, tmp_path / "data.bin", sha256=SHA256,
                           **{**FAST, "retries": 1, "timeout": 0.1})
    assert url in err.value.message and "0.1 s" in err.value.message
    assert "--mirror" in err.value.hint


def test_http_404_is_not_retried(server, tmp_path):
    url = f"{server.url}/missing.bin"
    with pytest.raises(DownloadError) as err:
        download.fetch(url, tmp_path / "missing.bin", sha256=SHA256, **FAST)
    assert "404" in err.value.message and url in err.value.message
    assert len(server.requests) == 1


def test_retries_on_500_then_succeeds(server, tmp_path):
    server.fail_first = 2
    dest = tmp_path / "data.bin"
    download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, **FAST)
    assert _read(dest) == DATA
    assert len(server.requests) == 3


def test_gives_up_after_retries_on_500(server, tmp_path):
    server.fail_first = 100
    with pytest.raises(DownloadError) as err:
        download.fetch(f"{server.url}/data.bin", tmp_path / "d", sha256=SHA256, **FAST)
    assert "500" in err.value.message
    assert len(server.requests) == FAST["retries"] + 1


@pytest.mark.parametrize("from_mirror", [False, True])
def test_a_wrong_declared_size_of_the_right_file_is_the_recipe_s_error(server, tmp_path, from_mirror):
    """The checksum decides which file it is; a size that is not its size was ignored online, and offline made
    the mirror's right copy 'differ' and the run say the mirror had no file with that checksum."""
    mirror = _mirror_with_data(tmp_path) if from_mirror else None
    url = f"{server.url}/data.bin" if not from_mirror else "http://127.0.0.1:9/data.bin"   # offline: nothing there
    with pytest.raises(DownloadError) as err:
        download.fetch(url, tmp_path / "data.bin", sha256=SHA256, size=5000000, mirror=mirror,
                       index_path=tmp_path / "index.json", **FAST)
    assert f"download.size for {mirror / 'a' / 'b' / 'renamed.bin' if from_mirror else url} is 5000000 bytes; " \
           f"the file, whose sha256 matches, has {len(DATA)}" in str(err.value)
    assert err.value.exit_code == 2 and "correct download.size in the recipe" in err.value.hint
    assert not (tmp_path / "data.bin").exists()


def _mirror_with_data(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "a" / "b").mkdir(parents=True)
    (mirror / "a" / "b" / "renamed.bin").write_bytes(DATA)
    (mirror / "other.bin").write_bytes(b"x" * 10)
    return mirror


@pytest.mark.parametrize("checksum", [{"sha256": SHA256}, {"md5": MD5}])
def test_mirror_hit_makes_no_request(server, tmp_path, checksum):
    mirror = _mirror_with_data(tmp_path)
    dest = tmp_path / "cache" / "data.bin"
    download.fetch(f"{server.url}/data.bin", dest, **checksum, mirror=mirror,
                   index_path=tmp_path / "index.json", **FAST)
    assert _read(dest) == DATA
    assert server.requests == []


def test_a_mirror_copy_gone_bad_under_its_indexed_digest_is_said_and_hashed_again(server, tmp_path):
    """Bit rot keeps size and time: the index still said the file matched, the run failed with 'the file changed
    upstream ... update the checksum in the recipe', and mirror check kept calling it present."""
    mirror = _mirror_with_data(tmp_path)
    index = tmp_path / "index.json"
    download.fetch("http://127.0.0.1:9/data.bin", tmp_path / "a.bin", sha256=SHA256, mirror=mirror,
                   index_path=index, **FAST)
    path = mirror / "a" / "b" / "renamed.bin"
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(bytes([DATA[1000] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # bit rot changes no ctime either (writing here did): the index keeps this file's entry as it was
    entries = json.loads(index.read_text())
    entries["files"][str(path)]["ctime_ns"] = path.stat().st_ctime_ns
    index.write_text(json.dumps(entries))
    with pytest.raises(DownloadError) as err:
        download.fetch("http://127.0.0.1:9/data.bin", tmp_path / "b.bin", sha256=SHA256, mirror=mirror,
                       index_path=index, **FAST)
    assert str(err.value).startswith(f"the mirror's copy {path} is damaged: expected sha256 {SHA256}, got")
    assert "mlrun mirror add" in err.value.hint and "update the checksum" not in err.value.hint
    from engine import mirror as mirrors
    assert mirrors.find(mirror, sha256=SHA256, index_path=index) is None   # hashed again: not the file


def test_mirror_hit_copies_never_links(server, tmp_path):
    """A copy (a clone where the file system shares blocks), never the mirror's own inode."""
    mirror = _mirror_with_data(tmp_path)
    copied = tmp_path / "copied.bin"
    download.fetch(f"{server.url}/data.bin", copied, sha256=SHA256, mirror=mirror, **FAST)
    assert copied.stat().st_ino != (mirror / "a" / "b" / "renamed.bin").stat().st_ino and _read(copied) == DATA
    assert server.requests == []


def test_read_only_mirror(server, tmp_path):
    mirror = _mirror_with_data(tmp_path)
    before = sorted(mirror.rglob("*"))
    paths = [mirror, *before]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        dest = tmp_path / "cache" / "data.bin"
        download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, mirror=mirror,
                       index_path=tmp_path / "cache" / "index.json", **FAST)
        assert _read(dest) == DATA
        assert sorted(mirror.rglob("*")) == before
        assert (tmp_path / "cache" / "index.json").exists()
    finally:
        for p in paths:
            p.chmod(stat.S_IRWXU)
    assert server.requests == []


def test_mirror_miss_downloads_and_hint_names_mirror(server, tmp_path):
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    dest = tmp_path / "data.bin"
    download.fetch(f"{server.url}/data.bin", dest, sha256=SHA256, mirror=mirror, **FAST)
    assert _read(dest) == DATA
    with pytest.raises(DownloadError) as err:
        download.fetch(f"{server.url}/missing", tmp_path / "m", sha256=SHA256, mirror=mirror, **FAST)
    assert str(mirror) in err.value.hint


def test_progress_bar_only_when_asked(server, tmp_path, capsys):
    url = f"{server.url}/data.bin"
    download.fetch(url, tmp_path / "quiet.bin", sha256=SHA256, **{**FAST, "progress": None})
    assert capsys.readouterr().err == ""  # default: only when stderr is a terminal
    download.fetch(url, tmp_path / "loud.bin", sha256=SHA256, **{**FAST, "progress": True})
    assert "loud.bin" in capsys.readouterr().err


def test_module_import_does_not_load_requests_or_tqdm():
    code = ("import sys, engine.download, engine.mirror; "
            "print(any(m in sys.modules for m in ('requests', 'tqdm')))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_a_mirror_file_of_the_right_name_and_wrong_bytes_is_named(tmp_path):
    """A damaged dev-v1.1.json in the mirror (never indexed): the hint said the mirror had no file with that sha256,
    not which file there was wrong (a user's trial)."""
    mirror = tmp_path / "mirror"
    (mirror / "squad").mkdir(parents=True)
    bad = mirror / "squad" / "data.bin"
    bad.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))
    with pytest.raises(DownloadError) as err:
        download.fetch("http://127.0.0.1:9/data.bin", tmp_path / "cache" / "data.bin", sha256=SHA256, mirror=mirror,
                       index_path=tmp_path / "index.json", **FAST)
    assert err.value.hint.startswith(f"{bad} in the mirror is not the file asked for (sha256 {SHA256})"), err.value.hint
    deep = mirror / "a" / "b" / "data.bin"   # two folders down, as the mirror is searched: it was "has no file"
    deep.parent.mkdir(parents=True)
    bad.rename(deep)
    with pytest.raises(DownloadError) as err:
        download.fetch("http://127.0.0.1:9/data.bin", tmp_path / "cache" / "data.bin", sha256=SHA256, mirror=mirror,
                       index_path=tmp_path / "index.json", **FAST)
    assert err.value.hint.startswith(f"{deep} in the mirror is not the file asked for"), err.value.hint
    bad = deep
    bad.unlink()   # no file of that name: the hint as before
    with pytest.raises(DownloadError) as err:
        download.fetch("http://127.0.0.1:9/data.bin", tmp_path / "cache" / "data.bin", sha256=SHA256, mirror=mirror,
                       index_path=tmp_path / "index.json", **FAST)
    assert err.value.hint.startswith(f"mirror {mirror} has no file with sha256 {SHA256}"), err.value.hint
