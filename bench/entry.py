"""How a bench script ends: its figures printed, or one error line and its hint with mlrun's exit code
(a usage error is 2), never a traceback for what the person can fix; Ctrl-C says so and exits 130."""
import sys

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
        code = error.exit_code
    sys.exit(code or 0)
