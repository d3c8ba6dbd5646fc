"""The step of recipe get-mlperf-inference-src: the official mlcommons/inference sources in $MLRUN_ENTRY/inference.

With a local copy (--path DIR) it copies DIR (without .git); otherwise it fetches the pinned commit with
git, checking out only the paths a submission needs, and verifies that HEAD is that commit. Either way it
checks that the files a submission needs are there and records where they came from in source.json.
"""
import json
import os
import shutil
import subprocess
import sys

from engine.digests import VCS_DIRS, content_digest

INFERENCE = "inference"   # a folder name without a dash: `python -m inference.tools...` works from its parent
# What the checker, the accuracy-log truncation and compliance TEST01 need.
REQUIRED = ("tools/submission/submission_checker/main.py", "tools/submission/truncate_accuracy_log.py",
            "tools/submission/log_parser.py", "compliance/TEST01/run_verification.py",
            "compliance/TEST01/verify_accuracy.py", "compliance/TEST01/verify_performance.py",
            "compliance/TEST01/create_accuracy_baseline.sh", "loadgen/mlperf.conf")
SPARSE = ("/tools/submission/", "/compliance/", "/loadgen/mlperf.conf", "/LICENSE.md")
GIT_TIMEOUT = 1800
OFFLINE_HINT = ("without internet, give a local copy of github.com/mlcommons/inference: --path DIR "
                "(for mlrun check submission and mlrun submit: --inference-src DIR or $MLRUN_MLPERF_INFERENCE_SRC)")


class Failure(Exception):
    pass


def missing(folder):
    """The REQUIRED files folder lacks."""
    return [rel for rel in REQUIRED if not os.path.isfile(os.path.join(folder, rel))]


def from_copy(path, dest):
    if not os.path.isdir(path):
        raise Failure(f"--path {path} is not a folder")
    lacking = missing(path)
    if lacking:
        raise Failure(f"{path} is not a copy of mlcommons/inference that a submission can use: it lacks "
                      + ", ".join(lacking))
    digest = content_digest(path)  # what the cache key holds
    try:
        shutil.copytree(path, dest, ignore=lambda folder, names: [n for n in names if n in VCS_DIRS
                                                                 and os.path.samefile(folder, path)])
    except (OSError, shutil.Error) as e:
        raise Failure(f"cannot copy {path}: {e}") from None
    return {"source": "path", "path": path, "tree_sha256": digest}


def git(*args, cwd=None):
    try:
        done = subprocess.run(["git", *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise Failure("git is not installed (needed to fetch the official sources)") from None
    except subprocess.TimeoutExpired:
        raise Failure(f"git {args[0]} did not finish within {GIT_TIMEOUT} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise Failure(f"git {args[0]} failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}")
    return done.stdout.strip()


def from_git(url, commit, dest):
    os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")      # never wait for a password
    os.environ.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1000")   # a stalled transfer ends after a minute
    os.environ.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
    git("init", "-q", dest)
    git("remote", "add", "origin", url, cwd=dest)
    git("sparse-checkout", "set", "--no-cone", *SPARSE, cwd=dest)
    try:  # only the commit, and only the blobs of the checked-out paths (a server without filters sends all)
        git("fetch", "-q", "--depth", "1", "--filter=blob:none", "origin", commit, cwd=dest)
    except Failure as e:
        raise Failure(f"cannot fetch {url} at {commit}: {e}; {OFFLINE_HINT}") from None
    git("checkout", "-q", "FETCH_HEAD", cwd=dest)
    head = git("rev-parse", "HEAD", cwd=dest)
    if head != commit:
        raise Failure(f"{url}: HEAD is {head} after fetching {commit}; give the full 40-hex commit")
    shutil.rmtree(os.path.join(dest, ".git"))   # the entry holds the files; source.json says which commit
    lacking = missing(dest)
    if lacking:
        raise Failure(f"{url} at {commit} lacks " + ", ".join(lacking))
    return {"source": "git", "url": url, "commit": commit, "tree_sha256": content_digest(dest)}


def main():
    dest = os.path.join(os.environ.get("MLRUN_ENTRY", "."), INFERENCE)
    path = os.environ.get("MLRUN_INPUT_PATH")
    try:
        if path:
            record = from_copy(path, dest)
        else:
            record = from_git(os.environ["MLRUN_INPUT_URL"], os.environ["MLRUN_INPUT_COMMIT"], dest)
    except Failure as e:
        print(f"get-mlperf-inference-src: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(os.path.dirname(dest), "source.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"official sources ({record['source']}, tree sha256 {record['tree_sha256'][:16]}) in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
