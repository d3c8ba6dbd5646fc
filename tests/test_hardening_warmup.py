"""DeepSparse warm-up (issue 8): engines warm up until their call time settles, and the warm-up
estimate that becomes LoadGen's target_qps uses settled calls only.

Fake engines whose first 8 calls are slow, on a fake clock (nothing sleeps, no deepsparse needed).
"""
import time

import numpy as np
import onnx
import pytest

from mlperf_bert import harness, random_model, warmup
from mlperf_bert.ds_backend import SLOW_START_CALLS, DeepSparseBackend

SLOW_CALLS, SLOW_S, FAST_S = 8, 0.27, 0.004


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


class SlowStartEngine:
    """Its first SLOW_CALLS calls take SLOW_S, later ones `later(n)` seconds, on the fake clock."""

    def __init__(self, clock, length, batch, later=lambda n: FAST_S):
        self.clock, self.shape, self.calls, self.later = clock, (batch, length), 0, later

    def run(self, feeds):
        self.calls += 1
        self.clock.now += SLOW_S if self.calls <= SLOW_CALLS else self.later(self.calls)
        return [np.zeros(self.shape, np.float32), np.zeros(self.shape, np.float32)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("warmup") / "dynamic.onnx"
    onnx.save(random_model.build(layers=1, hidden=64, heads=2, seq="dynamic"), path)
    return str(path)


def backend_with(model, clock, later=lambda n: FAST_S):
    engines = {}

    def compile_fn(model_path, length, batch):
        engines[length, batch] = SlowStartEngine(clock, length, batch, later)
        return engines[length, batch]
    return DeepSparseBackend(model, (128, 384), batch_sizes=(1, 4), compile_fn=compile_fn), engines


def test_each_engine_warms_up_until_its_calls_settle(model, clock):
    backend, engines = backend_with(model, clock)
    backend.warm_up()
    assert len(engines) == 4
    for shape, engine in engines.items():
        # Past the slow start, and then a window of settled calls; not more.
        assert engine.calls == SLOW_START_CALLS + warmup.WINDOW, shape
    engines_facts = backend.describe()["engines"]
    assert [(e["warmup_calls"], e["warmup_settled"], e["call_ms"]) for e in engines_facts] == \
        [(SLOW_START_CALLS + warmup.WINDOW, True, FAST_S * 1000)] * 4


def test_a_slow_start_longer_than_expected_is_waited_out(model, clock):
    """Slow calls past SLOW_START_CALLS are not taken as settled beside fast ones."""
    longer = SLOW_START_CALLS + 3
    backend, engines = backend_with(model, clock, later=lambda n: SLOW_S if n <= longer else FAST_S)
    settlings = backend.warm_up()
    assert all(s.settled and s.seconds == pytest.approx(FAST_S) for s in settlings.values())
    assert all(e.calls == longer + warmup.WINDOW for e in engines.values())


def test_an_engine_that_never_settles_stops_at_the_bound(model, clock):
    backend, engines = backend_with(model, clock, later=lambda n: 0.001 if n % 2 else 0.3)
    settlings = backend.warm_up()
    assert all(not s.settled and len(s.times) == warmup.MAX_CALLS for s in settlings.values())
    assert all(e.calls == warmup.MAX_CALLS for e in engines.values())


class SlowStartInference:
    """QaInference's contract for the warm-up: responses(indices) runs each sample once."""

    def __init__(self, clock):
        self.clock, self.samples = clock, 0

    def responses(self, indices):
        for position, _ in enumerate(indices):
            self.samples += 1
            self.clock.now += SLOW_S if self.samples <= SLOW_CALLS else FAST_S
            yield [(position, np.zeros((384, 2), np.float32))]


def test_the_warm_up_estimate_uses_settled_calls_only(clock):
    inference = SlowStartInference(clock)
    qps = harness._warm_up(inference, total=100)
    # Before: one timed pass of 4 samples over still-slow calls gave ~3.7 samples/s for a real 250.
    assert qps == pytest.approx(1 / FAST_S)
    passes = (inference.samples - harness.WARMUP_SAMPLES) // harness.WARMUP_SAMPLES
    assert passes <= harness.WARMUP_MAX_PASSES


@pytest.mark.parametrize("times, settled", [
    ([0.27] * 3 + [0.003, 0.004, 0.002, 0.005, 0.003], True),     # 2-5 ms after the slow start
    ([0.27, 0.27, 0.27, 0.003, 0.003, 0.003, 0.003], False),       # a slow call still in the window
    ([0.0001, 0.0004, 0.0002, 0.0009, 0.0003], True),              # sub-millisecond jitter is settled
    ([1.0, 1.4, 1.0, 1.0, 3.5], False),
    ([0.27, 0.27, 0.27, 0.27, 0.004], False),
    ([0.003] * 4, False),                                           # fewer calls than the window
])
def test_is_settled(times, settled):
    assert warmup.is_settled(times) is settled
