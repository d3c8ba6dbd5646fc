"""The system description (systems/<system>.json): what the machine tells, the rest from the user's YAML.

The required field list is read from the official checker's constants.py at runtime (never copied here),
so a new round's fields are asked for without a change to mlrun.
"""
import ast
import os
import re
import shutil

from engine import records
from engine.errors import UsageError

CONSTANTS = os.path.join("tools", "submission", "submission_checker", "constants.py")
PLACEHOLDER = "not given (--short rehearsal)"


# The system types the checker takes (its system check's list, in code, not among its constants) and the key each
# has in MODEL_CONFIG: both orders of the two are one (required-scenarios-datacenter-edge).
SYSTEM_TYPES = {"datacenter": "datacenter", "edge": "edge", "datacenter,edge": "datacenter-edge",
                "edge,datacenter": "datacenter-edge"}


def checker_scenarios(src, round_, system_type, benchmark):
    """(required, optional) scenarios of benchmark on a system_type system in the checker's MODEL_CONFIG of
    round_ (read as literals, not imported; the config holds expressions elsewhere, so only these entries)."""
    system_type = SYSTEM_TYPES.get(system_type, system_type)
    path, tree = _constants(src, "scenario lists")

    def entry(node, key):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == key:
                    return v
        return None
    config = next((n.value for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
                   and getattr(n.targets[0], "id", None) == "MODEL_CONFIG"), None)
    rounds = entry(config, round_)
    if rounds is None:
        raise UsageError(f"{path} has no MODEL_CONFIG for round {round_}: not the checker mlrun knows")
    out = []
    for kind in ("required", "optional"):
        lists = entry(rounds, f"{kind}-scenarios-{system_type}")
        try:
            out.append(list(ast.literal_eval(lists).get(benchmark, [])) if lists is not None else [])
        except ValueError:
            out.append([])
    return tuple(out)


def _constants(src, what):
    """(path, parsed module) of the checker's constants.py: read as text, never imported."""
    path = os.path.join(src, CONSTANTS)
    try:
        with open(path) as f:
            return path, ast.parse(f.read(), path)
    except (OSError, SyntaxError) as e:
        raise UsageError(f"cannot read the checker's {what} from {path}: {e}") from None


def checker_lists(src, *names):
    """{name: list} of module-level list constants of the checker (read as literals, not imported)."""
    path, tree = _constants(src, "field lists")
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            found[node.targets[0].id] = ast.literal_eval(node.value)
    missing = [n for n in names if n not in found]
    if missing:
        raise UsageError(f"{path} has no {', '.join(missing)}: not the checker mlrun knows")
    return found


def _cpu_sockets():
    ids = set()
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("physical id")}
    except OSError:
        pass
    return len(ids) or 1


def _cpu_mhz():
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return f"{int(f.read()) // 1000} MHz (max)"
    except (OSError, ValueError):
        mhz = records._cpuinfo_field("cpu MHz")
        return f"{float(mhz):.0f} MHz" if mhz else ""


def _caches():
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            read = lambda n: open(os.path.join(base, index, n)).read().strip()  # noqa: E731
            kind = read("type")
            sizes[f"L{read('level')}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = read("size")
    except OSError:
        pass
    return ", ".join(f"{k} {v}" for k, v in sizes.items())


def machine_facts(where, framework, software):
    """Fields this machine (and the plan) tells; `where` is a folder on the disk the results go to."""
    host = records.host_facts()
    cores = os.cpu_count() or 1
    facts = {
        "number_of_nodes": "1",
        "host_processor_model_name": host["cpu"],
        "host_processors_per_node": _cpu_sockets(),
        "host_processor_core_count": cores // _cpu_sockets(),
        "host_processor_frequency": _cpu_mhz(),
        "host_processor_caches": _caches(),
        "host_memory_capacity": f"{host['memory_gb']} GB",
        "host_storage_capacity": f"{shutil.disk_usage(where).total / 1e9:.0f} GB",
        "operating_system": host["os"],
        "framework": framework,
        "other_software_stack": software,
        "system_type": "edge",   # the scenarios mlrun runs (SingleStream, Offline) are the edge ones
        # The CPU device variation: no accelerator in this system.
        "accelerators_per_node": "0", "accelerator_model_name": "N/A", "accelerator_memory_capacity": "N/A",
        "accelerator_frequency": "N/A", "accelerator_host_interconnect": "N/A", "accelerator_interconnect": "N/A",
        "accelerator_interconnect_topology": "N/A", "accelerator_memory_configuration": "N/A",
        "accelerator_on-chip_memories": "N/A",
    }
    return {k: v for k, v in facts.items() if v not in ("", None)}


def probe_facts(line):
    """get-gpu-nvidia's probe line ('NVIDIA H200, compute capability 9.0, 143771 MiB') as GPU facts."""
    match = re.fullmatch(r"(.+), compute capability ([\d.]+), (\d+) MiB", line or "")
    if not match:
        return None
    return {"name": match[1], "compute_capability": match[2], "memory_gb": round(int(match[3]) / 1024, 1)}


def gpu_fields(facts):
    """The accelerator fields of the system description for GPU facts (mlperf_bert.gpu.system_fields)."""
    from mlperf_bert.gpu import system_fields
    # Fields NVML cannot tell stay out, for the user's --system YAML (or the placeholder of a --short rehearsal).
    return {k: v for k, v in system_fields(facts).items() if v != ""}


def with_run_gpu_facts(desc, user, done):
    """desc with the NVML facts a GPU run recorded (its summary.json "gpu"), the user's fields kept."""
    import json
    for item in done.values():
        try:
            facts = json.load(open(os.path.join(item["folder"], "summary.json"))).get("gpu")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if facts:
            fields = gpu_fields(facts)
            if "sw_notes" in desc and "sw_notes" in fields and fields["sw_notes"] not in desc["sw_notes"]:
                fields["sw_notes"] = f"{desc['sw_notes']}; {fields['sw_notes']}"
            return {**desc, **{k: v for k, v in fields.items() if k not in user}}
    return desc


def read_yaml(path):
    import yaml
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise UsageError(f"--system {path}: {e.strerror}", hint="docs/submission.md lists the fields of a system "
                         "description and gives one whole (copy it and fill in this machine)") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--system {path}: not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start})") from None
    except yaml.YAMLError as e:
        raise UsageError(f"--system {path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--system {path}: expected a mapping of field: value")
    return data


def describe(src, user, submitter, division, facts, short):
    """(system json dict, notes): the user's fields win over the machine's; every required field present.

    A required field that neither gives is an error listing all of them (with --short they are filled
    with a placeholder and named in the notes: a rehearsal cannot be submitted anyway).
    """
    lists = checker_lists(src, "SYSTEM_DESC_REQUIRED_FIELDS", "SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS",
                          "VALID_AVAILABILITIES")
    required, meaningful = lists["SYSTEM_DESC_REQUIRED_FIELDS"], lists["SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS"]
    desc = dict(facts, division=division, submitter=submitter)
    for key, flag in (("division", division), ("submitter", submitter)):   # the flag's, unsaid ("wins on conflict")
        if key in user and str(user[key]) != flag:
            raise UsageError(f"the system description gives {key}: {user[key]!r}, and --{key}={flag}: the flag "
                             "decides", hint=f"leave {key} out of the --system YAML (or give --{key}={user[key]})")
    from engine.words import did_you_mean
    unanswered = [k for k in required if k not in user and k not in facts]
    for key in user:   # coolng: copied into the system file, and "lacks cooling" said nothing of it
        near = did_you_mean(key, unanswered) if key not in required and key not in facts else ""
        if near:
            raise UsageError(f"the system description gives {key}, which is no field the checker reads{near}",
                             hint="the fields are the checker's SYSTEM_DESC_REQUIRED_FIELDS (docs/submission.md)")
    desc.update({k: v for k, v in user.items() if k not in ("division", "submitter")})
    # What the checker refuses only after every run: a status not among the rules' words, a name that is no text
    if "status" in user and str(user["status"]).lower() not in lists["VALID_AVAILABILITIES"]:
        raise UsageError(f"the system description gives status: {user['status']!r}, not one the rules take",
                         hint="status is one of " + ", ".join(lists["VALID_AVAILABILITIES"]))
    if "system_type" in user and str(user["system_type"]) not in SYSTEM_TYPES:   # the checker: after every run
        raise UsageError(f"the system description gives system_type: {user['system_type']!r}, not one the checker "
                         "takes", hint="system_type is one of " + ", ".join(SYSTEM_TYPES))
    # is_network: the checker reads it as text ("true".lower(); a YAML true stopped it with an exception) and wants
    # the network division's fields beside a true one; mlrun submits a local SUT, closed or open
    if "is_network" in user and str(user["is_network"]).lower() != "false":
        raise UsageError(f"the system description gives is_network: {user['is_network']!r}: mlrun submits a SUT on this "
                         "machine (closed or open division), not the network division's", hint='leave is_network out, '
                         'or write is_network: "false"')
    if isinstance(user.get("is_network"), bool):
        desc["is_network"] = "false"   # as the checker reads it: a string
    for key in ("system_name", "system_id"):
        if key in user and (isinstance(user[key], bool) or not isinstance(user[key], (str, int, float))
                            or not str(user[key]).strip()):
            raise UsageError(f"the system description gives {key}: {user[key]!r}, which names no system",
                             hint=f'write it as text, quoted where YAML would read it otherwise ({key}: "My box")')
    # Empty as the checker reads it (`not value`): "", null, 0, false, [] fail its "meaningful response" test.
    empty = [k for k in required if k in desc and k in meaningful and not desc[k]]
    missing = [k for k in required if k not in desc] + empty
    notes = []
    if missing and not short:
        lacks = [k for k in missing if k not in empty]
        said = ([f"lacks {len(lacks)} required field(s): {', '.join(lacks)}"] if lacks else []) + \
            ([f"gives {', '.join(f'{k}: {desc[k]!r}' for k in empty)}, which the checker takes for no answer"]
             if empty else [])
        raise UsageError(f"the system description {'; it '.join(said)}",
                         hint="give them in the --system YAML (field: value a line; those the checker wants answered "
                              "not empty nor 0: a true answer of 0 is written \"0\", quoted, as the checker takes it); "
                              "mlrun filled what the machine tells: " + ", ".join(sorted(facts)))
    for k in missing:
        # status is checked against the rules' list: a rehearsal says "available" (and the notes say so)
        desc[k] = "available" if k == "status" else PLACEHOLDER
    if missing:
        notes.append(f"system fields filled with a placeholder (--short): {', '.join(missing)}")
    return {k: desc[k] for k in required} | {k: v for k, v in desc.items() if k not in required}, notes


def system_id(desc):
    """The folder name of the system: its system_id, or its name made file-safe."""
    name = desc.get("system_id") or desc.get("system_name")
    name = str(records.host_facts()["hostname"] if name in (None, PLACEHOLDER) else name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_").lstrip(".") or "system"   # '..' must not climb
