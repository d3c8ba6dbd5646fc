# Probe of get-cpu-bf16: one line naming the CPU's bf16 instructions, or exit 1 with the reason on stderr (a CPU
# without them, or an ISA cap below them).
# Linux's /proc/cpuinfo flags (or the file given, for tests); where there is none, OpenVINO's own report decides
# when the step starts.
cpuinfo=${1:-/proc/cpuinfo}
asked=${MLRUN_INPUT_PRECISION:-bf16}   # as the person wrote it; int8 is the same model with the rest fp32
case "$asked" in
  int8-bf16) would="run the operators outside its int8 ones fp32"; instead="use --precision=int8 (the rest fp32)" ;;
  *) would="run fp32"; instead="leave out --precision (fp32)" ;;
esac
[ -r "$cpuinfo" ] || { echo "bf16: not known here (no $cpuinfo): OpenVINO checks it"; exit 0; }
found=$(tr ' \t' '\n\n' < "$cpuinfo" | grep -xE 'amx_bf16|avx512_bf16' | sort -u | tr '\n' ' ')
if [ -z "$found" ]; then
  echo "--precision=$asked: this CPU does not multiply bf16 (no amx_bf16 or avx512_bf16 among its flags), so" \
       "OpenVINO would $would instead; $instead, or run on a CPU with AMX or AVX512_BF16" >&2
  exit 1
fi
# oneDNN's ISA cap (--env.ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA, which the first overrides): below
# bf16, OpenVINO reported bf16 and then failed to compile
if [ -n "${ONEDNN_MAX_CPU_ISA:-}" ]; then var=ONEDNN_MAX_CPU_ISA; cap=$ONEDNN_MAX_CPU_ISA
else var=DNNL_MAX_CPU_ISA; cap=${DNNL_MAX_CPU_ISA:-}; fi
case "$(echo "$cap" | tr a-z A-Z)" in
  ""|*BF16*|*FP16*|*AMX*|AVX10*|ALL|DEFAULT) ;;
  SSE41|AVX|AVX2|AVX2_VNNI|AVX2_VNNI_2|AVX512_CORE|AVX512_CORE_VNNI)
     echo "--precision=$asked: --env.$var=$cap keeps OpenVINO's kernels below the CPU's bf16 instructions" \
          "(${found% }); drop --env.$var, or $instead" >&2
     exit 1 ;;
  *) echo "--precision=$asked: --env.$var=$cap is not one of oneDNN's ISA names (SSE41, AVX, AVX2, AVX2_VNNI," \
          "AVX512_CORE, AVX512_CORE_VNNI, AVX512_CORE_BF16, AVX512_CORE_FP16, AVX512_CORE_AMX, ALL, ...)" >&2
     exit 1 ;;
esac
echo "bf16 instructions: ${found% }"
