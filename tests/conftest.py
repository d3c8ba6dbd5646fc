"""Shared, opt-in fixtures for mlrun's tests (nothing here is autouse).

`ws` is a workspace under the test's own tmp_path: a recipes folder, a cache
folder and a runs folder, with helpers to write recipes and to run the real
entry point bin/mlrun on them as a subprocess.
"""
import json
import os
import signal
import subprocess
import re
import shutil
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLRUN = os.path.join(ROOT, "bin", "mlrun")
# The official SQuAD dev set and vocab, used as the download mirror: tests never reach the internet.
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
# A BERT small enough for end-to-end tests (its accuracy means nothing).
TINY_MODEL = ["--dep.model.layers=2", "--dep.model.hidden=64", "--dep.model.heads=2"]


def offline_mlrun(root, seed=None):
    """bin/mlrun with its own cache and runs folders under root, downloading from the SHARED_DATA mirror.

    The BERT pipeline modules share one per module: their venvs take a minute of pip installs. seed (the
    `bert_seed` fixture) starts the cache as a copy of a warm one: the module's own folder, built once a session.
    """
    if seed:
        seed_copy(seed, root / "cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
    env.update(MLRUN_CACHE=str(root / "cache"), MLRUN_RUNS=str(root / "runs"), MLRUN_MIRROR=SHARED_DATA)

    def mlrun(*args, timeout=900, stdin=None):   # stdin: text fed to mlrun (an interactive step), else none
        feed = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
        return subprocess.run([MLRUN, *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(root), **feed)
    mlrun.root = root
    return mlrun


def seed_copy(seed, dest):
    """A cache starting as seed (bert_seed.cache): its entries hard-linked, the rest copied. An entry is published
    read-only and never written again (a rebuild or a reseal replaces files by rename), so its 500 MB of venvs and
    features can be shared; a copy took 5 s of each module's start. The cache's own files (.locks, whose times
    say when an entry was last used, .index) are each module's own. cp -a keeps the file times the entries' stat
    signatures record."""
    os.mkdir(dest)
    shutil.copystat(seed, dest)
    for item in os.scandir(seed):
        subprocess.run(["cp", "-a", *(() if item.name.startswith(".") else ("--link",)), item.path, str(dest)],
                       check=True)


def bench_scratch(cache, scratch):
    """A bench's --scratch folder whose SQuAD features are those of `cache` (a seeded one): the scripts convert the
    dev set into their scratch folder once (12 s beside the other worker) with the function the entry is built by,
    from the same mirror (the test of bench.server_ceiling's smoke run converts its own)."""
    [entry] = [e.path for e in os.scandir(cache) if e.name.startswith("get-dataset-squad-features-")]
    os.makedirs(scratch)
    subprocess.run(["cp", "-a", "--link", entry, os.path.join(scratch, "features")], check=True)
    return str(scratch)


def at_a_terminal(argv, env, answer=None, cwd=None, timeout=60, prompt=b"passphrase"):
    """(exit status, all it wrote) of argv run with a pseudo-terminal as its stdin and terminal; answer: typed at
    the first prompt (what it writes holding `prompt`)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:   # the child: exec at once
        if cwd:
            os.chdir(cwd)
        os.execve(argv[0], argv, env)
    out, typed, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:   # the child is gone
                    break
                if not data:
                    break
                out += data
                if answer is not None and prompt in out and not typed:
                    os.write(fd, answer.encode() + b"\n")
                    typed = True
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        status = os.waitpid(pid, 0)[1]
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def pytest_sessionstart(session):
    """Byte-compile mlrun's own modules once (the pytest process, not each worker): every test starts bin/mlrun,
    and where PYTHONDONTWRITEBYTECODE is set each start would compile them again (40 ms of a 120 ms start).
    A user's Python writes these files on the first run; the __pycache__ folders are git-ignored. For the same
    reason pytest keeps its rewritten test modules (3 s of each worker's start)."""
    sys.dont_write_bytecode = False
    # Started from a script in the background, this process has SIGINT ignored, and so would every mlrun it
    # starts (mlrun keeps a signal ignored at its start, as nohup wants): the tests that press Ctrl-C would
    # wait in vain. They start mlrun as a terminal's foreground job is started.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:   # under nohup: the SIGHUP test waited in vain too
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    _python3_itself()
    # Each test process measures alone: the two workers (and whoever else uses this machine) run performance runs
    # at once, which mlperf_bert/shared_cores.py would truly mark "shared cores" in the results the tests read.
    # Its own tests, and the ones of two runs at once, name a folder of their own.
    import tempfile
    os.environ["MLRUN_SHARED_CORES_DIR"] = tempfile.mkdtemp(prefix="mlrun-measuring-tests-")
    if not hasattr(session.config, "workerinput"):
        import compileall
        for package in ("engine", "sweeps", "submission", "mlperf_bert", "bench"):
            compileall.compile_dir(os.path.join(ROOT, package), quiet=1)


def _python3_itself():
    """Put the interpreter pyenv's `python3` shim runs first on PATH (the same one: asked of the shim). The shim is
    a script that runs `pyenv exec`, 170 ms a start where the interpreter takes 15: the BERT recipes' probes ask
    python3 which it is in every test's fresh cache, and a venv's build starts it five times. The tests of pyenv
    itself put their own shims first."""
    shim = shutil.which("python3")
    if not shim or os.sep + "shims" + os.sep not in shim:
        return
    real = subprocess.run([shim, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL).stdout.strip()
    if real and os.path.dirname(real) != os.path.dirname(shim) and os.access(real, os.X_OK):
        os.environ["PATH"] = os.path.dirname(real) + os.pathsep + os.environ["PATH"]


# The files that take a minute or more (2-core EPYC, whole suite), longest first. pytest-xdist hands whole files to
# its two workers in collection order (pytest.ini turns off its own order, by number of tests, which started the
# 4-minute QA module of 10 tests last, alone on one worker at the end). The QA module's fixture builds the BERT seed
# while the other worker starts on Ray, which needs none.
LONGEST_FIRST = ["test_qa_model.py", "test_sweep_ray.py", "test_tuning.py", "test_openvino_pipeline.py",
                 "test_bert_pipeline.py", "test_deepsparse_pipeline.py", "test_sweep.py", "test_submission.py",
                 "test_gpu.py", "test_server_ceiling.py", "test_accuracy.py", "test_sweep_report.py",
                 "test_sweep_slurm.py"]


def pytest_collection_modifyitems(items):
    """A test that needs the warm BERT cache (bert_seed, a minute to build) is slow, wherever it is."""
    for item in items:
        if "bert_seed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: each file's own order kept


def run_folder(tmp_path_factory):
    """The folder every worker of this test run shares (under pytest-xdist, above each worker's own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def features_dir(tmp_path_factory):
    """The full dev set's features (test_accuracy.py, test_squad_features.py), built once a test run: under
    pytest-xdist by the first worker to get here, in the folder the workers share, under a lock (each worker
    converted it again, 12 s beside the other)."""
    from filelock import FileLock
    from mlperf_bert import squad_features
    squad, vocab = os.path.join(SHARED_DATA, "squad", "dev-v1.1.json"), os.path.join(SHARED_DATA, "bert-vocab",
                                                                                    "vocab.txt")
    if not (os.path.isfile(squad) and os.path.isfile(vocab)):
        pytest.skip(f"SQuAD dev set and vocab not in {SHARED_DATA}")
    shared = run_folder(tmp_path_factory)
    out = shared / "squad_features_full"
    with FileLock(str(shared / "squad_features_full.lock")):
        if not (out / "digest.json").is_file():
            squad_features.build(squad, vocab, out)
    return out


@pytest.fixture(scope="session")
def bert_seed(tmp_path_factory):
    """A cache holding what a tiny random BERT accuracy run builds (venvs, LoadGen, SQuAD, features, model),
    built once a test run; modules that are not about building these start from a copy (offline_mlrun seed=).

    Under pytest-xdist each worker is a session of its own: the first worker to get here builds the seed in the
    folder the workers share, under a lock, and the others wait for it (a minute of venv builds saved per worker);
    first_run is that first run, as it was (return code, stdout, stderr)."""
    import json
    from types import SimpleNamespace
    from filelock import FileLock
    shared = run_folder(tmp_path_factory)
    root, done = shared / "bert-seed", shared / "bert-seed.json"
    with FileLock(str(shared / "bert-seed.lock")):
        if not done.exists():
            root.mkdir(exist_ok=True)
            mlrun = offline_mlrun(root)
            result = mlrun("app mlperf bert _onnxruntime _cpu _random", "--mode=accuracy", "--count=8", *TINY_MODEL)
            assert result.returncode == 0, result.stderr[-3000:]
            done.write_text(json.dumps({"args": result.args, "returncode": result.returncode,
                                        "stdout": result.stdout, "stderr": result.stderr}))
    first_run = subprocess.CompletedProcess(**json.loads(done.read_text()))
    return SimpleNamespace(cache=str(root / "cache"), first_run=first_run)


def step_dir(result):
    """The folder of the last step of a run, from `mlrun --json` output."""
    import json
    return json.loads(result.stdout)["path"]


def step_of(result, recipe):
    """The first step of `recipe` in a run's `mlrun --json` output ({recipe, label, key, status, seconds, path})."""
    import json
    return next(s for s in json.loads(result.stdout)["steps"] if s["recipe"] == recipe)


class Workspace:
    def __init__(self, root):
        self.root = str(root)
        self.recipes = os.path.join(self.root, "recipes")
        self.cache = os.path.join(self.root, "cache")
        self.runs = os.path.join(self.root, "runs")
        os.makedirs(self.recipes, exist_ok=True)

    # -- recipes ---------------------------------------------------------------

    def recipe(self, folder, text, files=None):
        """Write recipes/<folder>/recipe.yaml (dedented) and any {relative path: text} beside it."""
        path = os.path.join(self.recipes, folder)
        os.makedirs(path, exist_ok=True)
        self.write(os.path.join(path, "recipe.yaml"), textwrap.dedent(text))
        for rel, content in (files or {}).items():
            self.write(os.path.join(path, rel), textwrap.dedent(content))
        return os.path.join(path, "recipe.yaml")

    @staticmethod
    def write(path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(path, mode) as f:
            f.write(text)
        return path

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    # -- the engine, in process -------------------------------------------------

    def index(self):
        from engine.settings import Settings
        return Settings.from_env(environ=self.env()).index()

    def cache_obj(self):
        from engine.cache import Cache
        return Cache(self.cache)

    def entries(self, recipe=None):
        """Names of the published cache entries (optionally of one recipe), sorted."""
        names = [os.path.basename(m["path"]) for m in self.cache_obj().entries()]
        return sorted(n for n in names if recipe is None or n.rsplit("-", 1)[0] == recipe)

    # -- the real entry point ----------------------------------------------------

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
        env.update(MLRUN_RECIPES=self.recipes, MLRUN_CACHE=self.cache, MLRUN_RUNS=self.runs)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def mlrun(self, *args, env=None, stdin=subprocess.DEVNULL, timeout=60, cwd=None):
        """Run bin/mlrun; returns CompletedProcess with text stdout/stderr."""
        return subprocess.run([MLRUN, *args], env=env or self.env(), stdin=stdin, capture_output=True,
                              text=True, timeout=timeout, cwd=cwd or self.root)

    def popen(self, *args, env=None, **kwargs):
        """Start bin/mlrun in its own process group (so a test can kill the whole group)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([MLRUN, *args], env=env or self.env(), stdin=subprocess.DEVNULL, text=True,
                                cwd=self.root, start_new_session=True, **kwargs)


@pytest.fixture
def ws(tmp_path):
    """A fresh workspace (recipes/, cache/, runs/) under this test's tmp_path."""
    return Workspace(tmp_path)


def assert_user_error(result, code, *fragments):
    """An mlrun error as the spec wants it: the exit code, one paragraph on stderr, no traceback."""
    err = result.stderr
    assert result.returncode == code, f"exit {result.returncode}, stderr:\n{err}\nstdout:\n{result.stdout}"
    assert "Traceback" not in err and "Traceback" not in result.stdout, err
    assert "mlrun: error: " in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in stderr:\n{err}"
    return err


def kept_rows(ws):
    """The rows `mlrun runs` keeps for this user (RUNS/.index/rows-UID.json: a line with the version and the
    sha256 of the JSON that follows), {run id: {"stat", "row", "settings"}}."""
    with open(os.path.join(ws.runs, ".index", f"rows-{os.getuid()}.json"), "rb") as f:
        f.readline()
        return json.loads(f.read())


def wait_for(predicate, timeout=20.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


# -- a real HTTP server on 127.0.0.1 (tests never reach the internet) ----------------------------


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files, honouring 'Range: bytes=N-' unless told not to."""

    def do_GET(self):
        srv = self.server
        with srv.lock:
            n = len(srv.requests)
            srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if n < srv.fail_first:
            return self.send_error(500)
        if srv.limit is not None and n >= srv.limit:
            return self.send_error(404)  # stops a client that would otherwise retry forever
        data = srv.files.get(self.path)
        if data is None:
            return self.send_error(404)
        start = self._range_start()
        if start is not None and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if start is None:
            start = 0
            self.send_response(200)
        else:
            self.send_response(206)
            shown = 0 if srv.wrong_range else start  # a broken server: says (and sends) the file from 0
            self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
            start = shown
        body = data[start:]
        if not srv.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if n == 0 and srv.drop_after is not None:
            body = body[:srv.drop_after]  # then the connection closes: a short body
        if srv.drop_every is not None:
            body = body[:srv.drop_every]
        try:
            for i in range(0, len(body), srv.piece):
                self.wfile.write(body[i:i + srv.piece])
                self.wfile.flush()
                time.sleep(srv.pace)
            while srv.endless:   # a broken server that never stops sending (the client must)
                self.wfile.write(b"x" * srv.piece)
        except ConnectionError:  # the client went away (killed, or gave up): nothing to serve
            pass

    def _range_start(self):
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        return int(m[1]) if m and not self.server.ignore_range else None

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 serving server.files {path: bytes}; records server.requests.

    Knobs: fail_first (answer 500 that many times), drop_after (cut the first body after N bytes),
    ignore_range (answer 200 to Range requests), drop_every (cut every body after N bytes),
    wrong_range (answer Range requests with the whole file and a Content-Range from 0),
    pace (sleep that many seconds after each `piece` bytes sent), limit (answer 404 from that request on),
    no_length (send no Content-Length: the body ends when the connection closes), endless (send bytes after the
    file until the client goes).
    """
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.files = [], {}
    srv.fail_first, srv.drop_after, srv.ignore_range = 0, None, False
    srv.drop_every, srv.wrong_range, srv.pace, srv.piece, srv.limit = None, False, 0, 1 << 20, None
    srv.no_length = srv.endless = False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_ids(runs):
    """The runs in a runs folder (its hidden .index/, the memo and what import notes, left out)."""
    return sorted(r for r in os.listdir(runs) if not r.startswith("."))
