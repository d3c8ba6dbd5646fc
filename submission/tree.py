"""The submission tree (official v6.x layout), built from finished runs, then checked and packed.

<out>/tree/<division>/<submitter>/{systems/<system>.json, src/,
documentation/{README.md, calibration.md},
results/<system>/<benchmark>/<scenario>/{measurements.json, user.conf, README.md, accuracy/,
performance/run_1/, TEST01/}}. The full accuracy logs stay outside the tree (<out>/accuracy-logs/,
the official truncate_accuracy_log.py's backup, and each run folder).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from engine.cache import write_json as _write_json
from engine.errors import StepError

from . import weights

LOGS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_json(path, value)


def _copy(src_dir, names, dest):
    os.makedirs(dest, exist_ok=True)
    for name in names:
        shutil.copy2(os.path.join(src_dir, name), os.path.join(dest, name))


def _official(sub, script, args, cwd, what):
    """Run an official script from the sources with this interpreter (it needs numpy at most)."""
    cmd = [sys.executable, "-B", os.path.join(sub.src, script), *args]
    # -B and the variable (its child processes too): nothing may be written into the sealed sources entry
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    with open(os.path.join(sub.dir, "logs", f"{what}.log"), "w") as f:
        f.write(f"$ {shlex.join(cmd)}  (in {cwd})\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise StepError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}",
                        hint=f"its output: {os.path.join(sub.dir, 'logs', what + '.log')}")
    return proc.stdout + proc.stderr   # a script that logs says its ERRORs on stderr (and exits 0)


def _random_weights(sub):
    return "random" in sub.model["what"] or "_random" in sub.opts.query


def measurements(sub, steps=None, scenario=None):
    """measurements.json of a scenario; steps: its performance run's steps (weights.run_steps), whose records tell
    how the weights were made (a TensorRT or OpenVINO engine's precision is the weights' too; tf32 keeps fp32
    weights)."""
    model = sub.model["what"]
    random = _random_weights(sub)
    kind, transform, _ = weights.describe(sub, steps or {}, scenario)
    return {
        "starting_weights_filename": sub.model.get("weights", model),
        "retraining": "no",
        # as the run fed the model (its summary; int64 before it said so): a model taking int32 was misdescribed
        "input_data_types": ((steps or {}).get("app-mlperf-bert", {}).get("record") or {}).get("results", {})
        .get("input_dtype") or "int64",
        "weight_data_types": kind,
        "weight_transformations": "random weights, no training (plumbing only)" + (
            f"; {transform}" if transform != "none" else "") if random else transform,
        "division": sub.opts.division, "framework": sub.framework, "loadgen": sub.loadgen,
    }


def readme(sub, benchmark, scenario, done):
    found = sub.state["settings"][scenario]
    lines = [f"# {benchmark} {scenario} ({sub.opts.division}, {sub.opts.submitter}, {sub.system_id})", ""]
    if sub.opts.short:
        lines += ["**A --short rehearsal: short runs, NOT a submittable result.**", ""]
    from engine.usage import recorded_version
    lines += [f"Made by mlrun {recorded_version()} with one command (from the mlrun checkout):", "", "```",
              shlex.join(sub.state.get("argv", ["mlrun", "submit", sub.opts.query])), "```", "",
              *(["Its `--system` file is kept beside the tree as `system.yaml` (its fields are in "
                 f"`systems/{sub.system_id}.json`).", ""] if sub.opts.system else []),
              "Each run below is a normal mlrun run; re-run one exactly with `bin/mlrun replay RUN`, or by hand:", ""]
    for kind in ("search", "accuracy", "performance", "TEST01"):
        entry = done[(scenario, kind)] if kind != "search" else sub.state["runs"][f"{scenario}/search"]
        lines += [f"- {kind} (run `{entry['run']}`):", "", "  ```", "  " + shlex.join(entry["command"]), "  ```", ""]
    lines += ["## Settings search", "", found["how"], "", "Figures: `" + json.dumps(found["figures"]) + "`", "",
              f"MLPerf LoadGen {sub.loadgen} (pinned for round v6.1), seeds used: "
              f"`{json.dumps(sub.state.get('loadgen', {}).get('seeds', {}))}`.", "",
              "Then TEST01 was verified with the official `compliance/TEST01/run_verification.py`.", ""]
    return "\n".join(lines)


def archive_name(opts):
    """A rehearsal's archive says so in its name: under the real one it could be uploaded by mistake."""
    return f"{opts.submitter}-{opts.division}" + ("-short-rehearsal" if opts.short else "") + ".tar.gz"


def forget(sub):
    """Remove the last tree, its verdict and its archive before any run: a submit interrupted among new runs
    left them beside a state.json that names other runs (verdict.json said ok), and another --submitter's archive
    stayed beside this one's."""
    # rebuilt from the runs each time; the checker's findings on the last tree go with it (check/ said ok over a
    # tree a failed resubmit had removed), and a `check submission`'s beside it (tree-check/)
    for path in (os.path.join(sub.dir, "tree"), os.path.join(sub.dir, "accuracy-logs"),
                 os.path.join(sub.dir, "work", "verify"), os.path.join(sub.dir, "check"),
                 os.path.join(sub.dir, "tree-check")):
        shutil.rmtree(path, ignore_errors=True)
    last = (sub.state.get("verdict") or {}).get("archive")
    names = {archive_name(sub.opts)} | ({os.path.basename(last)} if last else set())
    # The archives, then the state without its verdict, then verdict.json: a Ctrl-C just after verdict.json went
    # found the verdict still in state.json (it was saved last).
    for name in names | {f"{name}.sha1" for name in names}:
        if os.path.lexists(os.path.join(sub.dir, name)):
            os.remove(os.path.join(sub.dir, name))
    sub.state.pop("verdict", None)
    sub.save()
    if os.path.lexists(os.path.join(sub.dir, "verdict.json")):
        os.remove(os.path.join(sub.dir, "verdict.json"))


def build(sub, done):
    """Write the tree; returns its root (the checker's --input)."""
    root = os.path.join(sub.dir, "tree")
    backup = os.path.join(sub.dir, "accuracy-logs")
    forget(sub)   # done before the runs too; again, so a rebuild that fails leaves no verdict or archive
    sub.tree_errors = []   # what the checker does not see: an official script's ERROR
    os.makedirs(os.path.join(sub.dir, "logs"), exist_ok=True)
    top = os.path.join(root, sub.opts.division, sub.opts.submitter)
    write_json(os.path.join(top, "systems", f"{sub.system_id}.json"), sub.system_desc)
    _src(sub, top, done)
    # each scenario's weights as its runs made them (--Offline.precision=int8-bf16 beside another's int8)
    steps = {scenario: weights.run_steps(done[(scenario, "performance")]["folder"])
             for scenario in sub.opts.scenario_list}
    _documentation(sub, top, steps)
    for benchmark in sub.opts.benchmark_list:
        for scenario in sub.opts.scenario_list:
            d = os.path.join(top, "results", sub.system_id, benchmark, scenario)
            acc, perf, test01 = (done[(scenario, k)]["folder"] for k in ("accuracy", "performance", "TEST01"))
            _copy(acc, LOGS + ("mlperf_log_accuracy.json",), os.path.join(d, "accuracy"))
            with open(os.path.join(acc, "accuracy.txt")) as f:   # the score line; truncation adds the hash
                score = f.readline()
            with open(os.path.join(d, "accuracy", "accuracy.txt"), "w") as f:
                f.write(score)
            _copy(perf, LOGS, os.path.join(d, "performance", "run_1"))
            shutil.copy2(os.path.join(perf, "user.conf"), os.path.join(d, "user.conf"))
            write_json(os.path.join(d, "measurements.json"), measurements(sub, steps[scenario], scenario))
            with open(os.path.join(d, "README.md"), "w") as f:
                f.write(readme(sub, benchmark, scenario, done))
            _test01(sub, d, test01, f"{benchmark}-{scenario}")
    out = _official(sub, os.path.join("tools", "submission", "truncate_accuracy_log.py"),
                    ["--input", root, "--submitter", sub.opts.submitter, "--backup", backup], root,
                    "truncate_accuracy_log")
    # it exits 0 over a log it could not truncate (TEST01's, 12 MB, went into the archive unsaid)
    sub.tree_errors += [f"truncate_accuracy_log.py: {line.split(':', 2)[-1].strip()}"
                        for line in out.splitlines() if line.startswith("ERROR")]
    return root


def _test01(sub, scenario_dir, test01_run, label):
    """The official verification: responses equal the accuracy run's, performance within 10%."""
    work = os.path.join(sub.dir, "work", "verify", label)
    os.makedirs(work, exist_ok=True)
    # run_verification.py joins the paths into shell commands unquoted: a space in -o (or the runs folder) split
    # them, both checks failed unsaid ("unrecognized arguments") and the fallback scored the logs. Links in its
    # working folder give it relative paths of plain names.
    for name, target in (("results", scenario_dir), ("compliance", test01_run)):
        if os.path.lexists(os.path.join(work, name)):
            os.remove(os.path.join(work, name))
        os.symlink(target, os.path.join(work, name))
    out = _official(sub, os.path.join("compliance", "TEST01", "run_verification.py"),
                    ["-r", "results", "-c", "compliance", "-o", "results", "--dtype", "float32"], work,
                    f"TEST01-{label}")
    sub.say(f"  TEST01 {label}: " + "; ".join(line for line in out.splitlines() if "check pass" in line))
    if "Accuracy check pass: True" not in out:
        if why := _batched(test01_run):
            sub.say(f"    {why}")
        _test01_baseline(sub, scenario_dir, test01_run, label)
    else:   # the truncation script wants one here to hash the log (else it left TEST01's, 12 MB, whole)
        with open(os.path.join(scenario_dir, "TEST01", "accuracy", "accuracy.txt"), "w") as f:
            f.write("TEST01 in deterministic mode: its responses equal the accuracy run's (../verify_accuracy.txt)\n")



def _batched(run_dir):
    """Why a TEST01 run's responses differ from the accuracy run's where its samples ran in batches (formed anew
    in each run: a sample's logits differ in float noise with its batch); None where they ran alone."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            batching = json.load(f).get("batching") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(batching.get("mean_batch"), (int, float)) or batching["mean_batch"] <= 1:
        return None
    return (f"its samples ran in batches of up to {batching.get('batch_size')} (padded by up to "
            f"{batching.get('pad_tokens')} tokens), formed anew in each run, so their logits differ from the accuracy "
            "run's in float noise: the TEST01 README's fallback (baseline against compliance accuracy) decides "
            "(--batch_size=1 runs each sample alone)")


def _test01_baseline(sub, scenario_dir, test01_run, label):
    """A SUT that is not bit-deterministic: the TEST01 README's fallback, baseline vs compliance accuracy."""
    acc_dir = os.path.join(scenario_dir, "TEST01", "accuracy")
    work = os.path.join(sub.dir, "work", "verify", label)
    full_log = os.path.join(scenario_dir, "accuracy", "mlperf_log_accuracy.json")
    test_log = os.path.join(test01_run, "mlperf_log_accuracy.json")
    script = os.path.join(sub.src, "compliance", "TEST01", "create_accuracy_baseline.sh")
    proc = subprocess.run(["bash", script, full_log, test_log], cwd=work, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise StepError(f"create_accuracy_baseline.sh failed: {proc.stderr.strip()[-300:]}")
    baseline = os.path.join(work, "mlperf_log_accuracy_baseline.json")
    for log, name in ((baseline, "baseline_accuracy.txt"), (test_log, "compliance_accuracy.txt")):
        entry = sub.run(f"{label}/TEST01-{name[:-4]}", {"log": log}, query="process mlperf accuracy squad")
        with open(os.path.join(entry["folder"], "accuracy.txt")) as f:
            score = f.readline()
        with open(os.path.join(acc_dir, name), "w") as f:
            f.write(score)
    with open(os.path.join(acc_dir, "accuracy.txt"), "w") as f:
        f.write(open(os.path.join(acc_dir, "compliance_accuracy.txt")).read())


def _src(sub, top, done):
    """src/: what ran, as the performance run recorded it (its snapshot: the recipes and the mlperf_bert
    and engine sources they name)."""
    src = os.path.join(top, "src")
    run_dir = os.path.dirname(done[(sub.opts.scenario_list[0], "performance")]["folder"])
    shutil.copytree(os.path.join(run_dir, "snapshot"), src)
    with open(os.path.join(src, "README.md"), "w") as f:
        f.write("# What ran\n\nThe recipes of the runs and the sources they use (`mlperf_bert/`: the harness, SUT, "
                "features and accuracy code), as mlrun recorded them (`runs/<id>/snapshot/`).\n"
                f"Backend: {sub.framework}; MLPerf LoadGen {sub.loadgen} (PyPI mlcommons-loadgen).\n")


def _documentation(sub, top, steps):
    d = os.path.join(top, "documentation")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(f"# {sub.opts.submitter}: how this submission was made\n\nmlrun `submit` ran every run (see each "
                "scenario's README.md for the exact commands and the settings search). Model: "
                f"{sub.model['what']}.\n" + ("\n**--short rehearsal: not a submittable result.**\n"
                                             if sub.opts.short else ""))
    # documentation/calibration.md: one of the two places the rules' calibration description may be; scenarios
    # whose weights were made apart (a precision given to one) each said, named
    told = {}
    for scenario, its_steps in steps.items():
        told.setdefault(weights.describe(sub, its_steps, scenario)[::2], []).append(scenario)
    random = "Random weights, no training (plumbing only). " if _random_weights(sub) else ""
    lines = [f"Weights: {kind}. {random}{text}" if len(told) == 1 else
             f"{', '.join(scenarios)}: weights {kind}. {random}{text}" for (kind, text), scenarios in told.items()]
    with open(os.path.join(d, "calibration.md"), "w") as f:
        f.write(f"# {sub.opts.submitter}: calibration\n\n" + "\n\n".join(lines) + "\n")


def finish(sub, root):
    """The official checker, its verdict and table (printed and saved), then the archive."""
    from . import checker, pack
    from .cli import report
    from .submit import ROUND
    sub.state["built"] = True   # a tree was made here: a later submit that would drop what it held is refused
    sub.save()
    result = checker.check(sub.src, root, version=ROUND, short=sub.opts.short,
                           out_dir=os.path.join(sub.dir, "check"))
    # an official script's ERROR, which the checker cannot see (checker.check adds the open division's TEST01)
    result.errors += getattr(sub, "tree_errors", [])
    result.ok = result.ok and not result.errors
    test01 = [e for e in result.errors if e.startswith("TEST01 ") and "performance check failed" in e]
    sub.say("")
    sub.say(report(result))
    # A tree the checker refuses is not packed: an archive beside a FAILED verdict could be uploaded all the same
    archive = pack.pack(root, os.path.join(sub.dir, archive_name(sub.opts))) if result.ok else None
    # the runs of this tree: a scenario of an earlier command is in the state, not in the tree
    busy = {name: e["busy"] for name, e in sub.state["runs"].items()
            if e.get("busy") and name.split("/")[0] in sub.opts.scenario_list}
    verdict = {"ok": result.ok, "summary": result.summary, "errors": result.errors,
               "short_run_errors": result.short_run_errors, "warnings": result.warnings, "table": result.table,
               "log": result.log, "archive": archive, "tree": root, "short": sub.opts.short, "busy": busy}
    write_json(os.path.join(sub.dir, "verdict.json"), verdict)
    sub.state["verdict"] = {k: verdict[k] for k in ("ok", "summary", "archive")}
    sub.save()
    sub.say(f"tree: {root}\narchive: {archive or 'none (the checker refused the tree)'}\n"
            f"full accuracy logs: {os.path.join(sub.dir, 'accuracy-logs')}")
    if busy:   # the figures (or the targets they set) are not this machine's
        sub.say(f"{len(busy)} run(s) measured while the machine was busy: " + "; ".join(
            f"{name} ({why})" for name, why in sorted(busy.items())) + ". Their figures are not this machine's: "
            "run the same command with --rerun-busy on a quiet machine (only those runs run again).")
    if sub.opts.short:
        sub.say("--short: a rehearsal of the whole structure; this result CANNOT be submitted.")
    if test01 and len(test01) == len(result.errors):   # TEST01 alone failed it
        # submit ran TEST01 once more already: the performance run may be the one off, so both run again
        scenarios = sorted({m.group(1) for e in test01 for m in [re.match(r"TEST01 \S+?-(\w+) \(", e)] if m})
        runs = ",".join(f"{s}/{kind}" for s in scenarios for kind in ("performance", "TEST01"))
        raise StepError("TEST01's performance check failed: the machine's load changed between the performance run "
                        "and TEST01's", hint="run the same command again on a quiet machine: with --rerun-busy if a "
                        "run above was measured busy (only those run again), else "
                        + (f"--rerun={runs} (only those run again)" if runs else "--rerun"))
    if not result.ok:
        raise StepError("the official checker found errors in the submission", hint=f"see {result.log}")
    return 0
