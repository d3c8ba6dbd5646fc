"""The limits a Linux control group puts on this process (docker --cpus/--memory, a SLURM or Kubernetes job):
the CPU quota, which the cores this process may run on do not show, and the memory left under a limit.

Version 2 (one hierarchy, cpu.max, memory.max) and version 1 (a hierarchy per controller, cpu.cfs_quota_us,
memory.limit_in_bytes). The process's own group and its parents are read: the smallest limit holds.
"""
import os

ROOT = "/sys/fs/cgroup"
UNLIMITED_V1 = 1 << 60   # v1 writes "no limit" as a huge number (9223372036854771712)


def _groups(proc):
    """{controller: path} from /proc/self/cgroup; v2's single hierarchy under ''."""
    out = {}
    try:
        with open(proc) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for controller in parts[1].split(","):
                        out[controller] = parts[2]
    except OSError:
        pass
    return out


def _read(*candidates):
    """The first file of candidates that can be read, stripped, or None."""
    for path in candidates:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            continue
    return None


def _places(root, mount, path):
    """The group's folder and its parents' up to the mount (inside a container the group's path may not exist
    under the mount, which is then the group itself), each once."""
    parts = [p for p in path.split("/") if p]
    places = [os.path.join(root, mount, *parts[:n]) for n in range(len(parts), -1, -1)]
    return [p for p in dict.fromkeys(places) if os.path.isdir(p)]


def _smallest(values):
    values = [v for v in values if v is not None]
    return min(values) if values else None


def _quota_v1(folder):
    try:
        quota, period = int(_read(os.path.join(folder, "cpu.cfs_quota_us"))), \
            int(_read(os.path.join(folder, "cpu.cfs_period_us")))
        return quota / period if quota > 0 and period > 0 else None
    except (TypeError, ValueError):
        return None


def _quota_v2(folder):
    try:
        quota, period = _read(os.path.join(folder, "cpu.max")).split()
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (AttributeError, ValueError):
        return None


def cpu_quota(root=ROOT, proc="/proc/self/cgroup"):
    """The CPUs the quotas of the group and its parents allow (0.5 for docker --cpus=0.5), or None without one."""
    groups = _groups(proc)
    if "cpu" in groups:
        return _smallest(_quota_v1(p) for p in _places(root, "cpu", groups["cpu"]))
    if "" in groups:
        return _smallest(_quota_v2(p) for p in _places(root, "", groups[""]))
    return None


def memory_left(root=ROOT, proc="/proc/self/cgroup"):
    """Bytes the group may still use under its memory limit, or None without one."""
    groups = _groups(proc)
    for controller, mount, limit_file, usage_file in (("memory", "memory", "memory.limit_in_bytes",
                                                       "memory.usage_in_bytes"),
                                                      ("", "", "memory.max", "memory.current")):
        if controller not in groups:
            continue
        left = []
        for place in _places(root, mount, groups[controller]):   # each level's limit less what it holds
            limit, used = _read(os.path.join(place, limit_file)), _read(os.path.join(place, usage_file))
            try:
                if limit not in (None, "max") and int(limit) < UNLIMITED_V1:
                    left.append(int(limit) - int(used or 0))
            except ValueError:
                continue
        if left:
            return min(left)
    return None
