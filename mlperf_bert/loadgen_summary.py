"""Read LoadGen's mlperf_log_summary.txt into the figures a person looks at first."""
import re

from engine.errors import StepError

# The headline metric per scenario, as LoadGen names it in the summary.
METRIC_KEYS = {
    "Offline": ("Samples per second",),
    "Server": ("Completed samples per second", "Scheduled samples per second"),
    "SingleStream": ("90.0th percentile latency (ns)",),
    "MultiStream": ("99.0th percentile latency (ns)",),
}
PERCENTILE_KEY = re.compile(r"^(\d+)\.(\d+) percentile latency \(ns\)$")
NS_SUFFIX = " (ns)"


def parse(path):
    """{"scenario", "mode", "result", "reasons", "metric": {name: value}, "latency_ms": {"p50": ms, ...}}.

    Latencies are in ms (a metric named "... (ns)" in LoadGen is renamed "... (ms)").
    reasons: for an INVALID result, the checks that said NO and LoadGen's notes below them.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise StepError(f"LoadGen wrote no summary ({error})") from None
    values, failed_checks, notes = {}, [], []
    for line in lines:
        key, sep, value = (part.strip() for part in line.partition(":"))
        if line.startswith(" * "):
            notes.append(line[3:].strip())
        elif line.startswith(" ") and notes and not sep:
            notes[-1] += " " + line.strip()  # a note wrapped onto the next line
        elif sep and value.upper() == "NO":
            failed_checks.append(f"{key}: NO")
        elif sep:
            values.setdefault(key, value)
    scenario, result = values.get("Scenario", ""), values.get("Result is", "")
    metric = {}
    for key in METRIC_KEYS.get(scenario, ()):
        if key in values:
            value = float(values[key])
            metric[key.replace(NS_SUFFIX, " (ms)")] = value / 1e6 if key.endswith(NS_SUFFIX) else value
    latency_ms = {}
    for key, value in values.items():
        if match := PERCENTILE_KEY.match(key):
            decimals = match.group(2).rstrip("0")
            latency_ms[f"p{match.group(1)}{'.' + decimals if decimals else ''}"] = int(value) / 1e6
    return {"scenario": scenario, "mode": values.get("Mode", ""), "result": result,
            "reasons": failed_checks + notes if result != "VALID" else [],
            "metric": metric, "latency_ms": latency_ms}
