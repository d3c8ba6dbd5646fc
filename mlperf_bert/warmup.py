"""Warm up until latency settles.

A fresh engine's first calls are slow (DeepSparse: ~8 calls of ~270 ms, then 2-5 ms), so a rate
measured over a fixed number of first calls is wrong by up to two orders of magnitude, and it
becomes LoadGen's target. Calls repeat until the last `window` of them are within `ratio` of
each other, bounded by a count and a time; estimates use those settled calls only. A slow
start of constant calls looks settled too: `skip` leaves a known number of first calls out.
"""
import statistics
import time
from typing import NamedTuple

WINDOW = 5
RATIO = 3.0          # slowest / fastest call of the window: tells 270 ms from 3 ms, not 2 ms from 5 ms
FLOOR_S = 0.001      # sub-millisecond calls jitter by more than any fraction of themselves
MAX_CALLS = 60
MAX_SECONDS = 20.0


class Settling(NamedTuple):
    times: list        # seconds of every call, in order
    settled: bool      # False: stopped by max_calls or max_seconds first
    window: int

    @property
    def seconds(self):
        """The settled time of one call: the median of the last window (of what there is, if unsettled)."""
        return statistics.median(self.times[-self.window:])


def is_settled(times, window=WINDOW, ratio=RATIO):
    if len(times) < window:
        return False
    last = times[-window:]
    return max(last) <= ratio * min(last) or max(last) - min(last) <= FLOOR_S


def until_settled(call, window=WINDOW, skip=0, ratio=RATIO, max_calls=MAX_CALLS, max_seconds=MAX_SECONDS):
    """Call `call()` until the times of its calls after the first `skip` settle (or a bound is reached)."""
    clock = time.perf_counter   # looked up now, so a test can substitute the clock
    times, started = [], clock()
    while True:
        before = clock()
        call()
        times.append(clock() - before)
        if is_settled(times[skip:], window, ratio):
            return Settling(times, True, window)
        if len(times) >= max_calls or clock() - started >= max_seconds:
            return Settling(times, False, window)
