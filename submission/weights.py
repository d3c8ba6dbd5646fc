"""How a submission's weights were made, told from what its runs recorded: measurements.json's weight_data_types
and weight_transformations, and documentation/calibration.md (the rules want a closed submission's calibration
described; the checker before v6.0 refused a closed tree without that file)."""
import json
import os

LIST_PATH = "calibration/SQuAD-v1.1/bert_calibration_features.txt"
OFFICIAL_REPO = "github.com/mlcommons/inference/"   # the list recipe's default URL: that repository, a pinned commit


def run_steps(app_folder):
    """{recipe name: step} of the run whose app step wrote app_folder ({} when its record cannot be read)."""
    try:
        with open(os.path.join(os.path.dirname(app_folder), "run.json")) as f:
            return {s["recipe"]: s for s in json.load(f).get("steps", []) if isinstance(s, dict) and "recipe" in s}
    except (OSError, ValueError):
        return {}


def _recorded(step, field, name):
    """What a step recorded (run.json), else the file in its entry (a recipe that records none); {} if neither."""
    value = (step.get("record") or {}).get(field)
    if isinstance(value, dict):
        return value
    try:
        with open(os.path.join(step.get("path") or "", name)) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def calibration_list(steps):
    """The calibration list the run used, said as it came: where from and its sha256 (no official checksum
    is known offline, so a mirror's copy is named as one, never as the MLPerf list)."""
    step = steps.get("get-dataset-squad-calibration")
    if step is None:
        return None
    got = _recorded(step, "calibration", "source.json")
    source = str(got.get("source", ""))
    if "://" not in source:
        where = "a local mirror's copy" if source else "its source not recorded"
    elif OFFICIAL_REPO in source.replace("raw.githubusercontent.com", "github.com") and LIST_PATH in source:
        where = f"downloaded from the MLCommons inference repository ({LIST_PATH})"
    else:
        where = f"downloaded from {source}"
    checked = "as --sha256 required" if got.get("verified") else "not checked: no official checksum known"
    return f"bert_calibration_features.txt, {where}, sha256 {got.get('sha256', 'not recorded')}, {checked}"


def precision_of(sub, scenario=None):
    """The --precision a scenario's runs were given: its own (--Offline.precision=int8-bf16), else everyone's."""
    scoped = (getattr(sub.opts, "scenario_inputs", None) or {}).get(scenario) or {}
    return str(scoped.get("precision") or sub.inputs.get("precision") or "fp32").lower()


def describe(sub, steps, scenario=None):
    """(weight_data_types, weight_transformations, the text of calibration.md) of a scenario's runs (None: the
    precision given to every scenario)."""
    precision = precision_of(sub, scenario)
    query = sub.opts.query.split()
    listed = calibration_list(steps)
    features = f"the features its calibration list names ({listed})" if listed else \
        "the features of the calibration list (not recorded in the run)"
    what = sub.model["what"]   # "the official ... model", or "not the official model (SOURCE)"
    source = what.removeprefix("not the official model ").removeprefix("(").removesuffix(")")
    model = what if sub.model.get("official") else f"the fp32 model {source}"
    given = what if sub.model.get("official") else f"the model {source}"
    if "get-ml-model-bert-int8-nncf" in steps or (precision in ("int8", "int8-bf16") and "_openvino" in query):
        q = _recorded(steps.get("get-ml-model-bert-int8-nncf", {}), "quantization", "quantization.json")
        cal = q.get("calibration", {})
        used = (f"{cal['features']} features (mean length {cal.get('mean_length')} tokens, each at its real "
                f"length; {cal.get('left_out_held_out', 0)} left out as held-out questions)") if "features" in cal \
            else "the listed features"
        nncf = f"NNCF {q['nncf']}" if q.get("nncf") else "NNCF (version not recorded)"
        # int8-bf16: the operators NNCF left unquantised run bf16 (OpenVINO's hint), so their weights are bf16's
        rest = " (its other operators in bf16: INFERENCE_PRECISION_HINT bf16)" if precision == "int8-bf16" else ""
        transform = (f"quantized to int8 by {nncf} post-training quantization (SmoothQuant, static int8 "
                     f"activations), calibrated on {features}; run by OpenVINO{rest}")
        text = (f"The int8 model was made from {model} by {nncf} "
                "post-training quantization (`nncf.quantize`: SmoothQuant, static int8 activations; settings "
                f"{json.dumps(q.get('settings', {}))}), calibrated on {used} of {listed or 'the list'}. "
                f"No other data was used and nothing was retrained. The int8 model runs on OpenVINO{rest}.")
        return "int8, bf16" if rest else "int8", transform, text
    if precision == "int8":   # a TensorRT int8 engine of the fp32 model
        transform = (f"quantized to int8 by TensorRT's engine builder (entropy calibration, IInt8EntropyCalibrator2, "
                     f"on {features})")
        text = (f"The int8 engine was built from {model} by TensorRT, whose entropy calibrator "
                f"(IInt8EntropyCalibrator2) read {features}, one at a time at 384 tokens. No other data was used "
                "and nothing was retrained.")
        return "int8", transform, text
    if "get-ml-model-bert-int8-dynamic" in steps or "_int8-dynamic" in query:
        q = _recorded(steps.get("get-ml-model-bert-int8-dynamic", {}), "quantization", "quantization.json")
        settings = ", ".join(f"{k}={v}" for k, v in sorted(q.get("settings", {}).items())) or "settings not recorded"
        transform = (f"quantized to int8 by onnxruntime's dynamic quantizer (quantize_dynamic: {settings}); "
                     "activations quantized at run time from each input, no calibration data")
        text = (f"No calibration: the int8 weights were made from {model} by onnxruntime's dynamic quantizer "
                f"({settings}); each activation's scale is computed at run time from the input itself, so no "
                "calibration data was used.")
        return "int8", transform, text
    # a model quantised before, run with --precision=bf16 on OpenVINO: its other operators bf16 (int8-bf16's case)
    bf16 = precision == "bf16" and "_openvino" in query
    kind, rest = ("int8, bf16", "; run by OpenVINO with its other operators in bf16 (INFERENCE_PRECISION_HINT "
                  "bf16)") if bf16 else ("int8", "")
    if "_int8" in query:
        return kind, "none" if not bf16 else rest[2:], \
            f"No calibration by mlrun: {given}, as MLCommons publishes it, run as it is{rest}."
    # a model file given as it is, quantised before (the run counted its int8 operators)
    ready = _recorded(steps.get("app-mlperf-bert", {}), "results", "summary.json").get("model_int8_operators")
    if ready:
        return kind, f"none by mlrun: the model file given holds {ready} int8 operators (quantized before){rest}", (
            f"No calibration by mlrun: {given} holds {ready} int8 operators; it was quantized before mlrun ran "
            f"it{rest}, and how (calibration data, method) is not recorded by mlrun. Describe it here before "
            "submitting.")
    engine = {"fp16": "converted to fp16 by TensorRT's engine builder",
              "bf16": "converted to bf16 by OpenVINO when it compiles the model (INFERENCE_PRECISION_HINT bf16)"}
    if precision in engine:
        return precision, engine[precision], f"No calibration: the fp32 weights of {given} were {engine[precision]}."
    return "fp32", "none", f"No quantization and no calibration: the fp32 weights of {given} as given."
