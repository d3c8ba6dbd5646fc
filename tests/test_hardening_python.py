"""The interpreter in venv keys (issue 8): a probe finds which `python3` a step will run, before anything runs.

A pyenv-like `python3` shim on PATH picks a (fake) interpreter by an environment variable. Another
interpreter must mean another key, named by `explain`; the same one the same key, its version and path
recorded in the entry; and a remembered probe must not start the interpreter again.
"""
import json
import os
import stat
import subprocess
import time

import pytest

from conftest import assert_user_error, wait_for


def write_exe(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def pyenv(ws):
    """shims/python3 runs versions/$VAR/python3 (VAR: FAKE_PYENV, or PYENV_VERSION for the real recipe)."""
    root = ws.path("pyenv")
    for version in ("3.11.7", "3.12.1"):
        exe = os.path.join(root, "versions", version, "python3")
        # Whatever it is asked, it answers like the venv recipe's probe and counts its starts.
        write_exe(exe, f"#!/bin/sh\necho start >> {root}/starts-{version}\necho cpython {version} {exe}\n")
    write_exe(os.path.join(root, "shims", "python3"),
              f'#!/bin/sh\nexec "{root}/versions/${{FAKE_PYENV:-${{PYENV_VERSION:-3.11.7}}}}/python3" "$@"\n')
    ws.recipe("fake-venv", """
        tags: [fake, venv]
        inputs: {python: {default: python3}}
        pass_env: [FAKE_PYENV]
        probe:
          python: ["${MLRUN_INPUT_PYTHON}", "-c", "print('the probe')"]
        run: '"$MLRUN_INPUT_PYTHON" > used.txt'
    """)

    def env(version, **extra):
        return ws.env(PATH=os.path.join(root, "shims") + os.pathsep + os.environ["PATH"], FAKE_PYENV=version,
                      **extra)

    def starts(version):
        try:
            with open(os.path.join(root, f"starts-{version}")) as f:
                return len(f.readlines())
        except FileNotFoundError:
            return 0
    env.root, env.starts = root, starts
    return env


def run_json(ws, *args, env):
    r = ws.mlrun(*args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_another_interpreter_is_another_entry_and_explain_names_it(ws, pyenv):
    first = run_json(ws, "fake venv", env=pyenv("3.11.7"))
    exe = os.path.join(pyenv.root, "versions", "3.11.7", "python3")
    with open(os.path.join(first["path"], "used.txt")) as f:
        assert f.read().strip() == f"cpython 3.11.7 {exe}"   # the step ran the interpreter the probe saw
    with open(os.path.join(first["path"], ".mlrun", "entry.json")) as f:
        entry = json.load(f)
    assert entry["material"]["probe"] == {"python": f"cpython 3.11.7 {exe}"}   # version and real path

    again = run_json(ws, "fake venv", env=pyenv("3.11.7"))
    assert again["steps"][0]["status"] == "cached" and again["steps"][0]["key"] == first["steps"][0]["key"]

    r = ws.mlrun("explain", "fake venv", env=pyenv("3.12.1"))
    assert r.returncode == 0, r.stderr
    assert "probe.python" in r.stdout and "3.11.7" in r.stdout and "3.12.1" in r.stdout, r.stdout
    other = run_json(ws, "fake venv", env=pyenv("3.12.1"))
    assert other["steps"][0]["status"] == "built" and other["steps"][0]["key"] != first["steps"][0]["key"]
    assert len(ws.entries("fake-venv")) == 2


@pytest.mark.parametrize("query, probe", [("get python venv", "python"),
                                          # it reused a 3.11 module under 3.12: the run failed to import it
                                          ("get mlperf loadgen", "abi")])
@pytest.mark.slow  # about 1.3 s on the 2-core EPYC
def test_the_recipes_built_for_an_interpreter_key_the_one_pyenv_selects(ws, pyenv, query, probe):
    """The real get-python-venv and get-mlperf-loadgen recipes, resolved only (nothing is built): PYENV_VERSION
    picks the Python."""
    repo_recipes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")

    def plan(version):
        env = pyenv("", MLRUN_RECIPES=repo_recipes, PYENV_VERSION=version)
        r = ws.mlrun("plan", query, env=env)
        assert r.returncode == 0, r.stderr
        assert f"probe {probe}: cpython {version} " in r.stdout, r.stdout
        return run_json(ws, "plan", query, env=env)["nodes"][0]["key"]
    assert plan("3.11.7") == plan("3.11.7")
    assert plan("3.11.7") != plan("3.12.1")


def test_a_remembered_probe_does_not_start_the_interpreter(ws, pyenv):
    for _ in range(3):
        run_json(ws, "plan", "fake venv", env=pyenv("3.12.1"))
    assert pyenv.starts("3.12.1") == 1
    # Another program at the same path (an upgrade in place) is probed again.
    exe = os.path.join(pyenv.root, "versions", "3.12.1", "python3")
    run_json(ws, "plan", "fake venv", f"--python={exe}", env=pyenv("3.12.1"))
    assert pyenv.starts("3.12.1") == 2
    with open(exe) as f:
        text = f.read()
    write_exe(exe, text.replace("3.12.1 ", "3.12.2 ") + "\n")
    node = run_json(ws, "plan", "fake venv", f"--python={exe}", env=pyenv("3.12.1"))["nodes"][0]
    assert node["probes"]["python"].startswith("cpython 3.12.2 ")
    assert pyenv.starts("3.12.1") == 3


def test_a_probe_remembered_on_one_host_is_run_again_on_another(ws, pyenv):
    # A cache shared over NFS: another machine's `python3` (or CPU) may differ behind the same path.
    import shutil
    import subprocess
    from conftest import MLRUN
    if not shutil.which("unshare") or subprocess.run(["unshare", "-u", "true"]).returncode != 0:
        pytest.skip("needs unshare -u (a UTS namespace) to run under another host name")
    run_json(ws, "plan", "fake venv", env=pyenv("3.12.1"))
    assert pyenv.starts("3.12.1") == 1
    other = subprocess.run(["unshare", "-u", "sh", "-c", 'hostname other-node && exec "$0" "$@"', MLRUN,
                            "plan", "fake venv", "--json"], env=pyenv("3.12.1"), cwd=ws.root,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert other.returncode == 0, other.stderr
    assert pyenv.starts("3.12.1") == 2
    run_json(ws, "plan", "fake venv", env=pyenv("3.12.1"))   # back here: remembered
    assert pyenv.starts("3.12.1") == 2


def test_a_probe_that_cannot_run_stops_resolution_with_one_line(ws, pyenv):
    err = assert_user_error(ws.mlrun("plan", "fake venv", "--python=python9.99", env=pyenv("3.11.7")), 2,
                            "probe 'python' cannot start python9.99: not found on PATH")
    assert "Traceback" not in err
    write_exe(os.path.join(pyenv.root, "versions", "broken", "python3"), "#!/bin/sh\necho 'no such version' >&2\nexit 3\n")
    assert_user_error(ws.mlrun("fake venv", env=pyenv("broken")), 2, "probe 'python'", "exit 3", "no such version")
    assert ws.entries() == []


def test_a_probe_must_be_a_command_list(ws):
    ws.recipe("bad-probe", """
        tags: [bad]
        probe: {python: "python3 --version"}
        run: "true"
    """)
    assert_user_error(ws.mlrun("plan", "bad"), 2, "recipe.yaml:3", "probe.python must be a non-empty list")


@pytest.mark.slow
def test_the_venv_recipe_installs_its_named_set_and_the_packages_asked(ws):
    """get-python-venv's variations name the package sets several recipes share (one entry, one place to pin).

    The real recipe is built with an interpreter that is the real python3 except for pip, which only writes down
    what it was asked to install: the set's packages, a base set's, then --packages, each once."""
    import shutil
    import sys
    log, seen = ws.path("pip-calls.txt"), ws.path("constraints-seen.txt")
    python = ws.path("python-without-pip")
    real = shutil.which("python3") or sys.executable
    write_exe(python, f'#!/bin/sh\nif [ "$1 $2" = "-m pip" ]; then echo "$@" >> {log}\n'
                      f'  for a; do [ "$prev" = --constraint ] && cp "$a" {seen}; prev="$a"; done; exit 0; fi\n'
                      f'exec "{real}" "$@"\n')
    repo_recipes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
    env = ws.env(MLRUN_RECIPES=repo_recipes)

    def installed(query, *args):
        if os.path.exists(log):
            os.remove(log)
        r = ws.mlrun(query, f"--python={python}", *args, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        with open(log) as f:
            calls = [line.split() for line in f]
        assert [c for c in calls if "list" in c], calls                 # packages.txt is still written
        return [c[c.index("--constraint") + 2:] for c in calls if "install" in c]   # what follows its file

    [ort] = installed("get python venv _onnxruntime", "--packages=extra==1.0")
    assert "onnxruntime==1.23.2" in ort and "numpy==2.3.4" in ort and ort[-1] == "extra==1.0"
    [export] = installed("get python venv _transformers")
    assert "huggingface_hub==2.4.0" in export and "torch==2.13.0" in export      # _huggingface is its base
    assert len(export) == len(set(export))
    assert installed("get python venv") == []                                  # nothing asked: no pip install
    # A package the set or the constraints pin, asked in another version (any spelling of its name), replaces
    # their pin: one pin each, never both (pip would refuse the pair).
    [other] = installed("get python venv _onnxruntime", "--packages=ONNXRuntime==1.22.0 protobuf==6.33.0")
    assert "ONNXRuntime==1.22.0" in other and not [p for p in other if p.lower().startswith("onnxruntime==1.23")]
    assert "numpy==2.3.4" in other and "protobuf==6.33.0" in other
    constraints = open(seen).read()
    assert "protobuf==" not in constraints and "flatbuffers==" in constraints
    assert len(ws.entries("get-python-venv")) == 4


def _wheel_with_a_console_script(folder):
    """hello_cli 1.0, a wheel whose console script `hello-cli` prints a line (pip installs it offline)."""
    import base64
    import hashlib
    import zipfile

    def digest(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    info = "hello_cli-1.0.dist-info/"
    files = {"hello_cli.py": b"def main():\n    print('hello from the console script')\n",
             info + "METADATA": b"Metadata-Version: 2.1\nName: hello-cli\nVersion: 1.0\n",
             info + "WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             info + "entry_points.txt": b"[console_scripts]\nhello-cli = hello_cli:main\n"}
    record = "".join(f"{name},{digest(data)},{len(data)}\n" for name, data in files.items()) + info + "RECORD,,\n"
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(os.path.join(folder, "hello_cli-1.0-py3-none-any.whl"), "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(info + "RECORD", record)


@pytest.mark.slow
@pytest.mark.parametrize("cache_dir", ["cache", os.path.join("a cache", "x" * 90)])
def test_a_venvs_console_scripts_run_from_the_published_entry_and_after_the_cache_moves(ws, cache_dir):
    """pip writes a console script's first line as the build folder's python, or (a path with a space or longer
    than a #! line may be) as its sh trampoline naming that folder on the second line: the recipe's relocation
    rewrote only the first form, so in such a cache `bin/pip`-like scripts of every entry named a folder that
    was gone. Real pip installs a local wheel (offline: the interpreter given sets PIP_NO_INDEX, PIP_FIND_LINKS)."""
    import shutil
    import sys
    wheels = ws.path("wheels")
    _wheel_with_a_console_script(wheels)
    python = ws.path("python-offline")
    real = shutil.which("python3") or sys.executable
    write_exe(python, f'#!/bin/sh\nexport PIP_NO_INDEX=1 PIP_FIND_LINKS="{wheels}"\nexec "{real}" "$@"\n')
    repo_recipes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
    cache = ws.path(cache_dir)
    r = ws.mlrun("get python venv", f"--python={python}", "--packages=hello-cli==1.0", "--json",
                 env=ws.env(MLRUN_RECIPES=repo_recipes, MLRUN_CACHE=cache), timeout=180)
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)["path"]
    script = os.path.join(entry, "bin", "hello-cli")
    with open(script) as f:
        assert "/.tmp/" not in f.read(300)   # no build folder named, in either form
    run = subprocess.run([script], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "hello from the console script\n"), run.stderr
    moved = ws.path("moved cache")
    os.rename(cache, moved)
    run = subprocess.run([os.path.join(moved, os.path.relpath(script, cache))], capture_output=True, text=True,
                         timeout=60)
    assert (run.returncode, run.stdout) == (0, "hello from the console script\n"), run.stderr


def _venv_deps(recipe):
    """Every dep of a recipe (its own and its variations') on get-python-venv."""
    deps = list(recipe.get("deps") or [])
    for variation in (recipe.get("variations") or {}).values():
        deps += (variation or {}).get("deps") or []
    return [dep for dep in deps if dep["query"].startswith("get python venv")]


def test_recipes_name_package_sets_so_dep_python_packages_only_adds(tmp_path):
    """--dep.python.packages reaches every venv of a plan (deps are overridden by name) and the packages input it
    sets would replace a recipe's own: so recipes ask for a set (get-python-venv's variations), never packages,
    and the person's packages add to each venv's set."""
    import glob

    import yaml

    from engine.resolver import resolve
    from engine.settings import Settings
    from conftest import ROOT
    asking = {}
    for path in glob.glob(os.path.join(ROOT, "recipes", "*", "recipe.yaml")):
        for dep in _venv_deps(yaml.safe_load(open(path))):
            asking[os.path.basename(os.path.dirname(path))] = dep
            assert "packages" not in (dep.get("inputs") or {}), path
            assert len(dep["query"].split()) == 4 and dep["query"].split()[3].startswith("_"), (path, dep["query"])
    assert {"get-backend-onnxruntime", "get-backend-deepsparse", "get-backend-tensorrt", "get-ml-model-bert",
            "get-dataset-squad-features", "process-mlperf-accuracy-squad"} <= set(asking)
    settings = Settings.from_env(environ={"MLRUN_RECIPES": os.path.join(ROOT, "recipes"),
                                          "MLRUN_CACHE": str(tmp_path / "cache")})
    for query in ("app mlperf bert _onnxruntime _cpu _random", "app mlperf bert _deepsparse"):
        plan = resolve(settings.index(), query, host_env=dict(os.environ), prober=settings.prober(),
                       dep_overrides={"python": {"packages": "onnxruntime==1.22.1"}})
        venvs = [node for node in plan.nodes if node.name == "get-python-venv"]
        assert len(venvs) >= 2
        for venv in venvs:
            assert venv.inputs["packages"] == "onnxruntime==1.22.1" and venv.env["MLRUN_VENV_SET"], venv.label
    # By path: only the backend's venv gets another onnxruntime; the model tools' and the features' keep theirs.
    plan = resolve(settings.index(), "app mlperf bert _onnxruntime _cpu _random", host_env=dict(os.environ),
                   prober=settings.prober(), dep_overrides={"backend/python": {"packages": "onnxruntime==1.22.1"}})
    deps = {name: node for name, node in plan.root.deps}
    assert dict(deps["backend"].deps)["python"].inputs["packages"] == "onnxruntime==1.22.1"
    assert dict(deps["model"].deps)["python"].inputs["packages"] == ""
    assert dict(deps["features"].deps)["python"].inputs["packages"] == ""
    # The key holds the text: a version left open, or a file, would let one key stand for other packages.
    from engine.errors import ResolutionError
    for loose in ("onnxruntime", "onnxruntime>=1.22", "./onnxruntime-1.22.1-cp311-linux_x86_64.whl"):
        with pytest.raises(ResolutionError, match="NAME==VERSION each"):
            resolve(settings.index(), "get python venv _onnxruntime", inputs={"packages": loose},
                    host_env=dict(os.environ), prober=settings.prober())


def test_a_probe_sees_the_env_overrides_the_step_will_get(ws):
    """--env.X reaches every step; a probe did not see it (get cpu bf16 passed --env.ONEDNN_MAX_CPU_ISA=AVX2, and the
    step then failed on it after everything was built). A secret given by --env is not handed to probes."""
    ws.recipe("cap", """
        tags: [cap]
        probe: {cap: [sh, -c, 'echo "cap=${ONEDNN_MAX_CPU_ISA:-none} token=${API_TOKEN:-none}"']}
        run: "true"
    """)
    def probed(*flags):
        result = ws.mlrun("plan", "cap", "--json", *flags)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["nodes"][0]["probes"]["cap"]
    assert probed() == "cap=none token=none"
    assert probed("--env.ONEDNN_MAX_CPU_ISA=AVX2", "--env.API_TOKEN=s3cret") == "cap=AVX2 token=none"


def test_a_probe_that_leaves_a_job_in_the_background_answers_at_once_and_leaves_nothing(ws, tmp_path):
    """`sleep 200 & echo x`: the job held the output pipe open, 60 s later "did not answer" (it had), and the sleep
    outlived mlrun."""
    marker = tmp_path / "bg-pid"
    ws.recipe("bg", f"""
        tags: [bg]
        probe: {{p: [sh, -c, 'sleep 200 & echo $! > {marker}; echo x']}}
        run: "true"
    """)
    started = time.time()
    result = ws.mlrun("plan", "bg")
    assert result.returncode == 0 and time.time() - started < 30, result.stderr
    pid = int(marker.read_text())
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                    open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=10)


def test_a_probes_exit_is_seen_at_once_and_one_that_does_not_answer_is_given_up_at_its_limit():
    """Probes are waited for on a pidfd (Popen.wait with a time limit polls: a 15-ms probe was seen after 30-60 ms)."""
    import subprocess
    from engine import probes
    slow = subprocess.Popen(["sleep", "5"])
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        probes._wait(slow, 0.2)
    assert 0.2 <= time.monotonic() - started < 3
    slow.kill()
    slow.wait()
    assert probes._wait(subprocess.Popen(["sh", "-c", "exit 3"]), 5) == 3
