"""Argument types the bench scripts share, without their heavy imports (numpy, onnxruntime): a count or a bound
said at once, never a traceback after the measuring."""
import argparse


def between(low, high=None):
    """argparse type: an int from low to high (a count of 0 divided by zero, a negative one failed in numpy, one
    of 10^8 asked numpy for 286 GB: each a traceback)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, not {value}" if high is not None
                                             else f"must be at least {low}, not {value}")
        return value
    return parse
