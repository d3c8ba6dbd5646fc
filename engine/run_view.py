"""How a run record reads for a person (`mlrun runs show RUN`): what was asked, how it ran, each step."""
import os
import time

from . import records


def as_json(record):
    """`runs show RUN --json`: the record with its status as the text says it (a dead run's record says "running":
    a poller waited), and an imported failed run's logs where they came."""
    steps, ended = ([dict(s, log=failed_log(record, s)) if s.get("log") else s
                     for s in record.get(field) or []] for field in ("steps", "failed_meanwhile"))
    return {**{k: v for k, v in record.items() if k != "_dir"}, "status": records.status(record), "steps": steps,
            **({"failed_meanwhile": ended} if ended else {})}


def show(r):
    """`mlrun runs show RUN`: the record, readable, with how it ran and where each step stopped."""
    req = r.get("request") or {}
    took = f"  ({r['finished'] - r.get('started', 0):.1f} s)" if r.get("finished") else ""
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.get('started', 0)))
    print(f"run {r['id']}  {records.status(r)}  {when}{took}")
    print(f"  command: {records.command(r) or '(not recorded)'}")
    # as the command line writes them (was Python's {'mode': 'accuracy'} and strict=False)
    asked = [f"--{k}={word(v)}" for k, v in (req.get("inputs") or {}).items()]
    asked += [f"--dep.{dep}.{k}={word(v)}" for dep, kv in (req.get("dep_overrides") or {}).items()
              for k, v in (kv.items() if isinstance(kv, dict) else [])]
    asked += [f"--env.{k}={word(v)}" for k, v in (req.get("env_overrides") or {}).items()]
    # the command line says what was asked where it was recorded
    print(f"  query: {r.get('query')}" + (f"  asked: {' '.join(asked)}" if asked and not records.command(r) else ""))
    if r.get("status") == "running" and r.get("process"):
        print(f"  process: pid {r['process'].get('pid')} on {r['process'].get('host')}")
    if r.get("replay_of"):
        print(f"  replay of: {r['replay_of']} ({'exact' if r.get('exact') else 'INEXACT'})")
    if r.get("error"):
        print(f"  error: {r['error']}")
    if r.get("record_incomplete"):   # its steps and results were not written: not "not run"
        print(f"  record incomplete: {r['record_incomplete']}")
    settings = {k: v for k, v in records.flat_settings(r).items() if v is not None}
    print("  settings: " + (" ".join(f"{k}={word(v)}" for k, v in settings.items()) or "-"))
    print(f"  result: {records.headline(r.get('results'))}")
    how = (r.get("results") or {}).get("how_it_ran") if isinstance(r.get("results"), dict) else None
    if isinstance(how, list) and how:   # a step's own lines of how it ran (instances, batches a rule chose)
        print("  how it ran:\n" + "\n".join("    " + str(line).replace("\n", "\n    ") for line in how))
    stopped = next((s for s in r.get("steps") or [] if s.get("status") in ("failed", "interrupted", "error")), None)
    if stopped:
        log = failed_log(r, stopped)
        if log and not os.path.isfile(log):
            log = f"{log}, not on this machine"
        print(f"  {stopped['status']} at step {stopped['label']} after {stopped.get('seconds') or 0:.1f} s"
              + (f" (log: {log})" if log else ""))
    host = r.get("host") or {}
    print(f"  host: {host.get('cpu')}, {host.get('cores')} cores, {host.get('memory_gb')} GB, {host.get('os')}, "
          f"Python {host.get('python')}" + (f", mlrun {r['mlrun']}" if r.get("mlrun") else ""))
    print("  plan:")
    for s in r.get("steps") or []:
        print(f"    {s['label']:<48} {str(s.get('status') or '?'):<11} {s.get('seconds') or 0:>8.1f} s  "
              f"[{s['key'][:12]}] {(s.get('node') or {}).get('version', '')}")
    # never reached: the run stopped before; a record still 'running' (live, or killed: died) writes its steps at
    # its end only: their state is unknown, not "not run" (8 of 9 were built)
    unknown = r.get("record_incomplete") or records.status(r) in ("running", "died", "running?")
    meanwhile = [m["label"] for m in r.get("built_meanwhile") or []]   # objects with a label: records.check_shape
    ended = {m["label"]: m for m in r.get("failed_meanwhile") or []}
    for label in (r.get("planned") or [])[len(r.get("steps") or []):]:
        if label in meanwhile:   # built while it waited for another mlrun's build, or alongside, before it stopped
            meanwhile.remove(label)
            print(f"    {label:<48} built meanwhile")
        elif label in ended:     # built alongside when the run stopped: stopped with it, or failed
            stopped = ended.pop(label)
            log = failed_log(r, stopped)
            print(f"    {label:<48} {str(stopped.get('status')):<11} {stopped.get('seconds') or 0:>8.1f} s  (built "
                  "alongside: " + ("stopped with the run" if stopped.get("status") == "interrupted" else "failed")
                  + (f"; log: {log})" if log else ")"))
        else:
            print(f"    {label:<48} {'not recorded' if unknown else 'not run'}")
    for venv, pkgs in (r.get("packages") or {}).items():
        print(f"  packages of {venv}: " + ", ".join(f"{k}=={v}" for k, v in sorted(pkgs.items())))
    recipes = sorted((r.get("recipes") or {}).items())
    print("  recipes: " + ", ".join(f"{name} {info.get('digest', '?')[:12]}" for name, info in recipes))
    print(f"  folder: {r['_dir']}")


def failed_log(r, stopped):
    """The log of a failed step: where it was recorded, else (an imported run) the copy the bundle brought."""
    log = stopped.get("log") if isinstance(stopped.get("log"), str) else None
    if log and not os.path.isfile(log) and isinstance(r.get("_dir"), str):
        from .bundle import FAILED_LOGS, failed_log_name
        # a cache's failed log comes as failed-logs/; an uncached step's was in the run folder, which came whole
        within = log.partition(f"{os.sep}{r['id']}{os.sep}")[2]
        carried = [os.path.join(r["_dir"], FAILED_LOGS, failed_log_name(stopped.get("label"))),
                   *([os.path.join(r["_dir"], within)] if within else [])]
        log = next((c for c in carried if os.path.isfile(c)), log)
    return log


def word(value):
    """A setting as a command line gives it: true/false, not Python's True/False."""
    return str(value).lower() if isinstance(value, bool) else "-" if value is None else str(value)
