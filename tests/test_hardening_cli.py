"""Hostile command lines, step outputs and file systems: one error line, the right exit code (issue 8).

Exit 1 stays for a step that failed; a usage or environment problem (a bad flag, a full or read-only
disk, a cache that is a file) is exit 2 with one line naming the operation and the path.
"""
import json
import os
import subprocess

import pytest

from conftest import assert_user_error


def one_line(result, code, *fragments):
    err = assert_user_error(result, code, *fragments)
    lines = err[err.index("mlrun: error: "):].strip().splitlines()   # after the step status lines
    assert lines[0].startswith("mlrun: error: ") and all(x.startswith("hint: ") for x in lines[1:]), err
    return err


def test_places_that_would_damage_what_is_there_are_refused(ws, tmp_path):
    """A cache inside a published entry (as root, mlrun wrote .index/ and a nested entry into it, and every later run
    refused that entry), runs inside the cache (cache verify: NOT AN ENTRY), a path that is not UTF-8 ('unexpected
    UnicodeEncodeError ... a bug in mlrun'): a user's trial."""
    ws.recipe("a", "tags: a\nrun: echo hi > hi.txt\n")
    assert ws.mlrun("a").returncode == 0
    [entry] = [p for p in os.listdir(ws.cache) if p.startswith("a-")]
    inside = os.path.join(ws.cache, entry)
    before = sorted(os.listdir(inside))
    one_line(ws.mlrun("--cache", inside, "a"), 2, f"the cache folder {inside} is inside the cache entry {inside}")
    assert sorted(os.listdir(inside)) == before
    one_line(ws.mlrun("--runs", os.path.join(ws.cache, "runs"), "a"), 2, "is inside the cache")
    one_line(ws.mlrun("--cache", str(tmp_path).encode() + b"/\xff", "a"), 2, "is not UTF-8 text")


@pytest.fixture
def app(ws):
    ws.recipe("app", """\
        tags: app
        inputs:
          count: {type: int, default: 3}
          name: {default: x}
        run: echo "$MLRUN_INPUT_COUNT" > out.txt
        """)
    return ws


# -- command lines -----------------------------------------------------------------------------


@pytest.mark.parametrize("args,fragments", [
    (["--env.BAD-NAME=x"], ["--env.BAD-NAME", "'BAD-NAME' is not a valid environment variable name"]),
    (["--env.=x"], ["--env.", "'' is not a valid environment variable name"]),
    (["--env.X"], ["--env.X needs a value", "--env.X=VALUE"]),   # was X=true, and another key for every node
    (["--env.1X=x"], ["'1X' is not a valid"]),
    (["--count=3", "--count=4"], ["--count is given twice: '3' and '4'"]),
    (["--count", "3", "--count=3"], ["--count is given twice"]),
    (["--env.A=1", "--env.A=2"], ["--env.A is given twice: '1' and '2'"]),
    (["--name=caf\udce9"], ["--name=caf\\xe9: not UTF-8 text"]),
    (["--env.X=caf\udce9"], ["--env.X=caf\\xe9: not UTF-8 text"]),
    (["--dep.m.tags=\udcff"], ["not UTF-8 text"]),
], ids=["env-dash", "env-empty", "env-no-value", "env-digit", "twice", "twice-same", "env-twice", "input-not-utf8", "env-not-utf8",
        "dep-not-utf8"])
def test_bad_extras_are_refused_before_anything_runs(app, args, fragments):
    for verb in (["run"], ["plan"]):
        one_line(app.mlrun(*verb, "app", *args), 2, *fragments)
    assert not os.path.exists(app.runs) and app.entries() == []


@pytest.mark.parametrize("argv, fragments", [
    (["--cache", "a", "--cache", "b", "plan", "app"], ["--cache is given twice: 'a' and 'b'"]),   # b, in silence
    (["--cache=a", "plan", "app", "--cache=b"], ["--cache is given twice: 'a' and 'b'"]),
    (["runs", "--columns", "run", "--columns", "status"], ["--columns is given twice: 'run' and 'status'"]),
    (["plan", "app", "--cach", "x"], ["app has no input --cach (an option of mlrun: did you mean --cache?)"]),
    (["plan", "app", "--js"], ["app has no input --js (an option of mlrun: did you mean --json?)"]),   # was --json
    (["plan", "app", "--name"], ["app: input 'name' needs a value (text; a flag alone is only a boolean input's "
                                 "true)", "--name=VALUE"]),   # went on as the text 'true'
    (["plan", "app", "--count", "--json"], ["input 'count' needs a value (a whole number"]),   # was 'got true' 
], ids=["cache-twice", "cache-before-and-after", "columns-twice", "prefix-of-cache", "prefix-of-json", "bare-name",
        "bare-count"])
def test_options_are_taken_whole_and_once(app, argv, fragments):
    one_line(app.mlrun(*argv), 2, *fragments)
    assert app.entries() == []
    # options between a verb's words are parsed twice by argparse: once given is once (not 'given twice')
    os.makedirs(app.cache, exist_ok=True)
    assert app.mlrun("show", "cache", "--cache", app.cache, "--json", "app").returncode == 0


@pytest.mark.parametrize("variable", ["CC", "SOME_TOKEN"])
def test_host_variable_that_is_not_utf8(ws, variable):
    ws.recipe("a", "tags: a\nhash_env: [CC]\npass_env: [SOME_TOKEN]\nrun: echo hi > hi.txt\n")
    err = one_line(ws.mlrun("a", env=ws.env(**{variable: "s3cr\udce9t"})), 2,
                   f"the host variable {variable} holds bytes that are not UTF-8 text")
    assert "s3cr" not in err   # a pass_env value may be a secret
    assert ws.entries() == []


# -- what a step leaves behind ------------------------------------------------------------------


@pytest.mark.parametrize("command,fragment", [
    ("echo a > a.txt; mkdir sub; mkfifo sub/pipe", "sub/pipe in its folder: is a FIFO"),
    ("mkfifo .mlrun/pipe", ".mlrun/pipe in its folder: is a FIFO"),   # was exit 2, no "step a failed"
    ("python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")'", "sock in its folder: is a socket"),
    ("printf z > \"$(printf 'caf\\351')\"", "caf\\xe9 in its folder: the name is not UTF-8 text"),
    ("ln -s \"$(printf 'caf\\351')\" link", "link in its folder: the link's target is not UTF-8 text"),
], ids=["fifo", "fifo-in-mlrun", "socket", "name-not-utf8", "link-target-not-utf8"])
def test_unrecordable_step_output_fails_the_step(ws, command, fragment):
    """Named in its folder: the .tmp/ path it was said at is gone once the build is set aside in .failed/."""
    ws.recipe("a", "tags: a\nrun: |\n  " + command + "\n")
    result = ws.mlrun("a", timeout=60)
    err = one_line(result, 1, "step a failed", fragment)
    assert "hint: full log:" in err and ".tmp/" not in err
    assert ws.entries() == []                                       # nothing published
    assert os.listdir(os.path.join(ws.cache, ".tmp")) == []        # nor left half-built
    failed = os.listdir(os.path.join(ws.cache, ".failed"))
    assert len(failed) == 1
    with open(os.path.join(ws.cache, ".failed", failed[0], "build.log"), errors="replace") as f:
        assert fragment in f.read()


def test_unrecordable_run_folder_output_is_no_problem(ws):
    """A `cache: false` step's folder is never hashed: a FIFO there harms nothing."""
    ws.recipe("a", "tags: a\ncache: false\nrun: mkfifo pipe\n")
    assert ws.mlrun("a", timeout=60).returncode == 0


# -- operating-system errors ----------------------------------------------------------------------


def _one_run(ws):
    ws.recipe("a", "tags: a\nrun: echo hi > hi.txt\n")
    assert ws.mlrun("a").returncode == 0
    return os.listdir(ws.runs)[0]


def test_export_to_a_folder_or_into_a_missing_folder(ws, tmp_path):
    run = _one_run(ws)
    folder = tmp_path / "out"
    folder.mkdir()
    one_line(ws.mlrun("export", run, "-o", str(folder)), 2, f"cannot write the bundle to {folder}: it exists and is "
             "not a file")
    missing = tmp_path / "nowhere" / "b.tar.gz"
    one_line(ws.mlrun("export", run, "-o", str(missing)), 2,
             f"cannot write the bundle {missing}: No such file or directory")


def test_cache_that_is_a_file(ws, tmp_path):
    ws.recipe("a", "tags: a\nrun: echo hi > hi.txt\n")
    afile = tmp_path / "afile"
    afile.write_text("")
    one_line(ws.mlrun("--cache", str(afile), "a"), 2, f"the cache folder {afile} is not a folder", "--cache")
    one_line(ws.mlrun("--cache", str(afile / "sub"), "a"), 2, str(afile), "Not a directory",
             "a part of that path is a file")


@pytest.mark.parametrize("flag", ["--runs", "--cache"])
def test_runs_or_cache_that_is_a_link_to_nothing(ws, tmp_path, flag):
    """A runs folder that is a dangling link looped for ever (makedirs' FileExistsError read as an id drawn twice)."""
    ws.recipe("a", "tags: a\ncache: false\nrun: echo hi\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    result = ws.mlrun(flag, str(link), "a", timeout=60)
    one_line(result, 2, f"folder {link} is a link to nothing ({tmp_path / 'nowhere'})", flag)


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder; unmounted at teardown. Skips where mounting is refused."""
    mounted = []

    def make(options):
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root in a mountable namespace")
        mounted.append(target)
        return target
    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def test_read_only_cache(ws, mount):
    ws.recipe("a", "tags: a\nrun: echo hi > hi.txt\n")
    cache = mount("size=1m")
    assert subprocess.run(["mount", "-o", "remount,ro", str(cache)], timeout=30).returncode == 0
    one_line(ws.mlrun("--cache", str(cache), "a"), 2, str(cache), "Read-only file system", "read-only")


def test_a_read_only_cache_is_looked_at_and_said_read_only(ws, mount):
    """gc --dry-run only looks, yet failed on the read-only cache's lock files ("Read-only file system"); rm failed
    told root to ask the owner (root); a .locks/ that is a file was "cannot use .locks: File exists"."""
    ws.recipe("a", "tags: a\nrun: echo hi > hi.txt\n")
    ws.recipe("bad", "tags: bad\nrun: exit 3\n")
    cache = mount("size=1m")
    assert ws.mlrun("--cache", str(cache), "a").returncode == 0 and ws.mlrun("--cache", str(cache), "bad").returncode == 1
    assert subprocess.run(["mount", "-o", "remount,ro", str(cache)], timeout=30).returncode == 0
    looked = ws.mlrun("--cache", str(cache), "gc", "--older-than", "0s", "--dry-run")
    assert looked.returncode == 0 and "would free" in looked.stdout, looked.stdout + looked.stderr
    assert_user_error(ws.mlrun("--cache", str(cache), "rm", "failed", "-y"), 2, "could not remove",
                      "the cache is on a read-only file system")
    other = ws.cache + "-other"
    os.makedirs(other)
    open(os.path.join(other, ".locks"), "w").close()
    one_line(ws.mlrun("--cache", other, "a"), 2, f"{other}/.locks is a file, not the folder mlrun keeps there",
             f"mv {other}/.locks {other}/.locks.old")


def test_full_disk(ws, mount):
    # The step fills the disk, then mlrun must write the entry's metadata there.
    ws.recipe("a", "tags: a\nrun: head -c 2000000 /dev/zero > big || true\n")
    cache = mount("size=1m")
    err = one_line(ws.mlrun("--cache", str(cache), "a", timeout=60), 2, str(cache), "No space left on device",
                   "the disk is full")
    assert ws.cache_obj().entries() == []


# -- command.sh --------------------------------------------------------------------------------


def test_command_sh_stops_when_its_folder_does_not_exist(ws, tmp_path):
    marker = "made-by-rerun"
    ws.recipe("a", f"tags: a\nrun: touch {marker}\n")
    assert ws.mlrun("a").returncode == 0
    script = os.path.join(ws.cache, ws.entries()[0], ".mlrun", "command.sh")
    here = tmp_path / "cwd"
    here.mkdir()
    done = subprocess.run([script, str(tmp_path / "missing")], cwd=here, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "command.sh: cannot enter" in done.stderr
    assert not (here / marker).exists()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert subprocess.run([script, str(scratch)], cwd=here, timeout=30).returncode == 0
    assert (scratch / marker).exists()


def test_a_module_in_the_current_folder_does_not_shadow_mlrun_s_own(ws, tmp_path):
    # `python -c` puts the current folder first on sys.path: a user's json.py broke every command.
    here = tmp_path / "work"
    here.mkdir()
    (here / "json.py").write_text("raise SystemExit('shadowed by the folder')\n")
    ws.recipe("hello", "tags: [hello]\nrun: echo hi\n")
    result = ws.mlrun("hello", "--json", cwd=str(here))
    assert result.returncode == 0, result.stderr
    assert "shadowed" not in result.stderr


@pytest.mark.parametrize("argv, closed", [(("gc",), "stdin"), (("rm", "failed"), "stdin"),
                                          (("runs",), "stdout"), (("runs", "--json"), "stdout")])
def test_a_closed_stdin_or_stdout_is_read_as_empty_and_written_nowhere(ws, argv, closed):
    """`<&-` or `>&-`: Python has None there, and these failed with 'unexpected AttributeError' (exit 2)."""
    import subprocess
    from conftest import MLRUN
    for folder in (os.path.join(ws.cache, ".tmp", "a-0123456789abcdef.4242"),   # something to remove: asked
                   os.path.join(ws.cache, ".failed", "a-0123456789abcdef-20200101-000000")):
        os.makedirs(folder)
        open(os.path.join(folder, "build.log"), "w").close()
    redirect = "<&-" if closed == "stdin" else ">&-"
    result = subprocess.run(["bash", "-c", f'"$0" "$@" {redirect}', MLRUN, *argv], env=ws.env(), cwd=ws.root,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE if closed == "stdin" else None,
                            text=True, timeout=60)
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    if closed == "stdin":   # no terminal to ask on: said, nothing removed
        assert_user_error(result, 2, "pass -y to confirm without a prompt")
    else:   # a verb that only prints, its output lost: said, and failed (as onto a full disk)
        assert result.returncode == 1 and "standard output is closed" in result.stderr, result.stderr


@pytest.mark.slow   # about 0.76 s each on the EPYC
@pytest.mark.parametrize("stream", ["stdout", "both"])
def test_a_reader_that_goes_away_does_not_stop_the_build(ws, stream):
    """`mlrun run QUERY | head -1`: the next write raised BrokenPipeError, which stopped the step half-way
    (nothing published, the run an error) while mlrun said nothing and exited 0."""
    from conftest import MLRUN
    ws.recipe("pp", "tags: [pp]\nrun: echo first; sleep 0.5; for i in $(seq 3000); do echo line $i; done; "
                    "echo done > out.txt\n")
    both = " 2>&1" if stream == "both" else ""
    result = subprocess.run(["bash", "-c", f'"$0" "$@"{both} | head -1; exit ${{PIPESTATUS[0]}}', MLRUN, "pp"],
                            env=ws.env(), cwd=ws.root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "Traceback" not in result.stderr, result
    [name] = ws.entries()
    entry = os.path.join(ws.cache, name)
    assert open(os.path.join(entry, "out.txt")).read() == "done\n"
    assert "line 3000" in open(os.path.join(entry, ".mlrun", "build.log")).read()   # the log has what went nowhere
    assert ws.mlrun("runs", "--json").returncode == 0 and '"ok"' in ws.mlrun("runs", "--json").stdout


def test_an_output_that_cannot_be_written_loses_only_the_output(ws, tmp_path):
    """stdout onto a full disk (/dev/full: ENOSPC), like a hung-up terminal (EIO): the run was recorded as an
    error with its results lost, though the work had finished."""
    from conftest import MLRUN
    ws.recipe("pp", "tags: [pp]\nrun: for i in $(seq 300); do echo line $i; done; echo done > out.txt\n")
    result = subprocess.run(["bash", "-c", '"$0" "$@" > /dev/full', MLRUN, "pp"], env=ws.env(), cwd=ws.root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mlrun: cannot write to its output (No space left on device): the rest of it goes nowhere" in result.stderr
    assert "Traceback" not in result.stderr
    [name] = ws.entries()
    assert open(os.path.join(ws.cache, name, "out.txt")).read() == "done\n"
    assert '"ok"' in ws.mlrun("runs", "--json").stdout


def test_a_console_that_cannot_show_a_character_gets_it_escaped(ws, tmp_path):
    """PYTHONIOENCODING=ascii and a runs folder named in other letters: the run succeeded, then mlrun ended
    'unexpected UnicodeEncodeError ... a bug in mlrun' (exit 2), its last lines lost."""
    ws.recipe("a", "tags: a\ncache: false\nrun: echo a > a.txt\n")   # its folder in the runs: a path shown
    runs = tmp_path / "rünß"
    result = ws.mlrun("a", env=ws.env(PYTHONIOENCODING="ascii", MLRUN_RUNS=str(runs)))
    assert result.returncode == 0, result.stderr
    shown = ws.mlrun("runs", env=ws.env(PYTHONIOENCODING="ascii", MLRUN_RUNS=str(runs)))
    assert shown.returncode == 0 and "UnicodeEncodeError" not in shown.stderr, shown.stderr


def test_a_cache_to_inspect_must_be_there_and_paths_take_a_leading_tilde(ws, tmp_path):
    """show/rm cache --cache /typo made the folder and said it held nothing; MLRUN_CACHE=' ' made a folder ' ';
    --cache=~/x (the shell leaves ~ after =) made a folder '~' in the current one."""
    missing = str(tmp_path / "typo" / "cache")
    for argv in (("show", "cache"), ("rm", "cache", "x", "-y"), ("gc",), ("cache", "verify")):
        assert_user_error(ws.mlrun("--cache", missing, *argv), 2, f"the cache folder {missing} does not exist")
    assert not os.path.exists(tmp_path / "typo")
    for argv in (("show", "cache"), ("rm", "cache", "x", "-y"), ("gc",), ("cache", "verify")):   # one to be: kept so
        assert ws.mlrun(*argv, env=ws.env(MLRUN_CACHE=missing)).returncode == 0
    assert not os.path.exists(tmp_path / "typo")
    assert_user_error(ws.mlrun("show", "cache", env=ws.env(MLRUN_CACHE=" ")), 2, "MLRUN_CACHE is blank (' ')")
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    home = tmp_path / "home"
    home.mkdir()
    result = ws.mlrun("--cache=~/c", "a", env=ws.env(HOME=str(home)), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert os.listdir(home / "c") and not os.path.exists(tmp_path / "~")


@pytest.mark.parametrize("argv, message", [
    (("--cache", "", "show", "cache"), "--cache is empty"),       # was the checkout's cache/, silently
    (("--runs", "", "runs"), "--runs is empty"),
    (("--mirror", " ", "runs"), "--mirror is empty"),
    (("gc", "--older-than", ""), "--older-than '': write a number and a unit"),   # was taken as not given
    # what is wrong, said (each was "write a number and a unit", given one)
    (("gc", "--older-than=-1d"), "--older-than '-1d': an age is not negative"),
    (("gc", "--older-than", "1y"), "--older-than '1y': 'y' is no unit (s, m, h, d or w)"),
    (("gc", "--older-than", "30"), "--older-than '30': no unit (s, m, h, d or w)"),
])
def test_empty_values_are_refused_not_taken_as_not_given(ws, argv, message):
    assert_user_error(ws.mlrun(*argv), 2, message)


@pytest.mark.parametrize("argv, message", [
    (("import", "/dev/null"), "/dev/null is not a regular file"),   # was "no such file: /dev/null"
    (("import", ""), "no file named (an empty path)"),
    (("export", "x", "-o", ""), "-o is empty"),                        # was "... /cwd: it exists and is not a file"
    (("report", "s1", "-o", ""), "-o is empty"),
    (("--mirror", "/etc/hostname", "runs"), "the mirror folder /etc/hostname is not a folder"),   # "does not exist"
    # a URL was taken for a folder of the current one, and its password printed
    (("--mirror", "http://user:pw12345678@127.0.0.1:9/", "runs"),
     "the mirror is a folder, not a URL: http://user:<redacted>@127.0.0.1:9/"),
])
def test_what_a_path_is_not_is_said_as_it_is(ws, argv, message):
    assert_user_error(ws.mlrun(*argv), 2, message)


def test_show_failed_takes_no_query_as_rm_failed(ws):
    """`show failed nosuch` ignored the word and showed every log (rm failed refused it already)."""
    assert_user_error(ws.mlrun("show", "failed", "nosuch"), 2, "mlrun show failed takes no QUERY")


def test_without_path_steps_and_probes_get_the_systems_default(ws):
    """`env -i`: python3 was started with no PATH to find itself by, a probe recorded the working folder as
    its prefix (a new key) and the venv build failed, exit 1."""
    ws.recipe("p", "tags: p\nprobe: {where: [python3, -c, 'import os, sys; print(os.path.realpath(sys.executable))']}\n"
                   "run: 'command -v python3 > p.txt'\n")
    env = {k: v for k, v in ws.env().items() if k != "PATH"}
    result = ws.mlrun("p", "--json", env=env, cwd=ws.root)
    assert result.returncode == 0, result.stderr
    empty = ws.mlrun("p", env=dict(env, PATH=""), cwd=ws.root)   # empty: as unset (the launcher found no dirname)
    assert empty.returncode == 0 and "Traceback" not in empty.stderr, empty.stderr
    entry = json.loads(result.stdout)["path"]
    assert open(os.path.join(entry, "p.txt")).read().strip() in ("/usr/bin/python3", "/bin/python3")
    probed = json.loads(open(os.path.join(entry, ".mlrun", "entry.json")).read())["material"]["probe"]["where"]
    assert probed.startswith("/usr") and probed != ws.root, probed


def test_a_copy_across_disks_that_fails_says_its_first_file_and_reason():
    """`import` into a full runs folder on another disk: shutil.move's gathered failures, 11 KB on one line."""
    import shutil
    from engine.oserrors import explain as from_os_error
    failures = [(f"/tmp/a/{i}", f"/runs/x/{i}", f"[Errno 28] No space left on device: '/runs/x/{i}'") for i in range(300)]
    e = from_os_error(shutil.Error(failures), "mlrun import: cannot use")
    assert e.message == "mlrun import: cannot use /runs/x/0 (and 299 more files): No space left on device"
    assert e.hint.startswith("the disk is full")
    assert from_os_error(shutil.Error([("/a", "/b", "odd")]), "cannot use").message == "cannot use /b: odd"


def test_an_option_value_that_starts_with_a_dash_and_o_dash(ws):
    """`--runs -dash` said 'mlrun: error: mlrun: argument --runs: expected one argument'; `export -o -` wrote a
    file named '-' in the current folder."""
    assert_user_error(ws.mlrun("--runs", "-dash", "runs"), 2, "mlrun: error: --runs needs a value",
                      "(one that starts with '-' is written --runs=VALUE)")
    assert "mlrun: error: mlrun:" not in ws.mlrun("--runs", "-dash", "runs").stderr
    assert_user_error(ws.mlrun("export", "x", "-o", "-", cwd=ws.root), 2, "-o - would be a file or folder named '-'")
    assert not os.path.exists(os.path.join(ws.root, "-"))


def test_a_tmpdir_that_cannot_be_used_is_said_before_anything_runs(ws, tmp_path):
    """TMPDIR=/nonexistent: a venv build failed 'exited with code 1', mktemp's reason only in the log."""
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    assert_user_error(ws.mlrun("a", env=ws.env(TMPDIR=str(tmp_path / "nowhere"))), 2,
                      f"TMPDIR={tmp_path / 'nowhere'} does not exist", "set TMPDIR to a writable folder")
    (tmp_path / "file").write_text("")
    assert_user_error(ws.mlrun("a", env=ws.env(TMPDIR=str(tmp_path / "file"))), 2, "is not a folder this process")
    assert ws.entries() == [] and ws.mlrun("runs", env=ws.env(TMPDIR=str(tmp_path / "nowhere"))).returncode == 0
    assert ws.mlrun("sweep", "list", env=ws.env(TMPDIR=str(tmp_path / "nowhere"))).returncode == 0   # reads only


def test_a_current_folder_removed_under_the_shell_is_said(ws, tmp_path):
    """A shell left in a folder that was removed: a run said "mlrun run: cannot use: No such file or directory", a
    sweep recorded each point "failed: [Errno 2] ...", `export -o x.tgz` blamed x.tgz."""
    import shlex
    from conftest import MLRUN
    ws.recipe("a", "tags: a\nrun: echo a > a.txt\n")
    assert ws.mlrun("a").returncode == 0

    def in_removed_folder(*args):
        gone = tmp_path / "gone"
        gone.mkdir()
        line = f"cd {shlex.quote(str(gone))} && rmdir . 2>/dev/null || rmdir {shlex.quote(str(gone))}; exec " + \
            " ".join(map(shlex.quote, [MLRUN, *args]))
        return subprocess.run(["bash", "-c", line], env=ws.env(), capture_output=True, text=True, timeout=60)
    for args in (["a"], ["sweep", "a", "--grid", "env.X=1", "--name", "s"], ["export", "last", "-o", "x.tgz"],
                 ["show", "cache"], ["runs"]):
        one_line(in_removed_folder(*args), 2, "the current folder no longer exists",
                 "cd to a folder that exists and run the command again")
    assert not os.path.exists(os.path.join(ws.runs, "sweeps", "s"))   # nothing recorded as failed
    assert in_removed_folder("--version").returncode == 0


def test_a_file_named_by_o_that_cannot_be_written_gets_an_o_hint():
    """export/report/plot -o onto a read-only place were told to point --cache/--runs at a writable folder."""
    import errno
    from engine.errors import MlrunError
    from engine.oserrors import output_errors
    for code, hint in ((errno.EROFS, "give -o a path you may write"), (errno.EACCES, "give -o a path you may write"),
                       (errno.ENOSPC, "give -o a path on a disk with room")):
        with pytest.raises(MlrunError) as e:
            with output_errors("cannot write the bundle", "/ro/b.tar.gz"):
                raise OSError(code, os.strerror(code))
        assert e.value.message == f"cannot write the bundle /ro/b.tar.gz: {os.strerror(code)}"
        assert e.value.hint == hint and "--cache" not in e.value.hint


def test_a_verb_that_only_prints_fails_when_its_output_is_lost(ws):
    """`mlrun runs > /dev/full` exited 0 with its whole output lost, and the note said a record kept the results."""
    from conftest import MLRUN
    ws.recipe("x", "tags: x\nrun: echo x > x.txt\n")
    for argv in (["runs"], ["find", "x"]):
        result = subprocess.run(["bash", "-c", '"$0" "$@" > /dev/full', MLRUN, *argv], env=ws.env(), cwd=ws.root,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.startswith("mlrun: cannot write to its output (No space left on device): the rest of "
                                        "it goes nowhere\n"), result.stderr
    assert subprocess.run(["bash", "-c", '"$0" "$@" > /dev/full', MLRUN, "x"], env=ws.env(), cwd=ws.root,
                          capture_output=True, timeout=60).returncode == 0
    # --help's text lost, and a standard output closed (>&-): both exited 0, nothing shown
    for redirect, argv, code in (("> /dev/full", ["--help"], 1), ("> /dev/full", ["runs", "--help"], 1),
                                 (">&-", ["runs"], 1), (">&-", ["x"], 0), (">&-", ["gc", "--dry-run"], 1),
                                 ("> /dev/full", ["x", "--help"], 1), (">&-", ["help", "x"], 1)):   # a recipe's: 0
        result = subprocess.run(["bash", "-c", f'"$0" "$@" {redirect}', MLRUN, *argv], env=ws.env(), cwd=ws.root,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == code, (redirect, argv, result.stderr)
        assert "goes nowhere" in result.stderr, (redirect, argv, result.stderr)


def test_a_huge_query_is_answered_at_once_and_echoed_cut(ws, monkeypatch):
    """A 100,000-character query: "did you mean" measured its edit distance to every tag (minutes), and the error
    printed it whole, twice."""
    from engine import words
    measured = []
    real = words.distance
    monkeypatch.setattr(words, "distance", lambda a, b: measured.append(b) or real(a, b))
    assert words.nearest("a" * 100_000, ["bert", "onnxruntime", "squad"]) == [] and measured == []
    assert words.nearest("bret", ["bert", "onnxruntime"]) == ["bert"] and measured == ["bert"]
    ws.recipe("app", "tags: [app]\nrun: 'true'\n")
    r = ws.mlrun("plan", "x" * 100_000)
    assert r.returncode == 2 and len(r.stderr) < 1000, len(r.stderr)
    assert "xxx...(100000 characters)" in r.stderr and "mlrun find TAG" in r.stderr
    deep = "/tmp/" + "/".join(["d" * 200] * 6)   # a path stays whole, however long
    r = ws.mlrun("--mirror", deep, "runs")
    assert r.returncode == 2 and f"the mirror folder {deep} does not exist" in r.stderr, r.stderr


def test_a_missing_requirement_is_an_environment_error_not_a_bug(ws, monkeypatch, capsys):
    """A teammate whose python3 lacked `packaging` (the checkout's .venv was root's, under /root/.pyenv) was told
    "unexpected ModuleNotFoundError ... this is a bug in mlrun"."""
    from engine import cli
    monkeypatch.setenv("MLRUN_CACHE", ws.cache)
    monkeypatch.setenv("MLRUN_RUNS", ws.runs)

    def missing(*_):
        raise ModuleNotFoundError("No module named 'packaging'", name="packaging")
    monkeypatch.setitem(cli.VERB_FUNCS, "runs", missing)
    monkeypatch.setenv("MLRUN_VENV_UNUSABLE", "/x/.venv/bin/python")
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "requirements are not installed" in err and "No module named 'packaging'" in err, err
    assert "/x/.venv/bin/python cannot be run by this user" in err and "pip install -r" in err and "bug" not in err

    def own(*_):
        raise ModuleNotFoundError("No module named 'engine.nothing'", name="engine.nothing")
    monkeypatch.setitem(cli.VERB_FUNCS, "runs", own)
    assert cli.main(["runs"]) == 2 and "this is a bug in mlrun" in capsys.readouterr().err


def test_a_file_one_may_not_read_is_no_cache_problem(tmp_path, monkeypatch):
    """A teammate's recipe.yaml of mode 600: 'hint: no permission: point --cache/--runs at a folder you may
    write', which changes nothing."""
    import errno
    from engine import oserrors
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tags: [x]\n")
    monkeypatch.setattr(oserrors.os, "access", lambda path, mode: False)   # as a user other than its owner
    error = oserrors.explain(PermissionError(errno.EACCES, "Permission denied", str(recipe)), "mlrun find: cannot use")
    assert error.message == f"mlrun find: cannot use {recipe}: Permission denied"
    assert error.hint.startswith("no permission to read that file") and "--cache" not in error.hint
    error = oserrors.explain(PermissionError(errno.EACCES, "Permission denied", str(tmp_path)), "cannot write")
    assert "--cache/--runs" in error.hint   # a folder to write in: as before
