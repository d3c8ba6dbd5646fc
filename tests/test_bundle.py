"""Bundles: export a real run (with its cache entries), import it into another cache; tampered bundles are refused."""
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import time
import types

import pytest

from conftest import Workspace, assert_user_error, run_ids
from engine import Cache, MlrunError, digests, gc, integrity
from engine.bundle import export_run, import_bundle
from engine.cache import UNDIGESTED, entry_digest, read_entry


def make_run(ws, builds):
    """A real run of `bench` (base -> app -> bench; bench is not cached, so it runs in the run folder).

    base writes sub/data.txt and two relative symlinks inside its folder; every step notes it ran in `builds`.
    """
    ws.builds = builds
    ws.recipe("base", f"""\
        tags: get base
        exports: {{BASE: "{{entry}}/latest.txt"}}
        run: echo base >> {builds}; mkdir sub; echo base > sub/data.txt; ln -s sub/data.txt latest.txt; ln -s sub cur
        """)
    ws.recipe("app", f"""\
        tags: get app
        deps: [{{name: base, query: get base}}]
        exports: {{APP: "{{entry}}/out.txt"}}
        run: echo app >> {builds}; cat "$BASE" > out.txt
        """)
    ws.recipe("bench", f"""\
        tags: bench
        cache: false
        deps: [{{name: app, query: get app}}]
        run: echo bench >> {builds}; cat "$APP" > result.txt
        """)
    result = ws.mlrun("bench")
    assert result.returncode == 0, result.stderr
    [ws.run_id] = os.listdir(ws.runs)
    ws.run_dir = os.path.join(ws.runs, ws.run_id)
    ws.entry = {name.rsplit("-", 1)[0]: name for name in ws.entries()}
    assert sorted(ws.entry) == ["app", "base"]
    return ws


@pytest.fixture
def made(ws, tmp_path):
    """This test's own run, free to change; cache2 and runs2 are where it imports."""
    make_run(ws, tmp_path / "builds")
    ws.cache2, ws.runs2 = Cache(ws.path("cache2")), ws.path("runs2")
    return ws


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run and its bundle for the tests that only read them (a run costs a quarter second)."""
    root = tmp_path_factory.mktemp("built")
    ws = make_run(Workspace(root), root / "builds")
    ws.bundle = export(ws)["path"]
    return ws


@pytest.fixture
def shared(built, tmp_path):
    """The module's bundle and names, with this test's own cache2 and runs2 to import into."""
    return types.SimpleNamespace(bundle=built.bundle, entry=built.entry, run_id=built.run_id, root=str(tmp_path),
                                 path=lambda *parts: os.path.join(tmp_path, *parts),
                                 cache2=Cache(tmp_path / "cache2"), runs2=str(tmp_path / "runs2"))


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
                with open(path, "rb") as f:
                    out[rel] = ("file", f.read())
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
    with pytest.raises(MlrunError, match="inside the run folder it exports"):
        export_run(made.run_dir, made.cache_obj(), os.path.join(made.run_dir, "me.tar.gz"))
    entry = os.path.join(made.cache_obj().root, made.entry["app"])   # was written there: the entry damaged
    with pytest.raises(MlrunError, match="inside the cache"):
        export_run(made.run_dir, made.cache_obj(), os.path.join(entry, "me.tar.gz"), with_cache=True)
    assert made.cache_obj().verify() == []
    other = made.path("runs", "X")   # what runs show, diff and replay refuse, export refused not
    os.makedirs(other)
    with open(os.path.join(other, "run.json"), "w") as f:
        f.write('{"id": "x"}')
    with pytest.raises(MlrunError, match="run.json is not an mlrun run record"):
        export_run(other, made.cache_obj(), made.path("x.tar.gz"))


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
        assert tar.getmember(f"{base}/cur").issym()
    children = {}
    for name in members:
        children.setdefault(os.path.dirname(name), []).append(os.path.basename(name))
    assert all(kids == sorted(kids) for kids in children.values())
    assert names(export(made, name="again.tar.gz")["path"]) == members


def test_export_ships_hard_linked_files_as_plain_files(made):
    # Downloads were hard-linked from the mirror (caches made before that changed): two entries may share a file.
    shared = os.path.join(made.cache, made.entry["base"], "sub", "data.txt")
    other = os.path.join(made.cache, made.entry["app"], "out.txt")   # same bytes: "base\n"
    os.remove(other)
    os.link(shared, other)
    integrity.seal(os.path.dirname(other))   # as a build that linked it before publishing would have
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


def test_an_entry_being_exported_is_in_use_and_a_killed_exports_part_goes(made, monkeypatch):
    """`rm cache` during `export --with-cache` removed an entry under it ("cannot write the bundle ...: No such file
    or directory"); a SIGKILLed export's .part (hundreds of MB) stayed for good."""
    from engine import bundle
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = made.path(f"run.tar.gz.{bundle._where()}-{gone.pid}.part")   # its process is no more
    elsewhere = made.path(f"run.tar.gz.0badf00d-{gone.pid}.part")   # another host's or container's: its pid means
    open(elsewhere, "w").close()                                     # nothing here
    open(killed, "w").close()
    seen = []
    real = bundle._add_tree

    def add_tree(tar, path, arcname, what, root=None, bar=None):
        if not seen:
            seen.append(made.mlrun("rm", "cache", made.entry["app"], "-y"))
        return real(tar, path, arcname, what, root, bar)
    monkeypatch.setattr(bundle, "_add_tree", add_tree)
    out = export(made)
    assert_user_error(seen[0], 2, "in use")
    assert sorted(out["entries"]) == sorted(made.entry.values()) and not os.path.exists(killed)
    assert os.path.exists(elsewhere)
    assert made.mlrun("rm", "cache", made.entry["app"], "-y").returncode == 0   # released once written


def test_a_run_still_running_is_not_exported_and_a_replaced_bundle_is_said(made):
    """Exported while running: 0 entries, and imported it read as died, every step 'not run'; `-o` over another
    bundle replaced it unsaid."""
    import json
    from engine import guard
    out = made.mlrun("export", made.run_id, "-o", made.path("first.tar.gz"))
    assert out.returncode == 0 and "replaced" not in out.stdout
    again = made.mlrun("export", made.run_id, "-o", made.path("first.tar.gz"))
    assert again.returncode == 0 and "(it replaced the file that was there)" in again.stdout
    path = os.path.join(made.run_dir, "run.json")
    record = json.load(open(path))
    record.update(status="running", process=guard.identity(os.getpid()))   # this process: alive
    json.dump(record, open(path, "w"))
    assert_user_error(made.mlrun("export", made.run_id, "-o", made.path("live.tar.gz")), 2,
                      f"run {made.run_id} is still running", "export it once it has ended")
    assert not os.path.exists(made.path("live.tar.gz"))
    # recorded by another host (a shared runs folder): this one cannot tell live from died, and exported it
    record["process"] = dict(record["process"], host="node7")
    json.dump(record, open(path, "w"))
    assert json.loads(made.mlrun("runs", "--json").stdout)[0]["status"] == "running?"
    assert_user_error(made.mlrun("export", made.run_id, "-o", made.path("live.tar.gz")), 2,
                      f"run {made.run_id} may still be running on node7", "export it on node7")
    assert not os.path.exists(made.path("live.tar.gz"))
    record["process"] = guard.identity(os.getpid())
    json.dump(record, open(path, "w"))
    # replay too: it ran a second copy beside the live one, then called the first "died"
    assert_user_error(made.mlrun("replay", made.run_id), 2, f"run {made.run_id} is still running")


def test_export_refuses_a_damaged_entry_and_a_place_that_is_not_a_file(made):
    """A damaged entry was packed, and its receiver told the bundle was tampered with; -o /dev/null replaced
    /dev/null with a regular file (os.replace)."""
    app = os.path.join(made.cache, made.entry["app"])
    os.chmod(os.path.join(app, "out.txt"), 0o644)
    with open(os.path.join(app, "out.txt"), "a") as f:
        f.write("more\n")
    with pytest.raises(MlrunError) as e:
        export(made)
    assert f"the cache entry {made.entry['app']} of step" in e.value.message and "modified: out.txt" in e.value.message
    assert "mlrun rm cache" in e.value.hint and not any(n.startswith("run.tar.gz") for n in os.listdir(made.root))
    # bit rot keeps size and time: the stat signature matches, the content does not (it was packed, and import
    # said the bundle "was not made by mlrun export"); here the signature is made to match the changed file
    integrity.reseal(app)
    with pytest.raises(MlrunError) as e:
        export(made)
    assert "changed: out.txt" in e.value.message and "mlrun cache verify" in e.value.hint, e.value.message
    fifo = made.path("pipe")
    os.mkfifo(fifo)
    for place in (fifo, made.root):
        with pytest.raises(MlrunError, match="exists and is not a file") as e:
            export_run(made.run_dir, made.cache_obj(), place)
        assert e.value.exit_code == 2
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_export_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(MlrunError, match="not a run folder"):
        export_run(tmp_path, Cache(tmp_path / "cache"), tmp_path / "x.tar.gz")
    # a run folder whose record is damaged is said as the other verbs say it (was "not a run folder", whose hint
    # sent the user to runs/<id>/, where it was; and "no valid run id or steps" for steps that were text)
    run_dir = tmp_path / "runs" / "20261207-120000-abcd"
    run_dir.mkdir(parents=True)
    for text, said in (('{"id": "x", "steps": ', "cannot read run record .*run.json: Expecting value"),
                       ('{"id": "x", "steps": "oops"}', "not an mlrun run record: its steps is str \"oops\"")):
        (run_dir / "run.json").write_text(text)
        with pytest.raises(MlrunError, match=said) as e:
            export_run(run_dir, Cache(tmp_path / "cache"), tmp_path / "x.tar.gz")
        assert e.value.hint is None


# -- import ----------------------------------------------------------------------------------------


def test_import_publishes_entries_and_the_run_then_nothing_is_rebuilt(made):
    for entry in made.entry.values():   # a private umask at the exporter's: the importer still shares
        for parent, dirs, files in os.walk(os.path.join(made.cache, entry)):
            os.chmod(parent, 0o700)
            for name in files:
                if not os.path.islink(os.path.join(parent, name)):
                    os.chmod(os.path.join(parent, name), 0o600)
    bundle = export(made)["path"]
    before = time.time()
    result = import_bundle(bundle, made.cache2, made.runs2)
    for entry in made.entry.values():   # imported counts as used now, not when it was built elsewhere
        path = os.path.join(made.cache2.root, entry)
        assert gc.last_used(read_entry(path), gc._use_lock(made.cache2, path)) >= before
    assert result == {"run_id": made.run_id, "run_dir": os.path.join(made.runs2, made.run_id), "run_existed": False, "run_same": False,
                      "added": [made.entry["app"], made.entry["base"]], "present": [], "damaged_here": [],
                      "other_build_here": [], "key_unchecked": [],
                      "signed": False, "signed_by": None, "verified": False}
    assert published(made.cache2) == sorted(made.entry.values())
    assert made.cache2.verify() == []
    for entry in made.entry.values():   # but the stat signature: it is recorded anew for this file system
        imported, original = (tree(os.path.join(c, entry)) for c in (made.cache2.root, made.cache))
        assert imported.pop(".mlrun/stat.json") and original.pop(".mlrun/stat.json")
        assert imported == original
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
    assert result["added"] == result["present"] == [] and run_ids(made.runs2) == [made.run_id]
    assert published(made.cache2) == []


def test_importing_twice_leaves_what_is_there_untouched(shared):
    import_bundle(shared.bundle, shared.cache2, shared.runs2)
    app = os.path.join(shared.cache2.root, shared.entry["app"])
    before = os.stat(app).st_ino, tree(app)
    result = import_bundle(shared.bundle, shared.cache2, shared.runs2)
    assert result["added"] == [] and result["present"] == [shared.entry["app"], shared.entry["base"]]
    assert result["run_existed"] is True and run_ids(shared.runs2) == [shared.run_id]
    assert (os.stat(app).st_ino, tree(app)) == before
    assert os.listdir(os.path.join(shared.cache2.root, ".tmp")) == [] and result["damaged_here"] == []
    # One changed here since: still not replaced, but said (was: counted as present, nothing more)
    os.chmod(os.path.join(app, "out.txt"), 0o644)
    with open(os.path.join(app, "out.txt"), "a") as f:
        f.write("x")
    assert import_bundle(shared.bundle, shared.cache2, shared.runs2)["damaged_here"] == [shared.entry["app"]]


def test_an_entry_here_whose_bytes_changed_unseen_is_said_on_import(shared):
    """A byte flipped with its size and time kept: counted "already present", the import said all was well, and
    the replay used it (cache verify said CORRUPT)."""
    import_bundle(shared.bundle, shared.cache2, shared.runs2)
    path = os.path.join(shared.cache2.root, shared.entry["app"], "out.txt")
    st, data = os.stat(path), open(path, "rb").read()
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(bytes([data[0] ^ 1]) + data[1:])
    os.chmod(path, st.st_mode)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not integrity.stat_problems(os.path.dirname(path))   # unseen by the stat signature
    assert import_bundle(shared.bundle, shared.cache2, shared.runs2)["damaged_here"] == [shared.entry["app"]]


def test_import_adds_only_the_missing_entries(shared):
    import_bundle(shared.bundle, shared.cache2, shared.runs2)
    shared.cache2.remove([m for m in shared.cache2.entries() if shared.entry["app"] in m["path"]])
    result = import_bundle(shared.bundle, shared.cache2, shared.runs2)
    assert result["added"] == [shared.entry["app"]] and result["present"] == [shared.entry["base"]]
    assert shared.cache2.verify() == []


@pytest.mark.parametrize("which", ["app", "base"])
def test_import_never_replaces_a_folder_in_the_way_and_publishes_nothing(shared, which):
    """Was: the entries before the one in the way were published, the run not, and the error did not say so."""
    os.makedirs(os.path.join(shared.cache2.root, shared.entry[which], "half"))
    with pytest.raises(MlrunError, match=f"{shared.entry[which]} exists but is not an entry; nothing was imported"):
        import_bundle(shared.bundle, shared.cache2, shared.runs2)
    assert os.listdir(os.path.join(shared.cache2.root, shared.entry[which])) == ["half"]
    assert os.listdir(os.path.join(shared.cache2.root, ".tmp")) == []
    assert shared.cache2.entries() == [] and not os.path.exists(shared.runs2)


@pytest.mark.parametrize("make", [os.makedirs, lambda path: open(path, "w").close()])
def test_import_refuses_a_run_folder_in_the_way_that_holds_no_run(shared, make):
    """Was: 'that run was here already: left as it was', exit 0, and then no such run."""
    os.makedirs(shared.runs2)
    make(os.path.join(shared.runs2, shared.run_id))
    with pytest.raises(MlrunError, match=f"cannot import the run {shared.run_id}: .* exists but holds no run record; "
                                         "nothing was imported"):
        import_bundle(shared.bundle, shared.cache2, shared.runs2)
    assert shared.cache2.entries() == []


@pytest.mark.parametrize("size", [10, 20, 50, 100, 500])
def test_a_bundle_cut_short_anywhere_is_unreadable_not_a_bug(shared, size):
    """Cut within its first few hundred bytes, opening it raised EOFError: 'unexpected EOFError ... a bug in mlrun'."""
    with open(shared.bundle, "rb") as f:
        head = f.read(size)
    cut = shared.path("cut.tar.gz")
    with open(cut, "wb") as f:
        f.write(head)
    with pytest.raises(MlrunError, match="cannot read the bundle .*cut.tar.gz"):
        import_bundle(cut, shared.cache2, shared.runs2)


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
    """Make the entry's files.json, files_digest and entry_digest agree with its tampered files, as a careful
    forger would."""
    prefix = f"cache/{entry}/"
    files = {}
    for info, data in items:
        rel = info.name[len(prefix):]
        if info.name.startswith(prefix) and rel not in UNDIGESTED and not info.isdir():
            files[rel] = "link:" + info.linkname if info.issym() else hashlib.sha256(data).hexdigest()
    find(items, prefix + ".mlrun/files.json")[1] = json.dumps(files).encode()
    meta_item = find(items, prefix + ".mlrun/entry.json")
    meta = dict(json.loads(meta_item[1]), files_digest=digests.summary(files))
    meta_item[1] = json.dumps(dict(meta, entry_digest=entry_digest(meta))).encode()
    # and the run's record of the build it used (import refuses an entry of another build than the record names)
    record_item = next(item for item in items if item[0].name.startswith("run/") and item[0].name.endswith("/run.json"))
    record = json.loads(record_item[1])
    for step in record["steps"]:
        if os.path.basename(step.get("path") or "") == entry and step.get("entry_digest"):
            step["entry_digest"] = entry_digest(meta)
    record_item[1] = json.dumps(record).encode()


def rewrite(src, dst, edit, shared):
    """Copy the bundle src to dst through edit([[TarInfo, bytes or None], ...], shared)."""
    with tarfile.open(src) as tar:
        items = [[m, tar.extractfile(m).read() if m.isreg() else None] for m in tar.getmembers()]
    edit(items, shared)
    with tarfile.open(dst, "w:gz") as tar:
        for info, data in items:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def change_a_byte(items, shared):
    item = find(items, f"cache/{shared.entry['app']}/out.txt")
    item[1] = b"X" + item[1][1:]


def forge_beside_the_record(items, shared):
    """A consistent forgery of the entry alone: the run's record still names the build it used."""
    item = find(items, f"cache/{shared.entry['app']}/out.txt")
    item[1] = b"forged\n"
    record_item = next(i for i in items if i[0].name.endswith("/run.json"))
    kept = record_item[1]
    restamp(items, shared.entry["app"])
    record_item[1] = kept


def _run_record(items, edit):
    item = next(i for i in items if i[0].name.startswith("run/") and i[0].name.endswith("/run.json"))
    record = json.loads(item[1])
    edit(record)
    item[1] = json.dumps(record).encode()


def drop_the_step_that_used_base(items, shared):
    """An entry no step of the run used: it was published and served later runs."""
    def edit(record):
        record["steps"] = [s for s in record["steps"] if os.path.basename(s.get("path") or "") != shared.entry["base"]]
    _run_record(items, edit)


def material_of_another_key(items, shared):
    """entry.json's material edited (and its digests made to agree): its key is not the key of that material."""
    item = find(items, f"cache/{shared.entry['base']}/.mlrun/entry.json")
    meta = json.loads(item[1])
    meta["material"] = dict(meta["material"], forged=True)
    item[1] = json.dumps(meta).encode()
    restamp(items, shared.entry["base"])


def add_parent_member(items, shared):
    items.append(reg("../evil", b"evil"))


def add_parent_inside(items, shared):
    items.append(reg(f"cache/{shared.entry['base']}/../../evil", b"evil"))


def add_absolute_member(items, shared):
    items.append(reg("/tmp/evil-from-a-bundle", b"evil"))


def add_outside_member(items, shared):
    items.append(reg("etc/evil", b"evil"))


def link_to_etc_passwd(items, shared):
    items.append(special(f"cache/{shared.entry['base']}/passwd", tarfile.SYMTYPE, "/etc/passwd"))
    restamp(items, shared.entry["base"])


def link_two_up(items, shared):
    items.append(special(f"cache/{shared.entry['base']}/sub/evil", tarfile.SYMTYPE, "../../x"))
    restamp(items, shared.entry["base"])


def link_out_of_the_run(items, shared):
    items.append(special(f"run/{shared.run_id}/bench/evil", tarfile.SYMTYPE, "../../x"))


def link_chain_out(items, shared):
    # Each link is inside on paper; followed, `evil` is the cache folder itself.
    base = f"cache/{shared.entry['base']}"
    items.append(special(f"{base}/sub/up", tarfile.SYMTYPE, ".."))
    items.append(special(f"{base}/evil", tarfile.SYMTYPE, "sub/up/.."))
    restamp(items, shared.entry["base"])


def write_through_a_link(items, shared):
    items.append(reg(f"cache/{shared.entry['base']}/cur/evil", b"evil"))


def link_over_a_folder(items, shared):
    # the file first, then a symlink where its folder is: extracted in that order, the link replaced nothing
    items.append(reg(f"cache/{shared.entry['base']}/new/evil", b"evil"))
    items.append(special(f"cache/{shared.entry['base']}/new", tarfile.SYMTYPE, "sub"))


def add_hard_link(items, shared):
    app = f"cache/{shared.entry['app']}"
    items.append(special(f"{app}/evil", tarfile.LNKTYPE, f"{app}/out.txt"))


def add_fifo(items, shared):
    items.append(special(f"cache/{shared.entry['app']}/evil", tarfile.FIFOTYPE))


def add_unlisted_file(items, shared):
    items.append(reg(f"cache/{shared.entry['app']}/evil.txt", b"evil"))


def add_second_copy(items, shared):
    items.append(reg(f"cache/{shared.entry['app']}/out.txt", b"evil"))


def bad_files_digest(items, shared):
    item = find(items, f"cache/{shared.entry['app']}/.mlrun/entry.json")
    item[1] = json.dumps(dict(json.loads(item[1]), files_digest="0" * 64)).encode()


def rename_entry(items, shared):
    old, new = f"cache/{shared.entry['app']}", "cache/app-0000000000000000"
    for info, _ in items:
        if info.name == old or info.name.startswith(old + "/"):
            info.name = new + info.name[len(old):]


def rename_entry_not_hex(items, shared):
    """An entry and its entry.json agreeing on a key that is no key: imported, a folder rm and gc ignored."""
    old, new = f"cache/{shared.entry['app']}", "cache/app-zzzzzzzzzzzzzzzz"
    for item in items:
        if item[0].name == old or item[0].name.startswith(old + "/"):
            item[0].name = new + item[0].name[len(old):]


def add_second_run(items, shared):
    items.append(reg("run/20260101-000000-0e71/run.json", b'{"id": "20260101-000000-0e71"}'))


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
    (write_through_a_link, ["{base}/cur/evil", "under a symlink"]),
    (link_over_a_folder, ["{base}/new/evil", "under a symlink"]),
    (add_hard_link, ["{app}/evil", "hard link"]),
    (add_fifo, ["{app}/evil", "device or fifo"]),
    (add_unlisted_file, ["cache entry {app}", "added: evil.txt"]),
    (add_second_copy, ["{app}/out.txt", "appears twice"]),
    (bad_files_digest, ["cache entry {app}", "files_digest"]),
    (rename_entry, ["cache entry app-0000000000000000", "belongs to the entry {app}"]),
    (add_second_run, ["2 run folders"]),
    (rename_entry_not_hex, ["cache entry 'app-zzzzzzzzzzzzzzzz'", "not named as mlrun names entries"]),
    (forge_beside_the_record, ["cache entry {app}", "another build than the one the run used"]),
    (drop_the_step_that_used_base, ["cache entry {base}", "no step of the run used it"]),
    (material_of_another_key, ["cache entry {base}", "its key is not the key of what it records it was built from"]),
]


def assert_refused(shared, bundle, fragments):
    with pytest.raises(MlrunError) as e:
        import_bundle(bundle, shared.cache2, shared.runs2)
    fill = {"app": shared.entry["app"], "base": shared.entry["base"], "run": shared.run_id}
    message = e.value.message
    assert e.value.exit_code == 2 and "\n" not in message and "nothing was imported" in e.value.hint
    assert message.startswith(f"refusing to import {bundle}: ")
    for fragment in fragments:
        assert fragment.format(**fill) in message, message
    assert published(shared.cache2) == [] and not os.path.exists(shared.runs2)
    tmp = os.path.join(shared.cache2.root, ".tmp")
    assert not os.path.exists(tmp) or os.listdir(tmp) == []   # what was unpacked before the refusal: removed
    assert not os.path.exists("/tmp/evil-from-a-bundle")
    assert [p for p in (shared.path("cache2"), shared.root) if os.path.exists(os.path.join(p, "evil"))] == []


@pytest.mark.parametrize("edit, fragments", TAMPERS, ids=[t[0].__name__ for t in TAMPERS])
def test_tampered_bundle_is_refused_and_nothing_published(shared, edit, fragments):
    bundle = rewrite(shared.bundle, shared.path("bad.tar.gz"), edit, shared)
    assert_refused(shared, bundle, fragments)


def test_the_untampered_rewrite_imports(shared):
    # The tamper tests' rewriting alone changes nothing that matters.
    bundle = rewrite(shared.bundle, shared.path("same.tar.gz"), lambda items, names: None, shared)
    assert import_bundle(bundle, shared.cache2, shared.runs2)["added"] == sorted(shared.entry.values())


@pytest.mark.parametrize("edit, fragments", [t for t in TAMPERS if t[0] in (add_parent_member, link_two_up,
                                                                             link_chain_out, change_a_byte)],
                         ids=lambda t: getattr(t, "__name__", None))
def test_without_tarfiles_data_filter_our_own_checks_hold(shared, monkeypatch, edit, fragments):
    monkeypatch.delattr(tarfile, "data_filter")   # as on Python < 3.11.4
    assert_refused(shared, rewrite(shared.bundle, shared.path("bad.tar.gz"), edit, shared), fragments)
    assert import_bundle(shared.bundle, shared.cache2, shared.runs2)["added"] == sorted(shared.entry.values())


def test_a_file_that_is_not_a_bundle(shared):
    junk = Workspace.write(shared.path("junk.tar.gz"), b"not a tar file at all")
    with pytest.raises(MlrunError, match="cannot read the bundle"):
        import_bundle(junk, shared.cache2, shared.runs2)
    with open(shared.bundle, "rb") as f:
        data = f.read()
    cut = Workspace.write(shared.path("cut.tar.gz"), data[:len(data) // 2])
    with pytest.raises(MlrunError, match="cannot (read|extract) the bundle"):
        import_bundle(cut, shared.cache2, shared.runs2)
    assert published(shared.cache2) == [] and not os.path.exists(shared.runs2)


def test_the_cli_reports_a_refusal_as_one_paragraph(shared, tmp_path):
    bad = rewrite(shared.bundle, shared.path("bad.tar.gz"), link_to_etc_passwd, shared)
    ws = Workspace(tmp_path)
    result = ws.mlrun("import", bad, env=ws.env(MLRUN_CACHE=shared.cache2.root, MLRUN_RUNS=shared.runs2))
    err = assert_user_error(result, 2, "refusing to import", "/passwd", "'/etc/passwd'")
    assert len(err.strip().splitlines()) == 2 and published(shared.cache2) == []


def test_the_cli_says_a_run_of_the_bundles_id_here_is_another_run(shared, tmp_path):
    """It said "imported run ... (that run was here already: left as it was)", exit 0, and `runs` showed the other
    run (a run folder copied under that id; replay of the bundle said the truth)."""
    os.makedirs(os.path.join(shared.runs2, shared.run_id))
    with open(os.path.join(shared.runs2, shared.run_id, "run.json"), "w") as f:
        json.dump({"id": shared.run_id, "query": "another", "status": "ok", "steps": []}, f)
    ws = Workspace(tmp_path)
    result = ws.mlrun("import", shared.bundle, env=ws.env(MLRUN_CACHE=shared.cache2.root, MLRUN_RUNS=shared.runs2))
    assert_user_error(result, 2, f"a run {shared.run_id} is here already and is not the bundle's", "left as it was, "
                      "the bundle's run not imported", "mlrun --runs DIR import")
    assert result.stdout.startswith("imported the bundle's cache entries, not its run (below): 2 cache entries added")
    assert json.load(open(os.path.join(shared.runs2, shared.run_id, "run.json")))["query"] == "another"


@pytest.mark.parametrize("field, value", [("started", "yesterday"), ("packages", ["a"]), ("finished", float("nan"))])
def test_import_refuses_a_run_record_no_reader_here_could_read(shared, field, value):
    """Imported, exit 0; then `mlrun runs` listed it as a record that could not be read, diff and replay refused."""
    def edit(items, shared):
        item = find(items, f"run/{shared.run_id}/run.json")
        item[1] = json.dumps(dict(json.loads(item[1]), **{field: value})).encode()
    bad = rewrite(shared.bundle, shared.path("bad.tar.gz"), edit, shared)
    with pytest.raises(MlrunError, match=f"refusing to import .*: run {shared.run_id}: its {field} is"):
        import_bundle(bad, shared.cache2, shared.runs2)
    assert shared.cache2.entries() == [] and not os.path.exists(os.path.join(shared.runs2, shared.run_id))


def test_a_failed_runs_bundle_carries_the_log_its_cache_kept(ws, tmp_path):
    """The failed cached step's log lies in the cache's .failed/: the bundle held run.json alone ('record and
    logs'), and a teammate auditing the failure got one error line."""
    import json
    import tarfile
    ws.recipe("broken", "tags: [broken]\nrun: 'echo \"the weights are torn\"; exit 3'\n")
    failed = ws.mlrun("broken", "--json")
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run"]
    record = json.load(open(os.path.join(ws.runs, run_id, "run.json")))
    kept = record["steps"][-1]["log"]
    assert "/.failed/" in kept and os.path.isfile(kept)
    assert f"(log: {kept})" in ws.mlrun("runs", "show", run_id).stdout
    out = tmp_path / "failed.tar.gz"
    assert ws.mlrun("export", run_id, "-o", str(out)).returncode == 0
    with tarfile.open(out) as tar:
        log = tar.extractfile(f"run/{run_id}/failed-logs/broken.log").read().decode()
    assert "the weights are torn" in log
    cache2, runs2 = tmp_path / "cache2", tmp_path / "runs2"
    imported = ws.mlrun("import", str(out), env=ws.env(MLRUN_CACHE=str(cache2), MLRUN_RUNS=str(runs2)))
    assert imported.returncode == 0, imported.stderr
    assert "the weights are torn" in (runs2 / run_id / "failed-logs" / "broken.log").read_text()
    os.rename(os.path.dirname(kept), str(tmp_path / "moved"))   # the recording machine's copy is not here
    shown = ws.mlrun("runs", "show", run_id, env=ws.env(MLRUN_CACHE=str(cache2), MLRUN_RUNS=str(runs2)))
    assert f"(log: {runs2 / run_id / 'failed-logs' / 'broken.log'})" in shown.stdout, shown.stdout


def test_an_imported_failed_uncached_step_names_the_log_its_run_folder_brought(ws, tmp_path):
    """An uncached step's log lies in its run folder, which the bundle carries whole: `runs show` looked in
    failed-logs/ only and said the log was "not on this machine"."""
    import json
    ws.recipe("torn", "tags: [torn]\ncache: false\nrun: 'echo \"the weights are torn\"; exit 3'\n")
    run_id = json.loads(ws.mlrun("torn", "--json").stdout)["run"]
    out = tmp_path / "failed.tar.gz"
    assert ws.mlrun("export", run_id, "-o", str(out)).returncode == 0
    elsewhere = ws.env(MLRUN_CACHE=str(tmp_path / "cache2"), MLRUN_RUNS=str(tmp_path / "runs2"))
    assert ws.mlrun("import", str(out), env=elsewhere).returncode == 0
    shutil.rmtree(ws.runs)   # the recording machine's runs/ is not here
    shown = ws.mlrun("runs", "show", run_id, env=elsewhere)
    log = tmp_path / "runs2" / run_id / "torn" / ".mlrun" / "build.log"
    assert f"(log: {log})" in shown.stdout and "the weights are torn" in log.read_text(), shown.stdout
    as_json = json.loads(ws.mlrun("runs", "show", run_id, "--json", env=elsewhere).stdout)
    assert as_json["steps"][-1]["log"] == str(log)   # the JSON named the other machine's path


def test_a_file_export_cannot_read_is_named_not_the_output(tmp_path):
    """An entry's file a teammate made private: "cannot write the bundle OUT: Permission denied; give -o a path you
    may write", while OUT was writable."""
    from engine.oserrors import output_errors
    out = str(tmp_path / "run.tar.gz")
    with pytest.raises(MlrunError) as e:
        with output_errors("cannot write the bundle", out):
            raise PermissionError(13, "Permission denied", "/cache/get-bert-vocab-x/vocab.txt")
    assert "cannot read /cache/get-bert-vocab-x/vocab.txt" in e.value.message and "-o" not in (e.value.hint or "")
    with pytest.raises(MlrunError) as e:
        with output_errors("cannot write the bundle", out):
            raise PermissionError(13, "Permission denied", out + ".host-1.part")
    assert "cannot write the bundle" in e.value.message and e.value.hint == "give -o a path you may write"


def test_export_with_cache_refuses_an_entry_rebuilt_since_the_run(made):
    """`mlrun rm cache` and a rerun rebuild an entry under the same key: the bundle packed the rebuild as the
    build the run used. The run's steps record which build they used (entry_digest)."""
    import json
    steps = json.load(open(os.path.join(made.run_dir, "run.json")))["steps"]
    used = {s["recipe"]: s.get("entry_digest") for s in steps}
    app = os.path.join(made.cache, made.entry["app"])
    assert used["app"] == read_entry(app)["entry_digest"] and "entry_digest" not in [
        k for s in steps if s["status"] == "ran" for k in s]   # the run folder's step is no entry
    assert made.mlrun("rm", "cache", made.entry["app"], "-y").returncode == 0
    assert made.mlrun("bench").returncode == 0   # the same key, built again
    assert read_entry(app)["entry_digest"] != used["app"]
    with pytest.raises(MlrunError) as e:
        export(made)
    assert f"the cache entry {made.entry['app']} of step app was rebuilt after run {made.run_id}" in \
        e.value.message and "export without --with-cache" in e.value.hint
    assert not any(n.startswith("run.tar.gz") for n in os.listdir(made.root))
    assert export(made, with_cache=False)["entries"] == []   # without the entries it goes


def test_export_with_another_cache_than_the_runs_names_the_runs(made):
    """A run made with --cache DIR, exported without it: "the cache entry ... was rebuilt after run ... used it",
    with the hint to export without the entries, where the default cache's build was never the run's."""
    other = made.env(MLRUN_CACHE=made.cache2.root)
    assert made.mlrun("bench", env=other).returncode == 0   # the same keys built in another cache: other builds
    with pytest.raises(MlrunError) as e:
        export_run(made.run_dir, Cache(made.cache2.root), made.path("run.tar.gz"), with_cache=True)
    assert f"run {made.run_id} used the cache {made.cache}, not {made.cache2.root}: its entry " in e.value.message \
        and "is another build here" in e.value.message, e.value.message
    assert e.value.hint == f"export with that cache: mlrun --cache {made.cache} export {made.run_id} -o FILE --with-cache"


@pytest.mark.slow   # about 0.7 s on the EPYC
def test_export_and_import_show_progress_on_a_terminal_only(ws, tmp_path):
    """A 2 GB bundle was packed or unpacked for a minute with nothing on the screen: on a terminal, bars say what
    is done (packing; unpacking, which checks each member on the way, and verifying; checking, where diff reads a
    bundle in place); piped or logged, the output is what it was."""
    from conftest import MLRUN, at_a_terminal
    ws.recipe("blob", """\
        tags: get blob
        run: head -c 3000000 /dev/urandom > blob.bin
        """)
    assert ws.mlrun("get blob").returncode == 0
    [run_id] = os.listdir(ws.runs)
    bundle = str(tmp_path / "x.tar.gz")
    code, screen = at_a_terminal([MLRUN, "export", run_id, "-o", bundle, "--with-cache"], ws.env(), cwd=ws.root)
    # its total: the blob's 3,000,000 bytes and the run's and entry's small files, in MiB
    assert code == 0 and re.search(r"packing x\.tar\.gz: +\d+%.*/2\.\d\dM", screen) and "wrote " in screen, screen
    other = ws.env(MLRUN_CACHE=tmp_path / "c2", MLRUN_RUNS=tmp_path / "r2")
    code, screen = at_a_terminal([MLRUN, "import", bundle], other, cwd=ws.root)
    assert code == 0 and "1 cache entry added" in screen, screen
    assert "unpacking x.tar.gz" in screen and "verifying entries" in screen, screen
    assert "Traceback" not in screen
    code, screen = at_a_terminal([MLRUN, "diff", bundle, run_id], ws.env(), cwd=ws.root)
    assert code == 0 and "checking x.tar.gz" in screen and "unpacking" not in screen, screen
    assert "Traceback" not in screen
    # not a terminal: no bar, in stdout or stderr
    piped = ws.mlrun("export", run_id, "-o", str(tmp_path / "y.tar.gz"), "--with-cache")
    assert piped.returncode == 0 and "packing" not in piped.stdout + piped.stderr, piped.stderr
    again = ws.mlrun("import", str(tmp_path / "y.tar.gz"), env=ws.env(MLRUN_CACHE=tmp_path / "c3",
                                                                        MLRUN_RUNS=tmp_path / "r3"))
    assert again.returncode == 0 and not {"checking", "unpacking", "verifying"} & set(
        (again.stdout + again.stderr).split()), again.stdout + again.stderr


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (Debian: openssh-client)")
def test_the_bundle_bench_measures_a_run_and_says_what_is_wrong(ws, tmp_path):
    """bench/bundle_io.py as a person runs it: a row for each bundle with its figures; a bad --run, --repeat or
    --scratch, and a cache without the run's entries, each a line and exit 2, no traceback."""
    import subprocess
    import sys
    from conftest import ROOT
    ws.recipe("blob", """\
        tags: get blob
        run: head -c 300000 /dev/urandom > blob.bin
        """)
    assert ws.mlrun("get blob").returncode == 0
    [run_id] = os.listdir(ws.runs)
    run_dir = os.path.join(ws.runs, run_id)

    def bench(*args, cache=ws.cache):
        env = dict(ws.env(), MLRUN_CACHE=str(cache))
        return subprocess.run([sys.executable, "-m", "bench.bundle_io", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=120)
    done = bench("--run", run_dir, "--repeat", "1", "--scratch", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert sorted(rows) == ["signed", "unsigned"] and all(row[2] == "1" for row in rows.values()), done.stdout
    assert all(float(row[6]) > 0 and float(row[8]) > 0 and min(map(float, row[3:])) >= 0 for row in rows.values())
    assert not [name for name in os.listdir(tmp_path) if name.startswith("bundle-io-")]   # its scratch removed
    for args, said in [(["--run", str(tmp_path / "nowhere")], "no run record"),
                       (["--run", run_dir, "--repeat", "0"], "--repeat must be at least 1"),
                       (["--run", run_dir, "--scratch", str(tmp_path / "nowhere")], "not a folder")]:
        result = bench(*args)
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = bench("--run", run_dir, "--repeat", "1", cache=tmp_path / "empty-cache")
    assert result.returncode == 2 and result.stderr.startswith(f"error: run {run_id} used the cache ") \
        and "Traceback" not in result.stderr, result.stderr
    # the command that measures it (was "mlrun MLRUN_CACHE DIR export ...": the script has no --cache)
    assert f"hint: measure it with that cache: MLRUN_CACHE={ws.cache} python -m bench.bundle_io " \
        in result.stderr, result.stderr
    # was: a traceback (PermissionError, FileNotFoundError) for a --scratch it cannot write in
    result = bench("--run", run_dir, "--scratch", "/proc")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot make a scratch folder in /proc: ") \
        and "Traceback" not in result.stderr, result.stderr
    # was: the newest run under the checkout's runs/, MLRUN_RUNS (where mlrun writes them) unread
    done = bench("--repeat", "1", "--scratch", str(tmp_path))
    assert done.returncode == 0 and done.stdout.startswith(f"run {run_id}, best of 1\n"), done.stderr


def test_bundles_packed_by_either_gzip_are_read_by_the_other(made, monkeypatch):
    """ISA-L's gzip (python-isal, in requirements.txt) packs and reads bundles where it is installed, Python's where
    it is not: the same format, so a teammate's bundle imports whichever made it, and damage is refused by both."""
    from engine import bundle
    isal_gzip, python_gzip = bundle._gzip(), bundle._gzip(isal=False)
    assert (isal_gzip.name, python_gzip.name) == ("isal", "gzip")
    for i, (packer, reader) in enumerate([(isal_gzip, python_gzip), (python_gzip, isal_gzip)]):
        monkeypatch.setattr(bundle, "_gzip", lambda: packer)
        path = export(made, name=f"{i}.tar.gz")["path"]
        monkeypatch.setattr(bundle, "_gzip", lambda: reader)
        info = import_bundle(path, Cache(made.path(f"cache-{i}")), made.path(f"runs-{i}"))
        assert info["added"] == sorted(made.entry.values()) and info["run_id"] == made.run_id
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF   # in the deflate stream: the reader's own error, said as a bad bundle
        bad = Workspace.write(made.path(f"bad-{i}.tar.gz"), bytes(data))
        with pytest.raises(MlrunError, match="cannot read the bundle|refusing to import"):
            import_bundle(bad, Cache(made.path(f"cache-bad-{i}")), made.path(f"runs-bad-{i}"))


def test_an_export_stopped_with_blocks_still_queued_stops_the_packers_threads_at_once(tmp_path):
    """python-isal's threaded writer, stopped with blocks still queued (a Ctrl-C while its close() waited on them),
    joined a compressing thread blocked for ever on a full queue whose reader had returned: the export hung. The
    export now drops what is queued and its threads end; a finished one is whole."""
    import gzip
    import threading
    from engine import bundle

    class Slow(io.RawIOBase):
        written = 0

        def writable(self):
            return True

        def write(self, b):
            time.sleep(0.02)
            self.written += len(b)
            return len(b)

    block = os.urandom(128 * 1024)
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            with bundle._gzip().write(raw := Slow()) as gz:
                for _ in range(40):
                    gz.write(block)
                raise KeyboardInterrupt
        # what was queued is dropped, not waited for (the wait a second Ctrl-C turned into the hang)
        assert raw.written < 40 * len(block) / 2, raw.written
        packer = gz.raw
        ended = threading.Event()
        threading.Thread(target=lambda: [t.join() for t in [*packer.compression_workers, packer.output_worker]]
                         and None or ended.set(), daemon=True).start()
        assert ended.wait(5), "the packer's threads still run"
    with open(tmp_path / "whole.gz", "wb") as raw, bundle._gzip().write(raw) as gz:
        gz.write(block)
    assert gzip.decompress((tmp_path / "whole.gz").read_bytes()) == block
