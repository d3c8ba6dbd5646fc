"""A progress bar for a LoadGen test (samples done, elapsed, estimated time left), only for a person watching.

mlrun pipes a step's output into the step's log, so a step cannot tell from its own stdout that a person
is watching. When mlrun's stderr is a terminal it names that terminal in MLRUN_PROGRESS, and the bar is
drawn there: on the screen, never in a log. Run by hand, the harness draws on its stderr when that is a
terminal. Otherwise (CI, `--json`, a pipe, a batch job) there is no bar; a test that runs long says where it
is once a minute on the harness's output instead (into the step's log, and live where mlrun shows the step).
"""
import math
import os
import sys
import threading
import time

ENV = "MLRUN_PROGRESS"
POLL_S = 0.5
LOG_EVERY_S = 60   # no bar: a line this often (a 600-s Server run: ten lines in its log)


def stream():
    """The open file a bar may be drawn on, or None: no bar."""
    target = os.environ.get(ENV)
    if target:
        try:
            return open(target, "w")
        except OSError:
            return None
    return sys.stderr if sys.stderr.isatty() else None


def expected_samples(settings, scenario, accuracy, total):
    """fn(done, elapsed_s) -> the samples LoadGen will issue, by its rules for these (FromConfig'd) settings.

    Accuracy mode issues every loaded sample once; Offline one query of max(min_query_count,
    1.1 x min_duration x expected QPS) samples; Server min_duration x target QPS queries (at least
    min_query_count); SingleStream and MultiStream stop once both min_query_count queries and min_duration
    have passed, so their total follows the rate seen so far.
    """
    if accuracy:
        return lambda done, elapsed: total
    min_s, min_queries = settings.min_duration_ms / 1000, settings.min_query_count
    if scenario == "Offline":
        fixed = max(min_queries, int(1.1 * min_s * settings.offline_expected_qps))
        return lambda done, elapsed: fixed
    if scenario == "Server":
        fixed = max(min_queries, math.ceil(min_s * settings.server_target_qps))
        return lambda done, elapsed: fixed
    per_query = settings.multi_stream_samples_per_query if scenario == "MultiStream" else 1

    def by_rate(done, elapsed):
        queries = min_queries
        if done and elapsed > 0:
            queries = max(queries, math.ceil(done / per_query / elapsed * min_s))
        return per_query * queries
    return by_rate


class Bar:
    """A tqdm bar of done_fn() samples against total_fn(done, elapsed), redrawn every POLL_S by a thread
    while the block runs; when `out` is None, a line every LOG_EVERY_S on `log` instead (if given)."""

    def __init__(self, out, done_fn, total_fn, description, log=None, leave=True, unit="sample"):
        self.out, self._done, self._total, self._description = out, done_fn, total_fn, description
        self.log, self._leave, self._unit = log, leave, unit   # leave: the finished bar stays on the screen
        self._stop = threading.Event()
        self._thread = None
        self._bar = None

    def __enter__(self):
        try:
            from tqdm import tqdm
        except ImportError:  # a venv without it (a backend recipe of its own): the run goes on, without a bar
            self._close_out()
            self.out = None
        if self.out is not None:
            self._bar = tqdm(total=self._total(0, 0), desc=self._description, unit=self._unit, file=self.out,
                             dynamic_ncols=True, mininterval=POLL_S, smoothing=0.1, leave=self._leave)
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._poll, name="progress", daemon=True)
            self._thread.start()
        elif self.log is not None:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._log_lines, name="progress", daemon=True)
            self._thread.start()
        return self

    def _log_lines(self):
        while not self._stop.wait(LOG_EVERY_S):
            done, elapsed = self._done(), time.monotonic() - self._started
            total = max(done, self._total(done, elapsed))
            left = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
            print(f"{self._description}: {done:,} of {total:,} {self._unit}s after {elapsed:.0f} s{left}",
                  file=self.log, flush=True)

    def _update(self):
        done = self._done()
        total = max(done, self._total(done, time.monotonic() - self._started))
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def _poll(self):
        while not self._stop.wait(POLL_S):
            self._update()

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self._bar is not None:
            done = self._done()
            self._bar.total = done  # the test is over: what was done is all there was
            self._bar.update(done - self._bar.n)
            self._bar.close()
            self._close_out()
        return False

    def _close_out(self):
        if self.out not in (None, sys.stderr):
            self.out.close()
