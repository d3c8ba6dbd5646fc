"""The official mlcommons/inference sources, through recipe get-mlperf-inference-src and the engine API."""
import os
import sys

from engine.errors import MlrunError, StepError, UsageError

QUERY = "get mlperf inference src"
ENV = "MLRUN_MLPERF_INFERENCE_SRC"


def given_copy(path=None):
    """The local copy of mlcommons/inference given (--inference-src, else $MLRUN_MLPERF_INFERENCE_SRC), absolute and
    checked before anything runs (every missing file named), or None."""
    from .inference_src import missing
    where = "--inference-src" if path else f"${ENV}"
    path = path or os.environ.get(ENV)
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise UsageError(f"{where} {path}: no such folder", hint="give a local copy of github.com/mlcommons/inference")
    lacking = missing(path)
    if lacking:
        raise UsageError(f"{where} {path} is not a copy of mlcommons/inference that the checker can use: "
                         f"it lacks {', '.join(lacking)}",
                         hint="give the repository's top folder (the one holding tools/ and compliance/)")
    return path


def sources(settings, path=None, reporter=None):
    """The `inference/` folder of the recipe's entry, built when missing (reused otherwise).

    path: a local copy of the repository; None takes $MLRUN_MLPERF_INFERENCE_SRC, and without it the
    recipe's default (git from GitHub at the pinned commit)."""
    from engine.cache import Cache
    from engine.resolver import resolve
    from engine.runner import Runner
    from .inference_src import INFERENCE
    path = given_copy(path)
    inputs = {"path": path} if path else {}
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
