"""`mlrun gc`: removes what no live process owns (decided by locks), says how much it freed, and with
--older-than removes cache entries unused that long, never one a running mlrun holds."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_user_error, kill_group, wait_for
from engine import Cache, gc
from engine.cache import flock

DAY = 86400


def aged(path, seconds):
    """Set path's times to `seconds` ago; returns path."""
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def put(path, size, age=0):
    """A file of size bytes at path (folders made as needed); returns path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return aged(path, age)


def item(top, rel=None, size=10, age=0):
    """One thing gc may remove: the file top, or the folder top holding rel; all of it last changed age ago."""
    put(os.path.join(top, rel) if rel else top, size, age)
    if rel:
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                aged(os.path.join(folder, name), age)
        aged(top, age)
    return top


def temp_dir_owner(cache_root, prefix="import-"):
    """A separate process that owns a temp folder of the cache (as an import does) until it is killed."""
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r}); from engine.cache import Cache\n"
            f"p = Cache({cache_root!r}).new_temp_dir({prefix!r}); open(p + '/data', 'w').write('x' * 2000)\n"
            "print(p, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    return proc, proc.stdout.readline().strip()


@pytest.fixture
def litter(ws):
    """One of each kind of garbage, and next to each something of the same kind that must stay."""
    c, r = ws.cache, ws.runs
    ws.gone = [item(os.path.join(c, ".tmp", "a-0123456789abcdef.4242"), "out.bin", 1000),
               item(os.path.join(c, ".tmp", "rm-a-0123456789abcdef.77-0a0b0c0d"), "sub/f", 20),
               item(os.path.join(c, ".partial", "sha256-" + "e3b0c442" * 8 + ".part"), size=3000, age=8 * DAY),
               item(os.path.join(c, ".failed", "a-0123456789abcdef-20200101-000000"), "build.log", age=8 * DAY),
               item(os.path.join(r, ".import-20200101-000000-abcd.99"), "run.json", 5, age=DAY),
               item(os.path.join(r, "20200101-000000-dead"), "app/log.txt", 7, age=DAY),
               item(os.path.join(c, ".locks", "tmp", "import-1-0000dead.lock"), size=0),   # its folder is gone
               # a SIGKILLed cluster sweep's markers (a live sweep's, younger than 30 days, stay)
               item(os.path.join(c, ".sweep-" + "ab" * 16), size=32, age=31 * DAY),
               item(os.path.join(r, ".sweep-" + "cd" * 16), size=32, age=31 * DAY),
               # `runs` killed while it wrote its memo
               item(os.path.join(r, ".index", "rows-0.json.4242.tmp"), size=11, age=DAY)]
    ws.kept = [item(os.path.join(r, ".index", "rows-0.json.4343.tmp"), size=11),   # being written now
               item(os.path.join(c, ".partial", "sha256-" + "0123abcd" * 8 + ".part"), size=3000, age=DAY),
               item(os.path.join(c, ".sweep-" + "ef" * 16), size=32, age=8 * DAY),
               # what a --cache that is not (only) mlrun's holds: names mlrun never gives (were deleted)
               item(os.path.join(c, ".tmp", "project.v2"), "notes.txt", 5, age=8 * DAY),
               item(os.path.join(c, ".tmp", "notes.txt"), size=5, age=8 * DAY),
               item(os.path.join(c, ".partial", "my-download.iso"), size=5, age=8 * DAY),
               item(os.path.join(c, ".failed", "notes"), "build.log", age=8 * DAY),
               item(os.path.join(c, ".failed", "b-0123456789abcdef-20991231-000000"), "build.log", age=DAY),
               item(os.path.join(r, "20200101-000000-feed"), "run.json", 5, age=DAY),   # a run: never garbage
               item(os.path.join(r, "20991231-000000-live"), "app/log.txt", 7),   # started a moment ago
               # the person's own things kept beside the runs: not named as runs, never garbage (were deleted)
               item(os.path.join(r, "my-bundles"), "a.tar.gz", 9, age=DAY),
               item(os.path.join(r, "x.tar.gz"), size=9, age=DAY)]
    return ws


def test_gc_removes_what_nobody_owns_and_says_how_much_it_freed(litter):
    ws = litter
    importer, import_dir = temp_dir_owner(ws.cache)
    try:
        dry = ws.mlrun("gc", "--dry-run")
        assert dry.returncode == 0 and "nothing removed" in dry.stdout, dry.stderr
        assert all(os.path.exists(p) for p in ws.gone + [import_dir])
        assert import_dir not in dry.stdout   # its owner is alive
        kill_group(importer)
        result = ws.mlrun("gc", "-y")
    finally:
        kill_group(importer)
    assert result.returncode == 0, result.stderr
    assert [p for p in ws.gone + [import_dir] if os.path.exists(p)] == []
    assert [p for p in ws.kept if not os.path.exists(p)] == []
    freed = result.stdout.splitlines()[-1]
    for kind in ("1 build leftover (1000 B)", "1 interrupted removal (20 B)", "1 killed import (2.0 KB)",
                 "1 partial download (2.9 KB)",
                 "1 failed build log (10 B)", "1 run without a record (7 B)", "1 killed run import (5 B)",
                 "2 sweep markers (64 B)", "1 killed memo write (11 B)"):
        assert kind in freed, freed
    assert os.listdir(os.path.join(ws.cache, ".locks", "tmp")) == []   # the import's lock went with it
    # no lock made for the person's files (notes.lock, project.lock were); the leftover's went with it (no entry)
    assert [n for n in os.listdir(os.path.join(ws.cache, ".locks")) if n.endswith(".lock")] == []
    assert ws.mlrun("gc", "-y").stdout.strip() == "nothing to remove"


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_gc_never_touches_a_build_in_progress(ws, tmp_path):
    marker = tmp_path / "started"
    ws.recipe("slow", f"tags: slow\nrun: echo $$ > {marker}; sleep 1; echo done > out.txt\n")
    proc = ws.popen("slow")
    try:
        assert wait_for(marker.exists)
        [build] = os.listdir(os.path.join(ws.cache, ".tmp"))
        result = ws.mlrun("gc", "-y")
        assert result.returncode == 0 and result.stdout.strip() == "nothing to remove", result.stdout
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        kill_group(proc)
    [entry] = ws.entries("slow")
    assert open(os.path.join(ws.cache, entry, "out.txt")).read() == "done\n"


def test_gc_stops_the_step_of_a_killed_build_before_removing_its_leftover(ws, tmp_path):
    """mlrun and its guard SIGKILLed: the step ran on, and gc deleted the leftover (with the record of the
    step's process group) without stopping it; nothing could stop it after."""
    import signal
    marker = tmp_path / "step"
    ws.recipe("slow", f"tags: slow\nrun: echo $$ > {marker}; sleep 60; echo done > out.txt\n")
    proc = ws.popen("slow")
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text().strip())
        step = int(marker.read_text())
        guards = [int(p) for p in os.listdir("/proc") if p.isdigit() and f"guard.py\0{proc.pid}\0" in _cmdline(p)]
        assert guards
        # the guards first: mlrun's death sends a guard SIGTERM (PR_SET_PDEATHSIG) and it stops the step, so
        # killing mlrun first let a guard stop the step before its own SIGKILL came (CI met it once)
        for pid in guards + [proc.pid]:
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert os.path.exists(f"/proc/{step}")   # the step runs on, unseen
        result = ws.mlrun("gc", "-y")
        assert result.returncode == 0 and "1 build leftover" in result.stdout, result.stdout + result.stderr
        assert wait_for(lambda: not os.path.exists(f"/proc/{step}") or _zombie(step), timeout=10)
    finally:
        kill_group(proc)


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return ""


def _zombie(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_gc_skips_what_an_owner_took_back_since_it_looked(ws):
    cache = Cache(ws.cache)
    leftover = os.path.dirname(put(os.path.join(ws.cache, ".tmp", "a-0123456789abcdef.4242", "f"), 10))
    [item] = gc.find(cache, ws.runs)
    fd = flock(cache.lock_path("a-0123456789abcdef.lock"))   # a build of that entry starts now
    try:
        assert gc.remove(cache, [item]) == ([], [item])
    finally:
        os.close(fd)
    assert os.path.exists(leftover)


# -- unused entries ------------------------------------------------------------------------------


def chain(ws, gate):
    ws.recipe("old", "tags: old\nrun: echo old > out.txt\n")
    ws.recipe("dep", "tags: dep\nrun: echo dep > out.txt\n")
    ws.recipe("app", f"tags: app\ncache: false\ndeps: [dep]\nrun: touch {gate}.waiting; while [ ! -e {gate} ]; do sleep 0.05; done\n")


def use_files_aged(ws, seconds):
    folder = os.path.join(ws.cache, ".locks")
    for name in os.listdir(folder):
        if name.endswith(".use"):
            aged(os.path.join(folder, name), seconds)


def test_gc_leaves_a_partial_download_whose_lock_is_held_however_old(ws):
    """A download's lock file keeps the mtime of when it was taken: gc --older-than 1h removed the lock of a
    download running for hours, and a second download then appended to the same .part."""
    partial = os.path.join(ws.cache, ".partial")
    part = put(os.path.join(partial, "sha256-" + "ab" * 32 + ".part"), 100, age=3 * DAY)
    lock = put(part + ".lock", 0, age=3 * DAY)
    lone = put(os.path.join(partial, "sha256-" + "cd" * 32 + ".part.lock"), 0, age=3 * DAY)
    cache = Cache(ws.cache)
    fd = flock(lock, wait=False)   # the live download
    try:
        found = gc.find(cache, ws.runs, older_than=3600)   # not even listed: "would free", then "in use again"
        assert [i.path for i in found if i.kind == "partial download"] == []
        assert [i.path for i in found if i.kind == "download lock"] == [lone]
        gc.remove(cache, found, older_than=3600)
        assert os.path.exists(part) and os.path.exists(lock) and not os.path.exists(lone)
    finally:
        os.close(fd)
    removed, skipped = gc.remove(cache, gc.find(cache, ws.runs, older_than=3600), older_than=3600)
    assert part in [i.path for i in removed] and not os.path.exists(part)


def test_gc_older_than_removes_unused_entries_but_never_one_a_running_mlrun_holds(ws, tmp_path):
    gate = tmp_path / "gate"
    chain(ws, gate)
    assert ws.mlrun("old").returncode == 0
    proc = ws.popen("app")
    try:
        assert wait_for(lambda: os.path.exists(f"{gate}.waiting"))
        use_files_aged(ws, 60 * DAY)
        result = ws.mlrun("gc", "--older-than", "30d", "-y")
        assert result.returncode == 0, result.stderr
        assert "1 unused entry" in result.stdout and ws.entries() == ws.entries("dep"), result.stdout
        gate.touch()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        kill_group(proc)
    assert ws.mlrun("gc", "--older-than", "61d", "-y").stdout.strip() == "nothing to remove"
    result = ws.mlrun("gc", "--older-than", "30d", "-y")   # the run is over: nobody holds it now
    assert "1 unused entry" in result.stdout and ws.entries() == [], result.stdout


def test_reuse_records_the_last_use_outside_the_entry(ws):
    ws.recipe("dep", "tags: dep\nrun: echo dep > out.txt\n")
    assert ws.mlrun("dep").returncode == 0
    [entry] = ws.entries()
    use = os.path.join(ws.cache, ".locks", entry + ".use")
    aged(use, 60 * DAY)
    again = ws.mlrun("dep")
    assert again.returncode == 0 and "cached" in again.stderr, again.stderr
    assert time.time() - os.stat(use).st_mtime < DAY
    assert ws.mlrun("cache", "verify").returncode == 0   # the read-only entry itself is untouched


def test_gc_usage(ws):
    assert_user_error(ws.mlrun("gc", "--older-than", "30 days"), 2, "--older-than", "30d")
    put(os.path.join(ws.cache, ".tmp", "a-0123456789abcdef.4242", "f"), 10)
    refused = ws.mlrun("gc")   # no terminal to ask on
    assert_user_error(refused, 2, "1 item would be removed; pass -y")
    assert os.path.exists(os.path.join(ws.cache, ".tmp", "a-0123456789abcdef.4242"))
    assert ws.mlrun("gc", "--help").returncode == 0
    assert "mlrun gc" in ws.mlrun("--help").stdout


@pytest.mark.slow  # about 0.9 s on the 2-core EPYC
def test_an_entry_with_no_use_noted_is_removed_as_listed(ws):
    """An entry whose use file is missing (a cache copied without .locks/, or used by one who could not write
    there): gc's own lock made the file, whose time now read as a use: "skipped: used since", its age reset.
    An export's lock made it too."""
    ws.recipe("dep", "tags: dep\nrun: echo dep > out.txt\n")
    ws.recipe("other", "tags: other\ncache: false\ndeps: [dep]\nrun: 'true'\n")
    assert ws.mlrun("other").returncode == 0
    [entry] = ws.entries()
    use = os.path.join(ws.cache, ".locks", entry + ".use")
    meta = os.path.join(ws.cache, entry, ".mlrun", "entry.json")
    finished = json.load(open(meta))["finished"]
    os.remove(use)
    run_id = os.listdir(ws.runs)[0]
    assert ws.mlrun("export", run_id, "-o", os.path.join(str(ws.root), "b.tar.gz"), "--with-cache").returncode == 0
    assert os.stat(use).st_mtime == 0   # the export's lock notes no use
    later = finished + 60 * DAY
    found = gc.find(Cache(ws.cache), ws.runs, older_than=30 * DAY, now=later)
    assert [i.kind for i in found if i.entry] == ["unused entry"]
    os.remove(use)   # and with no use file at all: gc's own lock is no use either
    removed, skipped = gc.remove(Cache(ws.cache), found, older_than=30 * DAY, now=later)
    assert [i.path for i in removed if i.entry] == [os.path.join(ws.cache, entry)] and not skipped, skipped
    assert not os.path.exists(use)   # .locks/ keeps no use file of an entry that is gone
    assert ws.mlrun("other").returncode == 0 and os.path.exists(use)   # built again: used
    assert ws.mlrun("rm", "cache", "dep", "-y").returncode == 0
    assert not os.path.exists(use) and not os.path.exists(use[:-4] + ".lock")   # rm too, and its build lock
    # a use file whose entry never was (its build failed) is gc's
    ws.recipe("broken", "tags: broken\nrun: exit 3\n")
    assert ws.mlrun("broken").returncode == 1
    [stale] = [n for n in os.listdir(os.path.join(ws.cache, ".locks")) if n.startswith("broken-") and n.endswith(".use")]
    said = ws.mlrun("gc", "-y").stdout
    assert "1 stale use file" in said and "1 stale build lock" in said, said   # the failed build's
    assert not os.path.exists(os.path.join(ws.cache, ".locks", stale))
    assert sorted(n for n in os.listdir(os.path.join(ws.cache, ".locks")) if n != "tmp") == \
        sorted(e + x for e in ws.entries() for x in (".lock", ".use"))   # .locks/ only grew: now two per entry
    assert ws.mlrun("broken").returncode == 1 and ws.mlrun("rm", "cache", "other", "-y").returncode in (0, 2)
    assert ws.mlrun("other").returncode == 0   # builds after its lock went


@pytest.mark.parametrize("checks", [True, False])
def test_a_build_lock_gc_unlinks_between_its_open_and_its_lock_is_taken_again(tmp_path, monkeypatch, checks):
    """A builder opens the lock's path, then locks: a gc unlinking the file between the two left the builder holding
    a file nobody sees, and the next builder locked the new one (two builds of one entry). path_lock takes it
    again; one open-and-lock without its check (checks=False, as filelock's FileLock did: this test's own check)
    does not."""
    import fcntl
    from engine import cache
    path = tmp_path / "e-0123456789abcdef.lock"
    path.write_text("")
    real, calls = fcntl.flock, []

    def unlinked_first(fd, op):
        if not calls:
            os.unlink(path)   # gc's unlink, under its lock, between this open and this flock
        calls.append(op)
        return real(fd, op)
    monkeypatch.setattr(fcntl, "flock", unlinked_first)
    lock = cache.path_lock(str(path))
    if checks:
        assert lock.acquire(timeout=5)
    else:
        lock.fd = cache._flock_once(str(path), shared=False, wait=True, no_use=False)
    try:
        holds_the_paths = path.exists() and os.path.samestat(os.fstat(lock.fd), os.stat(path))
        assert holds_the_paths == checks and len(calls) == (2 if checks else 1)
    finally:
        lock.release()


def test_a_run_waiting_on_a_use_file_gc_unlinks_holds_the_one_the_path_names(ws):
    """gc and rm unlink a removed entry's use file under its lock: a run blocked in flock then held a file nobody
    saw, and the next rm removed the entry it had rebuilt under it."""
    import threading
    path = os.path.join(ws.cache, "a.use")
    os.makedirs(ws.cache, exist_ok=True)
    held = flock(path)   # gc's, exclusive
    got = []
    waiter = threading.Thread(target=lambda: got.append(flock(path, shared=True)))
    waiter.start()
    time.sleep(0.2)
    os.unlink(path)   # as gc does once the entry is gone
    os.close(held)
    waiter.join(timeout=10)
    assert got and os.path.samestat(os.fstat(got[0]), os.stat(path))   # the file the path names now
    assert flock(path, wait=False) is None   # and an rm after it sees it held
    os.close(got[0])


def test_gc_never_removes_an_entry_a_running_plan_reaches_later(ws, tmp_path):
    """The use lock was taken as each step came: gc removed an entry planned for a later step while an earlier one
    built, and the run rebuilt it (offline, a dataset's rebuild fails)."""
    gate = tmp_path / "gate"
    ws.recipe("later", "tags: later\nrun: echo later > out.txt\n")
    ws.recipe("slow", f"tags: slow\nrun: touch {gate}.waiting; while [ ! -e {gate} ]; do sleep 0.05; done\n")
    ws.recipe("top", "tags: top\ncache: false\ndeps: [slow, later]\nrun: 'true'\n")
    assert ws.mlrun("later").returncode == 0
    [later] = ws.entries("later")
    proc = ws.popen("top")
    try:
        assert wait_for(lambda: os.path.exists(f"{gate}.waiting"))
        use_files_aged(ws, 60 * DAY)
        assert ws.mlrun("gc", "--older-than", "30d", "-y").returncode == 0
        assert ws.entries("later") == [later]
        gate.touch()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        kill_group(proc)
    [record] = [r for r in (json.load(open(os.path.join(ws.runs, n, "run.json"))) for n in os.listdir(ws.runs))
                if r["query"] == "top"]
    assert [s["status"] for s in record["steps"]] == ["built", "cached", "ran"], record["steps"]
