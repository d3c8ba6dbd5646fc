"""The CPU quota and memory limit of a control group (docker --cpus/--memory, a job's limits), versions 1 and 2:
a run under a quota of 0.5 CPU ran one instance per core of its affinity, a fourth of the speed, nothing said."""
import os

from engine import cgroups


def _tree(tmp_path, files, proc):
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "proc").write_text(proc)
    return str(tmp_path / "cg"), str(tmp_path / "proc")


def test_version_1_quota_and_memory_limit(tmp_path):
    root, proc = _tree(tmp_path, {"cpu/job/cpu.cfs_quota_us": "50000\n", "cpu/job/cpu.cfs_period_us": "100000\n",
                                  "memory/job/memory.limit_in_bytes": "1073741824\n",
                                  "memory/job/memory.usage_in_bytes": "73741824\n"},
                       "4:memory:/job\n2:cpu,cpuacct:/job\n0::/\n")
    assert cgroups.cpu_quota(root, proc) == 0.5
    assert cgroups.memory_left(root, proc) == 1_000_000_000


def test_version_1_without_limits(tmp_path):
    root, proc = _tree(tmp_path, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
                                  "memory/memory.limit_in_bytes": "9223372036854771712\n",
                                  "memory/memory.usage_in_bytes": "5\n"},
                       "4:memory:/\n1:cpu:/\n")
    assert cgroups.cpu_quota(root, proc) is None and cgroups.memory_left(root, proc) is None


def test_version_2_inside_a_container_whose_group_is_the_mount(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "150000 100000\n", "memory.max": "2000\n", "memory.current": "500\n"},
                       "0::/docker/abc\n")
    assert cgroups.cpu_quota(root, proc) == 1.5 and cgroups.memory_left(root, proc) == 1500
    root, proc = _tree(tmp_path / "free", {"cpu.max": "max 100000\n", "memory.max": "max\n"}, "0::/\n")
    assert cgroups.cpu_quota(root, proc) is None and cgroups.memory_left(root, proc) is None


def test_nothing_readable_is_no_limit(tmp_path):
    assert cgroups.cpu_quota(str(tmp_path), str(tmp_path / "none")) is None
    assert cgroups.memory_left(str(tmp_path), str(tmp_path / "none")) is None


def test_the_rule_counts_the_cores_a_quota_allows(monkeypatch):
    from mlperf_bert import parallelism
    monkeypatch.setattr(cgroups, "cpu_quota", lambda *a: 0.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    chosen = parallelism.choose("Offline")
    assert (chosen.instances, chosen.threads, chosen.available, chosen.cpu_quota) == (1, 1, 1, 0.5)
    assert chosen.rule == "Offline: one instance per core (1); a CPU quota of 0.5 CPUs allows 1 of the 4 cores"
    monkeypatch.setattr(cgroups, "cpu_quota", lambda *a: 2.5)
    assert parallelism.choose("Offline").instances == 3
    monkeypatch.setattr(cgroups, "cpu_quota", lambda *a: None)
    assert parallelism.choose("Offline").instances == 4 and "quota" not in parallelism.choose("Offline").rule


def test_a_parents_limit_holds_for_its_children(tmp_path):
    """A quota set on the parent (mltest) of the process's group (mltest/child) was not seen."""
    root, proc = _tree(tmp_path, {"cpu/mltest/cpu.cfs_quota_us": "50000\n", "cpu/mltest/cpu.cfs_period_us": "100000\n",
                                  "cpu/mltest/child/cpu.cfs_quota_us": "-1\n",
                                  "cpu/mltest/child/cpu.cfs_period_us": "100000\n",
                                  "memory/mltest/memory.limit_in_bytes": "1000\n",
                                  "memory/mltest/memory.usage_in_bytes": "400\n",
                                  "memory/mltest/child/memory.limit_in_bytes": "9223372036854771712\n",
                                  "memory/mltest/child/memory.usage_in_bytes": "100\n"},
                       "4:memory:/mltest/child\n1:cpu:/mltest/child\n")
    assert cgroups.cpu_quota(root, proc) == 0.5 and cgroups.memory_left(root, proc) == 600
