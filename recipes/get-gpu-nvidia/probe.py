"""Probe of get-gpu-nvidia: one line naming the GPU a run will use, or exit 1 with the reason on stderr.

Runs with the host's python3 before anything is installed, so it uses the standard library and nvidia-smi
(installed with the driver); the benchmark itself reads the full facts with NVML (mlperf_bert.gpu).
"""
import glob
import os
import shutil
import subprocess
import sys

FIELDS = "name,compute_cap,memory.total,driver_version"
USE_CPU = "(GPU variations need an NVIDIA GPU and its driver; _cpu runs without)"


def fail(message):
    print(f"{message} {USE_CPU}", file=sys.stderr)
    sys.exit(1)


def version(text):
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def main():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        fail(f"no NVIDIA GPU visible: CUDA_VISIBLE_DEVICES={visible!r} hides them all")
    device = (visible or "0").split(",")[0].strip()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        nodes = "no /dev/nvidia* device" if not glob.glob("/dev/nvidia[0-9]*") else "/dev/nvidia* present"
        fail(f"no NVIDIA GPU here: nvidia-smi (installed with the NVIDIA driver) is not on PATH; {nodes}")
    try:
        done = subprocess.run([smi, f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits", "-i", device],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        fail("nvidia-smi did not answer within 30 s: the NVIDIA driver is not working")
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 or not done.stdout.strip():
        fail(f"no usable NVIDIA GPU {device}: nvidia-smi failed ({lines[0] if lines else 'exit ' + str(done.returncode)})")
    parts = [part.strip() for part in done.stdout.strip().splitlines()[0].split(",")]
    if len(parts) != 4:
        fail(f"nvidia-smi answered {done.stdout.strip()!r}, not {FIELDS}")
    name, compute, memory, driver = parts
    wanted = os.environ.get("MLRUN_INPUT_MIN_DRIVER", "0")
    if version(driver) < version(wanted):
        fail(f"the NVIDIA driver {driver} is too old: the CUDA 12 builds need {wanted} or newer")
    # The key holds what an engine depends on: the GPU model and its memory, not the driver's exact version.
    print(f"{name}, compute capability {compute}, {memory} MiB")


if __name__ == "__main__":
    main()
