"""The batching rule (mlperf_bert.batching): cases as data, each a CPU, a run and what the rule chooses."""
import pytest

from mlperf_bert import batching

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
ZEN4 = {"avx512f", "avx512_bf16", "avx512_vnni"}   # bf16 and VNNI without AMX: not measured batched

# (scenario, backend, precision, flags, isa cap, --batch_size, --batch_pad) -> (size, pad, rule begins / holds)
CASES = [
    # what was measured faster batched: Offline, OpenVINO's AMX precisions on AMX
    (("Offline", "openvino", "int8-bf16", AMX, "", None, None),
     (8, 16, "Offline, OpenVINO int8-bf16 on AMX: batches of up to 8 samples within 16 tokens")),
    (("Offline", "openvino", "bf16", AMX, "", None, None), (8, 16, "Offline, OpenVINO bf16 on AMX")),
    (("Offline", "openvino", "int8", AMX, "AVX512_CORE_AMX", None, None), (8, 16, "Offline, OpenVINO int8 on AMX")),
    (("Offline", "openvino", "int8", AMX, "all", None, None), (8, 16, "Offline, OpenVINO int8 on AMX")),
    # everything else: one sample per call, and why
    (("Offline", "openvino", "fp32", AMX, "", None, None),
     (1, 0, "Offline, openvino fp32: one sample per call (it ran no faster batched)")),
    (("Offline", "onnxruntime", "fp32", AMX, "", None, None), (1, 0, "(the rule batches OpenVINO's int8, bf16")),
    (("Offline", "tensorrt", "int8", AMX, "", None, None), (1, 0, "Offline, tensorrt int8: one sample per call")),
    (("MultiStream", "openvino", "int8-bf16", AMX, "", None, None), (1, 0, "(Offline alone batches by the rule)")),
    (("Server", "openvino", "bf16", AMX, "", None, None), (1, 0, "Server, openvino bf16: one sample per call")),
    (("Offline", "openvino", "bf16", ZEN4, "", None, None),
     (1, 0, "(no amx_bf16 among the CPU's flags; batching was measured on AMX only)")),
    (("Offline", "openvino", "int8-bf16", AMX - {"amx_int8"}, "", None, None), (1, 0, "(no amx_int8 among")),
    (("Offline", "openvino", "int8", AMX, "AVX512_CORE_BF16", None, None),
     (1, 0, "(ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 keeps the kernels below AMX")),
    # oneDNN's older name for the cap: it batched "on AMX" under it
    (("Offline", "openvino", "bf16", AMX, "DNNL_MAX_CPU_ISA=AVX512_CORE_BF16", None, None),
     (1, 0, "(DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 keeps the kernels below AMX")),
    (("Offline", "openvino", "bf16", AMX, "DNNL_MAX_CPU_ISA=AVX512_CORE_AMX", None, None), (8, 16, "on AMX")),
    # given: the person's, whatever the rule would say
    (("Offline", "openvino", "int8", AMX, "", 1, None), (1, 0, "given")),
    (("Offline", "onnxruntime", "fp32", set(), "", 8, 32), (8, 32, "given")),
    # a pad alone: the rule's size, the pad given
    (("Offline", "openvino", "bf16", AMX, "", None, 32),
     (8, 32, "Offline, OpenVINO bf16 on AMX: batches of up to 8 samples within 32 tokens (--batch_pad)")),
    (("Offline", "onnxruntime", "fp32", AMX, "", None, 8), (1, 8, "Offline, onnxruntime fp32: one sample")),
]


@pytest.mark.parametrize("given, expected", CASES, ids=[f"{g[0]}-{g[1]}-{g[2]}-{n}" for n, (g, _) in enumerate(CASES)])
def test_the_rule(given, expected):
    scenario, backend, precision, flags, cap, size, pad = given
    chosen = batching.choose(scenario, backend, precision, size=size, pad=pad, flags=flags, isa_cap=cap)
    assert (chosen.size, chosen.pad) == expected[:2]
    assert chosen.rule.startswith(expected[2]) or expected[2] in chosen.rule, chosen.rule
    assert chosen.overridden == (("batch_size",) if size is not None else ()) + (("batch_pad",) if pad is not None
                                                                                  else ())
    assert chosen.record() == {"batch_size": expected[0], "pad_tokens": expected[1], "rule": chosen.rule,
                               "overridden": list(chosen.overridden)}


def test_the_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_int8\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu avx512_bf16 amx_int8\n")
    assert batching.cpu_flags(str(cpuinfo)) == {"fpu", "avx512_bf16", "amx_int8"}
    assert batching.cpu_flags(str(tmp_path / "none")) == set()   # no /proc/cpuinfo: the rule batches nothing


@pytest.mark.parametrize("backend, precision, expected", [
    # the official int8 model, an int8 --model file: fp32 runs its int8 operators int8, bf16 is int8-bf16
    ("openvino", "fp32", (8, "Offline, OpenVINO int8 (an int8 model) on AMX: batches of up to 8 samples within 16")),
    ("openvino", "bf16", (8, "Offline, OpenVINO int8-bf16 (an int8 model) on AMX")),
    ("openvino", "int8", (8, "Offline, OpenVINO int8 on AMX")),   # NNCF's model: int8 as asked
    ("onnxruntime", "fp32", (1, "Offline, onnxruntime int8 (an int8 model): one sample per call")),   # _int8-dynamic
])
def test_a_model_that_is_int8_already_is_batched_as_int8(backend, precision, expected):
    """The rule read only --precision: the official int8 model on OpenVINO was 'fp32: it ran no faster batched'."""
    chosen = batching.choose("Offline", backend, precision, quantised=True, flags=AMX, isa_cap="")
    assert chosen.size == expected[0] and chosen.rule.startswith(expected[1]), chosen.rule


def test_the_cap_is_read_by_either_of_its_names(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert batching.isa_limit() == "DNNL_MAX_CPU_ISA=AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")   # oneDNN: the newer name wins
    assert batching.isa_limit() == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX"
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert batching.isa_limit() == ""


@pytest.mark.parametrize("backend, precision, quantised, expected", [
    ("openvino", "fp32", True, "int8"), ("openvino", "bf16", True, "int8-bf16"), ("openvino", "int8", True, "int8"),
    ("openvino", "fp32", False, "fp32"), ("onnxruntime", "fp32", True, "fp32"), ("tensorrt", "int8", True, "int8")])
def test_an_int8_model_on_openvino_is_recorded_int8(backend, precision, quantised, expected):
    """An int8 --model file on OpenVINO was recorded fp32 (runs, --where) while its batch rule said int8."""
    assert batching.ran_precision(backend, precision, quantised) == expected
