"""The cache: publishing, verifying, removing; racing processes; a build killed with SIGKILL; a moved cache."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_user_error, kill_group, wait_for
from engine import Cache, MemoryIndex, MlrunError, resolve


def node_of(query="a", recipes=None):
    return resolve(MemoryIndex(recipes or {"a": {"tags": "a"}, "b": {"tags": "b"}}), query).root


def publish(cache, node, files):
    with cache.lock(node):
        build = cache.new_build_dir(node)
        for rel, text in files.items():
            path = os.path.join(build, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return cache.publish(build, node, {"recipe": node.name, "key": node.key, "finished": time.time()})


def test_publish_then_lookup(tmp_path):
    cache, node = Cache(tmp_path / "cache"), node_of()
    assert cache.lookup(node) is None
    path = publish(cache, node, {"out.txt": "hello", "sub/x.bin": "xx"})
    assert path == cache.path(node) == os.path.join(cache.root, f"a-{node.key[:16]}")
    assert cache.lookup(node) == path
    meta = cache.entries()[0]
    assert meta["path"] == path and meta["files"] == 2 and meta["size"] == 7 and meta["key"] == node.key
    assert os.listdir(os.path.join(cache.root, ".tmp")) == []


def test_entries_skip_what_is_not_a_published_entry(tmp_path):
    cache = Cache(tmp_path / "cache")
    first = publish(cache, node_of("a"), {"f": "1"})
    time.sleep(0.01)
    second = publish(cache, node_of("b"), {"f": "2"})
    os.makedirs(os.path.join(cache.root, "half-built-without-metadata"))
    os.makedirs(os.path.join(cache.root, ".tmp", "a-0000000000000000.123", ".mlrun"))
    assert [m["path"] for m in cache.entries()] == [second, first]   # newest first
    assert Cache(tmp_path / "nothing-yet").entries() == []


def test_verify_finds_changed_missing_and_added_files(tmp_path):
    cache = Cache(tmp_path / "cache")
    path = publish(cache, node_of(), {"a.txt": "aaaa", "b.txt": "bbbb", "c.txt": "cccc"})
    assert cache.verify() == []
    with open(os.path.join(path, "a.txt"), "r+b") as f:   # one byte, same size
        f.seek(2)
        f.write(b"X")
    os.remove(os.path.join(path, "b.txt"))
    with open(os.path.join(path, "new.txt"), "w") as f:
        f.write("n")
    [(meta, problems)] = cache.verify()
    assert meta["path"] == path
    assert problems == ["changed: a.txt", "missing: b.txt", "added: new.txt"]


def test_a_fifo_in_an_entry_hides_none_of_its_other_problems(tmp_path):
    """The FIFO was the entry's one problem `cache verify` showed: a file changed and one removed beside it went
    unsaid. A file replaced by a FIFO is said as such."""
    cache = Cache(tmp_path / "cache")
    path = publish(cache, node_of(), {"a.txt": "aaaa", "b.txt": "bbbb", "c.txt": "cccc"})
    os.chmod(path, 0o755)
    os.chmod(os.path.join(path, "a.txt"), 0o644)
    with open(os.path.join(path, "a.txt"), "w") as f:
        f.write("changed")
    os.remove(os.path.join(path, "b.txt"))
    os.remove(os.path.join(path, "c.txt"))
    os.mkfifo(os.path.join(path, "c.txt"))
    os.mkfifo(os.path.join(path, "pipe"))
    [(meta, problems)] = cache.verify()
    kind = "is a FIFO; only files, folders and links can be hashed or cached"
    assert problems == ["changed: a.txt", f"changed: c.txt ({kind})", "missing: b.txt", f"added: pipe ({kind})"]


def test_the_digests_never_open_a_fifo(tmp_path):
    """hash_into opened a FIFO (non-blocking) before it found its kind: a writer waiting on it was woken."""
    import threading

    from engine import digests
    from engine.errors import UnrecordableFileError
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)   # waits for a reader
    writer.start()
    time.sleep(0.05)
    with pytest.raises(UnrecordableFileError, match="pipe: is a FIFO"):
        digests.file_digest(fifo)
    writer.join(0.2)
    woken = not writer.is_alive()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))   # let the writer go
    writer.join(5)
    assert not woken, "file_digest opened the FIFO"


def test_verify_passes_over_an_entry_removed_while_it_is_checked(tmp_path, monkeypatch):
    """`rm cache` during `cache verify`: "cannot use .../x.pyc: No such file or directory" (exit 2) ended the check of
    every entry; an entry gone between two of its folders would read as damaged, its files "missing"."""
    from engine import cache as cache_module
    cache = Cache(tmp_path / "cache")
    gone = publish(cache, node_of("a"), {"f": "gone"})
    keep = publish(cache, node_of("b"), {"f": "keep"})
    real = cache_module.entry_problems

    def removed_midway(path, meta, then):
        if path != gone:
            return real(path, meta)
        cache.remove([meta])
        if then == "raise":
            raise FileNotFoundError(2, "No such file or directory", os.path.join(path, "x.pyc"))
        return ["missing: f"]
    for then in ("raise", "missing"):
        gone = publish(cache, node_of("a"), {"f": "gone"})
        monkeypatch.setattr(cache_module, "entry_problems", lambda path, meta: removed_midway(path, meta, then))
        assert cache.verify() == [] and os.path.exists(keep)


def test_remove_deletes_entries_and_nothing_else(tmp_path):
    cache = Cache(tmp_path / "cache")
    keep = publish(cache, node_of("b"), {"f": "keep"})
    gone = publish(cache, node_of("a"), {"f": "gone"})
    cache.remove([m for m in cache.entries() if m["path"] == gone])
    assert not os.path.exists(gone) and os.path.exists(keep)
    assert [m["path"] for m in cache.entries()] == [keep]


def test_remove_refuses_anything_outside_the_cache(tmp_path):
    cache = Cache(tmp_path / "cache")
    other = Cache(tmp_path / "elsewhere")
    outside = publish(other, node_of("a"), {"precious": "data"})
    link = os.path.join(cache.root, "a-link0000000000")
    os.makedirs(cache.root)
    os.symlink(outside, link)
    metas = cache.entries()
    assert [m["path"] for m in metas] == [link]   # it looks like an entry of this cache...
    with pytest.raises(MlrunError, match="refusing to delete"):
        cache.remove(metas)                       # ...but it is not deleted through it
    with pytest.raises(MlrunError, match="refusing to delete"):
        cache.remove([{"path": outside}])
    with pytest.raises(MlrunError, match="refusing to delete"):
        cache.remove([{"path": str(tmp_path)}])
    assert open(os.path.join(outside, "precious")).read() == "data"


# -- several processes, one graph -------------------------------------------------------------


def diamond(ws, counters, sleep=0.3):
    """app -> (model, data) -> python: every build appends its pid to counters/<recipe> and sleeps."""
    os.makedirs(counters, exist_ok=True)
    step = f'echo $$ >> {counters}/%s; sleep {sleep}; echo %s > out.txt'
    ws.recipe("python", f"tags: get python\nexports: {{PY_DIR: '{{entry}}'}}\nrun: {step % ('python', 'py')}\n")
    ws.recipe("model", f"tags: get model\ndeps: [get python]\nrun: {step % ('model', 'model')}\n")
    ws.recipe("data", f"tags: get data\ndeps: [get python]\nrun: {step % ('data', 'data')}\n")
    ws.recipe("app", f"tags: app\ndeps: [get model, get data]\nrun: {step % ('app', 'app')}\n"
                     "exports: {APP_OUT: '{entry}/out.txt'}\n")


@pytest.mark.slow   # a second or more: left out of the quick loop, run by CI
def test_racing_processes_build_each_entry_exactly_once(ws, tmp_path):
    counters = tmp_path / "counters"
    diamond(ws, counters)
    queries = ["app", "app", "get model", "app", "get data"]
    procs = [ws.popen(q) for q in queries]
    try:
        results = [(p, *p.communicate(timeout=60)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_group(p)
    for (p, out, err), q in zip(results, queries):
        assert p.returncode == 0, f"{q}: {err}"
        assert "Traceback" not in err
    for name in ("python", "model", "data", "app"):
        lines = (counters / name).read_text().split()
        assert len(lines) == 1, f"{name} was built {len(lines)} times"
    assert len(ws.entries()) == 4
    app_outputs = {out.splitlines()[0] for (p, out, err), q in zip(results, queries) if q == "app"}
    assert len(app_outputs) == 1   # every process reports the same entry
    assert ws.mlrun("cache", "verify").returncode == 0


@pytest.mark.slow   # a build of 2 s to wait for
def test_a_run_waiting_for_another_mlrun_says_so_at_once_in_a_log(ws, tmp_path):
    """Without a terminal (a batch job's log) the 'waiting' line showed only after a minute: it looked hung."""
    started = tmp_path / "started"
    ws.recipe("slow", f"tags: slow\nrun: touch {started}; sleep 2; echo done > out.txt\n")
    first = ws.popen("slow")
    try:
        assert wait_for(started.exists, timeout=30)
        second = ws.mlrun("slow")
    finally:
        first.communicate(timeout=60)
    assert second.returncode == 0, second.stderr
    assert "slow: waiting: another mlrun is building it" in second.stderr
    # which one, and where its log is: a stopped builder (SIGSTOP) held it unsaid
    assert f"(pid {first.pid}, since " in second.stderr and "; its log: " in second.stderr, second.stderr
    assert "(built by another mlrun)" in second.stderr


def side_by_side(ws, tmp_path, other_run="echo other > out.txt", slow_end="echo s > out.txt", other_alone=False):
    """slow builds until the test opens its gate; app needs slow, then other, which needs neither."""
    started, gate = tmp_path / "started", tmp_path / "gate"
    ws.recipe("slow", f"tags: slow\nrun: |\n  touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done\n"
                      f"  {slow_end}\nexports: {{SLOW_OUT: '{{entry}}/out.txt'}}\n")
    ws.recipe("other", f"tags: other\n{'alone: true' if other_alone else ''}\nrun: |\n"
                       f"  if [ -e {gate} ]; then echo after; else echo before; fi > when.txt\n  {other_run}\n")
    ws.recipe("app", "tags: app\ncache: false\ndeps: [slow, other]\nrun: cat $SLOW_OUT\n")
    first = ws.popen("slow")
    assert wait_for(started.exists, timeout=30)
    return first, gate


def while_first_builds(ws, first, gate, meanwhile, *args):
    """A second mlrun (args) started while the first holds slow; meanwhile(second) before the gate opens; then
    both end (killed if a check failed): (second, its stdout, its stderr)."""
    second = None
    try:
        second = ws.popen(*args)
        meanwhile(second)
        gate.touch()
        out, err = second.communicate(timeout=60)
        first.communicate(timeout=60)
    finally:
        gate.touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                kill_group(p)
    return second, out, err


def app_record(ws):
    """The run record of the run of `app` (the other run in the workspace built slow)."""
    records = [json.load(open(os.path.join(ws.runs, r, "run.json"))) for r in os.listdir(ws.runs)]
    return next(r for r in records if r["query"] == "app")


def test_a_run_waiting_for_another_mlruns_build_builds_its_other_nodes_meanwhile(ws, tmp_path):
    """Spack's rule: while another mlrun builds X, build something else first. The second run built nothing
    until the first was done with slow, then built other: two runs on one cache took the sum of their builds."""
    first, gate = side_by_side(ws, tmp_path)
    other = lambda: ws.entries("other")   # noqa: E731

    def meanwhile(second):
        assert wait_for(other, timeout=30), "other was not built while slow was being built"
        assert first.poll() is None and second.poll() is None   # both still waiting on the gate
    second, out, err = while_first_builds(ws, first, gate, meanwhile, "app", "--json")
    assert second.returncode == 0, err
    assert first.returncode == 0
    entry = os.path.join(ws.cache, other()[0])
    assert open(os.path.join(entry, "when.txt")).read() == "before\n"   # built before slow was done
    assert "[2/3] other" in err and "(while another mlrun builds slow)" in err, err
    assert err.index("(while another mlrun builds slow)") < err.index("(built by another mlrun)"), err
    steps = {s["recipe"]: s for s in json.loads(out)["steps"]}
    assert [s["recipe"] for s in json.loads(out)["steps"]] == ["slow", "other", "app"]   # the plan's order, kept
    assert steps["slow"]["status"] == "cached" and steps["other"]["status"] == "built"
    assert steps["other"]["path"] == entry and steps["other"]["seconds"] < 30
    assert len(ws.entries()) == 2 and ws.mlrun("cache", "verify").returncode == 0


@pytest.mark.slow  # about 1.8 s on the 2-core EPYC
def test_a_node_whose_recipe_says_alone_is_not_built_while_another_mlrun_builds(ws, tmp_path):
    """alone: true (it measures while it builds): never built meanwhile, beside another mlrun's build."""
    first, gate = side_by_side(ws, tmp_path, other_alone=True)

    def meanwhile(second):
        assert not wait_for(lambda: ws.entries("other"), timeout=1.5)   # not built meanwhile (it was, before)
        assert second.poll() is None   # waiting for slow
    second, out, err = while_first_builds(ws, first, gate, meanwhile, "app")
    assert second.returncode == 0, err
    assert "(while another mlrun builds" not in err, err
    assert open(os.path.join(ws.cache, ws.entries("other")[0], "when.txt")).read() == "after\n"


def test_plan_says_which_node_another_mlrun_is_building_now_and_makes_no_lock(ws, tmp_path):
    first, gate = side_by_side(ws, tmp_path)
    try:
        shown = ws.mlrun("plan", "app")
        nodes = json.loads(ws.mlrun("plan", "app", "--json").stdout)["nodes"]
    finally:
        gate.touch()
        first.communicate(timeout=60)
    assert shown.returncode == 0, shown.stderr
    line = next(s for s in shown.stdout.splitlines() if s.strip().startswith("slow "))
    assert re.search(rf"build  another mlrun is building it now \(pid {first.pid}, since [\d:]+; its log: ", line), line
    assert "another mlrun" not in next(s for s in shown.stdout.splitlines() if s.strip().startswith("other "))
    assert {n["name"]: n.get("being_built") for n in nodes} == {"slow": True, "other": None, "app": None}
    assert sorted(os.listdir(os.path.join(ws.cache, ".locks"))) == sorted(
        n for n in os.listdir(os.path.join(ws.cache, ".locks")) if n.startswith("slow-"))   # plan made no lock
    after = ws.mlrun("plan", "app").stdout
    assert "another mlrun" not in after and re.search(r"slow \S+ \[\w+\] cached", after), after


def test_a_node_that_fails_while_another_mlrun_builds_is_the_runs_failed_step(ws, tmp_path):
    first, gate = side_by_side(ws, tmp_path, other_run="echo 'error: no other today' >&2; exit 3")
    try:
        second = ws.mlrun("app", timeout=60)   # fails in other, while slow is still being built
        assert first.poll() is None
    finally:
        gate.touch()
        first.communicate(timeout=60)
    assert_user_error(second, 1, "other", "no other today")
    assert ws.entries() == [e for e in ws.entries() if e.startswith("slow-")] and ws.entries()
    record = app_record(ws)
    assert record["status"] == "failed"
    # in the plan's order: slow, which another mlrun was building, then other, which failed meanwhile
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("slow", "waiting"), ("other", "failed")]
    assert record["steps"][1]["seconds"] < 30 and "no other today" in record["error"]
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert "waiting" in shown and "failed at step other" in shown and "app" in shown.split("plan:")[1], shown


def test_a_node_built_meanwhile_is_in_the_record_of_a_run_that_fails_before_reaching_it(ws, tmp_path):
    # slow fails, for the first run and then for this one, which builds it once the first let go of it
    first, gate = side_by_side(ws, tmp_path, slow_end="echo 'error: slow broke' >&2; exit 4")
    try:
        second = ws.popen("app")
        assert wait_for(lambda: ws.entries("other"), timeout=30)
        gate.touch()
        out, err = second.communicate(timeout=60)
    finally:
        gate.touch()
        first.communicate(timeout=60)
    assert second.returncode == 1 and "slow broke" in err, err
    record = app_record(ws)
    assert [(s["recipe"], s["status"]) for s in record["steps"]] == [("slow", "failed")]
    [built] = record["built_meanwhile"]
    assert built["label"] == "other" and built["path"] == os.path.join(ws.cache, ws.entries("other")[0])
    shown = ws.mlrun("runs", "show", record["id"]).stdout
    assert re.search(r"other +built meanwhile", shown) and re.search(r"app +not run", shown), shown


# -- SIGKILL mid-build ----------------------------------------------------------------------------


def slow_recipes(ws, marker):
    ws.recipe("fast", "tags: fast\nrun: echo fast > fast.txt\n")
    ws.recipe("slow", f"""\
        tags: slow
        deps: [fast]
        run: |
          echo $$ >> {marker}
          echo partial > partial.txt
          if [ "$(wc -l < {marker})" -eq 1 ]; then sleep 30; fi
          echo done > out.txt
        """)


def test_sigkill_mid_build_publishes_nothing_and_the_next_run_succeeds(ws, tmp_path):
    marker = tmp_path / "started"
    slow_recipes(ws, marker)
    proc = ws.popen("slow")
    try:
        assert wait_for(marker.exists), proc.stderr.read() if proc.poll() is not None else "no marker"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    # The finished dep stays; nothing of the killed build is published.
    assert [e.rsplit("-", 1)[0] for e in ws.entries()] == ["fast"]
    assert not [n for n in os.listdir(ws.cache) if n.startswith("slow")]
    assert [n for n in os.listdir(os.path.join(ws.cache, ".tmp")) if n.startswith("slow-")]   # its leftovers
    again = ws.mlrun("slow")
    assert again.returncode == 0, again.stderr
    assert "fast" in again.stderr and "cached" in again.stderr
    [slow] = ws.entries("slow")
    assert open(os.path.join(ws.cache, slow, "out.txt")).read() == "done\n"
    assert os.listdir(os.path.join(ws.cache, ".tmp")) == []   # leftovers cleared
    assert len(marker.read_text().split()) == 2
    # The killed build's log was kept where `mlrun show failed` finds it.
    shown = ws.mlrun("show", "failed")
    assert shown.returncode == 0 and "-killed/build.log" in shown.stdout, shown.stdout
    assert ws.mlrun("cache", "verify").returncode == 0


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_step_dies_with_a_killed_mlrun(ws, tmp_path):
    marker = tmp_path / "started"
    slow_recipes(ws, marker)
    proc = ws.popen("slow")
    try:
        assert wait_for(marker.exists)
        step_pid = int(marker.read_text().split()[0])
        assert _alive(step_pid)
        os.kill(proc.pid, signal.SIGKILL)   # mlrun only, not its process group
        proc.wait(timeout=10)
        assert wait_for(lambda: not _alive(step_pid), timeout=10)
    finally:
        kill_group(proc)
    assert ws.entries("slow") == []


# -- a moved cache ----------------------------------------------------------------------------------


def test_a_moved_cache_still_works(ws, tmp_path):
    diamond(ws, tmp_path / "counters", sleep=0)
    ws.recipe("app", """\
        tags: app
        deps: [get model, get data]
        inputs: {n: {type: int, default: 1}}
        run: echo "$PY_DIR" > out.txt
        exports: {APP_OUT: '{entry}/out.txt'}
        """)
    first = ws.mlrun("app")
    assert first.returncode == 0, first.stderr
    moved = tmp_path / "moved-cache"
    shutil.copytree(ws.cache, moved, symlinks=True)
    shutil.rmtree(ws.cache)
    env = ws.env(MLRUN_CACHE=moved)
    again = ws.mlrun("app", env=env)
    assert again.returncode == 0, again.stderr
    statuses = [line.split()[-2] for line in again.stderr.splitlines() if line.startswith("[")]
    assert statuses == ["cached"] * 4, again.stderr
    assert f"APP_OUT={moved}{os.sep}app-" in again.stdout
    assert str(ws.cache) not in again.stdout
    assert not os.path.exists(ws.cache)
    # A new node over the moved deps sees their exports in the new folder.
    other = ws.mlrun("app", "--n=2", env=env)
    assert other.returncode == 0, other.stderr
    [entry] = [e for e in os.listdir(moved) if e.startswith("app-") and e not in again.stdout]
    assert open(moved / entry / "out.txt").read().startswith(f"{moved}{os.sep}python-")
    assert ws.mlrun("cache", "verify", env=env).returncode == 0


def test_unwritable_parts_are_user_errors_not_tracebacks(ws):
    """Pointing the cache at a file is reported, not a crash."""
    ws.recipe("a", "tags: a\nrun: 'true'\n")
    ws.write(ws.path("not-a-folder"), "x")
    result = ws.mlrun("a", env=ws.env(MLRUN_CACHE=ws.path("not-a-folder")))
    assert_user_error(result, 2, "not-a-folder")  # an environment error (issue 8)


def test_entries_are_readable_by_the_group_whatever_the_umask(ws):
    import stat
    ws.recipe("private", "tags: private\nrun: mkdir sub; echo x > sub/file; printf '#!/bin/sh\\n' > tool; chmod 700 tool\n")
    old = os.umask(0o077)
    try:
        result = ws.mlrun("private")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    [entry] = ws.entries("private")
    root = os.path.join(ws.cache, entry)
    for rel, want in (("sub", stat.S_IRGRP | stat.S_IXGRP), ("sub/file", stat.S_IRGRP),
                      ("tool", stat.S_IRGRP | stat.S_IXGRP), (".mlrun/entry.json", stat.S_IRGRP)):
        assert os.stat(os.path.join(root, rel)).st_mode & want == want, rel
    assert os.stat(os.path.join(ws.cache, ".locks")).st_mode & stat.S_IWGRP


def test_a_hard_link_to_a_file_outside_becomes_the_entrys_own_copy(ws, tmp_path):
    """A step's `ln /data/x x`: sealing made the person's file read-only (and the entry shared its inode)."""
    outside = tmp_path / "outside.txt"
    outside.write_text("hi\n")
    os.chmod(outside, 0o644)
    # beside it, the step's own file of the name a fixed copy name took; and a name the longest a file may have
    ws.recipe("hl", f"tags: hl\nrun: echo mine > h.mlrun-copy; ln {outside} h; ln {outside} {'a' * 250}\n")
    result = ws.mlrun("hl")
    assert result.returncode == 0, result.stderr
    [entry] = ws.entries("hl")
    copy = os.path.join(ws.cache, entry, "h")
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o644 and os.stat(outside).st_nlink == 1
    assert open(copy).read() == "hi\n" and os.stat(copy).st_ino != os.stat(outside).st_ino
    assert open(copy + ".mlrun-copy").read() == "mine\n"
    assert sorted(os.listdir(os.path.join(ws.cache, entry))) == [".mlrun", "a" * 250, "h", "h.mlrun-copy"]
    assert ws.mlrun("cache", "verify").returncode == 0


def test_rm_of_an_entry_whose_files_cannot_all_be_deleted_says_so(ws):
    """An immutable file (or NFS's .nfsXXXX): rm said "removed 1 entry", exit 0, the bytes stayed in .tmp/, and gc
    then blamed the owner."""
    import subprocess
    ws.recipe("keep", "tags: keep\nrun: echo x > x.txt\n")
    assert ws.mlrun("keep").returncode == 0
    [entry] = ws.entries("keep")
    stuck = os.path.join(ws.cache, entry, "x.txt")
    if subprocess.run(["chattr", "+i", stuck], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (not root, or the file system has no such flag)")
    try:
        result = ws.mlrun("rm", "cache", "keep", "-y")
        err = assert_user_error(result, 2, f"could not remove {entry} (it is out of the cache, but ", "x.txt (owner: root) "
                                "could not be deleted")
        assert "mlrun gc deletes it once that is fixed" in err and "user who built it" not in err
        assert ws.entries("keep") == []
    finally:
        for leftover in __import__("glob").glob(os.path.join(ws.cache, ".tmp", "*", "x.txt")):
            subprocess.run(["chattr", "-i", leftover])
    assert ws.mlrun("gc", "-y").returncode == 0 and not os.listdir(os.path.join(ws.cache, ".tmp"))
    # a build over a damaged leftover whose files cannot all go: the rename freed its place, the build goes on
    assert ws.mlrun("keep").returncode == 0
    [entry] = ws.entries("keep")
    os.chmod(os.path.join(ws.cache, entry, ".mlrun"), 0o755)
    os.remove(os.path.join(ws.cache, entry, ".mlrun", "entry.json"))
    subprocess.run(["chattr", "+i", stuck.replace(os.path.basename(os.path.dirname(stuck)), entry)], check=True)
    try:
        rebuilt = ws.mlrun("keep")
        assert rebuilt.returncode == 0 and "built in" in rebuilt.stderr, rebuilt.stderr
    finally:
        for leftover in __import__("glob").glob(os.path.join(ws.cache, ".tmp", "*", "x.txt")):
            subprocess.run(["chattr", "-i", leftover])


def test_cache_verify_reports_a_fifo_in_an_entry_and_checks_the_others(ws):
    """A FIFO put into an entry ended the whole check ("is a FIFO; only files..."), exit 2, no entry after it
    checked and no command to remove it."""
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    ws.recipe("b", "tags: b\nrun: echo b > b.txt\n")
    assert ws.mlrun("a").returncode == 0 and ws.mlrun("b").returncode == 0
    [a] = ws.entries("a")
    os.chmod(os.path.join(ws.cache, a), 0o755)
    os.mkfifo(os.path.join(ws.cache, a, "pipe"))
    result = ws.mlrun("cache", "verify")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "CORRUPT " in result.stdout, result.stdout
    assert "added: pipe (is a FIFO" in result.stdout and "2 entries checked, 1 corrupt" in result.stdout, result.stdout
    assert f"mlrun rm cache {os.path.join(ws.cache, a)} -y" in result.stdout



@pytest.mark.slow  # about 2.4 s on the 2-core EPYC
def test_the_concurrent_builds_bench_prints_its_figures_and_refuses_what_it_cannot_measure():
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench.concurrent_builds", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
    result = bench("--nodes", "3", "--seconds", "0.2", "--jobs", "2", "--processes", "2", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "3 steps of 0.2 s each under one root, new cache each time, median of 1:"
    assert re.match(r"  one mlrun --jobs 1 +[\d.]+ s \(min [\d.]+\)  1\.00x the time of one entry after another  "
                    r"entries built: 4$", lines[1]), lines
    assert re.match(r"  one mlrun --jobs 2 +[\d.]+ s .* entries built: 4$", lines[2]), lines
    assert re.match(r"  2 mlrun together \(--jobs 1 each\) +[\d.]+ s .* entries built: 4$", lines[3]), lines
    for args, said in ((["--processes", "1"], "each count at least 2"), (["--nodes", "0"], "must be above 0"),
                       (["--seconds", "x"], "not a number: 'x'"), (["--jobs", "0"], "each count at least 1")):
        result = bench(*args)
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_temp_folder_that_cannot_be_made_leaves_no_lock(tmp_path, monkeypatch):
    """Its lock was taken, then makedirs failed (a full disk): the lock stayed held and its file stayed."""
    from engine.cache import Cache
    cache = Cache(str(tmp_path / "cache"))
    made = os.makedirs

    def full(path, *args, **kwargs):
        if "import-" in os.path.basename(path):
            raise OSError(28, "No space left on device")
        return made(path, *args, **kwargs)
    monkeypatch.setattr(os, "makedirs", full)
    with pytest.raises(OSError):
        cache.new_temp_dir("import-")
    assert cache._held == {} and os.listdir(tmp_path / "cache" / ".locks" / "tmp") == []


def test_a_cache_folder_made_meanwhile_by_a_step_alongside_is_no_file(tmp_path, monkeypatch):
    """Two steps built at once both make cache/.tmp: the one that looked first (not there) and then found it there
    said '.tmp is a file, not the folder mlrun keeps there' (exit 2 in CI)."""
    from engine import cache
    folder = tmp_path / ".tmp"
    real_isdir, looks = os.path.isdir, []

    def isdir(path):   # the first look sees nothing; the other step makes the folder right after it
        looks.append(path)
        if len(looks) == 1:
            folder.mkdir()
            return False
        return real_isdir(path)
    monkeypatch.setattr(os.path, "isdir", isdir)
    cache.shared_dir(str(folder), said=True)
    assert real_isdir(folder)
    folder.rmdir()
    folder.write_text("")   # a real file there is still said
    monkeypatch.setattr(os.path, "isdir", real_isdir)
    with pytest.raises(MlrunError, match="is a file, not the folder"):
        cache.shared_dir(str(folder), said=True)
