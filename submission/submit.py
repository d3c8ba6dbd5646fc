"""`mlrun submit` / `mlrun plan submit`: every run an MLPerf submission needs, resumable, then the tree.

Per scenario: a settings search (a short performance run), an accuracy run, the performance run with
the settings found, and a TEST01 run (the official audit.config) verified by the official script. Each
is a normal mlrun run (its record under runs/). The submission's state file maps each needed run to
its run id with a fingerprint of everything that affects it (the plan's node keys, the request and
the host); a rerun of the same command reuses a finished run only when its fingerprint is unchanged.
bert-99 and bert-99.9 run the same model with the same settings: they share the runs (only the
accuracy target differs), each gets its own folder in the tree.
"""
import contextlib
import json
import os
import re
import shlex
import sys
import textwrap
import time

from engine import records, secrets, usage
from engine.cache import Cache, write_json
from engine.errors import MlrunError, StepError, UsageError
from engine.runner import RunReporter
from engine.shapes import mistyped, said
from engine.words import plural

from . import search, system
from .tree import LOGS as LOG_FILES

ROUND = "v6.1"
LOADGEN_FOR_ROUND = {"v6.1": "6.0.17"}     # 6.0.16+ carries the v6.1 seeds (docs/mlperf-bert.md section 5)
BENCHMARKS = ("bert-99", "bert-99.9")
SCENARIOS = ("SingleStream", "Offline", "MultiStream", "Server")
REQUIRED_SCENARIOS = ("SingleStream", "Offline")   # bert-99 edge, v6.1
OFFICIAL_MODELS = ("fp32", "int8")                  # the app's official-model variations
SHORT = {"count": 32, "min_duration": 1000}         # every --short run: 32 samples, LoadGen minimums lowered
SERVER_BOUND_MS = 130                               # mlperf.conf: bert.Server.target_latency = 130 (its p99)
CONTROLLED = ("mode", "scenario", "count", "target_qps", "target_latency", "min_duration", "audit_config")
HOST_KEYS = ("cpu", "cores", "memory_gb", "os", "python")
KINDS = ("search", "accuracy", "performance", "TEST01")


# The distribution a backend recipe runs, whose version the submission names as its framework.
RUNTIMES = {"get-backend-onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "get-backend-deepsparse": ("deepsparse",),
            "get-backend-tensorrt": ("tensorrt-cu12",)}


def framework(backend):
    """'onnxruntime 1.22.1': the backend's runtime at the version its venv installs, from the plan: the venv's set
    pins it, and --dep.python.packages replaces that pin (recipes/get-python-venv/requirements.py); the recipe's
    own version would misstate a run on another runtime version."""
    version = backend.version
    venv = dict(backend.deps).get("python")
    if venv is not None:
        words = [venv.env.get("MLRUN_VENV_SET", ""), venv.env.get("MLRUN_VENV_SET_MORE", ""),
                 str(venv.inputs.get("packages") or "")]
        for word in " ".join(words).split():   # later words win, as pip gets them
            dist, _, pinned = word.partition("==")
            if re.sub(r"[-_.]+", "-", dist.split("[")[0]).lower() in RUNTIMES.get(backend.name, ()):
                version = pinned
    return f"{backend.name[len('get-backend-'):]} {version}"


ACCURACY_FILES = ("mlperf_log_accuracy.json", "accuracy.txt")
SCORING = re.compile(r"/TEST01-(baseline|compliance)_accuracy$")   # tree._test01_baseline's runs


class _Quiet(RunReporter):
    """Step lines only for what is built or run (not for the cached ones): a submission runs many plans."""

    def step(self, i, total, node, status, detail="", final=True, log=None):
        if status != "cached":
            super().step(i, total, node, status, detail, final, log)


def parser():
    """The submission's own options (each once, never from a prefix: --scenario=Offline is no --scenarios)."""
    from engine.usage import Parser
    p = Parser(prog="mlrun submit", add_help=False)
    p.add_argument("--submitter", metavar="NAME", help="your organisation: it names the tree's folders and the archive")
    p.add_argument("--division", choices=["open", "closed"], type=str.lower,
                   help="closed: the official model, rules' settings; open: any model (accuracy not held to the target)")
    p.add_argument("--system", metavar="FILE.yaml", help="the system description's fields you alone know (the rest "
                                                         "is read from this machine)")
    p.add_argument("--scenarios", metavar="A,B", default=",".join(REQUIRED_SCENARIOS),
                   help=f"scenarios to run (default {','.join(REQUIRED_SCENARIOS)}; also {', '.join(SCENARIOS[2:])})")
    p.add_argument("--benchmarks", metavar="A,B", default="bert-99",
                   help="bert-99 (default), bert-99.9, or both: they share the runs")
    p.add_argument("--short", action="store_true", help="a rehearsal of the whole structure in minutes: NOT "
                                                         "submittable, its archive named so")
    p.add_argument("--rerun", nargs="?", const=True, default=False, metavar="RUNS",
                   help="run every run again (else finished ones are reused); --rerun=RUNS only those: run names as "
                        "plan submit lists them (Offline/performance,Offline/TEST01) or a scenario (all its runs)")
    p.add_argument("--rerun-busy", action="store_true", help="run again only the runs measured while the machine was "
                                                             "busy")
    p.add_argument("--replace", action="store_true", help="build this command's tree in place of the folder's last "
                                                          "one where it holds another system or scenarios this "
                                                          "command leaves out (their results go from the tree)")
    p.add_argument("-o", "--output", metavar="DIR", help="the submission folder (default submissions/SUBMITTER): "
                                                         "state, tree, checker output, archive")
    p.add_argument("--inference-src", metavar="DIR", help="a local clone of mlcommons/inference (else fetched)")
    p.add_argument("--jobs", metavar="N", help="cache entries each run builds at once (default 2, or $MLRUN_JOBS); "
                                               "no benchmark runs beside a build")
    return p


def options_help():
    """The submission's options with their help, as `mlrun submit --help` lists them."""
    p = parser()
    formatter = p._get_formatter()
    formatter.start_section("submission options")
    formatter.add_arguments(p._actions)
    formatter.end_section()
    return formatter.format_help()


def parse(query, words, verb="submit"):
    """(options, inputs, dep overrides, env overrides) of `mlrun submit QUERY WORDS...` (verb: `plan submit`)."""
    from engine.cli import split_extras
    from engine.words import did_you_mean
    opts, rest = parser().parse_known_args(words)
    near = [w.split("=", 1)[0] for w in rest if w.startswith("--") and not w.startswith(("--dep.", "--env."))]
    for flag, value in (("--submitter", opts.submitter), ("--division", opts.division)):
        if value is None:   # said with the misspelt flag beside it (was: "required: --submitter" only)
            typo = next((w for w in near if did_you_mean(w, [flag])), None)
            raise UsageError(f"mlrun {verb} needs {flag}" + (f" ({typo} is given: did you mean {flag}?)" if typo else
                                                             ""), hint=f"mlrun {verb} --help lists its options")
    if opts.rerun and opts.rerun_busy:   # --rerun runs every run again: --rerun-busy was ignored in silence
        raise UsageError("--rerun and --rerun-busy: give one", hint="--rerun runs every run again, --rerun-busy only "
                                                                 "those measured while the machine was busy")
    inputs, deps, env = split_extras(rest)
    opts.scenario_inputs = _scoped(inputs)
    taken = sorted({k for k in [*inputs, *(k for kv in opts.scenario_inputs.values() for k in kv)] if k in CONTROLLED})
    if taken:
        raise UsageError(f"mlrun submit sets --{', --'.join(taken)} itself for each run",
                         hint=("--scenarios=A,B chooses the scenarios; " if "scenario" in taken else "")
                         + "leave them out; the plan shows each run's settings")
    from engine.runner import jobs_given
    opts.jobs = jobs_given(opts.jobs)
    opts.query = query
    opts.scenario_list = _names(opts.scenarios, SCENARIOS, "scenario")
    left_out = [s for s in opts.scenario_inputs if s not in opts.scenario_list]
    if left_out:   # set for runs that never happen: the person meant another scenario, or forgot --scenarios
        raise UsageError(f"--{left_out[0]}.{next(iter(opts.scenario_inputs[left_out[0]]))}: {left_out[0]} is not "
                         f"among the scenarios this submission runs ({', '.join(opts.scenario_list)})",
                         hint="add it to --scenarios, or leave the flag out")
    opts.benchmark_list = _names(opts.benchmarks, BENCHMARKS, "benchmark")
    opts.rerun, opts.rerun_names = (False, _run_names(opts.rerun, opts.scenario_list)) \
        if isinstance(opts.rerun, str) else (opts.rerun, set())
    # A folder of the tree and of the default output: '..' wrote the tree over the current folder.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", opts.submitter):
        raise UsageError(f"--submitter {opts.submitter!r}: letters, digits, _ . + - only, starting with a letter or "
                         "digit (it names a folder of the tree)")
    if len(opts.submitter) > 64:   # it names the archive too: 250 letters failed when packing, after every run
        raise UsageError(f"--submitter {opts.submitter[:20]}...: at most 64 characters (it names folders and the "
                         "archive)")
    if "questions" in inputs or any("questions" in kv for kv in opts.scenario_inputs.values()):   # scores a subset: never a submission's accuracy (a rehearsal passed with it)
        raise UsageError("--questions scores a chosen subset of the dev set: a submission's accuracy run scores all "
                         "10833 features", hint="leave it out")
    if opts.division == "closed" and ("user_conf" in inputs or any("user_conf" in kv
                                                                      for kv in opts.scenario_inputs.values())):
        raise UsageError("--user_conf in the closed division: mlrun submit sets each run's LoadGen settings itself, "
                         "and a user.conf could change what the rules fix (durations, sample counts)",
                         hint="leave it out, or use --division=open")
    if not opts.output:
        opts.output = os.path.join("submissions", opts.submitter)
    return opts, inputs, deps, env


def _scoped(inputs):
    """Take --SCENARIO.INPUT=VALUE out of inputs: {scenario: {input: value}}, set for that scenario's runs only
    (each scenario tuned apart: one flag set for all made --instances=1 for Offline rerun SingleStream's runs)."""
    by_lower, scoped = {s.lower(): s for s in SCENARIOS}, {}
    for key in [k for k in inputs if "." in k]:
        head, _, name = key.partition(".")
        if head.lower() in by_lower and name.startswith(("dep.", "env.")):   # read as "no input --dep.model.layers"
            raise UsageError(f"--{key}: a scenario's own flags are app inputs; --dep.* and --env.* go to every run",
                             hint=f"--{name}=VALUE for all scenarios")
        if head.lower() in by_lower and not name:
            raise UsageError(f"--{key}: give an input after the scenario", hint=f"--{head}.INPUT=VALUE")
        if head.lower() not in by_lower:
            raise UsageError(f"--{key}: '{head}' is no scenario", hint="--SCENARIO.INPUT=VALUE sets an input for one "
                             f"scenario's runs ({', '.join(SCENARIOS)}); --INPUT=VALUE sets it for all")
        kv = scoped.setdefault(by_lower[head.lower()], {})
        if name in kv:   # --Offline.threads=1 --offline.threads=2: the last won unsaid (--threads twice is refused)
            raise UsageError(f"--{by_lower[head.lower()]}.{name} is given twice: {kv[name]!r} and {inputs[key]!r}",
                             hint="give it once")
        kv[name] = inputs.pop(key)
    return scoped


def _names(text, known, what):
    # Matched whatever their case, as every input with choices is (--scenarios=offline is Offline).
    by_lower = {k.lower(): k for k in known}
    names = [by_lower.get(n.strip().lower(), n.strip()) for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"unknown {what}(s): {', '.join(unknown) or '(none given)'}",
                         hint=f"choose from {', '.join(known)} (comma-separated)")
    return list(dict.fromkeys(names))


def _run_names(text, scenarios):
    """--rerun=RUNS: {run name} of the runs named (Offline/TEST01) or of a scenario's (Offline), whatever the case."""
    kinds, names = {k.lower(): k for k in KINDS}, set()
    for word in [w.strip() for w in text.split(",") if w.strip()] or [""]:
        scenario, _, kind = word.partition("/")
        scenario = next((s for s in scenarios if s.lower() == scenario.lower()), None)
        if not scenario or (kind and kind.lower() not in kinds):
            raise UsageError(f"--rerun={text}: {word or '(nothing)'} is no run of this submission",
                             hint=f"a scenario ({', '.join(scenarios)}) or SCENARIO/KIND with KIND one of "
                                  f"{', '.join(KINDS)}, comma-separated; --rerun alone runs every run again")
        names |= {f"{scenario}/{kinds[kind.lower()]}"} if kind else {f"{scenario}/{k}" for k in KINDS}
    return names


class Submission:
    def __init__(self, opts, inputs, deps, env, settings, verbose=False, out=sys.stdout):
        self.opts, self.inputs, self.deps, self.env = opts, inputs, deps, env
        self.settings, self.verbose, self.out = settings, verbose, out
        self.dir = os.path.abspath(opts.output)
        self.state_path = os.path.join(self.dir, "state.json")
        self.state = self._load_state()
        self.host = {k: records.host_facts()[k] for k in HOST_KEYS}
        self.src = None

    def say(self, text=""):
        print(text, file=self.out, flush=True)

    # -- state ---------------------------------------------------------------------------------

    def _load_state(self):
        # Inside another submission's folder: its next submit removes our state with its tree/, and the checker
        # finds our files in its tree (a user's trial: -o submissions/A/tree/open/sub)
        parent = os.path.dirname(self.dir)
        while parent != os.path.dirname(parent):
            if os.path.isfile(os.path.join(parent, "state.json")) and os.path.isdir(os.path.join(parent, "tree")):
                raise UsageError(f"-o {self.dir} is inside the submission folder {parent}: its next submit rebuilds "
                                 "what is there, and its checker would read this one's files",
                                 hint="give -o a folder outside it, e.g. submissions/OTHER")
            parent = os.path.dirname(parent)
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except FileNotFoundError:
            # Building replaces tree/, accuracy-logs/ and work/: only in a folder a submission made, or a new one
            if os.path.isdir(self.dir) and not _made_by_submit(os.listdir(self.dir)):
                raise UsageError(f"{self.dir} holds files and no state.json: it is no submission folder mlrun "
                                 "made, and building one there would replace its tree/, accuracy-logs/ and work/",
                                 hint="give -o a new or empty folder") from None
            return {"runs": {}, "comparisons": []}   # new, or one whose state.json was removed: every run anew
        except NotADirectoryError:
            raise UsageError(f"-o {self.dir}: a file, not a folder", hint="give -o a new or empty folder") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the submission state {self.state_path}: {e}",
                             hint=STATE_LOST) from None
        if not isinstance(state, dict) or not isinstance(state.get("runs"), dict):
            raise UsageError(f"the submission state {self.state_path} is not one mlrun wrote (no 'runs' mapping)",
                             hint=STATE_LOST)
        mistake = _state_mistake(state)
        if mistake:   # edited by hand or damaged: it said "unexpected TypeError ... a bug in mlrun"
            raise UsageError(f"the submission state {self.state_path} is not one mlrun wrote: {mistake}",
                             hint=STATE_LOST)
        return state

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        write_json(self.state_path, self.state)

    # -- resolving ------------------------------------------------------------------------------

    def keeps_the_last_tree(self):
        """Refuse, before anything is removed, a submit whose tree would drop what the folder's last one held:
        another system's results (a second system given the same -o lost the first's tree, archive and runs' place
        in it) or scenarios this command leaves out (--scenarios=Offline to redo one scenario dropped the others)."""
        last = self.state.get("request") or {}
        built = self.state.get("built") or self.state.get("verdict") or os.path.isdir(os.path.join(self.dir, "tree"))
        if not last or not built:   # a tree an interrupted submit removed counts; one never built drops nothing
            return
        dropped = []
        if self.state.get("system_id") not in (None, self.system_id):
            dropped.append(f"system {self.state['system_id']}'s results (this command builds {self.system_id}'s)")
        if last.get("division") not in (None, self.opts.division):   # --division=closed after open: gone unsaid
            dropped.append(f"the {last['division']} division's tree and archive (this command builds the "
                           f"{self.opts.division} one)")
        if last.get("submitter") not in (None, self.opts.submitter):
            dropped.append(f"submitter {last['submitter']}'s tree and archive (this command builds "
                           f"{self.opts.submitter}'s)")
        gone = [s for s in last.get("scenarios") or [] if s not in self.opts.scenario_list] + \
            [b for b in last.get("benchmarks") or [] if b not in self.opts.benchmark_list]
        if gone:
            dropped.append(f"the {', '.join(gone)} results (this command runs "
                           f"{', '.join(self.opts.benchmark_list + self.opts.scenario_list)})")
        if last.get("short") is False and self.opts.short:   # the same runs' places: hours of them redone after
            dropped.append("its full-length runs (a --short rehearsal takes their places in state.json)")
        if dropped and getattr(self.opts, "replace", False):   # meant: said, as plan submit shows what runs
            self.say(f"  note: --replace: the tree is rebuilt without {'; '.join(dropped)}")
        elif dropped:
            raise UsageError(f"{self.dir} holds a submission whose tree this command would rebuild without "
                             f"{'; '.join(dropped)}: a submit builds the tree of its own runs alone",
                             hint="another system: give it its own -o (one system's tree per folder); one scenario "
                                  "with other flags: keep every scenario and scope the flags (--Offline.instances=1; "
                                  "the other scenarios' runs are reused); or --replace to build this one in its place")

    def runs_here(self):
        """Refuse a command whose runs folder is not the one this submission's runs are in, while that one is on
        this machine: a teammate pasting the tree's command from another checkout redid every run ("gone") and
        rebuilt the tree in this folder."""
        for entry in (self.state.get("runs") or {}).values():
            folder = entry.get("folder") if isinstance(entry, dict) else None
            if not folder or os.path.isdir(os.path.join(self.settings.runs, str(entry.get("run")))):
                continue
            elsewhere = os.path.dirname(os.path.dirname(folder))
            if os.path.isfile(os.path.join(elsewhere, str(entry.get("run")), "run.json")) and not self.opts.rerun:
                raise UsageError(f"the runs of the submission in {self.dir} are in {elsewhere}, not in this "
                                 f"command's runs folder {self.settings.runs}: every run would be done again",
                                 hint=f"give --runs {elsewhere} (and the cache they used, --cache), or -o a folder "
                                      "of your own")

    def resolve(self, extra, query=None):
        """The plan of the app with these inputs (or of another recipe's `query`, without the user's overrides)."""
        from engine.resolver import resolve
        if query:
            return resolve(self.settings.index(), query, inputs=extra, host_env=os.environ,
                           prober=self.settings.prober())
        try:
            return resolve(self.settings.index(), self.opts.query, inputs=self.inputs_of(extra), host_env=os.environ,
                           dep_overrides=self.deps, env_overrides=self.env, prober=self.settings.prober())
        except MlrunError as e:   # a scoped input said as the person wrote it ("no input --instancez")
            scenario = extra.get("scenario")
            for name in getattr(self.opts, "scenario_inputs", {}).get(scenario, {}):
                if f"--{name} " in e.message + " ":   # the misspelt scoped one: its suggestion scoped too
                    e.message = re.sub(r"\(did you mean --([\w-]+)\?\)", rf"(did you mean --{scenario}.\1?)",
                                       e.message)
                e.message = re.sub(rf"(?<![\w.])--{re.escape(name)}\b", f"--{scenario}.{name}", e.message)
                e.message = e.message.replace(f"input '{name}'", f"input '{name}' (--{scenario}.{name})")
                if e.hint:
                    e.hint = re.sub(rf"(?<![\w.])--{re.escape(name)}=", f"--{scenario}.{name}=", e.hint)
            raise

    def check_user_conf(self):
        """A --user_conf that sets what submit sets for its runs (a target, a duration), or that LoadGen would read
        otherwise than it says, refused before any run: the harness refused it at the performance run, after the
        search and the accuracy run over the whole dataset."""
        from mlperf_bert import user_conf
        for scenario in self.opts.scenario_list:
            path = self.inputs_of({"scenario": scenario}).get("user_conf")
            if not path:
                continue
            user_conf.check(path)   # a UsageError naming every line LoadGen would misread
            with open(path, encoding="utf-8") as f:
                values = user_conf.values_set(f.read().splitlines(), scenario)
            taken = [f"{key} = {values[key]}" for key in user_conf.OPTION_KEYS if key in values]
            if taken:
                raise UsageError(f"--user_conf {path}: its {', '.join(taken)} for {scenario} is what submit sets "
                                 "itself for that scenario's runs (its search finds it)",
                                 hint="leave those lines out of the user.conf; the plan shows each run's settings")

    def inputs_of(self, extra):
        """A run's app inputs: the user's for every run, then theirs for its scenario, then the run's own."""
        scoped = getattr(self.opts, "scenario_inputs", {}).get(extra.get("scenario"), {})
        return {**self.inputs, **scoped, **extra}

    def check_request(self):
        """Everything that can be refused is refused here, before any run starts."""
        self.user_system = system.read_yaml(self.opts.system)   # before fetching the sources, which may fail
        self.check_user_conf()
        from engine.resolver import Resolver
        recipe, _ = Resolver(self.settings.index()).select(self.opts.query)   # the app, before its inputs are tried
        if recipe["name"] != "app-mlperf-bert":
            raise UsageError(f"mlrun submit runs the BERT benchmark app; '{self.opts.query}' is {recipe['name']}",
                             hint='e.g. mlrun submit "app mlperf bert _onnxruntime _cpu" ...')
        plan = self.resolve({"mode": "accuracy", "scenario": self.opts.scenario_list[0]})
        for scenario in self.opts.scenario_list[1:]:   # with its own inputs: refused after the first one's runs
            self.resolve({"mode": "accuracy", "scenario": scenario})
        root = plan.root
        if root.name != "app-mlperf-bert":
            raise UsageError(f"mlrun submit runs the BERT benchmark app; '{self.opts.query}' is {root.name}",
                             hint='e.g. mlrun submit "app mlperf bert _onnxruntime _cpu" ...')
        # The official model is what the plan's model dep is (the app uses it when no model is named).
        model = dict(root.deps).get("model")
        if model and model.name == "get-ml-model-bert-int8-nncf" and "source" not in self.deps:
            # NNCF's int8 of the model the run would use: post-training quantisation calibrated on the calibration
            # list, as TensorRT's int8 engines of the official model are (the closed division allows both)
            model = dict(model.deps).get("source")
            self.note_calibration(plan)
        official = next((v for v in model.variations if v in OFFICIAL_MODELS), None) \
            if model and model.name == "get-ml-model-bert-large" else None
        if official and not root.inputs.get("model") and not self.deps.get("model"):
            self.model = {"official": True, "what": f"the official {official} BERT-Large ONNX model"}
        else:
            source = root.inputs.get("model") or ("_random" if "random" in root.variations else
                                                   f"_{official} with --dep.model overrides" if official else
                                                   model.label if model else "no model")
            self.model = {"official": False, "what": f"not the official model ({source})"}
        if dict(root.deps).get("model") is not model:   # NNCF's int8 of it, above
            self.model["then"] = ", made int8 by NNCF (post-training, calibrated)"
        weights = next((n for n in plan.nodes if n.name.startswith("get-ml-model")), None)
        self.model["weights"] = root.inputs.get("model") or (weights.label + "".join(
            f" {k}={v}" for k, v in sorted(weights.inputs.items()) if v not in (None, "")) if weights else "?")
        if self.opts.division == "closed" and not self.model["official"]:
            raise UsageError(f"--division=closed needs the official model; this is {self.model['what']}",
                             hint="use --division=open for random, SparseZoo (zoo:), Hugging Face (hf:) or "
                                  "modified models")
        loadgen = next(n for n in plan.nodes if n.name == "get-mlperf-loadgen")
        if loadgen.version != LOADGEN_FOR_ROUND[ROUND]:
            raise UsageError(f"round {ROUND} needs LoadGen {LOADGEN_FOR_ROUND[ROUND]} (its seeds); the plan has "
                             f"{loadgen.version}", hint="drop the --dep.loadgen.version override")
        self.loadgen = loadgen.version
        backend = next((n for n in plan.nodes if n.name.startswith("get-backend-")), None)
        self.framework = framework(backend) if backend else "unknown"
        self.device = "cuda" if {"cuda", "tensorrt-ep"} & set(root.variations) else "cpu"
        # A GPU's model and memory, as get-gpu-nvidia's probe found them before anything ran (NVML's full
        # facts replace them once a run has read them: gpu_facts_from_runs).
        self.gpu_probe = next((n.probes.get("gpu") for n in plan.nodes if n.name == "get-gpu-nvidia"), None)
        return plan

    def note_calibration(self, plan):
        """A closed submission calibrates on the MLPerf list: a mirror's copy mlrun cannot check is said before any
        run (no official checksum is known offline; --dep.calibration-list.sha256 makes the step require one)."""
        listed = next((n for n in plan.nodes if n.name == "get-dataset-squad-calibration"), None)
        probe = (listed.probes.get("mirror_list") or "") if listed else ""
        if self.opts.division == "closed" and probe.startswith("mirror copy") and not listed.inputs.get("sha256"):
            self.say(f"note: the calibration list is the mirror's copy ({probe[len('mirror copy '):]}), which mlrun "
                     "cannot check against the official one; the closed division wants the MLPerf list: compare it, "
                     "or pass --dep.calibration-list.sha256=HEX")

    def sources(self):
        from . import official
        self.src = official.sources(self.settings, self.opts.inference_src)
        return self.src

    def system(self):
        where = self.dir
        while not os.path.isdir(where):   # the disk the results go to: the nearest folder that exists
            where = os.path.dirname(where)
        facts = system.machine_facts(where,
                                     self.framework, f"Python {self.host['python']}, MLPerf LoadGen {self.loadgen}, "
                                     f"mlrun app-mlperf-bert")
        if self.device != "cpu":   # a GPU run: the GPU the probe found; the user's fields win
            facts = {k: v for k, v in facts.items() if not k.startswith("accelerator")}
            facts.update(system.gpu_fields(system.probe_facts(self.gpu_probe)))
        desc, notes = system.describe(self.src, self.user_system, self.opts.submitter,
                                      self.opts.division, facts, self.opts.short)
        self.system_desc, self.system_notes = desc, notes
        self.system_id = system.system_id(desc)
        self.check_scenarios()
        return desc

    def check_scenarios(self):
        """A closed submission's scenarios are the checker's for the benchmark on this system type: refused here,
        before hours of runs, rather than by the checker after them."""
        if self.opts.division != "closed":
            return
        kind = str(self.system_desc.get("system_type", "edge"))
        chosen = self.opts.scenario_list
        for benchmark in self.opts.benchmark_list:
            required, optional = system.checker_scenarios(self.src, ROUND, kind, benchmark)
            allowed = required + optional
            missing, refused = [s for s in required if s not in chosen], [s for s in chosen if s not in allowed]
            if not allowed:
                raise UsageError(f"the checker of round {ROUND} takes no closed {benchmark} results from a system of "
                                 f"system_type {kind}", hint="set system_type in --system (bert-99 is an edge benchmark)")
            if missing or refused:
                raise UsageError(f"--scenarios={','.join(chosen)}: a closed {benchmark} submission on an {kind} system "
                                 f"(round {ROUND}) has {', '.join(required)}"
                                 + (f", and may add {', '.join(optional)}" if optional else ", and no other")
                                 + (f"; missing {', '.join(missing)}" if missing else "")
                                 + (f"; the checker refuses {', '.join(refused)}" if refused else ""),
                                 hint=f"--scenarios={','.join(allowed)} (the open division takes others)")

    # -- the runs ------------------------------------------------------------------------------

    def run_inputs(self, scenario, kind):
        """The app inputs of one run, or None when they depend on a search not done yet."""
        short = SHORT if self.opts.short else {}
        if kind == "search":
            return search.measurement_inputs(scenario, self.opts.short)
        if kind == "accuracy":
            return {"mode": "accuracy", "scenario": scenario, **({"count": SHORT["count"]} if short else {})}
        found = self.state.get("settings", {}).get(scenario)
        if not found:
            return None
        inputs = {"mode": "performance", "scenario": scenario, **short, **found["inputs"]}
        if found.get("user_conf"):   # none since 1438c3c; a state.json of an earlier search may hold some
            inputs["user_conf"] = self._user_conf(scenario, found["user_conf"])
        if kind == "TEST01":
            inputs["audit_config"] = os.path.join(self.src, "compliance", "TEST01", "bert", "audit.config")
        return inputs

    def _user_conf(self, scenario, lines):
        path = os.path.join(self.dir, "work", f"{scenario}-user.conf")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def fingerprint(self, plan):
        # numbered: several nodes may share a label (the venvs)
        # a secret --env override (a token) changes nothing built, as it enters no key: nor whether a run is reused
        request = {**plan.request, "env_overrides": {k: v for k, v in (plan.request.get("env_overrides") or {}).items()
                                                     if v != secrets.MASK}}
        return {"plan": {f"{i} {n.label}": n.key for i, n in enumerate(plan.nodes, 1)}, "request": request,
                "host": self.host}

    def rerunning(self, name):
        """Whether --rerun (every run) or --rerun=RUNS (these) runs this one again."""
        return bool(self.opts.rerun) or name in (getattr(self.opts, "rerun_names", None) or ())

    def status(self, name, plan):
        """("done", entry) when the recorded run can be reused, else ("to run", reasons). An earlier run of the
        same name that matches is reused too (tuning back to a setting ran its hours of runs again)."""
        state, why = self._status(name, plan, self.state["runs"].get(name))
        if state == "done" or self.rerunning(name) or not self.state["runs"].get(name):
            return state, why
        for earlier in reversed((self.state.get("history") or {}).get(name) or []):
            if isinstance(earlier, dict) and earlier.get("run") != self.state["runs"][name].get("run"):
                again, _ = self._status(name, plan, earlier)
                if again == "done" and not (self.opts.rerun_busy and earlier.get("busy")):
                    self.state["runs"][name] = earlier
                    return "done", earlier
        return state, why

    def _status(self, name, plan, entry):
        if not entry:
            return "to run", ["not run yet"]
        if self.rerunning(name):
            return "to run", ["--rerun"]
        if self.opts.rerun_busy and entry.get("busy"):
            return "to run", [f"--rerun-busy: measured while {entry['busy']}"]
        try:
            record = records.load(os.path.join(self.settings.runs, entry["run"], "run.json"))
        except MlrunError:
            return "to run", [f"its run {entry['run']} is gone from {self.settings.runs}"]
        if record.get("status") != "ok":
            return "to run", [f"its run {entry['run']} did not finish ({records.status(record)})"]
        here = os.path.join(self.settings.runs, entry["run"], os.path.basename(entry.get("folder") or ""))
        if entry.get("folder") and not os.path.isdir(entry["folder"]) and os.path.isdir(here):
            entry["folder"] = here   # the runs folder moved (or came from a teammate): every run was done again
        # the files the tree copies: one removed since would stop the tree after every run (exit 2)
        needed = LOG_FILES + (ACCURACY_FILES if name.endswith("/accuracy") else ())
        if SCORING.search(name):   # TEST01's scoring of a log: no LoadGen ran (it ran again on every resume)
            needed = ("accuracy.txt",)
        gone = [f for f in needed if not os.path.isfile(os.path.join(entry.get("folder") or "", f))]
        if gone:
            return "to run", [f"its run {entry['run']} lacks {', '.join(gone)} now"]
        from engine import compare
        # what the run's own record says it ran, over what state.json says of it: an entry pointed at another run
        # (of another model, mode or machine) was reused as "plan, request and host unchanged"
        now, was = self.fingerprint(plan), _recorded_fingerprint(record) or entry["fingerprint"]
        # what was asked first, each input on its own (was a Python dict cut at 200 characters: --threads=1 or a
        # dropped --short never named), then the host, then the nodes whose keys changed because of them
        differs = [f"{what}: {compare.shown(x)} -> {compare.shown(y)}"
                   for what, x, y in compare.request({"request": was.get("request") or {}}, {"request": now["request"]})]
        old = was.get("host") or {}
        differs += [f"host {key}: {compare.shown(old.get(key))} -> {compare.shown(now['host'].get(key))}"
                    for key in sorted(set(old) | set(now["host"])) if old.get(key) != now["host"].get(key)]
        old = was.get("plan") or {}
        changed = [key for key in sorted(set(old) | set(now["plan"])) if old.get(key) != now["plan"].get(key)]
        if changed:   # node keys say only that a node changed: name the nodes
            differs.append(f"plan: {len(changed)} node key(s) changed ({', '.join(changed)})")
        return ("done", entry) if not differs else ("to run", differs)

    def run(self, name, inputs, query=None, again=None, mark=None):
        """Run (or reuse) one needed run; returns its state entry. again: why it runs again though one is done;
        mark: what its state entry records beside (a retry: of which run)."""
        from engine.runner import Runner
        plan = self.resolve(inputs, query)
        state, why = ("to run", [again]) if again else self.status(name, plan)
        comparison = {"run": name, "at": time.time(), "reused": state == "done",
                      "differences": [] if state == "done" else why}
        self.state["comparisons"].append(comparison)
        if state == "done":
            self.say(f"  {name}: reused run {why['run']} (plan, request and host unchanged)")
            return why
        again = [w for w in why if w != "not run yet"]   # a first run needs no reason
        self.say(f"  {name}: running" + (f" again ({'; '.join(again)[:200]})" if again else ""))
        runner = Runner(Cache(self.settings.cache), self.settings.runs, reporter=_Quiet(), verbose=self.verbose,
                        mirror=self.settings.mirror, stream_root=self.verbose, jobs=self.opts.jobs)
        argv = ["bin/mlrun", query or self.opts.query] + [
            f"--{k}={v}" for k, v in (inputs if query else self.inputs_of(inputs)).items()]
        if not query:
            argv += [f"--dep.{d}.{k}={v}" for d, kv in self.deps.items() for k, v in kv.items()] \
                + [f"--env.{k}={v}" for k, v in self.env.items()]
        record = runner.run(plan, argv=argv, extra={"submission": {"dir": self.dir, "run": name}})
        command = argv[:1] + self.places() + argv[1:]   # the README's "by hand" line: the same cache and mirror
        entry = {"run": record["id"], "folder": record["steps"][-1]["path"], "inputs": inputs,
                 "command": secrets.scrub_argv(command), "fingerprint": self.fingerprint(plan),
                 "finished": time.time(), **(mark or {})}
        busy = _busy(entry["folder"]) if not name.endswith("/accuracy") else None
        if busy:   # its speed goes into the tree (or sets a target): said now and in the verdict
            entry["busy"] = busy
        self.state["runs"][name] = entry
        # the runs of earlier settings, newest last: going back to one reuses its run
        earlier = [e for e in (self.state.setdefault("history", {}).get(name) or []) if e.get("run") != entry["run"]]
        self.state["history"][name] = (earlier + [entry])[-HISTORY:]
        self.save()   # after every finished run: a crash later keeps it
        self.say(f"  {name}: done, run {record['id']}" + (f"; MEASURED ON A BUSY MACHINE: {busy}" if busy else ""))
        return entry

    def places(self):
        """--cache/--runs/--recipes where not mlrun's defaults, and --mirror: pasted elsewhere, a command
        then builds from the same cache and mirror (an offline machine needs the mirror)."""
        from engine.settings import Settings
        default, s, out = Settings(), self.settings, []
        for option, value, usual in (("--cache", s.cache, default.cache), ("--runs", s.runs, default.runs)):
            if os.path.abspath(value) != os.path.abspath(usual):
                out += [option, value]
        if [os.path.abspath(r) for r in s.recipes] != [os.path.abspath(r) for r in default.recipes]:
            for folder in s.recipes:
                out += ["--recipes", folder]
        return out + (["--mirror", s.mirror] if s.mirror else [])

    def needed(self):
        """[(name, scenario, kind)] in the order they run."""
        return [(f"{s}/{k}", s, k) for s in self.opts.scenario_list for k in KINDS]

    def plan_rows(self):
        rows, searching = [], set()
        for name, scenario, kind in self.needed():
            # a search that runs again sets new settings: the last search's would be shown as if they held
            inputs = None if kind in ("performance", "TEST01") and scenario in searching else \
                self.run_inputs(scenario, kind)
            if inputs is None:
                rows.append((name, "to run", "settings come from the search"))
            else:
                state, info = self.status(name, self.resolve(inputs))
                if kind == "search" and state == "to run":
                    searching.add(scenario)
                elif kind == "search" and self.state.get("settings", {}).get(scenario, {}).get("search_run") != \
                        info["run"]:   # an earlier search reused: the settings it set (in memory: a plan saves none)
                    self.state.setdefault("settings", {})[scenario] = dict(
                        search.settings_from(scenario, info["folder"], info["run"]), search_run=info["run"])
                shown = " ".join(f"--{k}={v}" for k, v in inputs.items())
                rows.append((name, state if state == "to run" else f"done ({info['run']})", shown
                             if state == "done" else f"{shown}  [{textwrap.shorten('; '.join(info), 120)}]"))
            if kind == "TEST01":
                rows.append((f"{scenario}/TEST01-verification", "at the end", "official run_verification.py"))
        return rows

    def execute(self):
        self.state["argv"] = getattr(self.opts, "argv", None) or self.state.get("argv")
        self.state.update(request={"query": self.opts.query, "inputs": self.inputs, "deps": self.deps,
                                   "scenario_inputs": getattr(self.opts, "scenario_inputs", {}),
                                   "env": secrets.redacted(self.env), "division": self.opts.division, "short": self.opts.short,
                                   "submitter": self.opts.submitter, "benchmarks": self.opts.benchmark_list,
                                   "scenarios": self.opts.scenario_list, "round": ROUND},
                          host=self.host, system_id=self.system_id, mlrun=usage.recorded_version())
        self.state.setdefault("settings", {})
        self.save()
        done = {}
        for scenario in self.opts.scenario_list:
            entry = self.run(f"{scenario}/search", self.run_inputs(scenario, "search"))
            found = search.settings_from(scenario, entry["folder"], entry["run"])
            if self.state["settings"].get(scenario, {}).get("search_run") != entry["run"] or \
                    self.rerunning(f"{scenario}/search"):
                self.state["settings"][scenario] = dict(found, search_run=entry["run"])
                self.save()
            found = self.state["settings"][scenario]
            self.say(f"    {found['how']}")
            server_possible(scenario, found, entry["run"], self.opts.scenario_list)
            for kind in ("accuracy", "performance", "TEST01"):
                done[(scenario, kind)] = self.run(f"{scenario}/{kind}", self.run_inputs(scenario, kind))
            seeds = search.loadgen_seeds(done[(scenario, "performance")]["folder"])
            self.state["loadgen"] = {"version": self.loadgen, "seeds": seeds}   # the checker compares them
            perf = search.summary_values(done[(scenario, "performance")]["folder"])
            if perf.get("Result is") != "VALID" and not self.opts.short and not found.get("retried"):
                # Once: the full run itself is the better measurement; its figures set the retry's target.
                entry = done[(scenario, "performance")]
                again = search.retry_settings(scenario, found, entry["folder"], entry["run"])
                self.state["settings"][scenario] = dict(again, search_run=found["search_run"], retried=entry["run"])
                self.save()
                self.say(f"    {scenario} performance run {entry['run']} was INVALID; once more: {again['how']}")
                for kind in ("performance", "TEST01"):
                    done[(scenario, kind)] = self.run(f"{scenario}/{kind}", self.run_inputs(scenario, kind))
                perf = search.summary_values(done[(scenario, "performance")]["folder"])
            if perf.get("Result is") != "VALID":
                self.say(f"    {scenario} performance run: {perf.get('Result is')}"
                         + (" (expected of a --short run)" if self.opts.short else " (the checker will say why)"))
            elif not self.opts.short:   # a rehearsal's TEST01 only rehearses: its speed is listed apart
                done[(scenario, "TEST01")] = self.test01_speed_checked(scenario, done)
        return done

    def test01_speed_checked(self, scenario, done):
        """TEST01's speed against the performance run's, by the official verify_performance.py, as soon as both
        ran: one not within the rules' margin (the machine's load changed between them) runs TEST01 once more, here,
        rather than failing the verification after every scenario's runs with --rerun (every run again) to offer."""
        perf, test01 = done[(scenario, "performance")], done[(scenario, "TEST01")]
        said = self.test01_speed(perf, test01)
        if said is None:
            return test01
        if test01.get("retry_of") and test01.get("against") == perf["run"]:   # once per performance run
            self.say(f"    {scenario}/TEST01 run {test01['run']} (itself a retry): {said}")
            return test01
        self.say(f"    {scenario}/TEST01 run {test01['run']}: {said}; TEST01 once more")
        again = self.run(f"{scenario}/TEST01", self.run_inputs(scenario, "TEST01"),
                         again=f"run {test01['run']}'s speed was not within the margin of performance run "
                               f"{perf['run']}'s", mark={"retry_of": test01["run"], "against": perf["run"]})
        said = self.test01_speed(perf, again)
        self.say(f"    {scenario}/TEST01 run {again['run']}: " + (
            "its speed is within the margin (official verify_performance.py)" if said is None else
            f"{said} again: the verification will fail; on a quiet machine, --rerun={scenario}/performance,"
            f"{scenario}/TEST01 runs both again"))
        return again

    def test01_speed(self, perf, test01):
        """What the official compliance/TEST01/verify_performance.py says of a TEST01 run's speed against the
        performance run's when it fails the margin; None when it passes or cannot compare them (an INVALID run:
        the verification after the runs says so)."""
        from .tree import _official
        script = os.path.join("compliance", "TEST01", "verify_performance.py")
        logs = [os.path.join(entry.get("folder") or "", "mlperf_log_detail.txt") for entry in (perf, test01)]
        if not os.path.isfile(os.path.join(self.src, script)) or not all(os.path.isfile(log) for log in logs):
            return None
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        try:
            out = _official(self, script, ["-r", logs[0], "-t", logs[1]], self.dir, f"TEST01-speed-{test01['run']}")
        except StepError:   # it exits 1 on an INVALID run, which the verification after the runs names
            return None
        if "TEST FAIL: Test score invalid" not in out:
            return None
        scores = dict(re.findall(r"^(Reference|Test) score = (\S+)", out, re.M))
        return (f"TEST01 scored {scores.get('Test', '?')} against the performance run's {scores.get('Reference', '?')}"
                " (official verify_performance.py: TEST FAIL)")


def _recorded_fingerprint(record):
    """A run's fingerprint as its own record gives it (its steps' keys, its request, its host), or None where the
    record lacks one of them."""
    steps, request, host = record.get("steps"), record.get("request"), record.get("host")
    if not isinstance(steps, list) or not isinstance(request, dict) or not isinstance(host, dict) or \
            not all(isinstance(s, dict) and "label" in s and "key" in s for s in steps):
        return None
    env = request.get("env_overrides") or {}
    request = {**request, "env_overrides": {k: v for k, v in env.items() if v != secrets.MASK}} \
        if isinstance(env, dict) else request
    return {"plan": {f"{i} {s['label']}": s["key"] for i, s in enumerate(steps, 1)}, "request": request,
            "host": {k: host.get(k) for k in HOST_KEYS}}


def server_possible(scenario, found, run_id, scenarios):
    """Refuse Server as soon as a SingleStream search shows it cannot be VALID: its p99 can be no faster than one
    sample alone on every core (its search failed after the other scenarios' runs: 5.5 minutes of a rehearsal)."""
    single_ms = found["figures"].get("measured_mean_latency_ms") if scenario == "SingleStream" else None
    if single_ms and single_ms > SERVER_BOUND_MS and "Server" in scenarios:
        raise StepError(f"Server cannot be VALID with this model on this machine: one sample alone takes "
                        f"{single_ms:.1f} ms (SingleStream search, run {run_id}), over Server's {SERVER_BOUND_MS} ms "
                        "bound", hint="leave Server out (--scenarios=SingleStream,Offline), or use a faster model "
                                      "(e.g. --dep.model.layers=2); the runs done are reused")


LOCK = ".submit.lock"
# What a submit writes into its folder: one whose state.json went (damaged, removed) is still its own to build in
MADE = {"state.json", "tree", "tree-check", "accuracy-logs", "work", "logs", "check", "system.yaml", "verdict.json",
        LOCK}
# A damaged state.json: said it "remove it to start over", and the folder was then "no submission folder mlrun made"
STATE_LOST = ("remove it to start over in this folder: every run is done again (the state ties the runs in runs/ "
              "to this submission; they stay there)")


def _made_by_submit(names):
    """Whether a folder holding these names (and no state.json) is empty or one a submit made: only names a submit
    writes, with one only it writes among them (a folder of a person's own work/ and logs/ is not)."""
    names = set(names) - {LOCK}
    return not names or all(n in MADE or n.endswith((".tar.gz", ".tar.gz.sha1")) for n in names) and bool(
        names & {"tree-check", "accuracy-logs", "verdict.json"})
HISTORY = 10   # earlier runs kept per run name in state.json


def _busy(folder):
    """What other processes took while a performance run measured, when the run calls the machine busy; else None."""
    try:
        with open(os.path.join(folder, "summary.json")) as f:
            summary = json.load(f)
        # a damaged summary ({"shared_cores": true}) ended submit in an AttributeError: no busy record then
        load, shared = (part if isinstance(part, dict) else {} for part in (summary.get("other_load"),
                                                                            summary.get("shared_cores")))
    except (OSError, ValueError, AttributeError):
        return None
    if shared.get("overlapped") is True:   # another measurement on its cores: each ran at about half its speed
        others = [o for o in shared.get("others") if isinstance(o, dict)] if isinstance(shared.get("others"), list) \
            else []
        return "another measurement ran on its cores" + (f" (pid {', '.join(str(o.get('pid')) for o in others)})"
                                                          if others else "")
    if not load.get("busy"):
        return None
    return f"other processes took {load.get('share', 0):.0%} of the {load.get('cpus', '?')} CPUs"


def _hold(folder):
    """The folder's lock, held until this process ends: two submits into one -o ran every run twice at once, each
    measuring the other's load, and the last to finish wrote state.json."""
    from filelock import FileLock, Timeout
    if os.path.isfile(folder):
        raise UsageError(f"-o {folder}: a file, not a folder", hint="give -o a new or empty folder")
    made, up = [], folder
    while not os.path.lexists(up) and os.path.dirname(up) != up:
        made.append(up)
        up = os.path.dirname(up)
    try:
        os.makedirs(folder, exist_ok=True)
        lock = FileLock(os.path.join(folder, LOCK))
        lock.acquire(timeout=0)
        lock.made = made   # the folders this made: a refused submit leaves none of them (it left ./submissions/Z)
    except Timeout:
        raise UsageError(f"another mlrun submit is using {folder}",
                         hint="wait for it to finish (the same command then resumes), or give another -o") from None
    except OSError as e:
        raise UsageError(f"-o {folder}: {e.strerror or e}") from None
    return lock


def run_submission(opts, inputs, deps, env, settings, plan_only=False, verbose=False):
    lock = None if plan_only else _hold(os.path.abspath(opts.output))   # before its state is read
    try:
        return _submission(opts, inputs, deps, env, settings, plan_only, verbose, lock)
    except BaseException:
        folder = os.path.abspath(opts.output)
        with contextlib.suppress(OSError):
            if lock is not None and set(os.listdir(folder)) <= {LOCK}:   # refused before it wrote a thing
                lock.release()
                os.unlink(os.path.join(folder, LOCK))
                for made in lock.made:   # the deepest first
                    os.rmdir(made)
        raise


def _submission(opts, inputs, deps, env, settings, plan_only, verbose, lock):
    from . import tree
    sub = Submission(opts, inputs, deps, env, settings, verbose)
    sub.lock = lock
    sub.check_request()
    sub.sources()
    sub.system()
    sub.say(f"submission: {opts.division}/{opts.submitter}, system {sub.system_id}, round {ROUND}, "
            f"{', '.join(opts.benchmark_list)}: {', '.join(opts.scenario_list)}; model: {sub.model['what']}"
            f"{sub.model.get('then', '')}; "
            f"LoadGen {sub.loadgen}" + ("; --short: a rehearsal, NOT submittable" if opts.short else ""))
    for note in sub.system_notes:
        sub.say(f"  note: {note}")
    sub.keeps_the_last_tree()
    sub.runs_here()
    if plan_only:
        rows = sub.plan_rows()
        width = max(len(r[0]) for r in rows)
        sub.say(f"{plural(len(rows), 'step')} ({sum(1 for r in rows if r[1] == 'to run')} to run), shared by "
                f"{', '.join(opts.benchmark_list)}; then the tree, the official checker (--version {ROUND}) and "
                "the archive")
        for name, state, detail in rows:
            sub.say(f"  {name:<{width}}  {state:<28} {detail}")
        yours = [f"--{k}={v}" for k, v in inputs.items()] + [f"--dep.{d}.{k}={v}" for d, kv in deps.items()
                                                             for k, v in kv.items()] \
            + [f"--env.{k}={v}" for k, v in secrets.scrub(env).items()]
        if yours:   # the lines above list only what submit sets itself: the tuned flags were nowhere
            sub.say(f"every run also gets your {shlex.join(yours)}")
        for scenario, kv in opts.scenario_inputs.items():
            sub.say(f"{scenario}'s runs also get your {shlex.join(f'--{k}={v}' for k, v in kv.items())}")
        return 0
    tree.forget(sub)
    kept = os.path.join(sub.dir, "system.yaml")
    if opts.system and os.path.realpath(opts.system) != os.path.realpath(kept):
        import shutil   # the README's command names it: a teammate got a path of this machine, the file nowhere
        shutil.copyfile(opts.system, kept)
    sub.say("runs:")
    done = sub.execute()
    if sub.device != "cpu":
        sub.system_desc = system.with_run_gpu_facts(sub.system_desc, system.read_yaml(opts.system), done)
    result = tree.build(sub, done)
    return tree.finish(sub, result)


# What the submit reads back from state.json as it comes
STATE_SHAPE = {"runs": dict, "comparisons": list, "argv": list, "request": dict, "host": dict, "system_id": str,
               "mlrun": str, "settings": dict, "history": dict, "loadgen": dict, "built": bool, "verdict": dict}
STATE_PARTS = {"request": {"query": str, "inputs": dict, "deps": dict, "scenario_inputs": dict, "env": dict,
                           "division": str, "short": bool, "submitter": str, "benchmarks": list, "scenarios": list,
                           "round": str},
               "verdict": {"ok": bool, "summary": str, "archive": str}, "loadgen": {"version": str, "seeds": dict}}
STATE_RUN = {"run": str, "folder": str, "inputs": dict, "command": list, "fingerprint": dict,
             "finished": (int, float), "busy": str}
STATE_FINGERPRINT = {"plan": dict, "request": dict, "host": dict}
STATE_SETTINGS = {"inputs": dict, "user_conf": list, "figures": dict, "how": str}


def _state_mistake(state):
    """What in a submission's state.json is not as mlrun writes it, in words, or None."""
    wrong = mistyped(state, STATE_SHAPE)
    if wrong:
        return "its " + said(*wrong)
    checks = [(state.get(k) or {}, shape, f"its {k}.") for k, shape in STATE_PARTS.items()]
    runs = list((state.get("runs") or {}).items()) + [
        (name, item) for name, items in (state.get("history") or {}).items()
        for item in (items if isinstance(items, list) else [items])]
    for name, item in runs:
        if not isinstance(item, dict):
            return f"its run {name} is no object"
        checks += [(item, STATE_RUN, f"its run {name}'s "), (item.get("fingerprint") or {}, STATE_FINGERPRINT,
                                                            f"its run {name}'s fingerprint.")]
    for scenario, chosen in (state.get("settings") or {}).items():
        if not isinstance(chosen, dict):
            return f"its settings of {scenario} are no object"
        checks.append((chosen, STATE_SETTINGS, f"its settings of {scenario}: "))
    for obj, shape, where in checks:
        wrong = mistyped(obj, shape)
        if wrong:
            return where + said(*wrong)
    return None
