"""mlrun's own stdin, stdout and stderr, made safe for the ways people start it.

Closed at start (`<&-`, `>&-`): Python has None there, and every read, isatty and print failed. A reader
that goes away (`mlrun run QUERY | head -1`): each later write raised BrokenPipeError, which stopped the
build in the middle (nothing published, the run an error) while mlrun said nothing and exited 0.
"""
import io
import os
import sys


def closed_to_devnull():
    """Closed reads as empty and writes go nowhere, as /dev/null does; a step started then gets /dev/null too,
    not a descriptor some other file took."""
    global lost
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))
            os.dup2(getattr(sys, name).fileno(), {"stdin": 0, "stdout": 1, "stderr": 2}[name])
            if name == "stdout":   # as a write that failed: a verb that only prints has failed (it exited 0)
                lost = "standard output is closed"
                sys.stderr.write("mlrun: its standard output is closed: what it prints goes nowhere\n")


class _Outlived(io.FileIO):
    """An output descriptor whose reader may go: from then on what is written goes to /dev/null and the work goes
    on (its steps' logs keep their output); the exit status stays the work's own. So for any write error: a
    terminal hung up (EIO), a redirect onto a full disk (ENOSPC), a descriptor that is not writable (EBADF) made
    a finished benchmark's run an error, its results unrecorded; losing the console loses only the console."""

    def write(self, b):
        global lost
        try:
            return super().write(b)
        except OSError as e:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.fileno())
            os.close(null)
            if not isinstance(e, BrokenPipeError):   # a reader that went (| head) took what it wanted: no loss
                lost = lost or e.strerror or str(e)
                if self.fileno() != 2:   # say it once where it may still show
                    try:
                        os.write(2, f"mlrun: cannot write to its output ({e.strerror}): the rest of it goes nowhere"
                                    f"{going_on}\n".encode())
                    except OSError:
                        pass
            return memoryview(b).nbytes


lost = None   # why mlrun's output went nowhere, once it did: a verb that only prints has then failed (cli)
going_on = ""   # what the note adds for a verb that does work: "; the run goes on ..." (set by cli)


class outliving_readers:
    """Within it, sys.stdout and sys.stderr (the process's own, not a test's capture) outlive their readers."""

    def __enter__(self):
        self.saved = {}
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not getattr(sys, f"__{name}__"):
                continue   # replaced by a caller (a test's capture, a devnull for a closed one): theirs to keep
            try:
                fd = stream.fileno()
            except (OSError, ValueError, io.UnsupportedOperation):
                continue
            stream.flush()
            self.saved[name] = stream
            # a console that cannot show a character (PYTHONIOENCODING=ascii, a latin-1 terminal) gets it escaped:
            # a run with a non-ASCII path ended "unexpected UnicodeEncodeError" after it had succeeded.
            # PYTHONUNBUFFERED (or -u) makes Python's own stream write through, not line-buffered: this one was then
            # held in a buffer (on a terminal, `rm` asked its question above the list of what it would remove)
            setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(_Outlived(fd, "w", closefd=False)),
                                                encoding=stream.encoding, errors="backslashreplace",
                                                line_buffering=stream.line_buffering or stream.write_through
                                                or name == "stderr"))
        return self

    def __exit__(self, *exc):
        for name, stream in self.saved.items():
            try:
                getattr(sys, name).flush()
            except (OSError, ValueError):
                pass
            setattr(sys, name, stream)
        return False
