"""The submission verbs of the command line (engine/cli.py parses, these act)."""
import json
import os
import sys

from engine import usage
from engine.words import plural
from engine.errors import ResolutionError, UsageError

from . import checker, official


def cmd_check(args, extras, settings):
    """mlrun check submission DIR: the official checker's verdict, its errors and the results table."""
    checker.need_folder(args.dir)   # before the checker's sources are fetched
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):   # was 'cannot use X: File exists'
        raise UsageError(f"--out {args.out} is a file, not a folder", hint="--out names the folder for the checker's "
                                                                           "log, table and JSON")
    official.given_copy(args.inference_src)   # every option said at once, not after the tree was mended
    _tree_below(args.dir)
    src = official.sources(settings, path=args.inference_src)
    result = checker.check(src, args.dir, version=args.version, short=args.short, out_dir=args.out)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(report(result))
    return 0 if result.ok else 1


def _tree_below(path):
    """A folder that holds no division folder but one below does (`mlrun submit -o DIR` writes DIR/tree): the
    folder meant, named before the sources are fetched (the checker would find no results in it)."""
    divisions = ("closed", "open", "network")
    if any(os.path.isdir(os.path.join(path, d)) for d in divisions):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.basename(os.path.abspath(path)) in divisions:   # the checker wants the folder above it
        raise UsageError(f"{os.path.abspath(path)} is a division folder; the tree is the folder holding it",
                         hint=f"mlrun check submission {parent}")
    try:
        # tree/ first: submit's accuracy-logs/ mirrors the tree's folders but is its logs' backup, no tree
        below = sorted((e.path for e in os.scandir(path) if e.is_dir()
                        and any(os.path.isdir(os.path.join(e.path, d)) for d in divisions)),
                       key=lambda p: (os.path.basename(p) != "tree", p))
    except OSError:   # unreadable: the checker says so in its own words
        return
    if below:
        raise UsageError(f"{os.path.abspath(path)} holds no closed/, open/ or network/ folder; "
                         f"{', '.join(below)} {'does' if len(below) == 1 else 'do'}",
                         hint=f"mlrun check submission {below[0]}")
    # nothing to check: said before the checker's sources are fetched (an empty folder went to the network)
    raise UsageError(f"{os.path.abspath(path)} holds no submission: no closed/, open/ or network/ folder in it or "
                     "one level below", hint="give the folder `mlrun submit -o DIR` wrote (DIR/tree), or the one "
                                             "holding your division folders")


def report(result):
    """The verdict, the complaints and the table, as printed (and saved in table.txt's folder)."""
    lines = [f"official submission checker ({result.version}): {result.summary or 'no summary line'}"
             + (" (its own line; what it misses, listed below, fails the tree)"
                if result.errors and "looks OK" in (result.summary or "") else "")]
    if result.errors:
        lines.append(f"errors ({len(result.errors)}):")
        lines += ["  - " + e.replace("\n", "\n    ") for e in result.errors]
    if result.short_run_errors:
        why = ("expected in a --short rehearsal" if result.short else
               "errors of this tree: a full-length run has none of these; --short lists them apart")
        lines.append(f"short-run complaints ({len(result.short_run_errors)}, {why}):")
        lines += ["  - " + e.replace("\n", "\n    ") for e in result.short_run_errors]
    scores = [w for w in result.warnings if checker.ACCURACY_NOT_MET.search(w)]
    if scores:   # open division: accepted, but a reader must see it (the closed division would refuse it)
        lines.append(f"accuracy below the benchmark's target ({len(scores)}; the open division accepts it, "
                     "the closed would not):")
        lines += ["  - " + w for w in scores]
    if len(result.warnings) > len(scores):
        lines.append(f"warnings: {len(result.warnings) - len(scores)}" + (" more" if scores else "") + " (in the log)")
    lines += ["", checker.format_table(result.table), "",
              f"saved in {result.out_dir}: checker.log, summary.csv, table.txt, check.json"]
    if not result.ok:   # without --short the short-run complaints fail it too: counted ("1 error" beside 6 more)
        count = len(result.errors) + (0 if result.short else len(result.short_run_errors))
        lines.append(f"verdict: FAILED: {plural(count, 'error')} (listed above)" if count
                     else "verdict: FAILED: the checker found errors")
    elif result.short_run_errors:
        lines.append("verdict: OK as a short rehearsal only: this tree cannot be submitted "
                     "(the short runs break the rules listed above)")
    elif result.short:
        lines.append("verdict: OK (no short-run complaint either)")
    else:
        lines.append("verdict: OK: the official checker accepts this tree")
    return "\n".join(lines)


SUBMIT_HELP = """mlrun submit QUERY --submitter=NAME --division=open|closed [--system=FILE.yaml]
    [--scenarios=SingleStream,Offline] [--benchmarks=bert-99[,bert-99.9]] [--short] [--rerun[=RUNS] | --rerun-busy] [-o DIR]
    [--inference-src DIR] [--replace] [any app input, --dep.* or --env.* as for a run]
    [--SCENARIO.INPUT=VALUE: an app input for one scenario's runs (--Offline.instances=2), over the one for all]
mlrun plan submit QUERY ...   the same words: every run the submission needs, done or to run; no benchmark runs"""


# Flags and app inputs whose value is a path: the tree's READMEs give the command to run from the checkout, so
# each is written absolute (a relative --system=mysys.yaml, given elsewhere, was not found there).
PATH_FLAGS = ("--system", "-o", "--output", "--inference-src", "--cache", "--runs", "--mirror", "--recipes",
              "--model", "--user_conf", "--audit_config", "--questions")


def _from_anywhere(argv):
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        flag, eq, value = word.partition("=")
        scope, dot, name = flag[2:].partition(".")   # --Offline.user_conf=FILE: a path as --user_conf's is
        if (f"--{name}" if dot and scope.lower() in ("singlestream", "multistream", "offline", "server") else flag) \
                in PATH_FLAGS and eq and value and ":" not in value.split("/")[0]:   # zoo:, hf: are no paths
            word = f"{flag}={os.path.abspath(os.path.expanduser(value))}"
        elif (f"--{name}" if dot and scope.lower() in ("singlestream", "multistream", "offline", "server") else word) \
                in PATH_FLAGS and not eq and i + 1 < len(argv) and ":" not in argv[i + 1].split("/")[0]:
            out.append(word)
            i += 1
            word = os.path.abspath(os.path.expanduser(argv[i]))
        out.append(word)
        i += 1
    return out


def _without_reruns(argv, query):
    """The command less --rerun[=RUNS] and --rerun-busy: the tree's README gives it as the command that makes the
    submission again, and pasted with --rerun=Offline it ran every Offline run anew (new measurements)."""
    out, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in ("--rerun", "--rerun-busy") or word.startswith("--rerun="):
            # `--rerun Offline`: its value is the next word (argparse's nargs="?")
            skip = word == "--rerun" and i + 1 < len(argv) and not argv[i + 1].startswith("-") and \
                argv[i + 1] != query
            continue
        out.append(word)
    return out


def cmd_submit(args, extras, settings, plan_only=False):
    from . import submit
    opts, inputs, deps, env = submit.parse(args.query, extras, "plan submit" if plan_only else "submit")
    if not plan_only:
        from engine.secrets import scrub_argv
        given = any(w in ("-o", "--output") or w.startswith(("-o=", "--output=")) for w in sys.argv[1:])
        # the places it ran with: pasted in another checkout, that one's cache/ and runs/ made every run anew
        from .official import ENV
        given_src = os.environ.get(ENV)   # from the environment: pasted in a shell without it, it went to GitHub
        places = [f"{flag}={path}" for flag, path in (("--cache", settings.cache), ("--runs", settings.runs),
                                                      ("--mirror", settings.mirror),
                                                      ("--inference-src", given_src and os.path.abspath(given_src)))
                  if path and not any(w == flag or w.startswith(flag + "=") for w in sys.argv[1:])]
        # -o: its state is where it resumes
        opts.argv = scrub_argv(["bin/mlrun"] + _from_anywhere(_without_reruns(sys.argv[1:], args.query))
                               + ([] if given else ["-o", os.path.abspath(opts.output)]) + places)
        if opts.system:   # the copy submit keeps beside the tree: the person's own file may move or change
            kept = os.path.join(os.path.abspath(opts.output), "system.yaml")
            opts.argv = [f"--system={kept}" if w.startswith("--system=") else w for w in opts.argv]
            opts.argv = [kept if i and opts.argv[i - 1] == "--system" else w for i, w in enumerate(opts.argv)]
    try:
        return submit.run_submission(opts, inputs, deps, env, settings, plan_only=plan_only,
                                     verbose=getattr(args, "verbose", False))
    except ResolutionError as e:   # --sytem: taken for an app input; near a submission option, say which
        raise usage.option_typo_hint(e, usage.options_of(submit.parser())) from None
    except KeyboardInterrupt as e:
        if opts.rerun or opts.rerun_busy or opts.rerun_names:   # "the same command" would start them again
            flag = "--rerun" if opts.rerun else "--rerun-busy" if opts.rerun_busy else "--rerun=..."
            e.resume = (f"the runs redone so far are kept: the same command without {flag} goes on from where it "
                        f"stopped (it reuses the runs not yet redone); with {flag} it starts again")
        raise
