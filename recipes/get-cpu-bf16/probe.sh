# Probe of get-cpu-bf16: one line naming the CPU's bf16 instructions, or exit 1 with the reason on stderr.
# Linux's /proc/cpuinfo flags (or the file given, for tests); where there is none, OpenVINO's own report decides
# when the step starts.
cpuinfo=${1:-/proc/cpuinfo}
[ -r "$cpuinfo" ] || { echo "bf16: not known here (no $cpuinfo): OpenVINO checks it"; exit 0; }
found=$(tr ' \t' '\n\n' < "$cpuinfo" | grep -xE 'amx_bf16|avx512_bf16' | sort -u | tr '\n' ' ')
if [ -z "$found" ]; then
  echo "--precision=bf16: this CPU does not multiply bf16 (no amx_bf16 or avx512_bf16 among its flags), so" \
       "OpenVINO would run fp32 instead; leave out --precision (fp32), or run on a CPU with AMX or AVX512_BF16" >&2
  exit 1
fi
echo "bf16 instructions: ${found% }"
