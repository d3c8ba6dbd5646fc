"""How a bench script ends: its figures printed, or one error line and its hint with mlrun's exit code
(a usage error is 2, as is this machine refusing the request: a step's 78 is mlrun's 2), never a traceback for
what the person can fix; Ctrl-C says so and exits 130."""
import contextlib
import signal
import sys
import threading

from engine.errors import MlrunError


def run(main):
    try:
        code = main()
    except KeyboardInterrupt:   # the figures so far are printed; what was cut short is said, not traced
        print("interrupted", file=sys.stderr)
        code = 130
    except MlrunError as error:
        print(f"error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        # sysexits' EX_CONFIG (bf16 asked of a CPU without it): mlrun's runner makes it 2, and so does a bench
        code = 2 if error.exit_code == 78 else error.exit_code
    sys.exit(code or 0)


@contextlib.contextmanager
def uninterrupted():
    """A clean-up Ctrl-C cannot cut short (a Ray cluster's stop, a scratch folder's removal: a Ctrl-C there left
    the cluster running, the folder half removed); a Ctrl-C meanwhile is raised once it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
