"""Server's queue, simulated: Poisson queries served first come, first served by one worker per instance from one
queue, as mlperf_bert.sut serves them. How high a target a model's service times allow on a machine that never
slows down: a Server run says it beside its result (from its own samples' run times), bench.server_ceiling for
any model and layout, bench.steadiness at a machine's measured speeds.

First come, first served is the order to simulate: over OpenVINO int8-bf16 BERT-Base's times on 2 cores it held
the lowest p99 of the orders tried (shortest first, longest first, long samples on both cores; docs/performance.md).
"""
import numpy as np

MIN_SAMPLES = 30   # a run with fewer (a --count test) gives no fit worth simulating
MIN_LENGTHS = 5
MIN_QUERIES = 100
SIMULATED_QUERIES = 20000   # about a 600-s run at 33 QPS; the p99 of 20,000 moves by a few percent between seeds
OVERLOADED = 3   # a p99 over 3 times the bound: a backlog's, no slowdown to match (matched_ceiling)


def server_latencies(arrivals, sizes, service_s, cores):
    """Latency (s) of each query of a Server SUT: one worker per core taking queries first come, first served
    from one queue (as mlperf_bert.sut does). A query of size s is s * service_s of work at the mean speed:
    that long on a steady core (None), on a measured one (bench.steadiness.MeasuredCore) s * service_s / its
    mean run time runs' worth."""
    free = [0.0] * len(cores)
    latencies = np.empty(len(arrivals))
    for n, (arrival, size) in enumerate(zip(arrivals, sizes)):
        worker = min(range(len(free)), key=free.__getitem__)
        start, core = max(arrival, free[worker]), cores[worker]
        free[worker] = start + size * service_s if core is None else core.finish(start, size * service_s / core.mean)
        latencies[n] = free[worker] - arrival
    return latencies


def fit(lengths, seconds):
    """(t(L) as a function, the fit's relative RMS residual): least squares of a + b L + c L^2 (the weight products
    grow with the length L, attention with its square)."""
    coefficients = np.polyfit(lengths, seconds, 2)
    predicted = np.polyval(coefficients, lengths)
    residual = float(np.sqrt(np.mean((predicted - seconds) ** 2)) / np.mean(seconds))
    return (lambda length: np.maximum(np.polyval(coefficients, length), 1e-6)), residual


class Queries:
    """Poisson queries over `seconds`, each a query time drawn at random from `times`, the same draws at every
    rate (unit exponential gaps divided by the rate), so a p99 only grows with the rate and a bisection on it is
    well defined."""

    def __init__(self, times, most_qps, seconds, seed=0):
        rng = np.random.default_rng(seed)
        count = int(most_qps * seconds * 1.2) + 100
        self.gaps = rng.exponential(1.0, count)
        self.times = np.asarray(times, dtype=float)[rng.integers(0, len(times), count)]
        self.seconds = seconds

    def p99(self, qps, workers, cores=None, slower=1.0):
        """The p99 (s) at `qps`, every query's time `slower` times its drawn one."""
        arrivals = np.cumsum(self.gaps / qps)
        kept = arrivals < self.seconds
        kept[:MIN_QUERIES] = True   # a rate too low for `seconds` to hold any: still a p99 of something
        mean = float(self.times.mean())
        latencies = server_latencies(arrivals[kept], self.times[kept] / mean, mean * slower,
                                     cores or [None] * workers)
        return float(np.percentile(latencies, 99))


def highest_qps(queries, capacity, workers, bound_s, cores=None, slower=1.0):
    """The highest target (to 0.1% of `capacity`, the workers' rate flat out) whose p99 holds bound_s; 0.0 if
    none does."""
    step = capacity / 1000
    low, high = 0.0, capacity
    if queries.p99(step, workers, cores, slower) > bound_s:
        return 0.0
    while high - low > step:
        middle = (low + high) / 2
        low, high = (middle, high) if queries.p99(middle, workers, cores, slower) <= bound_s else (low, middle)
    return low


def steady_ceiling(rows, lengths, loaded, workers, bound_s, measured=None, seed=0):
    """What a run's own samples say: {"qps", "capacity_qps", "fit_residual"} for a machine that never slows down,
    its `workers` serving queries drawn from the `loaded` samples (indices into `lengths`) at the times a fit of
    the run's (ran seconds, sample index) rows gives their lengths; None with too few samples or lengths. With
    `measured`, the run's (scheduled QPS, p99 s): "matched" too, matched_ceiling's."""
    ran = np.array([row[1] for row in rows], dtype=float)
    ran_lengths = np.asarray(lengths)[[int(row[2]) for row in rows]]
    if len(ran) < MIN_SAMPLES or len(set(ran_lengths.tolist())) < MIN_LENGTHS:
        return None
    t, residual = fit(ran_lengths, ran)
    times = t(np.asarray(lengths)[loaded])
    capacity = workers / float(times.mean())
    queries = Queries(times, capacity, SIMULATED_QUERIES / capacity, seed)
    ceiling = {"qps": round(highest_qps(queries, capacity, workers, bound_s), 3),
               "capacity_qps": round(capacity, 3), "fit_residual": round(residual, 3)}
    if measured:
        ceiling["matched"] = matched_ceiling(queries, capacity, workers, bound_s, *measured)
    return ceiling


def matched_ceiling(queries, capacity, workers, bound_s, qps, p99_s):
    """The target the queue model says holds bound_s on a machine slowed just enough to give the p99 measured at
    `qps` (p99_s): {"slower": the factor on every run time, "qps"}; None where no factor gives it (the machine
    beat the model), or where the p99 is over 3 times the bound: an overloaded run's, grown with its length
    (4.7 s in a 20-s run at Offline's rate), not a queue's steady state that a slowdown gives.
    A Server run's tail is the machine's dips as well as its queue: the steady ceiling overshot this Xeon's VALID
    target by 25% (42.8 against 31.9 QPS), and matching a run's p99 is what --find-peak aims its next run by."""
    if not qps or not p99_s or qps <= 0 or p99_s <= 0 or p99_s > OVERLOADED * bound_s:
        return None
    low, high = 0.5, 0.98 * capacity / qps   # past `high` the queue grows without end at this rate
    if high <= low or queries.p99(qps, workers, slower=low) > p99_s or queries.p99(qps, workers, slower=high) < p99_s:
        return None
    while high / low > 1.002:
        middle = (low * high) ** 0.5
        low, high = (middle, high) if queries.p99(qps, workers, slower=middle) <= p99_s else (low, middle)
    return {"slower": round(low, 3), "qps": round(highest_qps(queries, capacity / low, workers, bound_s, slower=low), 3)}
