"""What differs between two runs: request, plan, recipes, packages, host, results, and how each ran.

Used by `mlrun diff` and by `mlrun replay` (which compares its own run with the recorded one).
Each function returns plain data: lists of (what, in A, in B) rows.
"""
import re

from . import keys, records

HOST_FIELDS = ("cpu", "cores", "cpus_allowed", "memory_gb", "os", "machine", "python")


def request(a, b):
    ra, rb = a.get("request") or {}, b.get("request") or {}
    return [(f"request.{f}", ra.get(f), rb.get(f)) for f in ("query", "inputs", "dep_overrides", "env_overrides")
            if ra.get(f) != rb.get(f)]


def plan(a, b):
    """Nodes by label: only in A, only in B, or with other keys (and the hashed fields that differ)."""
    (na, ua), (nb, ub) = recorded_steps(a), recorded_steps(b)
    rows = []
    for label in list(na) + [x for x in nb if x not in na]:   # plan order: a dependency's rows come above
        sa, sb = na.get(label), nb.get(label)
        if sa is None or sb is None:
            rows.append((f"step {label}", "present" if sa else "not reached" if label in ua else "absent",
                         "present" if sb else "not reached" if label in ub else "absent"))
        elif sa["key"] != sb["key"]:
            ma, mb = sa["node"].get("material", {}), sb["node"].get("material", {})
            diffs = keys.differences(ma, mb) or [("key", sa["key"][:12], sb["key"][:12])]
            rows += [(f"step {label}: {f}", x, y) for f, x, y in diffs if f.split(".")[0] != "deps"]
            deps = [f.split(".", 1)[1] for f, _, _ in diffs if f.startswith("deps.")]
            if deps:
                rows.append((f"step {label}: its dependencies differ: {', '.join(deps)} (see their rows)", "", ""))
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
    return [(f"recipe {name}", (ra.get(name) or {}).get("digest", "absent")[:16],
             (rb.get(name) or {}).get("digest", "absent")[:16])
            for name in sorted(set(ra) | set(rb)) if (ra.get(name) or {}).get("digest") != (rb.get(name) or {}).get("digest")]


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
    return [(f"package {name}", pa.get(name, "absent"), pb.get(name, "absent"))
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
    ea, eb = ha.get("env", {}), hb.get("env", {})
    rows += [(f"host.env.{k}", ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb))
             if ea.get(k) != eb.get(k) and k not in PLACES]
    return rows


def results(a, b):
    """Accuracy figures and LoadGen metrics side by side (with B/A ratios for metrics)."""
    ra, rb = a.get("results") or {}, b.get("results") or {}
    rows = []
    acc_a, acc_b = ra.get("accuracy") or {}, rb.get("accuracy") or {}
    for f in ("exact_match", "f1"):
        if f in acc_a or f in acc_b:
            rows.append((f"accuracy.{f}", acc_a.get(f), acc_b.get(f)))
    ma, mb = (ra.get("loadgen") or {}).get("metric") or {}, (rb.get("loadgen") or {}).get("metric") or {}
    for name in sorted(set(ma) | set(mb)):
        rows.append((f"metric.{name}", ma.get(name), mb.get(name)))
    va, vb = (ra.get("loadgen") or {}).get("result"), (rb.get("loadgen") or {}).get("result")
    if va or vb:
        rows.append(("loadgen.result", va, vb))
    return rows


def ran(a, b):
    """How each run ran, as its results say: the benchmark's own facts beside its figures (instances a rule chose,
    the precision its runtime compiled, how many operators ran int8, sequence handling) that differ. Facts are its
    other scalar results, less measurements (floats: a warm-up's rate; a text that differs only in its numbers: a
    rule's sentence quoting the warm-up) and echoes of a setting (a fact named as an input, of the same value: the
    request and the plan say those)."""
    (fa, ea), (fb, eb) = _facts(a), _facts(b)
    fa, fb = ({k: v for k, v in facts.items() if k not in ea | eb} for facts in (fa, fb))
    rows = []
    for name in list(fa) + [n for n in fb if n not in fa]:
        x, y = fa.get(name, "absent"), fb.get(name, "absent")
        if x != y and not (isinstance(x, str) and isinstance(y, str) and _NUMBER.sub("#", x) == _NUMBER.sub("#", y)):
            rows.append((f"ran.{name}", x, y))
    return rows


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _facts(record):
    """({name: fact}, {names that echo a setting of this run})."""
    results = record.get("results")
    others = {k: v for k, v in results.items() if k not in ("loadgen", "accuracy")} \
        if isinstance(results, dict) else {}   # results() shows those
    settings = records.flat_settings(record)
    facts = {name: value for name, value in records.result_fields(others) if not isinstance(value, float)}
    echoes = {name for name, value in facts.items()
              if name.rsplit(".", 1)[-1] in settings and settings[name.rsplit(".", 1)[-1]] == value}
    return facts, echoes


def everything(a, b):
    return {"request": request(a, b), "plan": plan(a, b), "recipes": recipes(a, b), "packages": packages(a, b),
            "host": host(a, b), "results": [row for row in results(a, b) if row[1] != row[2]], "ran": ran(a, b)}


def ratio(x, y):
    try:
        return y / x if x else None
    except TypeError:
        return None
