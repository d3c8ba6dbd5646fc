"""engine.mirror: files found by checksum, a hash index outside the mirror, add and check."""

import hashlib
import json
import os
import stat

import pytest

from engine import mirror
from engine.errors import MlrunError


def _sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hashed(monkeypatch):
    """Paths mirror hashed, in order: counts the work an index should save."""
    calls = []
    real = mirror.file_digests

    def counting(path, *args):
        calls.append(str(path))
        return real(path, *args)

    monkeypatch.setattr(mirror, "file_digests", counting)
    return calls


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "mirror"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "whatever.dat").write_bytes(b"model weights")
    (root / "a.txt").write_bytes(b"alpha")
    (root / "b.txt").write_bytes(b"bravo!")
    return root


def test_find_by_sha256_and_md5_any_name_any_depth(tree, tmp_path):
    want = str(tree / "x" / "y" / "whatever.dat")
    assert mirror.find(tree, sha256=_sha(b"model weights")) == want
    assert mirror.find(tree, md5=hashlib.md5(b"model weights").hexdigest()) == want
    assert mirror.find(tree, sha256=_sha(b"absent")) is None
    assert mirror.find(tmp_path / "no-such-dir", sha256=_sha(b"alpha")) is None


def test_find_needs_a_checksum(tree):
    with pytest.raises(ValueError):
        mirror.find(tree, size=5)


def test_size_skips_hashing_other_files(tree, hashed):
    assert mirror.find(tree, sha256=_sha(b"alpha"), size=5) == str(tree / "a.txt")
    assert hashed == [str(tree / "a.txt")]


def test_index_makes_second_lookup_hash_nothing(tree, tmp_path, hashed):
    index = tmp_path / "cache" / "mirror-index.json"
    assert mirror.find(tree, sha256=_sha(b"absent"), index_path=index) is None
    assert len(hashed) == 3
    entries = json.loads(index.read_text())["files"]
    assert entries[str(tree / "a.txt")]["sha256"] == _sha(b"alpha")
    assert index.stat().st_mode & 0o040   # the group's to read: mkstemp's 0600 made teammates hash it all again

    hashed.clear()
    assert mirror.find(tree, sha256=_sha(b"bravo!"), index_path=index) == str(tree / "b.txt")
    assert hashed == []

    # A changed file (size or mtime) is hashed again; a removed one leaves the index.
    (tree / "a.txt").write_bytes(b"alpha, edited")
    (tree / "b.txt").unlink()
    assert mirror.find(tree, sha256=_sha(b"alpha, edited"), index_path=index) == str(tree / "a.txt")
    assert hashed == [str(tree / "a.txt")]
    assert str(tree / "b.txt") not in json.loads(index.read_text())["files"]

    # replaced by a file of the same size and time (`cp -p`, `rsync -a`): hashed again, not taken for the old one
    hashed.clear()
    before = os.stat(tree / "a.txt")
    (tree / "new.txt").write_bytes(b"ALPHA, EDITED")
    os.utime(tree / "new.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tree / "new.txt", tree / "a.txt")
    assert mirror.find(tree, sha256=_sha(b"ALPHA, EDITED"), index_path=index) == str(tree / "a.txt")


def test_garbage_index_is_rebuilt(tree, tmp_path):
    index = tmp_path / "index.json"
    index.write_text("{not json")
    assert mirror.find(tree, sha256=_sha(b"alpha"), index_path=index) == str(tree / "a.txt")
    assert json.loads(index.read_text())["version"] == mirror.INDEX_VERSION


def test_read_only_mirror(tree, tmp_path):
    paths = [tree, *tree.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        index = tmp_path / "index.json"
        assert mirror.find(tree, sha256=_sha(b"bravo!"), index_path=index) == str(tree / "b.txt")
        rows = mirror.check(tree, [{"file": "a.txt", "sha256": _sha(b"alpha")}], index_path=index)
        assert rows[0]["status"] == "present"
        assert sorted(tree.rglob("*")) == sorted(paths[1:])  # nothing written into the mirror
    finally:
        for p in paths:
            p.chmod(stat.S_IRWXU)


def test_adding_to_a_read_only_mirror_says_so(tmp_path, monkeypatch):
    """It said "point --cache/--runs at a writable folder": the mirror was the read-only one."""
    import errno
    from engine.errors import MlrunError
    (tmp_path / "data.bin").write_bytes(b"one")
    (tmp_path / "mirror").mkdir()

    def read_only(src, dest):
        raise OSError(errno.EROFS, "Read-only file system", dest)
    monkeypatch.setattr(mirror, "_copy_in", read_only)
    with pytest.raises(MlrunError) as refused:
        mirror.add(str(tmp_path / "mirror"), [str(tmp_path / "data.bin")])
    assert "to the mirror" in refused.value.message and "Read-only file system" in refused.value.message
    assert "--mirror DIR" in refused.value.hint and "--cache" not in refused.value.hint


def test_add_keeps_names_and_never_overwrites(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(b"one")
    (src / "other").mkdir()
    (src / "other" / "data.bin").write_bytes(b"two")
    root = tmp_path / "mirror"

    added = mirror.add(root, [src / "data.bin"])
    assert added == [(src / "data.bin", str(root / "data.bin"), _sha(b"one"), "added")]

    added = mirror.add(root, [src / "other" / "data.bin", src / "data.bin"])
    clash = os.path.join(root, _sha(b"two")[:16], "data.bin")
    assert added == [(src / "other" / "data.bin", clash, _sha(b"two"), "added"),
                     (src / "data.bin", str(root / "data.bin"), _sha(b"one"), "already there")]
    assert (root / "data.bin").read_bytes() == b"one"
    assert mirror.find(root, sha256=_sha(b"two")) == clash

    assert mirror.add(root, [src / "other" / "data.bin"]) == [(src / "other" / "data.bin", clash, _sha(b"two"),
                                                                "already there")]
    # Only files some recipe declares (by checksum) are added: the others are said so and left out.
    wanted = [{"file": "x", "sha256": _sha(b"two")}]
    assert mirror.add(root, [src / "data.bin"], wanted) == [(src / "data.bin", None, _sha(b"one"), "not needed")]
    with pytest.raises(MlrunError):
        mirror.add(root, [src / "nope"])
    # The same content under another name or deeper is there already (a second copy was made of it)
    (src / "renamed.bin").write_bytes(b"one")
    (root / "deep").mkdir()
    (root / "deep" / "kept.bin").write_bytes(b"three")
    (src / "kept.bin").write_bytes(b"three")
    assert mirror.add(root, [src / "renamed.bin", src / "kept.bin"]) == [
        (src / "renamed.bin", str(root / "data.bin"), _sha(b"one"), "already there"),
        (src / "kept.bin", str(root / "deep" / "kept.bin"), _sha(b"three"), "already there")]
    assert not (root / "renamed.bin").exists() and not (root / "kept.bin").exists()


def test_check_reports_present_missing_corrupt(tree, tmp_path):
    wanted = [
        {"name": "bert: weights.dat", "file": "weights.dat", "url": "https://x/w",
         "sha256": _sha(b"model weights")},
        {"url": "https://x/a.txt", "sha256": _sha(b"a different alpha")},
        {"file": "gone.bin", "sha256": _sha(b"gone")},
        {"file": "b.txt", "size": 6},
        {"file": "b.txt", "md5": hashlib.md5(b"bravo!").hexdigest(), "size": 6},
        {"file": "b.txt", "md5": hashlib.md5(b"bravo!").hexdigest(), "size": 5000},   # the recipe's size is wrong
    ]
    rows = mirror.check(tree, wanted, index_path=tmp_path / "index.json")
    assert [{k: r[k] for k in ("name", "status", "path")} for r in rows] == [
        {"name": "bert: weights.dat", "status": "present", "path": str(tree / "x" / "y" / "whatever.dat")},
        {"name": "a.txt", "status": "corrupt", "path": str(tree / "a.txt")},
        {"name": "gone.bin", "status": "missing", "path": None},
        {"name": "b.txt", "status": "present", "path": str(tree / "b.txt")},
        {"name": "b.txt", "status": "present", "path": str(tree / "b.txt")},
        {"name": "b.txt", "status": "wrong size", "path": str(tree / "b.txt")},   # was 'corrupt' (the file is right)
    ]
    # What a user needs to fetch a file elsewhere comes with every row: URL, size, checksum.
    assert {k: rows[1][k] for k in ("url", "file", "size", "sha256", "md5")} == {
        "url": "https://x/a.txt", "file": None, "size": None, "sha256": _sha(b"a different alpha"), "md5": None}
    assert rows[4]["md5"] == hashlib.md5(b"bravo!").hexdigest() and rows[4]["size"] == 6
    # a Hub model laid out as docs/mirrors.md says is no declared gone.bin gone bad ("the damaged copy can go")
    (tree / "huggingface" / "acme" / "tiny").mkdir(parents=True)
    (tree / "huggingface" / "acme" / "tiny" / "gone.bin").write_bytes(b"a hub file")
    assert mirror.check(tree, wanted[2:3], index_path=tmp_path / "index.json")[0]["status"] == "missing"
