"""What differs between two runs: request, plan, recipes, packages, host, results, and how each ran.

Used by `mlrun diff` and by `mlrun replay` (which compares its own run with the recorded one).
Each function returns plain data: lists of (what, in A, in B) rows; None where a run has no such value
(shown() writes it "absent", as every missing value reads in diff and replay).
"""
import json
import os
import re

from . import keys, records
from .secrets import MASK

HOST_FIELDS = ("cpu", "cores", "cpus_allowed", "cpu_quota", "memory_gb", "os", "machine", "python")


def request(a, b):
    """The query, and each input and override that differs (two whole dicts cut at 80 characters hid where)."""
    ra, rb = a.get("request") or {}, b.get("request") or {}
    rows = []
    for f in ("query", "inputs", "dep_overrides", "env_overrides"):
        x, y = ra.get(f), rb.get(f)
        if isinstance(x or {}, dict) and isinstance(y or {}, dict) and (x or y):
            x, y = x or {}, y or {}
            # as typed: a submission's count 32 and the command line's "32" are one value (diff exited 1)
            rows += [(f"request.{f}.{k}", x.get(k), y.get(k)) for k in dict.fromkeys([*x, *y])
                     if _typed_deep(x.get(k)) != _typed_deep(y.get(k))
                     and not (f == "inputs" and (_one_file(a, x.get(k), b, y.get(k)) or k in _replayed_files(a, b)))]
        elif x != y:
            rows.append((f"request.{f}", x, y))
    return rows


def _one_file(a, x, b, y):
    """x of run a and y of run b name one file: the same place from each run's folder (../my.conf and its replay's
    /home/me/my.conf: diff exited 1 over an exact replay); what the file held is in each step's key, compared
    apart."""
    if not (isinstance(x, str) and isinstance(y, str)):
        return False
    if x and y and os.path.normpath(os.path.join(str(a.get("cwd") or ""), x)) == \
            os.path.normpath(os.path.join(str(b.get("cwd") or ""), y)):
        return True
    return False


def contents(was, now):
    """Both values are a file's content digest (a `content: true` input): their difference is the file's bytes."""
    return all(isinstance(v, str) and v.startswith("sha256:") for v in (was, now))


def _replayed_files(a, b):
    """The file inputs an exact replay (of the other run) took from another path here: the same file, or an entry's
    file of the same bytes (a --model=FILE run's model from a --with-cache bundle)."""
    for run, of in ((b, a), (a, b)):
        if run.get("replay_of") == of.get("id") and run.get("exact") and isinstance(run.get("replayed_files"), list):
            return set(run["replayed_files"])
    return set()


def _typed_deep(value):
    """records.typed of a value, and of each value of a dep's overrides ({layers: "2"} and {layers: "+2"})."""
    return {k: _typed_deep(v) for k, v in value.items()} if isinstance(value, dict) else records.typed(value)


def plan(a, b):
    """Nodes by label: only in A, only in B, or with other keys (and the hashed fields that differ)."""
    (na, ua), (nb, ub) = recorded_steps(a), recorded_steps(b)
    rows = []
    for label in list(na) + [x for x in nb if x not in na]:   # plan order: a dependency's rows come above
        sa, sb = na.get(label), nb.get(label)
        if sa is None or sb is None:
            rows.append((f"step {label}", "present" if sa else "not reached" if label in ua else None,
                         "present" if sb else "not reached" if label in ub else None))
        elif sa["key"] != sb["key"]:
            ma, mb = sa["node"].get("material", {}), sb["node"].get("material", {})
            diffs = keys.differences(ma, mb) or [("key", sa["key"][:12], sb["key"][:12])]
            moved = {f"inputs.{k}" for k in _replayed_files(a, b)}   # the replay's own taking of a file: no difference
            rows += [(f"step {label}: {f}", x, y) for f, x, y in diffs if f.split(".")[0] != "deps" and not (
                f in moved and not contents(x, y))]
            deps = [f.split(".", 1)[1] for f, _, _ in diffs if f.startswith("deps.")]
            if deps:
                rows.append((f"step {label}: its dependencies differ: {', '.join(deps)} (see their rows)", None, None))
    return rows


def recorded_steps(record):
    """({step id: step}, [ids of steps it never reached]): a run that stopped early names its steps as in
    its whole recorded plan, so its first venv pairs with the first venv of a run that finished."""
    steps, planned = record.get("steps") or [], record.get("planned") or []
    if len(planned) > len(steps):
        ids = step_ids([{"recipe": label.split()[0]} for label in planned])
        return dict(zip(ids, steps)), ids[len(steps):]
    return dict(zip(step_ids(steps), steps)), []


def step_ids(steps):
    """A name for each step that pairs it with its twin in another run of the same query.

    A recipe that appears once is named by the recipe (so its _fp32 pairs with another run's _int8);
    one that appears several times (three venvs) by recipe and rank in the plan's order.
    """
    count, seen, out = {}, {}, []
    for s in steps:
        count[s["recipe"]] = count.get(s["recipe"], 0) + 1
    for s in steps:
        seen[s["recipe"]] = seen.get(s["recipe"], 0) + 1
        out.append(s["recipe"] if count[s["recipe"]] == 1 else f"{s['recipe']} #{seen[s['recipe']]}")
    return out


def recipes(a, b):
    ra, rb = a.get("recipes") or {}, b.get("recipes") or {}
    def digest(recipes, name):
        return ((recipes.get(name) or {}).get("digest") or "")[:16] or None
    rows = []
    for name in sorted(set(ra) | set(rb)):
        if digest(ra, name) != digest(rb, name):
            fa, fb = ((r.get(name) or {}).get("files") for r in (ra, rb))
            changed = sorted(f for f in set(fa) | set(fb) if fa.get(f) != fb.get(f)) \
                if isinstance(fa, dict) and isinstance(fb, dict) else []
            what = f"recipe {name}" + (f" (files that differ: {', '.join(changed[:8])}"
                                        + (f" and {len(changed) - 8} more" if len(changed) > 8 else "") + ")"
                                        if changed else "")
            rows.append((what, digest(ra, name), digest(rb, name)))
    return rows


def packages(a, b):
    """Package versions that differ: each package's versions over all venvs of each run (a plan's venvs are not
    matched one to one; merged into one, the last venv's version hid another's: 1.22.1 in the model's venv)."""
    def flat(record):
        out = {}
        for pkgs in records.packages(record).values():
            for name, version in pkgs.items():
                out.setdefault(name, set()).add(version)
        return {name: ", ".join(sorted(versions)) for name, versions in out.items()}
    pa, pb = flat(a), flat(b)
    return [(f"package {name}", pa.get(name), pb.get(name))
            for name in sorted(set(pa) | set(pb)) if pa.get(name) != pb.get(name)]


# Where mlrun's folders are, not what they hold: the recipes are compared by content (a sweep's points run with
# MLRUN_RECIPES set), downloads are checked against their checksums wherever they come from.
PLACES = {"MLRUN_CACHE", "MLRUN_RUNS", "MLRUN_RECIPES", "MLRUN_MIRROR"}


def host(a, b):
    ha, hb = a.get("host") or {}, b.get("host") or {}
    rows = [(f"host.{f}", ha.get(f), hb.get(f)) for f in HOST_FIELDS if ha.get(f) != hb.get(f)]
    # A GPU run's facts (NVML) are in its results: model, memory, driver, CUDA, compute capability.
    ga, gb = (a.get("results") or {}).get("gpu") or {}, (b.get("results") or {}).get("gpu") or {}
    rows += [(f"host.gpu.{k}", ga.get(k), gb.get(k)) for k in sorted(set(ga) | set(gb)) if ga.get(k) != gb.get(k)]
    if a.get("mlrun") and b.get("mlrun") and a["mlrun"] != b["mlrun"]:   # older records name none
        rows.append(("mlrun", a["mlrun"], b["mlrun"]))
    ea, eb = ha.get("env", {}), hb.get("env", {})
    # A secret's value is not recorded: set in one shell only (a replay needs it there, the run had it by --env),
    # it is no difference that could explain a figure.
    # Nor one the runs gave by --env.NAME: that wins over the host's (a replay asks for a masked one in its shell).
    given = {k for r in (a, b) for k in _mapping(_mapping(r.get("request")).get("env_overrides"))}
    rows += [(f"host.env.{k}", ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb))
             if ea.get(k) != eb.get(k) and k not in PLACES and MASK not in (ea.get(k), eb.get(k)) and k not in given]
    return rows


def results(a, b):
    """Accuracy figures and LoadGen metrics side by side (with B/A ratios for metrics); a benchmark whose results
    have neither (a recipe's own `results:` JSON) gets its own figures compared, by name (`figure.NAME`)."""
    ra, rb = _mapping(a.get("results")), _mapping(b.get("results"))
    rows = []
    acc_a, acc_b = ra.get("accuracy"), rb.get("accuracy")
    if isinstance(acc_a, dict) or isinstance(acc_b, dict):
        acc_a, acc_b = _mapping(acc_a), _mapping(acc_b)
        for f in ("exact_match", "f1"):
            if f in acc_a or f in acc_b:
                rows.append((f"accuracy.{f}", acc_a.get(f), acc_b.get(f)))
    elif acc_a is not None or acc_b is not None:   # a plain figure named accuracy ended diff "unexpected TypeError"
        rows.append(("accuracy", acc_a, acc_b))
    la, lb = _mapping(ra.get("loadgen")), _mapping(rb.get("loadgen"))
    ma, mb = _mapping(la.get("metric")), _mapping(lb.get("metric"))
    for name in sorted(set(ma) | set(mb)):
        rows.append((f"metric.{name}", ma.get(name), mb.get(name)))
    # an accuracy run's LoadGen result is "": no result, as a run without LoadGen has none
    va, vb = la.get("result") or None, lb.get("result") or None
    if va or vb:
        rows.append(("loadgen.result", va, vb))
    if not (la or lb or isinstance(acc_a, dict) or isinstance(acc_b, dict)):
        # another benchmark's figures (samples_per_second, top1): diff and replay compared none of them
        fa, fb = (dict(records.result_fields(r)) for r in (ra, rb))
        for name in [n for n in fa if n in fb or n not in fb] + [n for n in fb if n not in fa]:
            x, y = fa.get(name), fb.get(name)
            if name in ("f1", "exact_match"):   # accuracy wherever it is kept: `runs` shows it so
                rows.append((f"accuracy.{name}", x, y))
                continue
            if name == "accuracy" or not any(isinstance(v, float) or name == "result" for v in (x, y)):
                continue
            rows.append(("result" if name == "result" else f"figure.{name}", x, y))
    return rows


def _mapping(value):
    return value if isinstance(value, dict) else {}


def ran(a, b):
    """How each run ran, as its results say: the benchmark's own facts beside its figures (instances a rule chose,
    the precision its runtime compiled, how many operators ran int8, sequence handling) that differ. Facts are its
    other scalar results, less measurements (floats: a warm-up's rate; a text that differs only in its numbers: a
    rule's sentence quoting the warm-up) and echoes of a setting (a fact named as an input, of the same value: the
    request and the plan say those)."""
    sa, sb = records.flat_settings(a), records.flat_settings(b)
    (fa, ea), (fb, eb) = _facts(a, sa), _facts(b, sb)
    # an echo in both runs (each gave the setting) is the request's row; in one only, the other run's value came
    # from a rule (batch_size 4 chosen, 1 given), and that row is the one that says what ran
    fa, fb = ({k: v for k, v in facts.items() if k not in ea & eb} for facts in (fa, fb))
    # A fact that changed exactly as a setting asked did (--count 20 -> 40: LoadGen's min_query_count and
    # performance_sample_count_override, the batches) is that setting under another name.
    asked = {(str(sa.get(k)), str(sb.get(k))) for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
    rows, seen = [], set()
    for name in list(fa) + [n for n in fb if n not in fa]:
        x, y = fa.get(name), fb.get(name)
        if same(x, y) or isinstance(x, str) and isinstance(y, str) and _NUMBER.sub("#", x) == _NUMBER.sub("#", y):
            continue
        # a fact an older record kept only under another name (instances, before as parallelism.instances alone)
        if x is None and _kept_as(fa, fb, name, y) or y is None and _kept_as(fb, fa, name, x):
            continue
        # the same fact kept twice (threads and parallelism.threads): once
        said = (name.rsplit(".", 1)[-1], x, y)
        if (str(x), str(y)) in asked or said in seen:
            continue
        seen.add(said)
        rows.append((f"ran.{name}", x, y))
    return rows


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def same(x, y):
    """Equal, NaN included (a run diffed with itself said 'f1: NaN -> NaN')."""
    return x == y or isinstance(x, float) and isinstance(y, float) and x != x and y != y


def _kept_as(facts, others, name, value):
    """Whether facts hold name's fact under another name ending alike: of value, or one the other run has too
    (that row says how they differ)."""
    last = name.rsplit(".", 1)[-1]
    return any(k != name and k.rsplit(".", 1)[-1] == last and (v == value or k in others) for k, v in facts.items())


def _facts(record, settings):
    """({name: fact}, {names that echo one of `settings`, the run's flat settings})."""
    results = record.get("results")
    others = {k: v for k, v in results.items() if k not in ("loadgen", "accuracy")} \
        if isinstance(results, dict) else {}   # results() shows those
    # floats are measurements, but what a user.conf set is a setting whatever its type (its 2.5 QPS); the
    # harness's own chosen target (settings.target_qps) is measured anew each run: not a fact
    facts = {name: value for name, value in records.result_fields(others)
             if not isinstance(value, float) or name.startswith("user_settings.")}
    echoes = {name for name, value in facts.items()
              if name.rsplit(".", 1)[-1] in settings and settings[name.rsplit(".", 1)[-1]] == value}
    return facts, echoes


def everything(a, b):
    return {"request": request(a, b), "plan": plan(a, b), "recipes": recipes(a, b), "packages": packages(a, b),
            "host": host(a, b), "results": [row for row in results(a, b) if not same(row[1], row[2])], "ran": ran(a, b)}


def shown(value, width=80):
    """A value as diff and replay write it: JSON (so "2" and 2 differ visibly), a missing one as absent."""
    if value is None:
        return "absent"
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def ratio(x, y):
    try:
        return y / x if x else None
    except TypeError:
        return None
