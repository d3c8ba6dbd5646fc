"""OS errors said as the person can act on them, beyond errors.from_os_error: a copy's gathered failures, and
limits of the process (open files, memory).

Its own module, not engine/errors.py: the BERT recipes hash errors.py as a source, so a hint's words there
would give every feature and model entry another key.
"""
import errno
import os
import shutil

from .errors import from_os_error, os_errors

LIMIT_HINTS = {errno.EMFILE: "this process may open too few files (ulimit -n): raise the limit and run again",
               errno.ENFILE: "the system has too many files open: run again when fewer are",
               errno.ENOMEM: "out of memory: free some, or raise the limit (ulimit -v, the container's)"}


def explain(e, operation, path=None):
    """The MlrunError (exit 2) for an OSError: the operation, the path, the reason and a hint."""
    failures = e.args[0] if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) else None
    if failures and all(isinstance(f, tuple) and len(f) == 3 for f in failures):
        # a copy across disks (shutil.move, copytree) gathers each file's failure: one line of 11 KB was printed
        _, dst, why = failures[0]
        code = next((c for c in (errno.ENOSPC, errno.EROFS, errno.EACCES) if f"[Errno {c}]" in str(why)), None)
        more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
        return explain(OSError(code, os.strerror(code) if code else str(why)), operation, f"{dst}{more}")
    error = from_os_error(e, operation, path)
    target = path if isinstance(path, str) else e.filename if isinstance(e.filename, str) else None
    if e.errno == errno.EACCES and target and os.path.isfile(target) and not os.access(target, os.R_OK):
        # a file to read (a recipe, a user.conf): moving --cache/--runs, as the hint for writing says, changes nothing
        error.hint = "no permission to read that file: its owner may let you (chmod a+r), or use a copy you may read"
    if e.errno in (errno.EACCES, errno.EPERM) and target and os.path.lexists(target):
        # a teammate's lock file, folder or entry: whose it is, to ask (the hint said only "point --cache elsewhere")
        import pwd
        try:
            uid = os.lstat(target).st_uid
            who = pwd.getpwuid(uid).pw_name
        except KeyError:
            who = str(uid)
        except OSError:
            who = None
        if who is not None and uid != os.geteuid():
            error.message += f" (owner: {who})"
            error.hint = (f"ask {who} to let the group in (chmod g+rwX), or point --cache/--runs at a folder of "
                          "your own")
    if error.hint is None and e.errno in LIMIT_HINTS:
        error.hint = LIMIT_HINTS[e.errno]
    return error


class output_errors(os_errors):
    """`with output_errors(operation, path):` as errors.os_errors, for a file the person named with -o: its hint
    speaks of -o (errors.from_os_error's read-only hint told them to move --cache/--runs)."""

    def __init__(self, operation, path, flag="-o"):
        super().__init__(operation, path)
        self.flag = flag

    def __exit__(self, kind, e, traceback):
        read = e.filename if isinstance(e, OSError) and isinstance(e.filename, str) else None
        if read and self.path and not os.path.abspath(read).startswith(os.path.abspath(self.path)):
            # a file read on the way (an entry's file a teammate made private): "cannot write the bundle ...: give
            # -o a path you may write" blamed the output
            raise explain(e, "cannot read", read) from None
        if isinstance(e, OSError):
            error = explain(e, self.operation, self.path)
            if e.errno in (errno.EROFS, errno.EACCES, errno.ENOSPC):
                error.hint = (f"give {self.flag} a path on a disk with room" if e.errno == errno.ENOSPC else
                              f"give {self.flag} a path you may write")
            raise error from None
