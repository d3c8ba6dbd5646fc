"""The `mlrun` command line: a thin layer over the engine API.

Every verb parses its words, calls the engine, and prints a table or JSON.
Errors are MlrunError: one paragraph and a hint on stderr, exit 2 for usage,
recipe and resolution errors, 1 for a step that failed; never a traceback.
"""
import argparse
import contextlib
import json
import os
import re
import shlex
import sys
import time

from .errors import MlrunError, ResolutionError, StepError, UsageError, printable
from .settings import Settings
from . import streams, usage
from .usage import Parser, cm_tags
from .words import did_you_mean, plural, size_words as _size
from .recipe import FLAG_ALONE, RESERVED_INPUTS, show_number

VERBS = ("run", "plan", "show", "rm", "cache", "find", "explain", "mirror", "runs", "export", "import", "replay",
         "diff", "gc", "check", "submit", "sweep", "sweeps", "report")

EPILOG = """verbs:
  mlrun QUERY [--input=VALUE ...]       resolve, build what is missing, run, print what it produced
  mlrun QUERY --help                    that recipe's inputs, variations and dependency names
  mlrun plan QUERY                      the whole graph, each node cached or to build; nothing runs
  mlrun show cache [QUERY] [--json]     cache entries: recipe, variations, key, size, age, path
  mlrun show failed                     the logs of failed and interrupted builds (nothing of them is published)
  mlrun rm cache QUERY | ENTRY | KEY | --all [-y]   remove cache entries (ENTRY: an entry's folder name or
                                        path; KEY: a key prefix); mlrun rm failed [-y]: the failed build logs
  mlrun cache verify [--reseal]         re-hash every entry (files and metadata), compare its stat signature
  mlrun gc [--older-than 30d] [--dry-run] [-y]   remove what no running mlrun owns (killed builds and imports,
                                        old partial downloads and failed logs); with --older-than also
                                        cache entries unused that long
  mlrun find QUERY                      recipes that match, with their variations and inputs
  mlrun explain QUERY                   why a node will be (re)built: what differs from the nearest entry
  mlrun mirror add FILE... | check      fill or audit a download mirror (for air-gapped machines)
  mlrun mirror fetch QUERY -o DIR       download every file QUERY's plan needs into DIR, to carry over
  mlrun runs [show RUN]                 past runs: id, query, the settings that differ, result, status
                                        (--where F=V, --columns a,b, --last N, --since 2d, --status S, --query Q,
                                        --all, --json/--csv/--markdown; RUN: an id, last, last~1)
  mlrun sweep QUERY [--INPUT=V ...] --grid NAME=V1,V2 ... --name NAME [--rerun] [--jobs N] [--on local|ray|slurm]
                                        run every point of a grid (resumable: finished points are skipped)
  mlrun sweep show NAME [--csv|--json|--markdown] [--columns a,b]   one row per point: settings and results
  mlrun sweep list                      the sweeps there are (also: mlrun sweeps)
  mlrun sweep best NAME [--y FIELD] [--json]   its best VALID point and the submit command that runs it
  mlrun sweep plot NAME --x FIELD [--y FIELD] [--by FIELD] -o FILE.png   the points as a PNG (line or bar chart)
  mlrun report NAME [NAME...] -o FILE.html   one self-contained page: settings, points, plots, each run's command
  mlrun export RUN -o FILE [--with-cache] [--sign KEY]   a run's record and logs (and the cache entries it used)
  mlrun import FILE [--trust ALLOWED_SIGNERS]   verify and add a bundle's cache entries and run to this machine
  mlrun replay RUN|FILE.tar.gz|run.json re-run exactly the recorded plan, then compare the results
  mlrun diff RUN_A RUN_B                what differs: request, plan, recipes, packages, host, results
                                        (exit 0 none, 1 some, 2 trouble, like diff(1))
  mlrun check submission DIR [--short]  the official MLPerf submission checker on a tree: verdict and results
  mlrun submit QUERY --submitter=NAME --division=open|closed [--system=FILE.yaml] [--short] ...
                                        an MLPerf submission: every run, TEST01, the tree, the official checker
  mlrun plan submit QUERY ...           every run that submission needs, done or to run; nothing runs

A QUERY is tags and _variations in one argument: "app mlperf bert _onnxruntime _cpu" (or, as in CM,
--tags=app,mlperf,bert,_onnxruntime,_cpu). Choices are matched whatever their case (--scenario=offline).
Inputs of the queried recipe are flags: --mode=accuracy. A dependency can be changed by name:
--dep.model.tags=_int8, --dep.model.version='>=2', --dep.model.INPUT=VALUE (--dep.A/B.*: dependency B of
dependency A only). --env.KEY=VALUE
overrides a step's environment. Exit codes: 0 ok, 1 a step failed, 2 usage/recipe/resolution error.
Environment: MLRUN_CACHE, MLRUN_RUNS, MLRUN_RECIPES, MLRUN_MIRROR, MLRUN_JOBS.
Ctrl-C, SIGTERM and SIGHUP stop the step (all it started), record the run as interrupted and
exit 128 + the signal: 130, 143, 129."""


def _common(parser, top=False):
    """Options every verb takes, before or after the verb (a verb's copy only sets what it is given)."""
    given_only = {} if top else {"default": argparse.SUPPRESS}
    g = parser.add_argument_group("where things live")
    g.add_argument("--cache", metavar="DIR", help="cache folder (default: cache/ in the checkout, or $MLRUN_CACHE)",
                   **given_only)
    g.add_argument("--runs", metavar="DIR", help="run records folder (default: runs/, or $MLRUN_RUNS)", **given_only)
    g.add_argument("--recipes", metavar="DIR", action="append",
                   help="recipe folder, repeatable (default: recipes/, or $MLRUN_RECIPES)", **given_only)
    g.add_argument("--mirror", metavar="DIR", help="look for downloads here first, by checksum ($MLRUN_MIRROR)",
                   **given_only)
    parser.add_argument("-v", "--verbose", action="store_true", help="show every step's output and more detail",
                        **given_only)


def _jobs_option(p):
    p.add_argument("--jobs", metavar="N", help="cache entries built at once (default 2, or $MLRUN_JOBS; 1: one after "
                   "another); a benchmark step always runs alone")
    p.add_argument("--timeout", metavar="DURATION", help="the longest any step's command may run (90s, 30m, 2h): "
                   "then it is stopped and fails; a recipe's own timeout: applies if smaller")


def _jobs(args):
    from .runner import jobs_given
    return jobs_given(getattr(args, "jobs", None))


def _timeout(args):
    """--timeout's seconds, or None (a usage error if it is no duration)."""
    from .words import duration_seconds
    given = getattr(args, "timeout", None)
    seconds = duration_seconds(given)
    if given is not None and not seconds:
        raise UsageError(f"--timeout {given!r}: give a duration", hint="seconds, or e.g. 90s, 30m, 2h")
    return seconds


class _NotBuilt:
    """Stands for the parser of a verb not asked for: takes every call (add_argument, groups) and setting, and
    builds nothing (a throwaway ArgumentParser per verb cost a millisecond of every start)."""
    def __getattr__(self, name):
        return self._ignore

    def _ignore(self, *args, **kwargs):
        return self


_NOT_BUILT = _NotBuilt()


def build_parser(only=None):
    """The parser; with `only`, just that verb's part (building all 13 costs start-up time)."""
    parser = Parser(prog="mlrun", description="Run MLPerf benchmarks from cached, hashed recipes.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, top=True)
    parser.add_argument("--version", action=usage.VersionAction, help="mlrun's version (and git describe in a checkout)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name, help_, query=None, json_=False, example="get dataset squad _validation"):
        if only and name != only:
            return _NOT_BUILT   # this verb is not the one asked
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p)
        if query == "required":
            p.add_argument("query", metavar="QUERY", help=f'tags and _variations, e.g. "{example}"')
        elif query == "optional":
            p.add_argument("query", nargs="?", default="", metavar="QUERY",
                           help="only entries whose tags and variations match")
        if json_:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = verb("run", "resolve QUERY, build what is missing and run it (the default verb)", "required", True)
    _jobs_option(p)
    p.epilog = RUN_EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    for name, help_ in (("plan", "print the whole plan of QUERY; nothing runs"),
                        ("explain", "say why each node of QUERY's plan will be built: what differs from the nearest "
                                    "entry")):   # their help said nothing of the inputs, --dep.* and --env.* they take
        p = verb(name, help_, "required", True)
        p.epilog = RUN_EPILOG.replace("(mlrun run script", f"(mlrun {name} script")
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    p = verb("find", "list the recipes matching QUERY with their variations, inputs and deps", "optional", True)
    if p is not _NOT_BUILT:
        next(a for a in p._actions if a.dest == "query").help = "only recipes whose tags and variations match"
    p = verb("show", "show cache entries or failed build logs")
    p.add_argument("what", choices=["cache", "failed"], metavar="cache|failed", help="what to show")
    p.add_argument("query", nargs="?", default="", metavar="QUERY", help="show cache QUERY: only the entries whose tags and "
                                                        "variations match")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("rm", "remove cache entries matching QUERY, one ENTRY (its folder name, path or key prefix), or --all; "
                   "rm failed: the logs of failed and interrupted builds; rm run RUN (an id, last) or "
                   "--older-than AGE: run folders (never one still running)")
    p.add_argument("what", choices=["cache", "failed", "run"], metavar="cache|failed|run", help="what to remove")
    p.add_argument("query", nargs="?", default="", metavar="QUERY|ENTRY|RUN")
    p.add_argument("--all", action="store_true", help="every entry")
    p.add_argument("--older-than", metavar="AGE", help="rm run: every run started longer ago than AGE (30d, 12h)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = verb("gc", "remove what no running mlrun owns: leftovers of killed builds, imports and removals, run folders "
                   "without a record, partial downloads and failed build logs older than --older-than (default 7d), "
                   "killed cluster sweeps' marker files older than 30 days; "
                   "with --older-than, also cache entries unused that long (never one a running mlrun uses)")
    p.add_argument("--older-than", metavar="AGE", help="30d, 12h, 90m, 2w: also remove cache entries unused that long")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = verb("cache", "cache maintenance: verify")
    p.add_argument("action", choices=["verify"], metavar="verify", help="what to do")
    p.add_argument("--reseal", action="store_true",
                   help="record anew the stat signature of entries whose content verifies but whose file times "
                        "changed (a copy that did not keep them)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("mirror", "fill (add FILE...) or audit (check) the download mirror given by --mirror or $MLRUN_MIRROR; "
                       "fetch QUERY -o DIR: download every file QUERY's plan needs, and its hf: models, into DIR "
                       "(on a connected machine)")
    p.add_argument("action", choices=["add", "check", "fetch"], metavar="add|check|fetch", help="what to do")
    p.add_argument("files", nargs="*", metavar="FILE|QUERY")
    p.add_argument("-o", "--output", metavar="DIR", help="fetch: the folder to download into (a mirror to carry over)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("runs", "list past runs, or show one run's record (runs show RUN)")
    p.add_argument("action", nargs="?", choices=["show"], metavar="show", help="show one run's record")
    p.add_argument("run", nargs="?", metavar="RUN", help="a run id (or a unique prefix), last (the newest run `runs` lists; "
                                                 "last~N: the Nth before it), a run folder or a run.json")
    _rows_options(p)
    p.add_argument("--last", type=int, metavar="N", help="the N most recent runs (after the filters)")
    p.add_argument("--since", metavar="AGE|DATE", help="only runs started within AGE (12h, 2d) or since DATE "
                                                       "(2026-12-01, 2026-12-01T09:30: local time)")
    p.add_argument("--status", metavar="S[,S]", help="only runs with this status: ok, failed, interrupted, error, "
                                                     "running, died")
    p.add_argument("--query", metavar="TEXT", help="only runs whose query has these words (tags, _variations)")
    p.add_argument("--all", action="store_true", help="also helper commands (get ..., process ...)")
    for name, help_ in (("sweep", "run every point of a grid of QUERY's inputs, dependency inputs and variation "
                                  "groups, or: sweep show NAME, sweep list, sweep best NAME (its best point and the "
                                  "submit command that runs it)"), ("sweeps", "list the sweeps")):
        p = verb(name, help_)
        if only in (None, name):   # the options live in sweeps/: import it only for its own verbs
            _sweep_options(p, name)
    p = verb("report", "one self-contained HTML page of sweeps: their settings, points, plots and each run's command")
    if only in (None, "report"):
        _report_options(p)
    p = verb("export", "bundle a run's record and logs (and with --with-cache every cache entry it used)")
    p.add_argument("run", metavar="RUN", help="a run id (or a unique prefix), last (the newest run `runs` lists; "
                                                 "last~N: the Nth before it), a run folder or a run.json")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .tar.gz to write")
    p.add_argument("--with-cache", action="store_true", help="include the cache entries the run used")
    p.add_argument("--sign", metavar="KEY", help="sign the bundle with this SSH key (a private key, or a public key "
                                                 "whose private half ssh-agent holds); needs ssh-keygen")
    p = verb("import", "verify a bundle and add its run and cache entries here (never overwrites)")
    p.add_argument("bundle", metavar="FILE", help="a .tar.gz made by mlrun export")
    _trust(p)
    p = verb("replay", "re-run exactly the plan a run recorded, then compare its results with the record's")
    p.add_argument("run", metavar="RUN", help="a run id, last (or last~N), a run folder, a run.json, or a bundle .tar.gz "
                                      "(imported first)")
    _trust(p)
    _jobs_option(p)
    p.add_argument("--allow-differences", action="store_true",
                   help="run even when the plan cannot be the recorded one (the replay is marked inexact)")
    p.add_argument("--recorded-recipes", action="store_true",
                   help="where the local recipes differ from the run's, run the copies its record holds, and a "
                        "bundle's --env/--dep settings (code that came with the run; a bundle verified by --trust "
                        "needs no flag)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("submit", "an MLPerf submission of QUERY: settings search, accuracy, performance and TEST01 runs "
                       "per scenario (resumable), the official tree, checker and archive", "required",
             example="app mlperf bert _onnxruntime _cpu")
    if only in (None, "submit"):
        from submission.cli import SUBMIT_HELP
        from submission.submit import options_help
        p.usage = ("mlrun submit [-h] [--cache DIR] [--runs DIR] [--recipes DIR] [--mirror DIR] [-v] QUERY "
                   "--submitter=NAME --division=open|closed [submission options] [app inputs, --dep.*, --env.*]")
        p.epilog = SUBMIT_HELP + "\n\n" + options_help()   # parsed by submission/, listed here (were in the text only)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    p = verb("diff", "what differs between two runs: request, plan, recipes, packages, host, results, how each "
                     "ran; exit 0 when nothing differs, 1 when something does, 2 on trouble (like diff(1))")
    p.add_argument("run_a", metavar="RUN_A", help="a run id (or a unique prefix), last (or last~N), a run folder, a "
                                                  "run.json or a bundle .tar.gz (read in place, not imported)")
    p.add_argument("run_b", metavar="RUN_B", help="the run to compare with A: the same forms")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("check", "run the official MLPerf submission checker on a submission tree", json_=True)
    p.add_argument("what", choices=["submission"], metavar="submission", help="what to check")
    p.add_argument("dir", metavar="DIR", help="the tree: the folder holding closed/, open/ or network/")
    p.add_argument("--inference-src", metavar="DIR", help="a local copy of github.com/mlcommons/inference "
                   "(default: $MLRUN_MLPERF_INFERENCE_SRC, else git from GitHub at the pinned commit)")
    p.add_argument("--version", default="v6.1", help="the round whose rules apply (default v6.1)")
    p.add_argument("--short", action="store_true",
                   help="a short rehearsal: complaints that only short runs cause are listed apart, not failures")
    p.add_argument("--out", metavar="DIR", help="where the log, table and JSON go (default: DIR-check/ beside DIR)")
    return parser


def _rows_options(p):
    """Output options of the verbs that print rows of flat fields (runs, sweep show)."""
    p.add_argument("--where", action="append", metavar="FIELD=VALUE",
                   help="only rows where FIELD=VALUE (also !=, >, <, >=, <=), repeatable; e.g. backend=deepsparse")
    p.add_argument("--columns", metavar="a,b,c", help="these fields (docs/sweeps.md lists them; `result` is LoadGen's "
                                                      "VALID/INVALID, and runs' RESULT column is `headline`)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="machine-readable output (the flat fields)")
    g.add_argument("--csv", action="store_true", help="CSV with a header row")
    g.add_argument("--markdown", action="store_true", help="a Markdown table")


def _sweep_options(p, name):
    from sweeps.cli import add_arguments   # sweeps live outside the engine
    add_arguments(p, name)
    _rows_options(p)


def _report_options(p):
    from sweeps.report import add_arguments   # sweeps live outside the engine
    add_arguments(p)


def _trust(p):
    p.add_argument("--trust", metavar="ALLOWED_SIGNERS",
                   help="accept only a bundle signed by a key this file lists (ssh-keygen's allowed_signers "
                        "format, as git uses)")


def split_extras(words):
    """Unknown --NAME=VALUE words: inputs, --dep.NAME.KEY overrides and --env.KEY overrides."""
    from .recipe import ENV_RE
    inputs, deps, env = {}, {}, {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) == 2:
            raise UsageError(f"unexpected argument '{printable(word)}'",
                             hint="a query is one quoted argument: \"get dataset squad\"")
        name, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                value, i = words[i + 1], i + 1
            elif name.startswith("env."):   # a flag alone is a boolean input's true: no variable is set so
                raise UsageError(f"--{printable(name)} needs a value", hint=f"--{printable(name)}=VALUE "
                                 f"(--{printable(name)}= sets it empty)")
            else:
                value = FLAG_ALONE   # true for a boolean input; any other says it needs a value
        try:  # sys.argv holds bytes that are not UTF-8 as surrogate escapes: keys and records cannot hold them
            (name + value).encode()
        except UnicodeEncodeError:
            raise UsageError(f"--{printable(name)}={printable(value)}: not UTF-8 text") from None
        if name.startswith("dep."):
            parts = name.split(".", 2)
            if len(parts) != 3 or not all(parts[1].split("/")) or not parts[2]:
                raise UsageError(f"--{name}: write --dep.NAME.KEY=VALUE (KEY: tags, version or an input; "
                                 "NAME a dependency's name, or A/B for dependency B of dependency A)")
            target, key = deps.setdefault(parts[1], {}), parts[2]
        elif name.startswith("env."):
            if not ENV_RE.match(name[4:]):
                raise UsageError(f"--{name}: '{name[4:]}' is not a valid environment variable name",
                                 hint="write --env.NAME=VALUE, NAME of letters, digits and _ (not first a digit)")
            from .envs import set_by_mlrun
            if set_by_mlrun(name[4:]):
                # a new key, and the step saw the input's or mlrun's own value
                raise UsageError(f"--{name}: mlrun sets {name[4:]} itself for each step",
                                 hint="an input is set by --INPUT=VALUE" if "INPUT" in name else "leave it out")
            target, key = env, name[4:]
        else:
            target, key = inputs, name.replace("-", "_")
        if key in target:
            raise UsageError(f"--{name} is given twice: {target[key]!r} and {value!r}", hint="give it once")
        target[key] = value
        i += 1
    return inputs, deps, env


GLOBAL_WITH_VALUE = ("--cache", "--runs", "--recipes", "--mirror")
RESUMABLE = ("sweep", "submit")   # verbs whose finished parts a new start of the same command reuses
INSPECTING_CACHE = ("show", "rm", "gc", "cache")   # verbs that look into a cache: one given must be there
INSPECTING_RUNS = ("runs", "diff", "export", "sweeps")   # likewise for a runs folder given (replay may make one)
# What an interrupted verb that builds nothing left (it said "nothing half-built was published" of a removal)
INTERRUPTED = {"rm": "what it was removing may be half gone: the same command finishes it",
               "gc": "what it was removing may be half gone: mlrun gc again finishes it",
               "import": "the entries published before it stopped stay; import again to add the rest",
               "export": "no bundle was written",
               "cache": "what it checked or resealed before it stopped stays as it is"}
GLOBAL_OPTIONS = GLOBAL_WITH_VALUE + ("--verbose", "--help", "--version")
# mlrun's options that take no value, wherever they stand (a word after one is no value of it)
FLAGS = ("--verbose", "-v", "--json", "--yes", "-y", "--dry-run", "--all", "--csv", "--markdown", "--with-cache",
         "--short", "--rerun", "--rerun-busy", "--replace", "--reseal", "--allow-differences", "--recorded-recipes", "--help", "-h", "--version")
RUN_EPILOG = """Any other --NAME=VALUE is an input of the queried recipe: `mlrun "QUERY" --help` lists them with
their types, defaults and choices, the recipe's variations and its dependency names.
  --dep.NAME.tags=_x        add variations (or tags) to the query of dependency NAME, each replacing the query's
                            variation of its group (--dep.model.tags=_int8 where the query has _fp32)
  --dep.NAME.version=SPEC   the version constraint of dependency NAME (--dep.model.version='>=2')
  --dep.NAME.INPUT=VALUE    an input of dependency NAME's recipe (--dep.model.layers=2)
  --env.KEY=VALUE           set KEY in the environment of every step (part of every key: another value,
                            another entry; a secret, by its name (TOKEN, KEY, SECRET,
                            PASSWORD...), is never written down and enters no key)
  --tags=a,b,_x             CM's way to give the query (mlrun run script --tags=app,mlperf,bert works too)
NAME is the name `mlrun plan QUERY` and `mlrun "QUERY" --help` print before each dependency; it reaches every
dependency of that name. A/B reaches only dependency B of dependency A (--dep.backend/python.packages=...: the
backend's venv, not the model's or the features')."""


def with_verb(argv):
    """Insert the default verb `run` before a query; global options may come first. `mlrun help [WHAT]` is
    `mlrun [WHAT] --help` (it was "no recipe matches 'help'")."""
    argv = list(argv)
    i = verb_at(argv)
    if "--" in argv[:i]:   # `mlrun -- QUERY`: the options end there (it said "'--' is not one of run")
        j = argv.index("--")
        argv = argv[:j] + argv[j + 1:]
        if j < len(argv) and argv[j] not in VERBS:
            argv.insert(j, "run")
        return argv
    if argv[i:i + 1] == ["help"]:
        what = argv[i + 1] if i + 1 < len(argv) else None
        if what and what not in VERBS and " " not in what and usage.nearest(what, VERBS):   # `help pln`: it said
            raise UsageError(f"unknown verb '{what}'{did_you_mean(what, VERBS)}",   # "no recipe matches 'pln'"
                             hint=f"mlrun help {usage.nearest(what, VERBS)[0]}; a query is one quoted argument")
        argv = argv[:i] + argv[i + 1:] + ["--help"]
    elif i < len(argv) and argv[i] in VERBS and any(a in ("-h", "--help") for a in argv[:i]):
        # `mlrun -h runs`: the top help, its verb list holding that verb alone (only its parser is built); now
        # the verb's own help, as `mlrun help runs` and `mlrun -h QUERY` (the recipe's) give
        argv = [a for a in argv[:i] if a not in ("-h", "--help")] + [argv[i], "--help"] + argv[i + 1:]
    usage.check_verb(argv, VERBS, GLOBAL_WITH_VALUE, GLOBAL_OPTIONS)
    _no_verb_option_first(argv)
    i = verb_at(argv)
    if i < len(argv) and argv[i] not in VERBS:
        argv.insert(i, "run")
    return argv


def _no_verb_option_first(argv):
    """`mlrun --jobs 2 QUERY`, `mlrun --mode accuracy plan QUERY`: an option of a verb (or an input) with its value
    before the verb: the value was taken for the verb or the query ("no recipe matches '2'", "unexpected argument
    'QUERY'")."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        word = argv[i]
        if word in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if word.startswith("--") and "=" not in word and word not in GLOBAL_OPTIONS and i + 1 < len(argv) \
                and argv[i + 1] not in VERBS and not argv[i + 1].startswith("-"):
            subs = next(a for a in build_parser()._actions if a.dest == "verb").choices   # only now: every verb's
            kinds = {v: [a.nargs == 0 for a in sub._actions if word in a.option_strings] for v, sub in subs.items()}
            takes = [v for v, flags in kinds.items() if flags and not flags[0]]
            if any(kinds.values()) and not takes:
                return   # a flag (--json) before a query: said later, as before
            raise UsageError(f"{word} {argv[i + 1]} comes before the verb"
                             + (f": {word} is an option of {', '.join(takes)}" if takes else
                                ": a recipe's inputs go after its query"),
                             hint=f"give it after the verb and its query: mlrun VERB QUERY {word}={argv[i + 1]} "
                                  "(mlrun's own options alone go first: --cache, --runs, --recipes, --mirror, -v)")
        i += 1


def verb_at(argv):
    """Where the verb is: the first word after the global options and their values."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in GLOBAL_WITH_VALUE else 1
    return i


def main(argv=None):
    streams.closed_to_devnull()
    if not os.environ.get("PATH"):   # `env -i`: the shell's own default, as execvp takes it (python3 had no prefix
        os.environ["PATH"] = os.confstr("CS_PATH") or os.defpath   # found and the venv build failed, exit 1)
    with streams.outliving_readers():
        try:
            return _main(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as e:   # argparse's --help: it only prints, and what it printed was lost (it exited 0)
            sys.stdout.flush()
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 2
            return 1 if code == 0 and streams.lost else code


def _check_place(what, path, flag, settings):
    """Places that would damage what is there: a path not UTF-8 ('unexpected UnicodeEncodeError ... a bug'), a
    cache inside a published entry (as root it wrote .index/ and a nested entry into it), runs inside the cache
    (cache verify then called every run folder NOT AN ENTRY)."""
    hint = f"check {flag} (or MLRUN_{what.upper()})"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the {what} folder {path.encode('utf-8', 'surrogateescape')!r} is not UTF-8 text: mlrun "
                         "writes its paths in records and logs", hint=hint) from None
    real = os.path.realpath(path)
    folder = real
    while folder != os.path.dirname(folder):
        if os.path.isfile(os.path.join(folder, ".mlrun", "entry.json")):
            raise UsageError(f"the {what} folder {path} is inside the cache entry {folder}: entries are never "
                             "written to", hint=hint)
        folder = os.path.dirname(folder)
    cache = os.path.realpath(settings.cache)
    if what == "runs" and (real == cache or real.startswith(cache + os.sep)):
        raise UsageError(f"the runs folder {path} is inside the cache {settings.cache}: run folders are no entries",
                         hint="give --runs (or MLRUN_RUNS) a folder of its own")


def _main(argv):
    usage.ARGV = list(argv)   # a misspelt option is looked for in these (`runs --wher x=y`)
    try:
        argv = with_verb(cm_tags(argv, VERBS, GLOBAL_WITH_VALUE, FLAGS))
        at = verb_at(argv)
        asked = argv[at] if at < len(argv) else None
        parser = build_parser(only=asked if asked in VERBS else None)
        if asked == "run" and any(a in ("-h", "--help") for a in argv):
            shown = _recipe_help(parser, [a for a in argv if a not in ("-h", "--help")])
            if shown is not None:   # only prints: lost (a full disk, a closed terminal), it failed (it said 0)
                sys.stdout.flush()
                return 1 if shown == 0 and streams.lost else shown
        sub = next((w for w in argv[at + 1:] if not w.startswith("-")), None)
        if any(a in ("-h", "--help") for a in argv) and (asked, sub) in (("plan", "submit"), ("sweep", "plot"),
                                                                          ("sweep", "show"), ("sweep", "list"),
                                                                          ("sweep", "best")):
            return _sub_help(asked, sub)   # their own options, not the verb's
        args, extras = parser.parse_known_args(argv)
        for flag in ("--cache", "--runs", "--mirror"):   # before and after the verb: two parsers, each saw one
            said = [w.split("=", 1)[1] if w.startswith(flag + "=") else nxt
                    for w, nxt in zip(argv, argv[1:] + [None]) if w == flag or w.startswith(flag + "=")]
            if len(said) > 1:
                raise UsageError(f"{flag} is given twice: {said[0]!r} and {said[1]!r}", hint=f"give {flag} once")
        recipes = [w.split("=", 1)[1] if w.startswith("--recipes=") else nxt
                   for w, nxt in zip(argv, argv[1:] + [None]) if w == "--recipes" or w.startswith("--recipes=")]
        if len(recipes) > len(args.recipes or []):   # repeatable: the verb's parser dropped those given before it
            args.recipes = recipes
        if args.verb and extras and not _takes_extras(args) and not any(e.startswith("-") for e in extras):
            args, extras = _intermixed(parser, argv[at + 1:], args, extras)   # `rm cache -y QUERY`
        if not args.verb:
            if extras:
                raise UsageError(f"unknown option {extras[0]}" + did_you_mean(extras[0].split("=")[0], GLOBAL_OPTIONS),
                                 hint="mlrun --help lists the options and verbs")
            parser.print_help()
            return 2
    except MlrunError as e:
        return main_error(e)
    from .guard import signal_name, stop_signals_interrupt
    try:
        with stop_signals_interrupt():  # SIGTERM (SLURM, timeout, docker stop) and SIGHUP act as Ctrl-C
            if extras and not _takes_extras(args):
                first = extras[0].split("=")[0]
                if first == "--version":   # `mlrun runs --version`: "an option of 'runs': give it after the verb"
                    raise UsageError(f"'{args.verb}' takes no --version", hint=usage.ALONE)
                if first in _options_of(parser, args.verb):   # `mlrun --json runs`: it said "did you mean --json?"
                    raise UsageError(f"{first} is an option of '{args.verb}': give it after the verb",
                                     hint=f"mlrun {args.verb} {first} ...")
                raise UsageError(f"unexpected argument(s) for '{args.verb}': {' '.join(extras)}"
                                 + did_you_mean(first, _options_of(parser, args.verb)),
                                 hint=f"see mlrun {args.verb} --help")
            for flag, value in (("--cache", args.cache), ("--runs", args.runs), ("--mirror", args.mirror),
                                ("-o", getattr(args, "output", None))):
                if value is not None and not value.strip():   # else taken as not given: the checkout's folder
                    raise UsageError(f"{flag} is empty", hint="give -o the path to write" if flag == "-o"
                                     else f"give {flag} a folder, or leave it out")
                if value == "-":   # not standard output: a file named '-' appeared in the current folder
                    raise UsageError(f"{flag} - would be a file or folder named '-': mlrun writes nothing to "
                                     "standard output this way", hint=f"give {flag} a path (./- if you mean that name)")
            if args.recipes is not None and not all(r.strip() for r in args.recipes):
                raise UsageError("--recipes is empty", hint="give --recipes a folder, or leave it out")
            try:
                os.getcwd()
            except FileNotFoundError:   # "mlrun run: cannot use: No such file or directory", a sweep's points failed
                raise UsageError("the current folder no longer exists (it was removed or replaced after this shell "
                                 "entered it)", hint="cd to a folder that exists and run the command again") from None
            tmp = os.environ.get("TMPDIR")
            if _runs_steps(args) and tmp and not (
                    os.path.isdir(tmp) and os.access(tmp, os.W_OK | os.X_OK)):   # steps' mktemp failed, exit 1
                raise UsageError(f"TMPDIR={tmp} is not a folder this process may write" if os.path.exists(tmp) else
                                 f"TMPDIR={tmp} does not exist", hint="steps make their temporary files there: "
                                 "set TMPDIR to a writable folder, or unset it")
            settings = Settings.from_env(cache=args.cache, runs=args.runs, recipes=args.recipes, mirror=args.mirror)
            for what, path, flag in (("cache", settings.cache, "--cache"), ("runs", settings.runs, "--runs")):
                if os.path.lexists(path) and not os.path.isdir(path):   # before anything is built or published
                    # (a link to nothing: the run looped for ever on makedirs' FileExistsError)
                    raise UsageError(f"the {what} folder {path} is "
                                     + (f"a link to nothing ({os.readlink(path)})" if os.path.islink(path)
                                        else "not a folder"), hint=f"check {flag} (or MLRUN_{what.upper()})")
                _check_place(what, path, flag, settings)
            reads_runs = args.verb in INSPECTING_RUNS or args.verb == "sweep" and getattr(args, "query", None) in (
                "list", "ls", "show", "best", "plot")
            if reads_runs and args.runs and not os.path.exists(settings.runs):
                # a typo on the command line: `runs --json` printed [] and exit 0 (a CI job saw no runs, unsaid)
                raise UsageError(f"the runs folder {settings.runs} does not exist", hint="check --runs (or MLRUN_RUNS)")
            if args.verb in INSPECTING_CACHE and args.cache and not os.path.exists(settings.cache):
                # a typo on the command line: it was made, and said to hold nothing (MLRUN_CACHE may name one to be)
                raise UsageError(f"the cache folder {settings.cache} does not exist",
                                 hint="check --cache (or MLRUN_CACHE)")
            given = args.mirror or os.environ.get("MLRUN_MIRROR") or ""
            if "://" in given:   # it was taken for a folder, and the error printed the URL's password
                from .secrets import mask_urls
                raise UsageError(f"the mirror is a folder, not a URL: {mask_urls(given)[0]}"
                                 + ("" if args.mirror else " (from $MLRUN_MIRROR)"),
                                 hint="fill a folder with the files (mlrun mirror add FILE..., or mirror fetch on a "
                                      "machine with access) and give --mirror that folder; a server can share one "
                                      "over NFS")
            if settings.mirror and not os.path.isdir(settings.mirror) and not (
                    args.verb == "mirror" and args.action == "add"):   # add makes it; elsewhere a typo
                raise UsageError(f"the mirror folder {settings.mirror} "
                                 + ("is not a folder" if os.path.exists(settings.mirror) else "does not exist")
                                 + (" (from $MLRUN_MIRROR)" if not args.mirror else ""),
                                 hint="check the path given by --mirror or MLRUN_MIRROR")
            if not _only_prints(args):
                streams.going_on = "; the work goes on and its record keeps the results"
            with _scrubbed_stdout(args.verb in ("plan", "explain")):   # they print inputs as given
                code = VERB_FUNCS[args.verb](args, extras, settings) or 0
            sys.stdout.flush()   # a write that fails, fails now: while its exit code can still say so
            return 1 if code == 0 and streams.lost and _only_prints(args) else code   # what it was for, lost
    except MlrunError as e:
        e = usage.option_typo_hint(e, GLOBAL_OPTIONS + tuple(_options_of(parser, args.verb)))
        own = re.match(r"\S+ has no input --([\w-]+)$", e.message) if isinstance(e, ResolutionError) else None
        if own and own[1] in RESERVED_INPUTS:   # `plan QUERY --jobs 2`: blamed on the recipe ("it accepts: none")
            e.message += f" (--{own[1]} is an option of other verbs than '{args.verb}': mlrun {args.verb} --help)"
        return main_error(usage.verb_typo_hint(e, getattr(args, "query", None) if args.verb == "run" else None, VERBS))
    except KeyboardInterrupt as e:
        print(f"mlrun: interrupted by {signal_name(e)}; " + ("nothing removed: it stopped at its prompt" if getattr(
                  e, "at_prompt", False) else INTERRUPTED.get(args.verb, "nothing half-built was published"))
              + (f"; {getattr(e, 'resume', 'the same command goes on from where it stopped')}"
                 if args.verb in RESUMABLE else ""),
              file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # the shell's convention: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    except BrokenPipeError:
        return 0
    except OSError as e:  # the file system refused (a cache folder that is a file, a full disk...): no traceback
        from .oserrors import explain
        return main_error(explain(e, f"mlrun {args.verb}: cannot use"))
    except Exception as e:  # a bug: still one line (the run record keeps it too); -v shows where
        from .runner import describe_error
        if args.verbose:
            import traceback
            traceback.print_exc()
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] not in OWN_PACKAGES:
            return main_error(usage.missing_requirement(e))   # mlrun's environment, not a bug of its code
        return main_error(MlrunError(f"unexpected {describe_error(e)}", hint="this is a bug in mlrun; -v shows the traceback"))


def _runs_steps(args):
    """Verbs that run steps (TMPDIR is theirs); sweep's list, show and plot read what ran."""
    return args.verb in ("run", "submit", "replay") or (
        args.verb == "sweep" and getattr(args, "query", None) not in ("list", "ls", "show", "plot", "best"))


def _only_prints(args):
    """Verbs whose output is all they do: with it lost (a full disk, a closed terminal) they failed."""
    return args.verb in ("runs", "find", "show", "plan", "explain", "diff", "sweeps", "cache") or (
        args.verb == "mirror" and getattr(args, "action", None) == "check") or (
        args.verb == "sweep" and getattr(args, "query", None) in ("list", "ls", "show", "best")) or (
        args.verb == "gc" and getattr(args, "dry_run", False))   # it said "the work goes on" and exited 0


def _takes_extras(args):
    """Verbs whose unknown --NAME=VALUE words are inputs of a query (mirror fetch QUERY too)."""
    return args.verb in ("run", "plan", "explain", "submit", "sweep") or (args.verb == "mirror" and args.action == "fetch")


def _options_of(parser, verb):
    return usage.options_of(parser)


def _intermixed(parser, verb_argv, args, extras):
    """The verb's arguments parsed again with options allowed between its positionals (argparse's first pass
    stops filling them at the first option); the first pass's result when that does not help."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.verb]
    try:
        fresh = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "_given_once"})   # seen again
        again, left = sub.parse_known_intermixed_args(verb_argv, namespace=fresh)
    except (TypeError, SystemExit):
        return args, extras
    return (again, left) if len(left) < len(extras) else (args, extras)


def _sub_help(verb, sub):
    """`plan submit --help` is submit's help; `sweep plot|show|list|best --help` their own options."""
    if verb == "sweep" and sub != "plot":
        from sweeps.cli import SUB_HELP
        print(SUB_HELP[sub])
        return 0
    if sub == "plot":
        from sweeps import plot
        p = argparse.ArgumentParser(prog="mlrun sweep plot", usage=plot.USAGE)
        plot.add_arguments(p)
        p.print_help()
        return 0
    return main(["submit", "--help"])


def _recipe_help(parser, argv):
    """`mlrun "QUERY" --help`: that recipe's inputs, variations and deps, then run's own options; None
    when no query was given (run's generic help then)."""
    try:
        args, extras = parser.parse_known_args(argv)
    except UsageError:   # no query: run's own help
        return None
    if not getattr(args, "query", None):
        return None
    from . import recipe_help
    settings = Settings.from_env(cache=args.cache, runs=args.runs, recipes=args.recipes, mirror=args.mirror)
    run_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    try:
        print(recipe_help.render(settings.index(), args.query, extras, run_parser))
    except ResolutionError as e:   # `mlrun -h swep` lost the hint `mlrun swep` gives: near the verb sweep
        raise usage.verb_typo_hint(e, args.query, VERBS) from None
    return 0


def _not_a_file(path):
    """Why path, which is no regular file, cannot be read as one: said as it is."""
    if not path:
        return "no file named (an empty path)"
    if os.path.isdir(path):
        return f"{path} is a folder, not a file"
    if os.path.exists(path):
        return f"{path} is not a regular file (a device, a pipe or a socket)"
    return f"no such file: {path}"


OWN_PACKAGES = ("engine", "mlperf_bert", "sweeps", "submission", "bench")


def main_error(e):
    """Print an MlrunError as one paragraph and an optional hint; return its exit code."""
    # a failed step whose error was shown live just above: named once, not quoted again (engine.runner)
    print(f"mlrun: error: {_cut_long_words(_no_secrets(getattr(e, 'on_screen', None) or e.message))}", file=sys.stderr)
    if e.hint and not getattr(e, "hint_on_screen", False):
        print(f"hint: {_cut_long_words(_no_secrets(e.hint))}", file=sys.stderr)
    return e.exit_code


@contextlib.contextmanager
def _scrubbed_stdout(wanted):
    """What plan and explain print (an input's value as given: --url=https://user:PASSWORD@host, also in --json,
    which a person saves in a file) with its secrets masked, as every file mlrun writes has them."""
    if not wanted:
        yield
        return
    from .secrets import scrub

    class Scrubbed:
        def __init__(self, out):
            self.out = out

        def write(self, text):
            return self.out.write(scrub(text))

        def __getattr__(self, name):
            return getattr(self.out, name)
    was = sys.stdout
    sys.stdout = Scrubbed(was)
    try:
        yield
    finally:
        sys.stdout = was


def _no_secrets(text):
    from .secrets import scrub_message
    return scrub_message(text, usage.ARGV or [])


def _cut_long_words(text, most=1000):
    """An error echoes what it was given: a 100,000-character query filled the screen twice (a path stays whole)."""
    text = re.sub(r"[^\s'\";,/]{%d,}" % (most + 1),
                  lambda m: f"{m.group(0)[:100]}...({len(m.group(0))} characters)", text)
    # and the whole: a query of 1,000 long words came back twice, 197 KB
    return text if len(text) <= 8 * most else f"{text[:4 * most]}...({len(text)} characters in all)"


# -- verbs ------------------------------------------------------------------------


def _resolve(args, extras, settings):
    from .resolver import resolve
    inputs, deps, env = split_extras(extras)
    return resolve(settings.index(), args.query, inputs=inputs, host_env=os.environ, dep_overrides=deps,
                   env_overrides=env, prober=settings.prober())


def cmd_run(args, extras, settings):
    from .cache import Cache
    from .runner import Runner
    jobs, timeout = _jobs(args), _timeout(args)   # a bad --jobs said before the plan is made
    plan = _resolve(args, extras, settings)
    runner = Runner(Cache(settings.cache), settings.runs, verbose=args.verbose, jobs=jobs, timeout=timeout,
                    mirror=settings.mirror, stream_root=not args.json, live_out=sys.stderr if args.json else None)
    try:
        record = runner.run(plan, argv=["mlrun"] + sys.argv[1:])
    except (MlrunError, KeyboardInterrupt):
        if args.json and getattr(runner, "record", None):  # a script (a sweep) still learns which run failed
            _print_json(_run_json(runner.record, runner.runs_dir))
        raise
    if args.json:
        _print_json(_run_json(record, runner.runs_dir))
        return 0
    root = record["steps"][-1]
    print(f"{plan.root.label}: {root['path']}")
    for key, value in sorted(record["exports"].items()):
        print(f"  {key}={value}")
    return 0


def _run_json(record, runs_dir):
    """`run --json`: the run, its status, results (as recorded and as flat fields), folder and steps."""
    from .records import flat
    steps = record["steps"]
    return {"run": record["id"], "status": record["status"], "error": record.get("error"),
            "results": record.get("results"), "flat": flat(record),
            "run_dir": os.path.join(runs_dir, record["id"]),
            "path": steps[-1].get("path") if steps else None, "exports": record.get("exports", {}),
            "steps": [{k: s.get(k) for k in ("recipe", "label", "key", "status", "seconds", "path")} for s in steps]}


def cmd_plan(args, extras, settings):
    from .cache import Cache
    if args.query == "submit":   # mlrun plan submit QUERY ...: the submission's runs
        from submission.cli import cmd_submit
        if not extras or extras[0].startswith("-"):
            raise UsageError("mlrun plan submit needs a QUERY", hint='mlrun plan submit "app mlperf bert" ...')
        args.query = extras[0]
        if getattr(args, "json", False):   # it printed text, exit 0, and a script's jq failed
            raise UsageError("mlrun plan submit prints text only (no --json)",
                             hint="leave --json out; the submission folder's state.json holds each run's state")
        return cmd_submit(args, extras[1:], settings, plan_only=True)
    plan = _resolve(args, extras, settings)
    cache = Cache(settings.cache)
    status = {n.key: ("cached" if cache.lookup(n) else "build") if n.cache else "run" for n in plan.nodes}
    downloads = _plan_downloads(plan, status, settings)
    building = {k for k, s in status.items() if s != "cached"}
    # a teammate's run (a sweep's point) building it now: this plan's run would wait for it, or build around it
    elsewhere = {n.key for n in plan.nodes if status[n.key] == "build" and cache.being_built(n)}
    if args.json:
        _print_json({"query": plan.query, "nodes": [dict(n.to_dict(), status=status[n.key],
                                                         path=cache.path(n) if n.cache else None,
                                                         **({"being_built": True} if n.key in elsewhere else {}))
                                                    for n in plan.nodes], "downloads": downloads})
        return 0
    todo = sum(1 for s in status.values() if s != "cached")
    print(f"plan for '{plan.query}': {plural(len(plan.nodes), 'node')}, {len(plan.nodes) - todo} cached, {todo} to run")
    shown = set()

    def show(node, depth, dep_name):
        name = f"{dep_name}: " if dep_name and dep_name != node.name else ""
        inputs = " ".join(f"--{k}={str(v).lower() if isinstance(v, bool) else v}"   # as typed: --flag=true
                          for k, v in node.inputs.items() if v is not None)
        line = f"{'  ' * depth}{name}{node.label} {node.version} [{node.key[:12]}] {status[node.key]}"
        if node.key in elsewhere:
            line += f"  another mlrun is building it now{cache.builder(node)}"
        if node.key in shown:
            print(line + " (see above)")
            return
        shown.add(node.key)
        print(line + (f"  {inputs}" if inputs else ""))
        for probe, output in (node.probes or {}).items():
            print(f"{'  ' * depth}  probe {probe}: {output}")
        for dname, dep in node.deps:
            show(dep, depth + 1, dname)
    show(plan.root, 0, None)
    if downloads:
        size = sum(d["size"] or 0 for d in downloads)
        unsized = sum(1 for d in downloads if d["size"] is None)   # "5 files, 269 B" where 4 declared no size
        print(f"downloads of the nodes to build: {plural(len(downloads), 'file')}"
              + (f", {_size(size)}" + (f" and {unsized} of unknown size" if unsized else "") if size else "")
              + (f" (mirror {settings.mirror})" if settings.mirror else
                                                        " (no mirror given: from their URLs)"))
        for d in downloads:
            status = d["status"]
            where = (f"in the mirror: {_rel(d['path'])}" if status == "present" else
                     f"the mirror's copy differs ({_rel(d['path'])}): {d['url']}" if status == "corrupt" else
                     f"in the mirror ({_rel(d['path'])}), but the recipe's size is not its size: correct "
                     "download.size" if status == "wrong size" else
                     f"not in the mirror: {d['url']}" if status == "missing" else d["url"])
            print(f"  {d['name']}  {_size(d['size']) if d['size'] else '?'}  {where}")
    _plan_hub_models(plan, building, settings)
    _plan_by_name(plan, building, settings)
    return 0


def _plan_hub_models(plan, building, settings):
    """The Hub models the nodes to build fetch, and whether the mirror holds each (offline, the step needs it)."""
    from . import mirror
    refs = mirror.hub_references(plan, only=building)
    if refs and settings.mirror:
        print(f"Hugging Face models of the nodes to build (mirror {settings.mirror}):")
        for ref in refs:
            folder, files, recorded = mirror.hub_in_mirror(settings.mirror, ref)
            print(f"  {ref}  " + (f"not in the mirror ({_rel(folder)}): fetched from the Hub (offline: mlrun mirror "
                                  "fetch QUERY -o DIR on a connected machine)" if files is None else
                                  f"in the mirror: {_rel(folder)} ({plural(files, 'file')}, "
                                  f"{recorded} with hf download's record to check)"))


def _plan_by_name(plan, building, settings):
    """The files the nodes to build take from a mirror by path (no checksum declared), and whether it holds each."""
    from . import mirror
    items = mirror.by_name(plan, only=building)
    if items and settings.mirror:
        print(f"files taken from the mirror by path (mirror {settings.mirror}):")
        for item in items:
            status, there = mirror.found_by_name(settings.mirror, item)
            where = os.path.join(settings.mirror, *item["path"].split("/"))
            print(f"  {item['name']}  " + (
                f"in the mirror: {_rel(there)}" if status == "present" else
                f"in the mirror but {status}: {_rel(there)}" if there else
                f"not in the mirror ({_rel(where)}): downloaded from {item['url']} (offline: mlrun mirror fetch QUERY "
                "-o DIR on a connected machine)"))


def _plan_downloads(plan, status, settings):
    """The declared downloads of the nodes a run would build, and whether the mirror holds each."""
    from . import mirror
    items = mirror.plan_downloads(plan, only={k for k, s in status.items() if s != "cached"})
    if not items:
        return []
    if not settings.mirror:
        return [{"name": d["name"], "status": "no mirror", "path": None, "url": d.get("url"), "file": d.get("file"),
                 "size": d.get("size"), "sha256": d.get("sha256"), "md5": d.get("md5")} for d in items]
    return mirror.check(settings.mirror, items, index_path=os.path.join(settings.cache, ".index", "mirror-hashes.json"))


def cmd_explain(args, extras, settings):
    from . import keys
    from .cache import Cache
    plan = _resolve(args, extras, settings)
    cache = Cache(settings.cache)
    by_recipe = {}
    for meta in cache.entries():
        by_recipe.setdefault(meta.get("recipe"), []).append(meta)
    report = []
    for node in plan.nodes:
        item = {"recipe": node.name, "label": node.label, "key": node.key}
        if not node.cache:
            item.update(status="run", why="cache: false; it runs every time")
        elif cache.lookup(node):
            item.update(status="cached", path=cache.lookup(node))
        else:
            candidates = [(keys.differences(m.get("material", {}), node.material), m)
                          for m in by_recipe.get(node.name, [])]
            if not candidates:
                item.update(status="build", why=f"no entry of {node.name} in the cache yet")
            else:
                diffs, nearest = min(candidates, key=lambda c: len(c[0]))
                item.update(status="build", nearest=nearest["path"],
                            differences=[{"field": f, "entry": a, "now": b} for f, a, b in diffs])
                was = nearest.get("recipe_files", {} if not node.recipe_files else None)   # none kept: none had
                files = _file_changes(was, node.recipe_files)
                if any(f == "recipe_digest" for f, _, _ in diffs) and (files or None not in (was, node.recipe_files)):
                    # the same files: recipe.yaml itself changed (two digests alone said not what)
                    item["recipe_files"] = files or "the same: recipe.yaml changed, or a source it names"
        report.append(item)
    if args.json:
        _print_json(report)
        return 0
    for item in report:
        print(f"{item['label']}: {item['status']}" + (f" ({_rel(item['path'])})" if item.get("path") else ""))
        if item.get("why"):
            print(f"  {item['why']}")
        if item.get("nearest"):
            print(f"  nearest entry: {_rel(item['nearest'])}; what differs (entry -> now):")
            for d in item["differences"]:
                print(f"    {d['field']}: {_brief(d['entry'])} -> {_brief(d['now'])}"
                      + ("  (a dependency's key changed, see above)" if d["field"].startswith("deps.") else "")
                      + (f"  (recipe files {item['recipe_files']})" if d["field"] == "recipe_digest"
                         and item.get("recipe_files") else ""))
    return 0


def _file_changes(was, now):
    """'changed: run.sh; added: x.py' between two {relative path: digest} of a recipe's files; None when the
    entry kept none (built before mlrun recorded them) or they are the same (recipe.yaml changed)."""
    if was is None or now is None:
        return None
    parts = [(what, sorted(names)) for what, names in (
        ("changed", [n for n in now if n in was and was[n] != now[n]]), ("added", set(now) - set(was)),
        ("removed", set(was) - set(now))) if names]
    return "; ".join(f"{what}: {', '.join(names)}" for what, names in parts) or None


def cmd_find(args, extras, settings):
    from .resolver import has_tags, parse_query
    tags, variations = parse_query(args.query)
    index = settings.index()   # once: each call loads the recipe index again
    recipes = [r for r in index.recipes
               if has_tags(tags, r["tags"], r["name"], r.get("aliases", ()))
               and all(v.split(".")[0] in r["variations"] for v in variations)]
    if not index.recipes:   # was "no recipe matches ''": no single recipe has all of these tags
        from .index import layout_hint
        raise MlrunError(f"no recipes in {', '.join(settings.recipes)}", hint=layout_hint(index.dirs) or
                         "a recipe is DIR/NAME/recipe.yaml (docs/recipes.md); --recipes DIR or MLRUN_RECIPES names "
                         "the folders")
    if not recipes:
        from .resolver import Resolver
        tagged = [r for r in index.recipes if has_tags(tags, r["tags"], r["name"], r.get("aliases", ()))]
        known = {"_" + v.split(".")[0] for r in tagged for v in r["variations"]}
        hint = "; ".join(f"no variation _{v}{did_you_mean('_' + v, known)}" for v in variations
                         if "_" + v.split(".")[0] not in known) if tagged else \
            Resolver(index)._closest(tags).replace("mlrun find TAG", "mlrun find")
        raise MlrunError(f"no recipe matches '{args.query}'", hint=hint or None)
    recipes.sort(key=lambda r: (r["name"], r["version"]))
    if args.json:
        _print_json([{k: r[k] for k in ("name", "version", "tags", "description", "cache", "inputs", "path")}
                     | {"variations": {k: {f: v[f] for f in ("group", "default", "base", "description", "param")}
                                       for k, v in r["variations"].items()},
                        "deps": [{f: d[f] for f in ("name", "query", "version", "when")} for d in r["deps"]]}
                     for r in recipes])
        return 0
    for r in recipes:
        print(f"{r['name']} {r['version']}  ({_rel(r['path'])})")
        if r["description"]:
            print(f"  {r['description']}")
        print(f"  tags: {' '.join(r['tags'])}" + (f" (also: {' '.join(r['aliases'])})" if r.get("aliases") else "")
              + f"   cache: {'yes' if r['cache'] else 'no (runs every time)'}")
        groups = {}
        for vname, v in r["variations"].items():
            groups.setdefault(v["group"], []).append("_" + vname + (".#" if v["param"] else "")
                                                     + (" (default)" if v["default"] else ""))
        for group, names in groups.items():
            print(f"  variations{' [' + group + ', one of]' if group else ''}: {', '.join(names)}")
        for name, spec in r["inputs"].items():
            extra = f" one of {'|'.join(map(str, spec['choices']))}" if spec["choices"] else ""
            extra += "".join(f" {sign}{show_number(spec[key])}" for key, sign in (("min", ">="), ("max", "<="),
                                                                                  ("above", ">"))
                             if spec.get(key) is not None)
            extra += f" multiple of {spec['multiple_of']}" if spec.get("multiple_of") else ""
            print(f"  --{name} ({spec['type']}, default {spec['default']}){extra}  {spec['help']}".rstrip())
        for d in r["deps"]:
            print(f"  dep {d['name'] or '-'}: '{d['query']}'" + (f" {d['version']}" if d["version"] else "")
                  + (f" when {d['when']}" if d["when"] else ""))
    return 0


def cmd_show(args, extras, settings):
    from . import cache_view
    from .cache import Cache
    cache = Cache(settings.cache)
    if args.what == "failed":
        if args.query:   # as rm failed: it was ignored, and every log shown as if it were that one's
            raise UsageError("mlrun show failed takes no QUERY: it shows every kept log of a failed build",
                             hint="its lines name each log's entry (recipe-key); `mlrun show cache QUERY` shows entries")
        logs = cache.failed_logs()
        kinds = {path: cache_view.failed_kind(path) for path in logs}
        if args.json:
            _print_json([{"log": path, "kind": kinds[path]} for path in logs])
        elif not logs:
            print(f"no failed builds in {cache.root}")
        else:
            for kind, words in cache_view.KIND_WORDS.items():
                paths = [p for p in logs if kinds[p] == kind]
                if paths:
                    print(f"{plural(len(paths), 'build')} {words}:")
                    for path in paths:
                        print(f"  {path}")
            print(f"\n--- last build log: {logs[-1]} ({kinds[logs[-1]]}) ---")
            try:
                from .runner import printable_line   # escaped as the FAILED tail: they drove the terminal
                with open(logs[-1], errors="replace") as f:
                    sys.stdout.write("\n".join(map(printable_line, f.read()[-8000:].split("\n"))))
            except FileNotFoundError:   # kept when the disk was full, or removed meanwhile
                print(f"(no log there: {os.listdir(os.path.dirname(logs[-1])) if os.path.isdir(os.path.dirname(logs[-1])) else 'removed'})")
            print("\n(remove them with: mlrun rm failed -y)")
        return 0
    recipes = cache_view.recipes_by_name(settings)
    everything = cache.entries()
    listed = {os.path.basename(m["path"]) for m in everything}
    with contextlib.suppress(OSError):   # a damaged entry.json: left out unsaid (cache verify said DAMAGED)
        gone_bad = sorted(n for n in os.listdir(cache.root) if not n.startswith(".") and n not in listed
                          and os.path.isdir(os.path.join(cache.root, n)))
        if gone_bad and not args.query:
            print(f"note: {plural(len(gone_bad), 'folder')} of the cache {'is' if len(gone_bad) == 1 else 'are'} no "
                  f"readable entry (not listed): {', '.join(gone_bad[:3])}{' ...' if len(gone_bad) > 3 else ''}; "
                  "`mlrun cache verify` says why", file=sys.stderr)
    entries = cache_view.matching(everything, args.query, recipes)
    common = cache_view.common_packages(entries)
    by_key = {m.get("key"): m for m in everything}
    if not entries and args.query:
        _refuse_unknown(args.query, recipes, cache, "no entries")
    if args.json:
        _print_json([{k: m.get(k) for k in ("recipe", "version", "variations", "inputs", "key", "size", "files",
                                             "finished", "path")}
                     | {"details": cache_view.details(m, recipes, common, width=None, by_key=by_key)}   # whole
                     for m in entries])
        return 0
    if not entries:
        print(f"no cache entries{' matching ' + repr(args.query) if args.query else ''} in {cache.root}")
        _print_near(cache_view.near_tags(cache.entries(), args.query) if args.query else [], "show cache")
        return 0
    now = time.time()
    rows = [(m.get("recipe", "?"), " ".join("_" + v for v in m.get("variations", [])) or "-",
             cache_view.details(m, recipes, common, by_key=by_key), m.get("key", "")[:12], _size(m.get("size", 0)),
             _age(now - m.get("finished", now)), _rel(m["path"]))
            for m in entries]
    _table(("RECIPE", "VARIATIONS", "DETAILS", "KEY", "SIZE", "AGE", "PATH"), rows)
    print(f"{plural(len(entries), 'entry')}, {_size(sum(m.get('size', 0) for m in entries))} in {cache.root}")
    return 0


def _refuse_unknown(query, recipes, cache, outcome):
    """A usage error for a query word no recipe has (exit 2, as find and plan say), with the tags near it."""
    from . import cache_view
    unknown = cache_view.unknown_words(query, recipes)
    if unknown:
        near = cache_view.near_tags(cache.entries(), " ".join(unknown))   # of the words no recipe has alone
        raise UsageError(f"no recipe has {' or '.join(repr(w) for w in unknown)}: {outcome}",
                         hint=f"near it: {', '.join(near)}" if near else "mlrun find lists the recipes' tags")


def _print_near(words, verb):
    for what, near in (("tag", [w for w in words if not w.startswith("_")]),
                       ("variation", [w for w in words if w.startswith("_")])):   # _randm: _random
        if near:
            print(f"no entry has that {what}; {what}s near it: {', '.join(near)} (e.g. mlrun {verb} {near[0]})")


def cmd_rm(args, extras, settings):
    from . import cache_view
    from .cache import Cache
    if args.what == "run":
        return _remove_runs(args, settings)
    if args.older_than is not None:
        raise UsageError(f"rm {args.what} takes no --older-than", hint="mlrun gc --older-than AGE removes the cache "
                                                                        "entries unused that long")
    cache = Cache(settings.cache)
    if args.what == "failed":   # the kept logs of failed, interrupted and killed builds
        if args.query:
            raise UsageError("mlrun rm failed takes no QUERY: it removes every kept log of a failed build")
        logs = cache.failed_logs()
        return _remove_listed(args, [f"{cache_view.failed_kind(p):<11} {_rel(os.path.dirname(p))}" for p in logs],
                              plural(len(logs), "failed build log"), lambda: cache.remove_failed(logs))
    if args.all and args.query:
        raise UsageError(f"mlrun rm cache takes QUERY|ENTRY|KEY or --all, not both ({args.query!r} and "
                         "--all)", hint="leave out --all to remove what the query names")
    if not args.all and not args.query:
        raise UsageError("say which entries: mlrun rm cache QUERY|ENTRY|KEY, or mlrun rm cache --all")
    if args.all:
        entries, named = cache.entries(), False
    else:
        recipes, left_out = cache_view.recipes_by_name(settings), []
        entries, named = cache_view.to_remove(cache, args.query, recipes, args.yes, left_out)
        if left_out:   # `show cache QUERY` lists them too: checked there, removed here, unsaid
            print(f"note: '{args.query}' names {entries[0].get('recipe')} as a query does; the entries of "
                  f"{', '.join(left_out)}, which `show cache` lists too, stay (name them to remove them)",
                  file=sys.stderr)
    if named:
        cache = Cache(os.path.dirname(entries[0]["path"]))
    if not entries:
        # a typo no recipe knows: "nothing to remove", exit 0, and a cleanup script went on unaware (a path or a
        # key named nothing there: said so below, as before)
        from .cache import ENTRY_NAME   # an entry's name (RECIPE-KEY16) names no tags either
        if args.query and os.sep not in args.query and not re.fullmatch(rf"[0-9a-f]{{4,64}}|{ENTRY_NAME}", args.query):
            _refuse_unknown(args.query, recipes, cache, "nothing removed")
        print("nothing to remove")
        _print_near(cache_view.near_tags(cache.entries(), args.query) if args.query else [], "rm cache")
        return 0
    return _remove_listed(args, [f"{m.get('recipe')} {' '.join('_' + v for v in m.get('variations', []))} "
                                 f"{_rel(m['path'])}" for m in entries],
                          plural(len(entries), "entry"), lambda: cache.remove_unused(entries))


def _remove_runs(args, settings):
    from . import gc, records
    if bool(args.query) == (args.older_than is not None) or args.all:
        raise UsageError("say which runs: mlrun rm run RUN (an id, last, last~N), or mlrun rm run --older-than AGE")
    older = gc.parse_age(args.older_than) if args.older_than is not None else None
    runs, live = records.to_remove(settings.runs, args.query or None, older)
    if live:
        print(f"note: {plural(len(live), 'run')} of that age still {'runs' if len(live) == 1 else 'run'} and "
              f"{'stays' if len(live) == 1 else 'stay'}: {', '.join(live[:3])}" + (" ..." if len(live) > 3 else ""),
              file=sys.stderr)
    return _remove_listed(args, [f"{run_id}  {_rel(folder)}" for run_id, folder in runs], plural(len(runs), "run"),
                          lambda: [records.remove_run(settings.runs, run_id) for run_id, _ in runs])


def _remove_listed(args, lines, what, remove):
    """List what would go, ask (or take -y), remove, say so."""
    if not lines:
        print("nothing to remove")
        return 0
    for line in lines:
        print(f"  {line}")
    if not _confirmed(args, what):
        return 0
    remove()
    print(f"removed {what}")
    return 0


def _confirmed(args, what):
    """-y, or a yes at the prompt; without a terminal to ask on, a usage error."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{what} would be removed; pass -y to confirm without a prompt")
    try:   # on stderr: with stdout redirected (> gc.log) the prompt went there, and mlrun seemed to hang
        print(f"remove {what}? [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:   # Ctrl-D
            print(file=sys.stderr)
    except KeyboardInterrupt as e:   # nothing was removed yet: not "what it was removing may be half gone"
        print(file=sys.stderr)
        e.at_prompt = True
        raise
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing removed")
    return False


def cmd_gc(args, extras, settings):
    from . import gc
    from .cache import Cache
    older_than = gc.parse_age(args.older_than) if args.older_than is not None else None   # "" is refused
    cache = Cache(settings.cache)
    items = gc.find(cache, settings.runs, older_than)
    if not items:
        print("nothing to remove")
        return 0
    _table(("KIND", "SIZE", "PATH"), [(i.kind, _size(i.bytes), _rel(i.path)) for i in items])
    if args.dry_run:
        print(f"would free {_size(sum(i.bytes for i in items))} ({plural(len(items), 'item')}); nothing removed (--dry-run)")
        return 0
    if not _confirmed(args, plural(len(items), "item")):
        return 0
    removed, skipped = gc.remove(cache, items, older_than)
    kinds = {}
    for i in removed:
        count, size = kinds.get(i.kind, (0, 0))
        kinds[i.kind] = (count + 1, size + i.bytes)
    print(f"freed {_size(sum(i.bytes for i in removed))}"
          + (": " + ", ".join(f"{plural(n, kind)} ({_size(b)})" for kind, (n, b) in kinds.items()) if kinds else ""))
    if skipped:   # by reason, a few of each: 468 paths made one line of 30 KB
        from .cache import few
        why = {}
        for i in skipped:
            why.setdefault(i.why or "not removable now", []).append(_rel(i.path))
        print(f"skipped {len(skipped)}: " + "; ".join(f"{reason} ({len(paths)}): {few(paths)}"
                                                      for reason, paths in why.items()))
    return 0


def cmd_cache(args, extras, settings):
    from .cache import Cache
    cache = Cache(settings.cache)
    from .cache import ENTRY_FILE, copy_damage_only, entry_meta_covered, removal_command
    entries = cache.entries()
    bad = cache.reseal(entries) if args.reseal else cache.verify(entries)
    old = [m["path"] for m in entries if not entry_meta_covered(m)]
    strays = cache.strays()   # an entry whose metadata went is no entry any more: said, not skipped
    from .cache import owner
    # a teammate's entry or file this user may not read: not checked, never called damaged (nor "remove it")
    unreadable = cache.unreadable + [(p, f"not readable by you (owner: {owner(p)})") for p in strays if cache.private(p)]
    strays = [p for p in strays if not cache.private(p)]
    damaged = [p for p in strays if cache.is_damaged(p)]
    if args.json:
        _print_json({"checked": len(entries), "bad": [{"path": m["path"], "problems": p} for m, p in bad],
                     "old_format": old, "damaged": damaged, "not_entries": [p for p in strays if p not in damaged],
                     "unreadable": [{"path": p, "why": why} for p, why in unreadable]})
    else:
        for path, why in unreadable:
            print(f"UNREADABLE {_rel(path)}: {why}; not checked")
        for meta, problems in bad:
            copied = copy_damage_only(problems)   # its content verified: a copy that lost the file times
            print(f"{'STAT ONLY' if copied else 'CORRUPT'} {_rel(meta['path'])}"
                  + (": its content matches its digests, its file times do not (a copy?)" if copied else ""))
            for p in problems[:10]:
                print(f"  {p}")
            if len(problems) > 10:
                print(f"  ... and {len(problems) - 10} more")
            print("  keep it: mlrun cache verify --reseal" if copied else f"  remove it: {removal_command(meta['path'])}")
        for path in old:
            print(f"OLD FORMAT {_rel(path)}: its files were checked; its metadata (.mlrun/) has no digest "
                  "(remove and rebuild it to cover that)")
        for path in strays:
            if path in damaged:   # named as an entry: rebuilt when its entry.json is gone, else refused by runs
                there = os.path.exists(os.path.join(path, ".mlrun", ENTRY_FILE))
                print(f"DAMAGED {_rel(path)}: its .mlrun/{ENTRY_FILE} is "
                      + ("unreadable; it is not used, and a run that needs it stops until it is removed" if there
                         else "missing; it is not used, and the next build of it replaces it")
                      + f"\n  remove it: {removal_command(path)}")
            else:
                print(f"NOT AN ENTRY {_rel(path)}: its .mlrun/{ENTRY_FILE} is missing or unreadable; mlrun never "
                      "uses it (move it out of the cache)")
        copies = sum(1 for m, problems in bad if copy_damage_only(problems))
        print(f"{plural(len(entries), 'entry')} checked, {len(bad) - copies} corrupt"
              + (f", {copies} with only their file times changed" if copies else "")
              + (f", {cache.resealed} resealed" if args.reseal else "")
              + (f", {len(old)} of the old format" if old else "")
              + (f", {len(damaged)} damaged" if damaged else "")
              + (f", {len(unreadable)} not readable by you" if unreadable else "")
              + (f", {len(strays) - len(damaged)} not {'an entry' if len(strays) - len(damaged) == 1 else 'entries'}"
                 if len(strays) > len(damaged) else ""))
        if bad:
            keep = ("entries with only their file times changed (a copy that did not keep them) are kept by "
                    "`mlrun cache verify --reseal`") if copies else ""
            print("hint: " + ("; ".join(x for x in ("remove each corrupt entry with the command shown; the next run "
                                                    "rebuilds it" if len(bad) > copies else "", keep) if x)),
                  file=sys.stderr)
    return 1 if bad or strays else 2 if unreadable else 0


def cmd_mirror(args, extras, settings):
    from . import mirror
    index_path = os.path.join(settings.cache, ".index", "mirror-hashes.json")
    if args.action == "fetch":
        return _mirror_fetch(args, extras, settings, index_path)
    if args.output:   # -o is fetch's: `mirror add F -o DIR` added to --mirror, -o ignored
        raise UsageError(f"mirror {args.action} takes no -o: it works in the mirror folder (--mirror DIR)",
                         hint="-o DIR is mirror fetch's: the folder it downloads into")
    if args.action == "check" and args.files:   # `mirror check QUERY` audited every recipe's files, unsaid
        raise UsageError(f"mirror check takes no QUERY or FILE ({args.files[0]!r}): it audits the files of every "
                         "recipe", hint="mlrun plan QUERY --mirror DIR says which of a query's downloads the mirror "
                                        "holds")
    if not settings.mirror:
        raise UsageError("no mirror folder given", hint="pass --mirror DIR or set MLRUN_MIRROR=DIR")
    recipes = settings.index().recipes
    wanted = mirror.declared(recipes)
    if args.action == "add":
        if not args.files:
            raise UsageError("mlrun mirror add needs one or more FILEs")
        missing = [f for f in args.files if not os.path.isfile(f)]
        if missing:
            raise UsageError(_not_a_file(missing[0]), hint="mirror add takes files (the downloads a recipe declares)")
        done = mirror.add(settings.mirror, args.files, wanted, index_path=index_path)
        if args.json:   # accepted and ignored before: plain lines
            _print_json([{"file": src, "status": status, "path": dest, "sha256": sha} for src, dest, sha, status in done])
            return 0
        for src, dest, sha, status in done:
            print(f"{status:<13} {src}" + (f" -> {dest}" if status == "added" else f" (as {dest})" if dest else
                                          f" (sha256 {sha[:16]}: no recipe declares this file; not copied)"))
        added = sum(1 for d in done if d[3] == "added")
        print(f"{plural(added, 'file')} added to {settings.mirror}")
        return 0
    # and the files steps take by their path in the mirror (recipe mirror_files: the calibration list)
    rows = mirror.check(settings.mirror, wanted, index_path=index_path) + mirror.check_by_name(
        settings.mirror, mirror.declared_by_name(recipes))
    if args.json:
        _print_json(rows)
    else:
        _table(("STATUS", "DOWNLOAD", "SIZE", "WHERE", "CHECKSUM"),
               [(r["status"], r["name"], _size(r["size"]) if r["size"] else "?",
                 _rel(r["path"]) if r.get("path") else r["url"] or "?",   # a damaged file by its path: to replace
                 "" if r["status"] == "present" else f"sha256:{r['sha256']}" if r["sha256"] else
                 f"md5:{r['md5']}" if r["md5"] else "none known")
                for r in rows])
        for r in rows:
            if r["status"] == "corrupt" and "mirror_path" in r:
                print(f"corrupt: {_rel(r['path'])} is not the file {r['name']} asks for" +
                      (f" (sha256 {r['sha256']})" if r["sha256"] else ": it is not a file") +
                      f": download {r['url'] or 'it'} to that path again")
            elif r["status"] == "corrupt":
                print(f"corrupt: {_rel(r['path'])} is not the file {r['name']} declares: download {r['url']} "
                      "again and mlrun mirror add it (the damaged copy can go)")
        absent = [r for r in rows if r["status"] == "missing" and "mirror_path" not in r]
        if absent:
            print(f"{plural(len(absent), 'file')} not in the mirror: fetch them where there is a network "
                  "(mlrun mirror fetch QUERY -o DIR, or the URLs above), then mlrun mirror add FILE...")
        for r in rows:
            if r["status"] == "missing" and "mirror_path" in r:   # mirror add would not put it at its path
                print(f"not in the mirror: {r['mirror_path']} ({r['name'].split(':')[0]} takes it by that path): "
                      f"mlrun mirror fetch QUERY -o DIR puts it there, or download {r['url'] or 'it'} to "
                      f"{_rel(os.path.join(settings.mirror, r['mirror_path']))}")
    return 0 if all(r["status"] not in ("corrupt", "wrong size", "unreadable") for r in rows) else 1


# Failures another try of `mirror fetch` meets again: the server's own answer, not the network's.
# (not 408 or 429: a time-out or a rate limit, which a try later mends)
LASTING_FAILURE = re.compile(r"checksum mismatch|HTTP 4(?!08|29)\d\d|\b40[134] Client Error|NotFoundError|redirects")


def _mirror_fetch(args, extras, settings, index_path):
    """mirror fetch QUERY -o DIR: every declared download of QUERY's plan, into DIR (a mirror to carry over)."""
    from . import mirror
    from .download import fetch
    if len(args.files) != 1:
        raise UsageError("mlrun mirror fetch needs one QUERY", hint='mlrun mirror fetch "app mlperf bert" -o DIR')
    if not args.output:
        raise UsageError("mlrun mirror fetch needs -o DIR, the folder to download into")
    if os.path.exists(args.output) and not os.path.isdir(args.output):   # was 'cannot write into X: File exists'
        raise UsageError(f"-o {args.output} is not a folder", hint="mirror fetch downloads into a folder: -o DIR")
    args.query = args.files[0]
    plan = _resolve(args, extras, settings)
    items = mirror.plan_downloads(plan)
    from .oserrors import output_errors
    from .resolver import REFERENCE
    # models named by reference: a Hub repo is fetched as `hf download` lays it out, the others are noted
    refs = sorted({(node.label, name, value) for node in plan.nodes for name, value in node.inputs.items()
                   if isinstance(value, str) and REFERENCE.match(value)}, key=lambda r: r[2])

    def get(url, dest, **checks):   # one download, the same for declared files and files by path
        return fetch(url, dest, mirror=settings.mirror, index_path=index_path, partial_dir=None, **checks)

    with output_errors("cannot write into", args.output):
        done = mirror.fetch_into(args.output, items, get, index_path=index_path)
        # files a step takes from a mirror by path (the calibration list): where the step looks
        by_name = mirror.by_name(plan)
        done += mirror.fetch_by_name(args.output, by_name, get)
        hub = {ref: mirror.fetch_hub_repo(args.output, ref) for ref in mirror.hub_references(plan)}
    failed = [d for d in done if d[2] == "failed"] + [h for h in hub.values() if h[1] == "failed"]
    if args.json:
        _print_json([{"name": item["name"], "url": item["url"], "status": status, "path": path,
                      "error": error.message if error else None} for item, path, status, error in done]
                    + [{"name": ref, "url": None, "status": status, "path": path, "error": error}
                       for ref, (path, status, error) in hub.items()])
        return 1 if failed else 0
    for item, path, status, error in done:
        if error:
            print(f"{status:<13} {item['name']}  {item['url']}\n{'':<14}{error.message}")
        else:
            print(f"{status:<13} {item['name']}  {_size(os.path.getsize(path))}  {_rel(path)}")
    for ref, (path, status, error) in hub.items():
        print(f"{status:<13} {ref}" + (f"  {_rel(path)}" if path else "") + (f"\n{'':<14}{error}" if error else ""))
    # a file whose bytes are not the ones asked, a 404, a revision the Hub has not: another try fetches the same
    # ("run it again" could not help); a network that failed may do better
    why = [str(getattr(f[-1], "message", f[-1])) for f in failed]
    lasting = [w for w in why if LASTING_FAILURE.search(w)]
    again = "run it again to fetch them, " if len(lasting) < len(why) else \
        "a checksum mismatch is the server's file, not the network: no try again mends it; " \
        if all("checksum mismatch" in w for w in lasting) else \
        "what the server answered (above), not the network: no try again mends it; "
    print(f"{plural(len(done) + len(hub) - len(failed), 'file')} of the plan of '{plan.query}' in {args.output}"
          f" ({sum(1 for d in done if d[2] == 'fetched') + sum(1 for h in hub.values() if h[1] == 'fetched')} fetched)"
          + (f"; {len(failed)} failed (above): {again}the others are kept" if failed else
             "; carry it over and pass it as --mirror DIR"))
    noted = set()
    for label, name, value in refs:   # one note a model (the app's --model and its model's --stub name one)
        if value not in noted and not mirror.HUB_REFERENCE.fullmatch(value) \
                and value not in {item["url"] for item in by_name}:   # fetched above
            noted.add(value)
            where = f" ({args.output}/sparsezoo/{value[4:]}/)" if value.startswith("zoo:") else ""
            print(f"note: {label} --{name}={value} is fetched by its step, not a declared download: "
                  f"put its files in the mirror yourself{where} (docs/mirrors.md)")
    return 1 if failed else 0


def cmd_runs(args, extras, settings):
    from . import records, run_view
    if args.action == "show" or args.run:
        if not args.run:
            raise UsageError("mlrun runs show needs a RUN", hint="`mlrun runs` lists them")
        listing = [f"--{f}" for f in ("csv", "markdown", "where", "columns", "status", "query", "last", "since",
                                      "all")
                   if getattr(args, f, None) not in (None, False, [])]
        if listing:   # options of the list: silently ignored before
            raise UsageError(f"mlrun runs show takes one run; {', '.join(listing)} choose runs and columns of the list",
                             hint="`mlrun runs show RUN` (or --json), or `mlrun runs " + " ".join(listing) + " ...`")
        record = records.load(records.find(settings.runs, args.run))
        if args.json:
            _print_json(run_view.as_json(record))
            return 0
        run_view.show(record)
        return 0
    from .results import runs_text
    fmt = next((f for f in ("json", "csv", "markdown") if getattr(args, f)), "table")
    sys.stdout.write(runs_text(settings.runs, args.where, args.columns, fmt, args.status, args.query, args.last,
                               args.all, args.since))
    return 0


def cmd_export(args, extras, settings):
    from . import bundle, records
    from .cache import Cache
    run_dir = os.path.dirname(records.find(settings.runs, args.run))
    from .oserrors import output_errors
    with output_errors("cannot write the bundle", args.output):
        info = bundle.export_run(run_dir, Cache(settings.cache), args.output, with_cache=args.with_cache,
                                 sign=args.sign)
    print(f"wrote {args.output}: run {info.get('run_id', os.path.basename(run_dir))}"
          + (f" with {plural(len(info.get('entries', [])), 'cache entry')}" if args.with_cache else " (record and logs)")
          + (", signed" if args.sign else "")
          + (" (it replaced the file that was there)" if info.get("replaced") else "")
          + (f" (the run {info['status']} before it recorded the steps it used)"   # a SIGKILL leaves none
             if args.with_cache and not info.get("entries") and info.get("status") in ("died", "running?") else ""))
    return 0


def cmd_import(args, extras, settings):
    from . import bundle
    from .cache import Cache
    if not os.path.isfile(args.bundle):
        raise UsageError(_not_a_file(args.bundle), hint="a bundle is the .tar.gz `mlrun export` writes")
    info = bundle.import_bundle(args.bundle, Cache(settings.cache), settings.runs, trust=args.trust)
    other = info.get("run_existed") and not info.get("run_same")   # an id taken by another run (a copied folder)
    print(("imported the bundle's cache entries, not its run (below)" if other else
           f"imported run {info['run_id']} into {info['run_dir']}")
          + (" (that run was here already: left as it was)" if info.get("run_existed") and not other else "")
          + f": {plural(len(info['added']), 'cache entry')} added, {len(info['present'])} already present")
    print(_signature_note(info))
    _entries_here_said(info, settings)
    if other:   # it said "that run was here already: left as it was", exit 0, and `runs` showed the other run
        raise UsageError(f"a run {info['run_id']} is here already and is not the bundle's ({info['run_dir']}): left "
                         "as it was, the bundle's run not imported", hint="import the bundle into another runs folder "
                         f"(mlrun --runs DIR import {args.bundle}), or move {info['run_dir']} away and import again")
    return 0


def _entries_here_said(info, settings, replay=None):
    """Entries the bundle has that are here already, changed since or another build: kept (entries are never
    replaced), but not silently; a signed bundle's replay refuses to run on another build than the signed one."""
    from .cache import few, removal_command
    for name in info.get("damaged_here", []):
        path = os.path.join(settings.cache, name)
        print(f"warning: the entry {name} already here was changed since it was published; the bundle's copy was "
              f"not used: `{removal_command(path)}`, then import again", file=sys.stderr)
    other = info.get("other_build_here", [])
    if other and replay and info.get("verified"):
        raise UsageError(f"{few(other)} here {'is' if len(other) == 1 else 'are'} another build than the signed "
                         "bundle's: the replay would use the one here, which its signer does not vouch for",
                         hint=f"`{removal_command(os.path.join(settings.cache, other[0]))}`" + (
                             " (and the others)" if len(other) > 1 else "") + f", then mlrun replay {replay} again")
    for name in other:
        print(f"note: the entry {name} here is another build than the bundle's (its entry_digest differs): the one "
              f"here is kept and used (`{removal_command(os.path.join(settings.cache, name))}` takes the bundle's "
              "on the next import)", file=sys.stderr)
    for name in info.get("key_unchecked", []):
        print(f"note: the entry {name} records what it was built from with a secret masked: its key could not be "
              "checked against it" + ("" if info.get("verified") else " (a bundle signed by a key --trust lists "
                                      "vouches for it)"), file=sys.stderr)


def _signature_note(info):
    if info["verified"]:
        return f"signed by {info['signed_by']}, a signer the --trust file lists"
    if info["signed_by"]:
        return f"signed by the {info['signed_by']}; not checked against trusted signers (pass --trust ALLOWED_SIGNERS)"
    return "signed, but not verified: ssh-keygen is not installed" if info["signed"] else \
        "not signed: its origin was not verified"


def _is_bundle(ref):
    """A RUN argument that names a bundle (replay imports it, diff reads it in place), not a run id or folder."""
    return ref.endswith((".tar.gz", ".tgz")) or os.path.isfile(ref) and not ref.endswith(".json")


def cmd_replay(args, extras, settings):
    from . import records, replay
    from .cache import Cache
    from .runner import Runner
    ref, jobs = args.run, _jobs(args)
    carried = _is_bundle(ref)
    if carried:
        from . import bundle
        if not os.path.isfile(ref):
            raise UsageError(_not_a_file(ref), hint="replay takes a run id, a run folder, a run.json or a bundle "
                                                    "made by mlrun export")
        info = bundle.import_bundle(ref, Cache(settings.cache), settings.runs, trust=args.trust)
        print(f"imported {ref}: {plural(len(info['added']), 'cache entry')} added, {len(info['present'])} already present; "
              + _signature_note(info), file=sys.stderr)
        ref = info["run_dir"]
        _entries_here_said(info, settings, replay=shlex.join([args.run] + (["--trust", args.trust] if args.trust
                                                                             else [])))
        if info["run_existed"] and not info["run_same"]:   # the replay would compare with that one, not the bundle's
            raise UsageError(f"a run {info['run_id']} is here already and is not the bundle's ({ref}): the replay "
                             "would compare with it", hint=f"replay the bundle with another runs folder (mlrun --runs "
                             f"DIR replay {args.run}), or move {ref} away")
        # its signer vouches for the recipes it carries (the run here is byte for byte the bundle's)
        args.recorded_recipes = args.recorded_recipes or info["verified"]
    elif args.trust:
        raise UsageError("--trust checks a bundle's signature; this replay is of a local run",
                         hint="replay the bundle itself: mlrun replay FILE.tar.gz --trust ALLOWED_SIGNERS")
    record = records.load(records.find(settings.runs, ref))
    if not args.recorded_recipes:   # a bundle's settings are code as its recipes are (replay.refuse_carried_settings)
        replay.refuse_carried_settings(record, settings, carried)
    # how `diff` finds the recorded run: its id where it is in the runs folder, else its folder (a copy elsewhere:
    # the id named no run here, or another run of that id)
    named = record["id"] if os.path.realpath(record["_dir"]) == os.path.realpath(
        os.path.join(settings.runs, record["id"])) else shlex.quote(record["_dir"])
    if records.status(record) == "running":   # it ran a second copy beside it, then called the first "died"
        raise UsageError(f"run {record['id']} is still running: its record is not written until it ends",
                         hint="replay it once it has ended (mlrun runs shows its status)")
    was = None if settings.mirror else records.place(record, "MLRUN_MIRROR")
    if isinstance(was, str) and was:   # the run's own mirror, where it is here too: it went to the network (exit 1)
        here = os.path.normpath(os.path.join(str(record.get("cwd") or ""), was))
        if os.path.isdir(here):
            settings.mirror = here
            print(f"replay: the run's mirror {here} is used (--mirror DIR gives another)", file=sys.stderr)
        else:   # offline, the downloads then failed with no word of the mirror the run had
            print(f"replay: the run's mirror {here} is not here: what is not in the cache is downloaded (--mirror "
                  "DIR gives one)", file=sys.stderr)
    runner = Runner(Cache(settings.cache), settings.runs, verbose=args.verbose, mirror=settings.mirror,
                    jobs=jobs, timeout=_timeout(args), stream_root=not args.json,
                    live_out=sys.stderr if args.json else None)
    try:
        new, notes, lines, ok = replay.replay(record, settings, runner, args.allow_differences,
                                              argv=["mlrun"] + sys.argv[1:], recorded_recipes=args.recorded_recipes)
    except (MlrunError, KeyboardInterrupt):
        if args.json and getattr(runner, "record", None):   # as run --json: a script learns which run failed
            _print_json({**_run_json(runner.record, runner.runs_dir), "replay_of": record["id"]})
        raise
    reused = sum(1 for s in new["steps"] if s["status"] == "cached")
    if args.json:   # run --json's fields (status, error, results...), and the replay's own
        _print_json({**_run_json(new, runner.runs_dir), "replay_of": record["id"], "notes": notes, "verdict": lines,
                     "equal": ok})
    else:
        print(f"replay of {record['id']} as run {new['id']}: {reused} of {plural(len(new['steps']), 'step')} reused")
        for line in notes + lines:   # a note's own lines (the differences of an inexact one) under its first
            print("  " + line.replace("\n", "\n  "))
    if not ok:
        raise StepError(f"the replay of {record['id']} gave a different accuracy",
                        hint=f"mlrun diff {named} {new['id']}; where nothing differs, a cache entry may have changed "
                             "its bytes unseen: mlrun cache verify")
    return 0


def cmd_diff(args, extras, settings):
    from . import compare, records
    def load(ref):   # a bundle too, read in place (replay takes one; diff of a teammate's run needed an import)
        if _is_bundle(ref):
            from .bundle import read_record
            if not os.path.isfile(ref):
                raise UsageError(_not_a_file(ref), hint="diff takes run ids, run folders, run.json files or bundles")
            return read_record(ref)
        return records.load(records.find(settings.runs, ref))
    a, b = load(args.run_a), load(args.run_b)
    sections = compare.everything(a, b)
    differ = 1 if any(sections.values()) else 0  # like diff(1): 0 the same, 1 different, 2 trouble
    def ratio(what, x, y):   # a metric's B/A, as replay shows it
        return compare.ratio(x, y) if what.startswith("metric.") else None
    if args.json:
        _print_json({"a": a["id"], "b": b["id"],
                     **{name: [{"what": w, "a": x, "b": y, **({"ratio": r} if (r := ratio(w, x, y)) is not None else {})}
                               for w, x, y in rows] for name, rows in sections.items()}})
        return differ
    print(f"A = {a['id']} ({a.get('query')})\nB = {b['id']} ({b.get('query')})")
    for name, rows in sections.items():
        if not rows:
            continue
        print(f"{name}:")
        if name == "packages":   # a venv only one run has: its packages on one line (NNCF's layer made 16 rows)
            for side, only in (("A", [(w, x) for w, x, y in rows if y is None]),
                               ("B", [(w, y) for w, x, y in rows if x is None])):
                if len(only) > 3:
                    print(f"  only in {side}: " + ", ".join(f"{w.split(' ', 1)[1]} {v}" for w, v in only))
                    rows = [row for row in rows if row[0] not in {w for w, _ in only}]
        for what, x, y in rows:
            r = ratio(what, x, y)
            print(f"  {what}" if x is None and y is None else f"  {what}: {_brief(x)} -> {_brief(y)}"
                  + (f" (B/A {r:.3f})" if r is not None else ""))
    if not differ:
        print("no differences")
    return differ


def cmd_check(args, extras, settings):
    from submission.cli import cmd_check as check  # MLPerf submissions live outside the engine
    return check(args, extras, settings)


def cmd_sweep(args, extras, settings):
    from sweeps.cli import cmd_sweep as sweep
    return sweep(args, extras, settings)


def cmd_report(args, extras, settings):
    from sweeps.report import cmd_report as report
    return report(args, extras, settings)


def cmd_submit(args, extras, settings):
    from submission.cli import cmd_submit as submit
    return submit(args, extras, settings)


VERB_FUNCS = {"run": cmd_run, "plan": cmd_plan, "explain": cmd_explain, "find": cmd_find, "show": cmd_show,
              "rm": cmd_rm, "cache": cmd_cache, "mirror": cmd_mirror, "runs": cmd_runs, "export": cmd_export,
              "import": cmd_import, "replay": cmd_replay, "diff": cmd_diff, "gc": cmd_gc, "check": cmd_check,
              "submit": cmd_submit, "sweep": cmd_sweep, "sweeps": cmd_sweep, "report": cmd_report}


# -- output helpers ---------------------------------------------------------------


def _print_json(value):
    from .results import json_safe
    json.dump(json_safe(value), sys.stdout, indent=1, default=str, allow_nan=False)
    sys.stdout.write("\n")


def _table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + list(rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def _age(seconds):
    if seconds < -60:   # made under a clock ahead of this one: "-96957650s"
        return "future"
    seconds = max(seconds, 0)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


def _rel(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _brief(value):
    from .compare import shown
    return shown(value)
