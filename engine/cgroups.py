"""The limits a Linux control group puts on this process (docker --cpus/--memory, a SLURM or Kubernetes job):
the CPU quota, which the cores this process may run on do not show, and the memory left under a limit.

Version 2 (one hierarchy, cpu.max, memory.max) and version 1 (a hierarchy per controller, cpu.cfs_quota_us,
memory.limit_in_bytes). Only the process's own group is read, not its parents'.
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
    # inside a container the group's path may not exist under the mount, which is then the group itself
    return [os.path.join(root, mount, path.lstrip("/")), os.path.join(root, mount)]


def cpu_quota(root=ROOT, proc="/proc/self/cgroup"):
    """The CPUs the group's quota allows (0.5 for docker --cpus=0.5), or None without one."""
    groups = _groups(proc)
    if "cpu" in groups:
        quota = _read(*[os.path.join(p, "cpu.cfs_quota_us") for p in _places(root, "cpu", groups["cpu"])])
        period = _read(*[os.path.join(p, "cpu.cfs_period_us") for p in _places(root, "cpu", groups["cpu"])])
        try:
            return int(quota) / int(period) if int(quota) > 0 and int(period) > 0 else None
        except (TypeError, ValueError):
            return None
    if "" in groups:
        text = _read(*[os.path.join(p, "cpu.max") for p in _places(root, "", groups[""])])
        try:
            quota, period = text.split()
            return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
        except (AttributeError, ValueError):
            return None
    return None


def memory_left(root=ROOT, proc="/proc/self/cgroup"):
    """Bytes the group may still use under its memory limit, or None without one."""
    groups = _groups(proc)
    for controller, mount, limit_file, usage_file in (("memory", "memory", "memory.limit_in_bytes",
                                                       "memory.usage_in_bytes"),
                                                      ("", "", "memory.max", "memory.current")):
        if controller not in groups:
            continue
        places = _places(root, mount, groups[controller])
        limit, used = _read(*[os.path.join(p, limit_file) for p in places]), \
            _read(*[os.path.join(p, usage_file) for p in places])
        try:
            if limit in (None, "max") or int(limit) >= UNLIMITED_V1:
                continue
            return int(limit) - int(used or 0)
        except ValueError:
            continue
    return None
