"""Replay a recorded run: the same plan, exactly, or a precise account of why it cannot be.

The recipes come from the local checkout when their digests match the record, otherwise from
the copy in the record when asked (--recorded-recipes, or a bundle whose signature --trust verified): that copy is
code that came with the run, and a step may be handed the replayer's secrets. The request is resolved again and every node
must get its recorded key; then the plan runs (reusing entries whose keys match) and the
results are compared: accuracy must be equal, performance is shown as a ratio beside the
host differences.
"""
import os
import re
import shlex

from . import compare, keys, records, secrets, usage
from .compare import shown
from .errors import MlrunError, StepError, UsageError
from .index import RecipeIndex
from .records import status
from .resolver import REFERENCE, resolve
from .words import plural


def choose_recipes(record, settings, recorded_recipes=False, allow_differences=False):
    """(index, notes): the local recipes if they are the recorded ones, else the record's copy if allowed, else with
    allow_differences the local ones (the nodes whose key they change are listed, the replay marked inexact)."""
    local = {}
    try:
        local = {(r["name"], r["version"]): r["digest"] for r in settings.index().recipes}
    except MlrunError:
        pass  # a broken local checkout is one more reason to use the recorded copy
    snapshot = os.path.join(record["_dir"], records.SNAPSHOT_DIR)
    recorded = record.get("recipes") or _copied_recipes(record, snapshot)
    if not recorded and record.get("planned"):
        raise MlrunError("the record names none of the recipes its run used, and its folder holds no copy of them: "
                         "whether the local ones are the same cannot be told", hint="replay a run that got further")
    differing = [name for name, rec in recorded.items() if local.get((name, rec["version"])) != rec["digest"]]
    if not differing:
        return settings.index(), ["recipes: the local ones are the recorded ones"]
    # the copy keeps each recipe folder's own name (a run with --recipes DIR has snapshot/DIR/..., not recipes/)
    folders = sorted({os.path.dirname(os.path.normpath(os.path.join(record["_dir"], rec["snapshot"])))
                      for rec in recorded.values() if isinstance(rec.get("snapshot"), str)}) \
        or [os.path.join(snapshot, "recipes")]
    if not recorded_recipes and allow_differences:   # was refused as if --allow-differences had not been given
        return settings.index(), [f"recipe {name}: the local one differs from the run's; used, as "
                                  "--allow-differences asks" for name in differing]
    if not recorded_recipes:
        raise MlrunError(f"the run's recipes differ from the local ones ({', '.join(differing)}): replaying it would "
                         "run the copies its record holds, code that came with the run",
                         hint="--recorded-recipes runs them if you trust where the run came from (a bundle signed by "
                              "a key you trust: replay it with --trust ALLOWED_SIGNERS); or replay it with the "
                              "mlrun version that made it"
                              + (f" (mlrun {record['mlrun']})" if isinstance(record.get("mlrun"), str) else "")
                              + "; --allow-differences runs your local ones, marked inexact"
                              if record.get("mlrun") != usage.recorded_version() else
                              "--recorded-recipes runs them if you trust where the run came from (a bundle signed by "
                              "a key you trust: replay it with --trust ALLOWED_SIGNERS); this mlrun made the run: "
                              "the recipes (yours, or their sources) changed since; --allow-differences runs your local ones, marked "
                              "inexact")
    outside = [f for f in folders if os.path.relpath(f, snapshot).startswith("..")]
    if outside:   # the record was edited: its copy must be the run folder's own
        raise MlrunError(f"the record names a copy of its recipes outside its run folder ({outside[0]})",
                         hint="the run folder was changed after the run")
    if not all(os.path.isdir(f) for f in folders):
        raise MlrunError(f"the run's recipes differ locally ({', '.join(differing)}) and the record has no copy",
                         hint=f"expected the copy in {' and '.join(folders)}")
    index = RecipeIndex(folders, check_deps=False)
    copied = {r["name"]: r["digest"] for r in index.recipes}
    for name, rec in recorded.items():
        if copied.get(name) != rec["digest"]:
            raise MlrunError(f"the record's copy of recipe {name} does not match its recorded digest",
                             hint="the run folder was changed after the run")
    notes = [f"recipe {name}: the local one differs or is missing; using the recorded copy" for name in differing]
    return index, notes


def _copied_recipes(record, snapshot):
    """{name: {version, digest, snapshot}} of the recipes a run's folder holds copies of: a run killed before its end
    by an mlrun that recorded them only then has "recipes": {} beside its copy."""
    folders = []
    tops = [snapshot] + sorted(os.path.join(snapshot, n) for n in (os.listdir(snapshot) if os.path.isdir(snapshot)
                                                                    else ()) if n.startswith(".root"))
    for folder in (os.path.join(top, name) for top in tops for name in sorted(os.listdir(top))):
        if os.path.isdir(folder) and any(os.path.isfile(os.path.join(folder, child, "recipe.yaml"))
                                         for child in os.listdir(folder)):
            folders.append(folder)
    if not folders:
        return {}
    try:
        index = RecipeIndex(folders, check_deps=False)
    except MlrunError:
        return {}
    return {r["name"]: {"version": r["version"], "digest": r["digest"],
                        "snapshot": os.path.relpath(os.path.dirname(r["path"]), record["_dir"])}
            for r in index.recipes}


def plan_differences(record, plan, mapped=()):
    """(differences, beyond): what in `plan` differs from the recorded run's plan, node by node, and the labels
    of the nodes the recorded run stopped before (it failed or was interrupted). mapped: the root's file inputs this
    replay found here under another path (the same file, or its content): their path is no difference."""
    same_file = {f"inputs.{name}" for name in mapped}
    recorded, unreached = compare.recorded_steps(record)
    now = dict(zip(compare.step_ids([{"recipe": n.name} for n in plan.nodes]), plan.nodes))
    differences, beyond = [], []
    for ident, node in now.items():
        step = recorded.get(ident)
        if step is None and ident in unreached:
            beyond.append(node.label)
        elif step is None:
            differences.append(f"{node.label}: not in the recorded plan")
        elif step["key"] != node.key:
            for f, was, new in keys.differences(step["node"].get("material", {}), node.material):
                if f in same_file and node is plan.root and not compare.contents(was, new):
                    continue   # its path only: what the file holds (content: true) still counts
                if f.split(".")[0] != "deps":   # the dependency's own node says what differs
                    file = (node.inputs or {}).get(f[len("inputs."):]) if f.startswith("inputs.") else None
                    changed = f" (the file {file} holds other bytes than the run read)" \
                        if isinstance(file, str) and compare.contents(was, new) else ""
                    differences.append(f"{node.label}: {f} was {was!r}, now {new!r}{changed}")
    differences += [f"{step['label']}: in the recorded plan, not in this one"
                    for ident, step in recorded.items() if ident not in now]
    return differences, beyond


def plan_again(record, settings, allow_differences=False, recorded_recipes=False):
    """(plan, notes): the recorded request resolved again; raises if a node would differ from the record."""
    index, notes = choose_recipes(record, settings, recorded_recipes, allow_differences)
    req = record.get("request")
    if not req or not req.get("query"):   # (one edited without its query said "unexpected KeyError ... a bug")
        raise MlrunError(f"run {record.get('id')} has no request to replay (recorded by an older mlrun, or edited)")
    # an input's secret (a URL's password) is masked in the record: the step would get "<redacted>" as the value,
    # under the recorded key (a key holds no secret), and the replay called exact
    from .secrets import MASK
    masked = [f"--{name}={value}" for name, value in (req.get("inputs") or {}).items()
              if isinstance(value, str) and MASK in value] + [
        f"--dep.{dep}.{name}={value}" for dep, given in (req.get("dep_overrides") or {}).items()
        if isinstance(given, dict) for name, value in given.items() if isinstance(value, str) and MASK in value]
    if masked:
        raise MlrunError(f"run {record.get('id')} was given a secret its record does not keep ({', '.join(masked)}): "
                         "a replay cannot give its steps what they had", hint="run its command again with the "
                         "secret filled in (mlrun runs show RUN prints the command)")
    root = (record.get("root") or {}).get("recipe")
    spec = next((r["inputs"] for r in index.recipes if r["name"] == root), {})
    paths = {name for name, i in spec.items() if i.get("type") == "path"}
    inputs = _inputs_here(record, req.get("inputs") or {}, settings, notes, paths)
    plan = resolve(index, req["query"], inputs=inputs, host_env=os.environ,
                   dep_overrides=req.get("dep_overrides"), env_overrides=req.get("env_overrides"),
                   prober=settings.prober())
    mapped = [name for name, value in inputs.items() if value != (req.get("inputs") or {}).get(name)]
    plan.replayed_files = mapped   # recorded: `diff` of the run and this replay says no difference of their paths
    differences, beyond = plan_differences(record, plan, mapped)
    if beyond and not record.get("steps"):   # killed before it wrote its steps (died): how far it got is unknown
        notes.append(f"the recorded run ({status(record)}) kept no step's outcome: how far it got is unknown; this "
                     "replay runs each step its cache lacks")
    elif beyond:
        notes.append(f"the recorded run ({status(record)}) stopped before {plural(len(beyond), 'step')}: "
                     + ", ".join(beyond) + "; this replay runs them")
    if differences:
        message = "the replay cannot be exact:\n  " + "\n  ".join(differences)
        hint = "--allow-differences runs it anyway and marks the replay inexact"
        if any("mirror" in d for d in differences):   # a probe of what the mirror held (an unchecked list)
            was = records.place(record, "MLRUN_MIRROR")
            hint = (f"the run took a file from its mirror{f' ({was})' if was else ''}: replay with --mirror DIR "
                    f"holding the same file; {hint}")
        if not allow_differences:
            raise MlrunError(message, hint=hint)
        notes.append(message)
    return plan, notes


def _recorded_content(record, name, value):
    """'sha256:...' of the file the run's input `name` named (value, made absolute): the app's own input's, else that
    of a step given the same file (--model=FILE reaches the model's step as its input `path`), else None."""
    app = (record.get("root") or {}).get("recipe")
    cwd = record.get("cwd") if isinstance(record.get("cwd"), str) else ""
    for step in record.get("steps") or []:
        node = step.get("node") if isinstance(step, dict) else None
        if not isinstance(node, dict):
            continue
        material = (node.get("material") or {}).get("inputs") or {}
        given = node.get("inputs") or {}
        names = [name] if step.get("recipe") == app else \
            [k for k, v in given.items() if isinstance(v, str) and os.path.normpath(os.path.join(cwd, v)) == value]
        for k in names:
            if isinstance(material.get(k), str) and material[k].startswith("sha256:"):
                return material[k]
    return None


def _entry_file_of(record, settings, content):
    """A file of this cache's entries of the run's steps whose sha256 is content ('sha256:...'), else None."""
    if not content:
        return None
    from .cache import recorded_files
    digest = content.removeprefix("sha256:")
    for step in record.get("steps") or []:
        if not (isinstance(step, dict) and step.get("status") in ("built", "cached") and isinstance(step.get("path"), str)):
            continue
        entry = os.path.join(settings.cache, os.path.basename(step["path"]))
        files = recorded_files(entry) or {}
        found = next((rel for rel, d in sorted(files.items()) if d == digest), None)
        if found and os.path.isfile(os.path.join(entry, found)):
            return os.path.join(entry, found)
    return None


def _inputs_here(record, inputs, settings, notes, paths=()):
    """The request's inputs with each file it named inside the recording machine's cache taken from this cache's
    entry of the same name (same key: same content; a TEST01 run's audit.config was "no such file" on another
    machine, from a bundle that carried the entry); a file of the person's that is not here is said so."""
    roots = {os.path.dirname(step["path"]) for step in record.get("steps") or []
             if isinstance(step, dict) and step.get("status") in ("built", "cached") and isinstance(step.get("path"), str)}
    given = records.place(record, "MLRUN_CACHE")   # a run with no cached step named its cache only so
    if isinstance(given, str) and os.path.isabs(given):
        roots.add(os.path.normpath(given))
    out = dict(inputs)
    for name, value in inputs.items():
        if name in paths and isinstance(value, str) and value and not os.path.isabs(value) \
                and isinstance(record.get("cwd"), str):
            # given relative where it ran: from elsewhere "no such file", or another file of that name taken
            value = os.path.join(record["cwd"], value)
            if os.path.exists(value):
                out[name] = value
                notes.append(f"--{name}: {inputs[name]} is {value}, relative to where the run was started")
                continue
        if name not in paths or not (isinstance(value, str) and os.path.isabs(value)) or os.path.exists(value):
            continue   # a text input (--label=/api/v1) is no file, wherever it ran
        root = next((r for r in roots if value.startswith(r.rstrip(os.sep) + os.sep)), None)
        if root:   # a file of the recording machine's cache: this cache's entry of the same key, if it has it
            here = os.path.join(settings.cache, os.path.relpath(value, root))
            if not os.path.exists(here):
                raise MlrunError(f"--{name}: {value} is a file of the recording machine's cache entry "
                                 f"{os.path.relpath(value, root).split(os.sep)[0]}, which this cache does not hold",
                                 hint="import the run's bundle made with --with-cache (it carries the entry), or "
                                      "build that entry here, then replay again")
            out[name] = here
            notes.append(f"--{name}: {value} of the recording machine's cache is {here} here")
            continue
        recorded = _recorded_content(record, name, value)
        same = _entry_file_of(record, settings, recorded)
        if same:   # a bundle made --with-cache carries the entry made from it: the file itself is not needed
            out[name] = same
            notes.append(f"--{name}: {value} is not on this machine; {same} of this cache holds its content "
                         f"({recorded})")
            continue
        content = f" (its content: {recorded})" if recorded else ""
        raise MlrunError(f"--{name}: {value}, a file the run read where it ran, is not on this machine",
                         hint=f"put a copy there{content} and replay again")
    return out


def verdict(old, new):
    """(lines, ok): accuracy must be equal; metrics as ratios; host, how-it-ran and package differences listed."""
    lines, ok = [], True
    if status(old) != "ok":   # an interrupted or failed run has no results to hold the replay to
        return [f"the recorded run ended {status(old)}: no results to compare"], True
    for what, was, now in compare.results(old, new):
        if what == "accuracy" or what.startswith("accuracy."):
            same = compare.same(was, now)
            ok = ok and same
            lines.append(f"{what}: {shown(now)} ({'equal' if same else f'DIFFERS: recorded {shown(was)}'})")
        elif what.startswith(("metric.", "figure.")):
            r = compare.ratio(was, now)
            lines.append(f"{what}: {shown(now)} vs recorded {shown(was)}" + (f" (ratio {r:.3f})" if r is not None else ""))
        else:
            lines.append(f"{what}: {shown(now)} (recorded {shown(was)})")
    host = compare.host(old, new)
    if host:
        lines.append("host differences (performance is not comparable one to one):")
        lines += [f"  {what}: recorded {shown(was)}, here {shown(now)}" for what, was, now in host]
    how = compare.ran(old, new)
    if how:   # the same plan on another machine: the scenario's rule may choose other instances
        lines.append("how it ran differs:")
        lines += [f"  {what}: recorded {shown(was)}, here {shown(now)}" for what, was, now in how]
    pkgs = compare.packages(old, new)
    if pkgs:
        lines.append("package differences:")
        lines += [f"  {what}: recorded {shown(was)}, here {shown(now)}" for what, was, now in pkgs]
    return lines, ok


def replay(record, settings, runner, allow_differences=False, argv=None, recorded_recipes=False):
    """Run the recorded plan again; returns (new record, notes, verdict lines, ok)."""
    plan, notes = plan_again(record, settings, allow_differences, recorded_recipes)
    try:
        new = runner.run(plan, argv=argv, extra={"replay_of": record.get("id"), "exact": not any(
            n.startswith("the replay cannot be exact") for n in notes), "replayed_files": plan.replayed_files})
    except StepError as e:
        raise StepError(f"the replay of run {record.get('id')} failed: {e.message}", hint=e.hint,
                        exit_code=e.exit_code) from None   # a refused request stays 2, as run directly
    lines, ok = verdict(record, new)
    return new, notes, lines, ok


# -- what a bundle carries beside its recipes --------------------------------------------------------------------

# A bundle's recorded --dep.NAME.tags: variations of the local recipes, no code of their own
CARRIED_TAGS = re.compile(r"\s*_?[\w.-]+(\s+_?[\w.-]+)*\s*")


def _root_inputs(settings, record):
    """{input: spec} of the local recipe of the recorded root ({} where there is none)."""
    from .cache_view import recipes_by_name
    recipe = recipes_by_name(settings).get((record.get("root") or {}).get("recipe")) or {}
    return {name: spec for name, spec in (recipe.get("inputs") or {}).items() if isinstance(spec, dict)}


def _imported_unverified(runs_dir, record):
    """Whether the run came here in a bundle whose signature was not verified (import leaves that word in
    runs/.index/imported/): a replay by its id is a replay of what the bundle carries."""
    from .bundle import import_mark
    mark = import_mark(runs_dir, record.get("id"))
    return mark is not None and not mark.get("verified")


def _data(value, spec=None):
    """Whether a setting a bundle carries is a number, a boolean, empty or a masked secret (--dep.model.layers=2,
    OMP_NUM_THREADS=1, HF_TOKEN=<redacted>: the replay takes the receiver's own), one of its input's choices or
    default, or a file read by content: data, where text may be a command (BASH_ENV, a package to install, an
    interpreter). A `file: true` input given a local file is one too (the app's --model=FILE, which its model step
    reads by content; its zoo: and hf: forms are not files): a teammate's --model run was refused as code."""
    spec = spec or {}
    if value in (spec.get("choices") or ()) or value == spec.get("default") or \
            spec.get("type") in ("int", "float", "bool") or spec.get("type") == "path" and spec.get("content"):
        return True
    if spec.get("type") == "path" and spec.get("file") and isinstance(value, str) and value.strip() \
            and not REFERENCE.match(value):
        return True
    text = str(value).strip().lower()
    if text in ("true", "false", "", secrets.MASK):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def refuse_carried_settings(record, settings, from_bundle):
    """Refuse to replay the settings a run that came in an unverified bundle carries (the bundle replayed itself, or its
    run by id once imported) where they are not data (_data): each reached every step (--env.BASH_ENV=$(...) ran its
    command here, exit 0), as the bundle's own recipes would; --recorded-recipes or a --trust signature runs them."""
    if not (from_bundle or _imported_unverified(settings.runs, record)):
        return
    request = record.get("request") or {}
    specs = _root_inputs(settings, record)
    carried = [f"--{k}={v}" for k, v in (request.get("inputs") or {}).items() if not _data(v, specs.get(k))] + \
        [f"--env.{k}={v}" for k, v in (request.get("env_overrides") or {}).items() if not _data(v)] + \
        [f"--dep.{d}.{k}={v}" for d, kv in (request.get("dep_overrides") or {}).items() for k, v in kv.items()
         if not (_data(v) or k == "tags" and CARRIED_TAGS.fullmatch(str(v)))]
    if carried:
        raise UsageError(f"the run sets {shlex.join(secrets.scrub_argv(carried))}: settings that came with the "
                         "bundle, which run code here (an --env.BASH_ENV or a --dep.*.packages is a command)",
                         hint="--recorded-recipes runs them if you trust where the run came from (a bundle signed "
                              "by a key --trust lists needs no flag)")
