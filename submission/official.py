"""The official mlcommons/inference sources, through recipe get-mlperf-inference-src and the engine API."""
import os
import sys

from engine.errors import MlrunError, StepError, UsageError

QUERY = "get mlperf inference src"
ENV = "MLRUN_MLPERF_INFERENCE_SRC"


def sources(settings, path=None, reporter=None):
    """The `inference/` folder of the recipe's entry, built when missing (reused otherwise).

    path: a local copy of the repository; None takes $MLRUN_MLPERF_INFERENCE_SRC, and without it the
    recipe's default (git from GitHub at the pinned commit)."""
    from engine.cache import Cache
    from engine.resolver import resolve
    from engine.runner import Runner
    from .inference_src import INFERENCE, missing
    where = "--inference-src" if path else f"${ENV}"
    path = path or os.environ.get(ENV)
    inputs = {}
    if path:
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(path):
            raise UsageError(f"{where} {path}: no such folder",
                             hint="give a local copy of github.com/mlcommons/inference")
        lacking = missing(path)
        if lacking:  # before anything runs, with every missing file named
            raise UsageError(f"{where} {path} is not a copy of mlcommons/inference that the checker can use: "
                             f"it lacks {', '.join(lacking)}",
                             hint="give the repository's top folder (the one holding tools/ and compliance/)")
        inputs["path"] = path
    plan = resolve(settings.index(), QUERY, inputs=inputs, host_env=os.environ, prober=settings.prober())
    cache = Cache(settings.cache)
    entry = cache.lookup(plan.root)   # the warm path: no run record for a lookup
    if not entry:
        runner = Runner(cache, settings.runs, reporter=reporter, mirror=settings.mirror, stream_root=False)
        try:
            record = runner.run(plan, argv=["mlrun"] + sys.argv[1:])
        except StepError as e:
            raise MlrunError(f"cannot get the official MLPerf inference sources: {e.message}",
                             hint=f"{e.hint}; without internet give a local copy of github.com/mlcommons/inference "
                                  f"with --inference-src DIR (or ${ENV})") from None
        entry = record["steps"][-1]["path"]
    return os.path.join(entry, INFERENCE)
