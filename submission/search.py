"""Find the LoadGen settings that make a full performance run VALID, from one short measurement run.

LoadGen plans a run's length from the expected speed the user states, and a run shorter than
min_duration is INVALID:
- Offline issues 1.1 x target_qps x min_duration samples in one query: a target below the real speed makes
  the run end early. The target is the measured QPS x MARGIN (an overestimate: the run lasts longer).
- SingleStream generates queries for 2 x min_duration at target_latency each (and stops issuing at
  min_duration): a target over twice the real mean latency makes the run end early. The target is the
  measured mean latency / MARGIN, in ms to the microsecond (LoadGen reads it as a real number).
- Server must also keep p99 latency under its bound: the measurement run is the harness's --find-peak
  (mlperf_bert.tuning.find_server_peak: the highest target QPS VALID over short runs that respect LoadGen's
  early stopping, then a check run), and the target is the one it found. If the full run is still INVALID,
  the retry steps the target down by SERVER_STEP.
MARGIN 1.25: the full run stays VALID when it is up to 25% faster than the short measurement (other
samples, a warmer cache), at the cost of at most a quarter more time.
"""
import json
import os
import re

from engine.errors import StepError

MARGIN = 1.25
SERVER_STEP = 0.9                   # a Server retry: 10% below the target whose full run was INVALID
SEARCH = {"count": 256, "min_duration": 10_000}   # the measurement run: 256 samples loaded, 10 s at least
SEARCH_SHORT = {"count": 32, "min_duration": 500}
SEED = re.compile(r'"key": "effective_([a-z_]+_rng_seed)", "value": (\d+)')
SUMMARY_VALUE = re.compile(r"^\s*([^:]+?)\s*:\s*(\S+)\s*$")


def summary_values(run_folder):
    """{key: value} of the LoadGen summary in a run folder."""
    values = {}
    with open(os.path.join(run_folder, "mlperf_log_summary.txt")) as f:
        for line in f:
            m = SUMMARY_VALUE.match(line)
            if m:
                values.setdefault(m.group(1), m.group(2))
    return values


def loadgen_seeds(run_folder):
    """{name: value} of the RNG seeds LoadGen used (its detail log): the round's, when LoadGen is pinned."""
    seeds = {}
    with open(os.path.join(run_folder, "mlperf_log_detail.txt")) as f:
        for m in SEED.finditer(f.read()):
            seeds[m.group(1)] = int(m.group(2))
    return seeds


def measurement_inputs(scenario, short):
    inputs = {"mode": "performance", "scenario": scenario, **(SEARCH_SHORT if short else SEARCH)}
    if scenario == "Server":
        inputs["find_peak"] = True
    return inputs


def settings_from(scenario, run_folder, run_id):
    """{"inputs": app inputs for the full run, "user_conf": extra lines or [], "figures", "how"}."""
    values = summary_values(run_folder)
    summary = json.load(open(os.path.join(run_folder, "summary.json")))
    if scenario == "Server":
        peak = summary.get("find_peak")
        if not peak or not peak.get("qps"):
            raise StepError(f"the Server measurement run {run_id} recorded no --find-peak result",
                            hint=f"see {os.path.join(run_folder, 'summary.json')}")
        # the target its full-length checks stepped down to when the search's own was not VALID at full length:
        # the full run started at the search's, which the checks had shown INVALID
        target = round(peak.get("checked_qps") or peak["qps"], 3)
        offline = peak.get("offline_samples_per_second")
        found = {"inputs": {"target_qps": target}, "user_conf": [],
                 "figures": {"target_qps": target, "offline_samples_per_second": offline,
                             "short_runs": len(peak.get("trials", [])), "checked_valid": peak.get("checked_valid")}}
        searched = round(peak.get("found") or peak["qps"], 3)   # the search's own, before its checks stepped down
        how = (f"--find-peak in a Server run ({run_id}): the highest target VALID over {len(peak.get('trials', []))} "
               f"short runs that respect LoadGen's early stopping is {searched} QPS"
               + (f", its full-length checks stepped down to {target} QPS" if target != searched else "")
               + (f" ({target / offline:.1%} of Offline {offline:.3f} samples/s)" if offline else "")
               + f"; its check run {'was VALID' if peak.get('checked_valid') else 'was not VALID'}"
               + (f" ({peak['note']})" if peak.get("note") else ""))
    elif scenario == "Offline":
        qps = float(values["Samples per second"])
        target = round(qps * MARGIN, 3)
        found = {"inputs": {"target_qps": target}, "user_conf": [],
                 "figures": {"measured_qps": qps, "target_qps": target}}
        how = (f"a short {scenario} performance run ({run_id}) measured {qps:.3f} samples/s; target_qps = "
               f"{qps:.3f} x {MARGIN} = {target} (LoadGen issues 1.1 x target_qps x min_duration samples: an "
               f"overestimate keeps the run at least min_duration long)")
    else:
        mean_ms = int(values["Mean latency (ns)"]) / 1e6
        target = round(mean_ms / MARGIN, 3)
        found = {"inputs": {"target_latency": target}, "user_conf": [],
                 "figures": {"measured_mean_latency_ms": mean_ms, "target_latency_ms": target}}
        how = (f"a short {scenario} performance run ({run_id}) measured a mean latency of {mean_ms:.3f} ms; "
               f"target_latency = {mean_ms:.3f} / {MARGIN} = {target} ms (LoadGen generates queries for twice "
               f"min_duration at target_latency each and stops at min_duration: an underestimate only generates "
               f"more)")
    found["how"] = how
    found["figures"]["warmup_qps"] = summary.get("warmup_qps")
    return found


def retry_settings(scenario, found, run_folder, run_id):
    """The settings of the one retry after an INVALID full run: the full run is the better measurement
    (Offline, SingleStream); a Server target steps down by SERVER_STEP (its own figures say nothing of a
    lower load's latency)."""
    if scenario != "Server":
        return settings_from(scenario, run_folder, run_id)
    asked = found["inputs"]["target_qps"]
    target = round(asked * SERVER_STEP, 3)
    completed = _number(summary_values(run_folder).get("Completed samples per second"))
    how = f"target_qps = {asked} x {SERVER_STEP} = {target}"
    if completed and completed < target:   # 0.9 x a rate the machine did not keep is still over it
        target = round(completed, 3)
        how = f"target_qps = the {target} samples/s it completed (under {asked} x {SERVER_STEP})"
    return {"inputs": {"target_qps": target}, "user_conf": [],
            "figures": dict(found.get("figures", {}), target_qps=target),
            "how": f"the full Server run {run_id} at {asked} QPS was INVALID: {how}"}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
