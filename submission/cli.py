"""The submission verbs, called by engine/cli.py (which only parses the verb and dispatches here)."""
import sys

SUBMIT_HELP = """mlrun submit QUERY --submitter=NAME --division=open|closed [--system=FILE.yaml]
    [--scenarios=SingleStream,Offline] [--benchmarks=bert-99[,bert-99.9]] [--short] [--rerun] [-o DIR]
    [--inference-src DIR] [any app input, --dep.* or --env.* as for a run]
mlrun plan submit QUERY ...   the same words: every run the submission needs, done or to run; nothing runs"""


def cmd_submit(args, extras, settings, plan_only=False):
    from . import submit
    opts, inputs, deps, env = submit.parse(args.query, extras)
    if not plan_only:
        from engine.secrets import scrub_argv
        sub_argv = ["bin/mlrun"] + sys.argv[1:]
        opts.argv = scrub_argv(sub_argv)
    return submit.run_submission(opts, inputs, deps, env, settings, plan_only=plan_only,
                                 verbose=getattr(args, "verbose", False))
