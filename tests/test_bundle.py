"""Bundles: export a real run (with its cache entries), import it into another cache; tampered bundles are refused."""
import hashlib
import io
import json
import os
import stat
import tarfile

import pytest

from engine import Cache, MlrunError, digests
from engine.bundle import export_run, import_bundle


@pytest.fixture
def made(ws, tmp_path):
    """A real run of `bench` (base -> app -> bench; bench is not cached, so it runs in the run folder).

    base writes sub/data.txt and two relative symlinks inside its folder; every step notes it ran in `builds`.
    """
    ws.builds = tmp_path / "builds"
    ws.recipe("base", f"""\
        tags: get base
        exports: {{BASE: "{{entry}}/latest.txt"}}
        run: echo base >> {ws.builds}; mkdir sub; echo base > sub/data.txt; ln -s sub/data.txt latest.txt; ln -s sub current
        """)
    ws.recipe("app", f"""\
        tags: get app
        deps: [{{name: base, query: get base}}]
        exports: {{APP: "{{entry}}/out.txt"}}
        run: echo app >> {ws.builds}; cat "$BASE" > out.txt
        """)
    ws.recipe("bench", f"""\
        tags: bench
        cache: false
        deps: [{{name: app, query: get app}}]
        run: echo bench >> {ws.builds}; cat "$APP" > result.txt
        """)
    result = ws.mlrun("bench")
    assert result.returncode == 0, result.stderr
    [ws.run_id] = os.listdir(ws.runs)
    ws.run_dir = os.path.join(ws.runs, ws.run_id)
    ws.entry = {name.rsplit("-", 1)[0]: name for name in ws.entries()}
    assert sorted(ws.entry) == ["app", "base"]
    ws.cache2, ws.runs2 = Cache(ws.path("cache2")), ws.path("runs2")
    return ws


def export(made, with_cache=True, name="run.tar.gz"):
    return export_run(made.run_dir, made.cache_obj(), made.path(name), with_cache=with_cache)


def names(path):
    with tarfile.open(path) as tar:
        return tar.getnames()


def run_steps(runs_dir):
    """{recipe: status} of the only run in runs_dir."""
    [run_id] = os.listdir(runs_dir)
    with open(os.path.join(runs_dir, run_id, "run.json")) as f:
        return {s["recipe"]: s["status"] for s in json.load(f)["steps"]}


def published(cache):
    return sorted(os.path.basename(m["path"]) for m in cache.entries())


def tree(root):
    """{relative path: (kind, content or link target)} of everything under root."""
    out = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                out[rel] = ("file", open(path, "rb").read())
    return out


# -- export ---------------------------------------------------------------------------------------


def test_export_without_cache_holds_only_the_run_folder(made):
    info = export(made, with_cache=False)
    assert info["run_id"] == made.run_id and info["entries"] == []
    assert info["path"] == made.path("run.tar.gz") and info["archive_bytes"] == os.path.getsize(info["path"])
    members = names(info["path"])
    assert members[0] == f"run/{made.run_id}"
    assert all(n.startswith(f"run/{made.run_id}") for n in members)
    assert {f"run/{made.run_id}/run.json", f"run/{made.run_id}/bench/result.txt"} <= set(members)


def test_export_with_cache_adds_each_entry_whole_in_a_stable_order(made):
    info = export(made)
    assert info["entries"] == [made.entry["app"], made.entry["base"]]
    members = names(info["path"])
    base = f"cache/{made.entry['base']}"
    assert {f"{base}/sub/data.txt", f"{base}/.mlrun/entry.json", f"{base}/.mlrun/files.json",
            f"cache/{made.entry['app']}/out.txt"} <= set(members)
    with tarfile.open(info["path"]) as tar:
        link = tar.getmember(f"{base}/latest.txt")
        assert link.issym() and link.linkname == "sub/data.txt"
        assert tar.getmember(f"{base}/current").issym()
    children = {}
    for name in members:
        children.setdefault(os.path.dirname(name), []).append(os.path.basename(name))
    assert all(kids == sorted(kids) for kids in children.values())
    assert names(export(made, name="again.tar.gz")["path"]) == members


def test_export_ships_hard_linked_files_as_plain_files(made):
    # Downloads are hard-linked from the mirror, so two entries can share a file.
    shared = os.path.join(made.cache, made.entry["base"], "sub", "data.txt")
    other = os.path.join(made.cache, made.entry["app"], "out.txt")   # same bytes: "base\n"
    os.remove(other)
    os.link(shared, other)
    info = export(made)
    with tarfile.open(info["path"]) as tar:
        assert not any(m.islnk() for m in tar.getmembers())
    assert import_bundle(info["path"], made.cache2, made.runs2)["added"] == info["entries"]
    assert open(os.path.join(made.cache2.root, made.entry["app"], "out.txt")).read() == "base\n"


def test_export_of_a_run_whose_entry_is_gone_names_it(made):
    made.cache_obj().remove([m for m in made.cache_obj().entries() if made.entry["app"] in m["path"]])
    with pytest.raises(MlrunError) as e:
        export(made)
    assert made.entry["app"] in e.value.message and "not in the cache" in e.value.message
    assert e.value.exit_code == 2 and "--cache" in e.value.hint
    assert not any(n.startswith("run.tar.gz") for n in os.listdir(made.root))
    assert export(made, with_cache=False)["entries"] == []   # the run alone still exports


def test_export_of_a_folder_that_is_not_a_run(made, tmp_path):
    with pytest.raises(MlrunError, match="not a run folder"):
        export_run(tmp_path, made.cache_obj(), made.path("x.tar.gz"))


# -- import ----------------------------------------------------------------------------------------


def test_import_publishes_entries_and_the_run_then_nothing_is_rebuilt(made):
    for entry in made.entry.values():   # a private umask at the exporter's: the importer still shares
        for parent, dirs, files in os.walk(os.path.join(made.cache, entry)):
            os.chmod(parent, 0o700)
            for name in files:
                if not os.path.islink(os.path.join(parent, name)):
                    os.chmod(os.path.join(parent, name), 0o600)
    bundle = export(made)["path"]
    result = import_bundle(bundle, made.cache2, made.runs2)
    assert result == {"run_id": made.run_id, "run_dir": os.path.join(made.runs2, made.run_id), "run_existed": False,
                      "added": [made.entry["app"], made.entry["base"]], "present": []}
    assert published(made.cache2) == sorted(made.entry.values())
    assert made.cache2.verify() == []
    for entry in made.entry.values():
        assert tree(os.path.join(made.cache2.root, entry)) == tree(os.path.join(made.cache, entry))
    assert tree(result["run_dir"]) == tree(made.run_dir)
    assert os.listdir(os.path.join(made.cache2.root, ".tmp")) == []
    for root in [result["run_dir"]] + [os.path.join(made.cache2.root, e) for e in made.entry.values()]:
        for parent, dirs, files in os.walk(root):
            assert os.stat(parent).st_mode & 0o050 == 0o050, parent
            assert all(os.lstat(os.path.join(parent, f)).st_mode & 0o040 for f in files), parent

    again = made.mlrun("bench", env=made.env(MLRUN_CACHE=made.cache2.root, MLRUN_RUNS=made.path("runs3")))
    assert again.returncode == 0, again.stderr
    assert run_steps(made.path("runs3")) == {"base": "cached", "app": "cached", "bench": "ran"}
    assert made.builds.read_text().split() == ["base", "app", "bench", "bench"]


def test_import_of_a_run_without_entries(made):
    result = import_bundle(export(made, with_cache=False)["path"], made.cache2, made.runs2)
    assert result["added"] == result["present"] == [] and os.listdir(made.runs2) == [made.run_id]
    assert published(made.cache2) == []


def test_importing_twice_leaves_what_is_there_untouched(made):
    bundle = export(made)["path"]
    import_bundle(bundle, made.cache2, made.runs2)
    app = os.path.join(made.cache2.root, made.entry["app"])
    before = os.stat(app).st_ino, tree(app)
    result = import_bundle(bundle, made.cache2, made.runs2)
    assert result["added"] == [] and result["present"] == [made.entry["app"], made.entry["base"]]
    assert result["run_existed"] is True and os.listdir(made.runs2) == [made.run_id]
    assert (os.stat(app).st_ino, tree(app)) == before
    assert os.listdir(os.path.join(made.cache2.root, ".tmp")) == []


def test_import_adds_only_the_missing_entries(made):
    bundle = export(made)["path"]
    import_bundle(bundle, made.cache2, made.runs2)
    made.cache2.remove([m for m in made.cache2.entries() if made.entry["app"] in m["path"]])
    result = import_bundle(bundle, made.cache2, made.runs2)
    assert result["added"] == [made.entry["app"]] and result["present"] == [made.entry["base"]]
    assert made.cache2.verify() == []


# -- tampered bundles -------------------------------------------------------------------------------


def find(items, name):
    return next(item for item in items if item[0].name == name)


def reg(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return [info, data]


def special(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return [info, None]


def restamp(items, entry):
    """Make the entry's files.json and files_digest agree with its tampered files, as a careful forger would."""
    prefix = f"cache/{entry}/"
    files = {}
    for info, data in items:
        rel = info.name[len(prefix):]
        if info.name.startswith(prefix) and not rel.startswith(".mlrun/") and not info.isdir():
            files[rel] = "link:" + info.linkname if info.issym() else hashlib.sha256(data).hexdigest()
    find(items, prefix + ".mlrun/files.json")[1] = json.dumps(files).encode()
    meta_item = find(items, prefix + ".mlrun/entry.json")
    meta_item[1] = json.dumps(dict(json.loads(meta_item[1]), files_digest=digests.summary(files))).encode()


def rewrite(src, dst, edit, made):
    """Copy the bundle src to dst through edit([[TarInfo, bytes or None], ...], made)."""
    with tarfile.open(src) as tar:
        items = [[m, tar.extractfile(m).read() if m.isreg() else None] for m in tar.getmembers()]
    edit(items, made)
    with tarfile.open(dst, "w:gz") as tar:
        for info, data in items:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def change_a_byte(items, made):
    item = find(items, f"cache/{made.entry['app']}/out.txt")
    item[1] = b"X" + item[1][1:]


def add_parent_member(items, made):
    items.append(reg("../evil", b"evil"))


def add_parent_inside(items, made):
    items.append(reg(f"cache/{made.entry['base']}/../../evil", b"evil"))


def add_absolute_member(items, made):
    items.append(reg("/tmp/evil-from-a-bundle", b"evil"))


def add_outside_member(items, made):
    items.append(reg("etc/evil", b"evil"))


def link_to_etc_passwd(items, made):
    items.append(special(f"cache/{made.entry['base']}/passwd", tarfile.SYMTYPE, "/etc/passwd"))
    restamp(items, made.entry["base"])


def link_two_up(items, made):
    items.append(special(f"cache/{made.entry['base']}/sub/evil", tarfile.SYMTYPE, "../../x"))
    restamp(items, made.entry["base"])


def link_out_of_the_run(items, made):
    items.append(special(f"run/{made.run_id}/bench/evil", tarfile.SYMTYPE, "../../x"))


def link_chain_out(items, made):
    # Each link is inside on paper; followed, `evil` is the cache folder itself.
    base = f"cache/{made.entry['base']}"
    items.append(special(f"{base}/sub/up", tarfile.SYMTYPE, ".."))
    items.append(special(f"{base}/evil", tarfile.SYMTYPE, "sub/up/.."))
    restamp(items, made.entry["base"])


def write_through_a_link(items, made):
    items.append(reg(f"cache/{made.entry['base']}/current/evil", b"evil"))


def add_hard_link(items, made):
    app = f"cache/{made.entry['app']}"
    items.append(special(f"{app}/evil", tarfile.LNKTYPE, f"{app}/out.txt"))


def add_fifo(items, made):
    items.append(special(f"cache/{made.entry['app']}/evil", tarfile.FIFOTYPE))


def add_unlisted_file(items, made):
    items.append(reg(f"cache/{made.entry['app']}/evil.txt", b"evil"))


def add_second_copy(items, made):
    items.append(reg(f"cache/{made.entry['app']}/out.txt", b"evil"))


def bad_files_digest(items, made):
    item = find(items, f"cache/{made.entry['app']}/.mlrun/entry.json")
    item[1] = json.dumps(dict(json.loads(item[1]), files_digest="0" * 64)).encode()


def rename_entry(items, made):
    old, new = f"cache/{made.entry['app']}", "cache/app-0000000000000000"
    for info, _ in items:
        if info.name == old or info.name.startswith(old + "/"):
            info.name = new + info.name[len(old):]


def add_second_run(items, made):
    items.append(reg("run/evil/run.json", b'{"id": "evil"}'))


TAMPERS = [   # (edit, what the message must say; {app}, {base}, {run} stand for the names)
    (change_a_byte, ["cache entry {app}", "changed: out.txt"]),
    (add_parent_member, ["'../evil'", "'..' component"]),
    (add_parent_inside, ["{base}/../../evil", "'..' component"]),
    (add_absolute_member, ["'/tmp/evil-from-a-bundle'", "absolute path"]),
    (add_outside_member, ["'etc/evil'", "outside run/ and cache/"]),
    (link_to_etc_passwd, ["{base}/passwd", "absolute path '/etc/passwd'"]),
    (link_two_up, ["{base}/sub/evil", "'../../x' points outside its entry folder"]),
    (link_out_of_the_run, ["{run}/bench/evil", "outside its run folder"]),
    (link_chain_out, ["cache entry {base}", "evil -> sub/up/.. resolves outside"]),
    (write_through_a_link, ["{base}/current/evil", "under a symlink"]),
    (add_hard_link, ["{app}/evil", "hard link"]),
    (add_fifo, ["{app}/evil", "device or fifo"]),
    (add_unlisted_file, ["cache entry {app}", "added: evil.txt"]),
    (add_second_copy, ["{app}/out.txt", "appears twice"]),
    (bad_files_digest, ["cache entry {app}", "files_digest"]),
    (rename_entry, ["cache entry app-0000000000000000", "belongs to the entry {app}"]),
    (add_second_run, ["2 run folders"]),
]


def assert_refused(made, bundle, fragments):
    with pytest.raises(MlrunError) as e:
        import_bundle(bundle, made.cache2, made.runs2)
    fill = {"app": made.entry["app"], "base": made.entry["base"], "run": made.run_id}
    message = e.value.message
    assert e.value.exit_code == 2 and "\n" not in message and "nothing was imported" in e.value.hint
    assert message.startswith(f"refusing to import {bundle}: ")
    for fragment in fragments:
        assert fragment.format(**fill) in message, message
    assert published(made.cache2) == [] and not os.path.exists(made.runs2)
    tmp = os.path.join(made.cache2.root, ".tmp")
    assert not os.path.exists(tmp) or os.listdir(tmp) == []   # refused before extraction: not even created
    assert not os.path.exists("/tmp/evil-from-a-bundle")
    assert [p for p in (made.path("cache2"), made.root) if os.path.exists(os.path.join(p, "evil"))] == []


@pytest.mark.parametrize("edit, fragments", TAMPERS, ids=[t[0].__name__ for t in TAMPERS])
def test_tampered_bundle_is_refused_and_nothing_published(made, edit, fragments):
    bundle = rewrite(export(made)["path"], made.path("bad.tar.gz"), edit, made)
    assert_refused(made, bundle, fragments)


def test_the_untampered_rewrite_imports(made):
    # The tamper tests' rewriting alone changes nothing that matters.
    bundle = rewrite(export(made)["path"], made.path("same.tar.gz"), lambda items, made: None, made)
    assert import_bundle(bundle, made.cache2, made.runs2)["added"] == sorted(made.entry.values())


@pytest.mark.parametrize("edit, fragments", [t for t in TAMPERS if t[0] in (add_parent_member, link_two_up,
                                                                             link_chain_out, change_a_byte)],
                         ids=lambda t: getattr(t, "__name__", None))
def test_without_tarfiles_data_filter_our_own_checks_hold(made, monkeypatch, edit, fragments):
    monkeypatch.delattr(tarfile, "data_filter")   # as on Python < 3.11.4
    good = export(made)["path"]
    assert_refused(made, rewrite(good, made.path("bad.tar.gz"), edit, made), fragments)
    assert import_bundle(good, made.cache2, made.runs2)["added"] == sorted(made.entry.values())


def test_a_file_that_is_not_a_bundle(made):
    junk = made.write(made.path("junk.tar.gz"), b"not a tar file at all")
    with pytest.raises(MlrunError, match="cannot read the bundle"):
        import_bundle(junk, made.cache2, made.runs2)
    with open(export(made)["path"], "rb") as f:
        data = f.read()
    cut = made.write(made.path("cut.tar.gz"), data[:len(data) // 2])
    with pytest.raises(MlrunError, match="cannot (read|extract) the bundle"):
        import_bundle(cut, made.cache2, made.runs2)
    assert published(made.cache2) == [] and not os.path.exists(made.runs2)
