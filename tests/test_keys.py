"""Cache keys: the same inputs give the same key; every input that affects the output gives a new one."""
import copy
import os
import subprocess
import sys

import pytest

from engine import MemoryIndex, resolve
from engine import keys
from engine.index import RecipeIndex

BASE = {
    "app": {
        "tags": "app",
        "version": "1.0",
        "description": "the app",
        "inputs": {"count": {"type": "int", "default": 3, "help": "how many"}, "mode": {"default": "fast"}},
        "env": {"A": "1"},
        "hash_env": ["CC"],
        "variations": {
            "fp32": {"group": "precision", "default": True, "description": "full"},
            "int8": {"group": "precision", "env": {"P": "int8"}},
            "batch_size.#": {"env": {"BS": "{value}"}},
        },
        "deps": [{"name": "model", "query": "get model", "inputs": {"layers": 2}}],
        "exports": {"OUT": "{entry}/out"},
        "run": "echo app > out",
    },
    "model": {
        "tags": "get model",
        "inputs": {"layers": {"type": "int", "default": 12}},
        "download": [{"url": "https://example.org/m", "file": "m.onnx", "sha256": "aa" * 32}],
        "run": ["python", "make.py"],
    },
}


def key_of(recipes=None, query="app", inputs=None, host_env=None):
    return resolve(MemoryIndex(recipes or BASE), query, inputs=inputs, host_env=host_env).root.key


def changed(path, value):
    recipes = copy.deepcopy(BASE)
    target = recipes
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return recipes


def test_same_inputs_same_key():
    k = key_of()
    assert len(k) == 64 and int(k, 16) >= 0
    assert key_of(copy.deepcopy(BASE)) == k


def test_key_does_not_depend_on_how_the_same_choice_is_spelled():
    k = key_of(query="app _batch_size.8")
    assert key_of(query="app _fp32 _batch_size.8") == k          # the default, spelt out
    assert key_of(query="_batch_size.8 app _fp32") == k          # word order
    assert key_of(query="app _batch_size.8", inputs={"count": "3"}) == k   # the default input, given as text
    assert key_of(query="app _batch_size.8", inputs={"mode": "fast"}) == k
    assert key_of(query="app _batch_size.8", host_env={"UNRELATED": "x"}) == k


def test_key_is_stable_across_processes():
    """No dict/set ordering or hash seed leaks into the key."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_keys import key_of; print(key_of())")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
        outs.add(subprocess.run([sys.executable, "-c", code, here], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())
    assert outs == {key_of()}


CHANGES = {
    "input value": dict(inputs={"count": 4}),
    "another input": dict(inputs={"mode": "slow"}),
    "variation": dict(query="app _int8"),
    "added variation": dict(query="app _batch_size.8"),
    "parametric value": dict(query="app _batch_size.16"),
    "version": dict(recipes=changed(["app", "version"], "1.1")),
    "recipe env": dict(recipes=changed(["app", "env"], {"A": "2"})),
    "run command": dict(recipes=changed(["app", "run"], "echo app2 > out")),
    "exports": dict(recipes=changed(["app", "exports"], {"OUT": "{entry}/other"})),
    "input default": dict(recipes=changed(["app", "inputs", "count", "default"], 5)),
    "input env name": dict(recipes=changed(["app", "inputs", "count", "env"], "COUNT")),
    "variation env": dict(recipes=changed(["app", "variations", "fp32", "env"], {"P": "fp32"})),
    "hash_env value": dict(host_env={"CC": "clang"}),
    "dep input": dict(recipes=changed(["app", "deps", 0, "inputs"], {"layers": 4})),
    "dep query": dict(recipes=changed(["app", "deps", 0, "name"], "weights")),
    "dep recipe run": dict(recipes=changed(["model", "run"], ["python", "make.py", "--fast"])),
    "dep download checksum": dict(recipes=changed(["model", "download", 0, "sha256"], "bb" * 32)),
    "dep input default": dict(recipes=changed(["model", "inputs", "layers", "default"], 24)),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=[c.replace(" ", "-") for c in CHANGES])
def test_each_changed_input_gives_a_new_key(change):
    assert key_of(**CHANGES[change]) != key_of()


def test_all_changed_keys_are_distinct():
    found = {name: key_of(**kw) for name, kw in CHANGES.items()}
    assert len(set(found.values()) | {key_of()}) == len(found) + 1


@pytest.mark.parametrize("path,value", [
    (["app", "description"], "another description"),
    (["app", "variations", "fp32", "description"], "32-bit floats"),
    (["app", "inputs", "count", "help"], "a count"),
    (["app", "inputs", "count", "min"], 1),     # bounds only refuse values: one they take builds the same
    (["app", "inputs", "count", "above"], 0),
    (["app", "inputs", "count", "multiple_of"], 1),
], ids=["description", "variation-description", "input-help", "input-min", "input-above", "input-multiple-of"])
def test_cosmetic_fields_keep_the_key(path, value):
    assert key_of(changed(path, value)) == key_of()


@pytest.mark.parametrize("name", ["path", "record", "description", "written"])
def test_user_chosen_names_that_look_cosmetic_are_hashed(name):
    """An input or variation *named* like a cosmetic field is still part of the key."""
    recipe = {"tags": "t", "inputs": {name: {"default": "x", "env": "ONE"}},
              "variations": {name: {"run": "echo one"}}}
    base = key_of({"t": recipe}, query=f"t _{name}")
    other_env = copy.deepcopy(recipe)
    other_env["inputs"][name]["env"] = "TWO"
    assert key_of({"t": other_env}, query=f"t _{name}") != base
    other_run = copy.deepcopy(recipe)
    other_run["variations"][name]["run"] = "echo two"
    assert key_of({"t": other_run}, query=f"t _{name}") != base


def test_differences_name_the_changed_field():
    a = resolve(MemoryIndex(BASE), "app").root.material
    b = resolve(MemoryIndex(BASE), "app _int8", inputs={"count": 9}).root.material
    fields = {f for f, _, _ in keys.differences(a, b)}
    assert {"inputs.count", "variations", "env.P"} <= fields
    assert "recipe_digest" not in fields and "deps" not in fields
    assert keys.differences(a, a) == []


def test_material_names_everything_hashed():
    m = resolve(MemoryIndex(BASE), "app").root.material
    assert set(m) >= {"schema", "recipe", "recipe_digest", "version", "variations", "inputs", "env", "hash_env",
                      "deps"}
    assert m["schema"] == keys.KEY_SCHEMA
    assert keys.key(m) == resolve(MemoryIndex(BASE), "app").root.key


# -- recipes in folders: files beside recipe.yaml ---------------------------------------------


RECIPE = """\
# a comment
tags: get thing
description: first words
inputs:
  n: {type: int, default: 1, help: how many}
run: [sh, "{recipe}/build.sh"]
"""


def folder_key(ws, state=False, host_env=None):
    index = RecipeIndex([ws.recipes], state_dir=os.path.join(ws.root, "state") if state else None)
    return resolve(index, "get thing", host_env=host_env).root.key


@pytest.fixture
def thing(ws):
    ws.recipe("thing", RECIPE, files={"build.sh": "echo one > out\n", "README.md": "notes\n"})
    return ws


def test_cosmetic_edits_of_recipe_yaml_keep_the_key(thing):
    k = folder_key(thing)
    edited = RECIPE.replace("first words", "other, longer words").replace("# a comment", "# another\n\n")
    edited = edited.replace("help: how many", "help: how many items")
    edited = edited.replace("{type: int, default: 1", "{type: int, min: 1, default: 1")
    edited = edited.replace("tags: get thing\ndescription: other, longer words",
                            "description: other, longer words\ntags: [get, thing]")
    thing.recipe("thing", edited)
    assert folder_key(thing) == k


def test_a_changed_script_beside_the_recipe_changes_the_key(thing):
    k = folder_key(thing)
    thing.recipe("thing", RECIPE, files={"build.sh": "echo two > out\n"})
    assert folder_key(thing) != k


def test_a_new_file_in_a_subfolder_changes_the_key_but_docs_do_not(thing):
    k = folder_key(thing)
    thing.recipe("thing", RECIPE, files={"README.md": "other notes\n", "docs.md": "x"})
    assert folder_key(thing) == k
    thing.recipe("thing", RECIPE, files={"lib/helper.py": "X = 1\n"})
    assert folder_key(thing) != k


def test_a_changed_source_outside_the_folder_changes_the_key(ws):
    ws.write(ws.path("shared", "lib.py"), "X = 1\n")
    ws.recipe("thing", RECIPE + "sources: [../../shared/lib.py]\n", files={"build.sh": "true\n"})
    k = folder_key(ws, state=True)
    assert folder_key(ws, state=True) == k
    ws.write(ws.path("shared", "lib.py"), "X = 22\n")
    assert folder_key(ws, state=True) != k


def test_the_stored_recipe_index_sees_a_changed_script(thing):
    """The warm path (recipes stored in the cache) must not hide an edit."""
    k = folder_key(thing, state=True)
    assert folder_key(thing, state=True) == k
    thing.recipe("thing", RECIPE, files={"build.sh": "echo three > out\n"})
    assert folder_key(thing, state=True) != k
    assert folder_key(thing, state=True) == folder_key(thing)


def test_a_stored_recipe_index_edited_or_damaged_is_read_past(thing):
    """Its recipes edited to other types (a tag list a number) said "unexpected TypeError ... a bug" in every plan;
    the stored body's sha256 now tells, and the recipes are read again (and stored anew)."""
    import glob
    import json
    k = folder_key(thing, state=True)
    [path] = glob.glob(os.path.join(thing.root, "state", "recipes-*.json"))
    head, body = open(path, "rb").read().split(b"\n", 1)
    for damage in (lambda d: d["recipes"][0].update(tags=5), lambda d: d.update(recipes=[5]),
                   lambda d: d.update(sources=[5])):
        data = json.loads(body)
        damage(data)
        open(path, "wb").write(head + b"\n" + json.dumps(data).encode())
        assert folder_key(thing, state=True) == k
        assert open(path, "rb").read() == head + b"\n" + body   # stored again as it was
    for text in (b"", b"{}\n", b"[1]\n" + body, head):
        open(path, "wb").write(text)
        assert folder_key(thing, state=True) == k


def test_the_stored_recipe_index_sees_a_same_size_edit_that_kept_the_files_time(ws):
    """`cp -p`, `rsync -a`, `touch -r`: size and mtime as before, the old entry reused with the old script."""
    ws.write(ws.path("shared", "lib.py"), "X = 1\n")
    ws.recipe("thing", RECIPE + "sources: [../../shared/lib.py]\n", files={"build.sh": "echo v1 > out\n"})
    k = folder_key(ws, state=True)
    for path, text in ((ws.path("recipes", "thing", "build.sh"), "echo v2 > out\n"),
                       (ws.path("shared", "lib.py"), "X = 2\n")):
        before = os.stat(path)
        ws.write(path, text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
        changed = folder_key(ws, state=True)
        assert changed != k and changed == folder_key(ws)
        k = changed


def test_a_probe_program_edited_to_the_same_size_and_time_is_run_again(ws):
    """The probe memo keyed its program by size, mtime and inode: an in-place edit that kept the time (`touch -r`)
    reused the old program's answer, and the key with it."""
    from engine.probes import Prober
    tool = ws.path("bin", "which-isa")
    ws.write(tool, "#!/bin/sh\necho avx2\n")
    os.chmod(tool, 0o755)
    ws.recipe("thing", RECIPE + f"probe: {{isa: [{tool}]}}\n", files={"build.sh": "true\n"})
    prober = Prober(ws.path("cache"))

    def probed_key():
        return resolve(RecipeIndex([ws.recipes]), "get thing", prober=prober, host_env=os.environ).root.key
    k = probed_key()
    before = os.stat(tool)
    with open(tool, "r+") as f:   # in place: the same inode
        f.write("#!/bin/sh\necho avx5\n")
    os.utime(tool, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(tool).st_ino == before.st_ino and os.stat(tool).st_mtime_ns == before.st_mtime_ns
    assert probed_key() != k


def test_a_probe_of_the_cores_is_asked_again_under_another_affinity(ws):
    """`taskset -c 0 mlrun plan` remembered nproc's 1 for every later plan (a sweep pins its points' workers)."""
    from engine.errors import ResolutionError
    from engine.probes import Prober
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to pin to one")
    ws.recipe("thing", RECIPE + "probe: {cpus: [nproc]}\n", files={"build.sh": "true\n"})
    prober = Prober(ws.path("cache"))

    def probed():
        return resolve(RecipeIndex([ws.recipes]), "get thing", prober=prober, host_env=os.environ).root.probes["cpus"]
    everything = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(everything)})
        assert probed() == "1"
    finally:
        os.sched_setaffinity(0, everything)
    assert probed() == str(len(everything))
    # a program named by a variable empty where probes run: "cannot start : not found on PATH" said nothing of it
    ws.recipe("thing", RECIPE + "probe: {py: ['${MLRUN_PYTHON}', '-V']}\n", files={"build.sh": "true\n"})
    with pytest.raises(ResolutionError) as refused:
        probed()
    assert "names its program as ${MLRUN_PYTHON}, which is empty where probes run" in refused.value.message
    assert "not a step's (no MLRUN_PYTHON" in refused.value.hint
    ws.recipe("thing", RECIPE + "probe: {v: {run: ['${NOPE_VAR}', '--version'], remember: false}}\n",
              files={"build.sh": "true\n"})   # asked anew each time: it said "cannot start: Permission denied"
    with pytest.raises(ResolutionError, match="names its program as \\$\\{NOPE_VAR\\}, which is empty"):
        probed()
    for program, why in ((ws.root, "a folder"), (ws.path("recipes", "thing", "build.sh"), "not executable")):
        ws.recipe("thing", RECIPE + f"probe: {{v: [{program}]}}\n", files={"build.sh": "true\n"})
        with pytest.raises(ResolutionError, match=f"cannot start {program}: {why}"):
            probed()


def test_a_changed_hash_env_variable_changes_the_key(ws):
    ws.recipe("thing", RECIPE + "hash_env: [CC, CFLAGS]\n", files={"build.sh": "true\n"})
    k = folder_key(ws, host_env={"CC": "gcc"})
    assert folder_key(ws, host_env={"CC": "gcc", "OTHER": "1"}) == k
    assert folder_key(ws, host_env={"CC": "clang"}) != k
    assert folder_key(ws, host_env={"CC": "gcc", "CFLAGS": "-O3"}) != k


def test_empty_schema_values_do_not_change_the_digest():
    """A key added to the schema later with an empty default must not rebuild every entry."""
    from engine import keys
    from engine.recipe import normalize
    plain = normalize({"tags": "a", "run": "echo"}, "r.yaml", {}, "a")
    spelled_out = normalize({"tags": "a", "run": "echo", "pass_env": [], "env": {}, "record": {}}, "r.yaml", {}, "a")
    assert keys.recipe_digest(plain) == keys.recipe_digest(spelled_out)
    assert keys.recipe_digest(plain) != keys.recipe_digest(normalize({"tags": "a", "run": "echo 1"}, "r.yaml", {}, "a"))


def test_a_variations_hash_env_counts_only_when_chosen():
    from engine import MemoryIndex, resolve
    index = MemoryIndex({"r": {"tags": "r", "run": "echo",
                               "variations": {"plain": {"group": "g", "default": True},
                                              "hub": {"group": "g", "hash_env": ["HUB"]}}}})
    def key(query, hub):
        return resolve(index, query, host_env={"HUB": hub}).root.key
    assert key("r", "a") == key("r", "b")
    assert key("r _hub", "a") != key("r _hub", "b")


def test_a_content_folder_is_keyed_by_what_its_links_lead_to(tmp_path):
    """A folder input whose part is a link elsewhere (inf/loadgen -> ext/loadgen): an edit of the linked file kept
    the key (the link was hashed by its target's name), and the entry built from the old copy was reused."""
    from engine.digests import content_digest
    ext, folder = tmp_path / "ext", tmp_path / "inf"
    (ext / "loadgen").mkdir(parents=True)
    (ext / "loadgen" / "mlperf.conf").write_text("target_qps = 1.0\n")
    (ext / "file.txt").write_text("a")
    folder.mkdir()
    (folder / "loadgen").symlink_to(ext / "loadgen")
    (folder / "file.txt").symlink_to(ext / "file.txt")
    (folder / "gone").symlink_to(tmp_path / "nowhere")   # by its target's name
    (folder / "loop").symlink_to(folder)                 # a loop ends: by its name
    first = content_digest(str(folder))
    (ext / "loadgen" / "mlperf.conf").write_text("target_qps = 99999\n")
    second = content_digest(str(folder))
    (ext / "file.txt").write_text("b")
    assert len({first, second, content_digest(str(folder))}) == 3


def test_a_content_folder_whose_links_fan_out_or_lead_to_system_trees_is_read_once_and_ends(tmp_path):
    """Links fanning out to one folder (d0 -> l1, l2 -> d1 ...) doubled the walk at each level: 23 levels took over
    60 s; a link to /proc was 'Invalid argument', exit 2; a link to / walked the whole file system."""
    import time
    from engine.digests import content_digest
    top = tmp_path / "top"
    for level in range(24):
        (tmp_path / f"d{level}").mkdir()
        (tmp_path / f"d{level}" / "f").write_text(str(level))
        if level:
            for name in ("l1", "l2"):
                (tmp_path / f"d{level - 1}" / name).symlink_to(tmp_path / f"d{level}")
    top.mkdir()
    (top / "tree").symlink_to(tmp_path / "d0")
    for name, target in (("proc", "/proc"), ("dev", "/dev"), ("root", "/"), ("up", str(tmp_path))):
        (top / name).symlink_to(target)
    t0 = time.monotonic()
    first = content_digest(str(top))
    assert time.monotonic() - t0 < 10
    (tmp_path / "d23" / "f").write_text("changed")
    assert content_digest(str(top)) != first
