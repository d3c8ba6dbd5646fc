# Turn the recipe's inputs (MLRUN_INPUT_*) into the harness's flags; unset inputs are left out.
set -euo pipefail
# The backend variation (HARNESS_BACKEND) needs its backend recipe for this device (it exports MLRUN_BACKEND).
if [ "${MLRUN_BACKEND:-}" != "$HARNESS_BACKEND" ]; then
  echo "error: no $HARNESS_BACKEND backend for this device (deepsparse runs on CPUs only: use _cpu; _tensorrt-ep is onnxruntime's)" >&2
  exit 2
fi
# Every model, --model=FILE included, is a model recipe's entry (MLRUN_MODEL).
args=(--features "$SQUAD_FEATURES" --squad "$SQUAD_FILE" --model "$MLRUN_MODEL" --out .
      --scenario "$MLRUN_INPUT_SCENARIO" --mode "$MLRUN_INPUT_MODE"
      --buckets "$MLRUN_INPUT_BUCKETS" --backend "$HARNESS_BACKEND")
[ -n "${MLRUN_INPUT_COUNT:-}" ] && args+=(--count "$MLRUN_INPUT_COUNT")
[ -n "${MLRUN_INPUT_BATCH_SIZE:-}" ] && args+=(--batch-size "$MLRUN_INPUT_BATCH_SIZE")   # else the rule's
[ -n "${MLRUN_INPUT_BATCH_PAD:-}" ] && args+=(--batch-pad "$MLRUN_INPUT_BATCH_PAD")
[ -n "${MLRUN_INPUT_THREADS:-}" ] && args+=(--threads "$MLRUN_INPUT_THREADS")
[ -n "${MLRUN_INPUT_INSTANCES:-}" ] && args+=(--instances "$MLRUN_INPUT_INSTANCES")
case "${MLRUN_INPUT_SPIN:-}" in true) args+=(--spin) ;; false) args+=(--no-spin) ;; esac
[ "${MLRUN_INPUT_FIND_PEAK:-false}" = true ] && args+=(--find-peak)
[ "${MLRUN_INPUT_STRICT:-false}" = true ] && args+=(--strict)
[ -n "${MLRUN_INPUT_TARGET_QPS:-}" ] && args+=(--target-qps "$MLRUN_INPUT_TARGET_QPS")
[ -n "${MLRUN_INPUT_TARGET_LATENCY:-}" ] && args+=(--target-latency "$MLRUN_INPUT_TARGET_LATENCY")
[ -n "${MLRUN_INPUT_MIN_DURATION:-}" ] && args+=(--min-duration "$MLRUN_INPUT_MIN_DURATION")
[ -n "${MLRUN_INPUT_USER_CONF:-}" ] && args+=(--user-conf "$MLRUN_INPUT_USER_CONF")
[ -n "${MLRUN_INPUT_AUDIT_CONFIG:-}" ] && args+=(--audit-config "$MLRUN_INPUT_AUDIT_CONFIG")
[ -n "${MLRUN_INPUT_STREAMS:-}" ] && args+=(--streams "$MLRUN_INPUT_STREAMS")
[ -n "${HARNESS_RANDOM:-}" ] && args+=(--random-weights)   # its score is said to mean nothing (its int8 copy's too)
# A model trained on part of the dev set names its held-out questions (MLRUN_MODEL_HELDOUT): run and score only those.
questions="${MLRUN_INPUT_QUESTIONS:-${MLRUN_MODEL_HELDOUT:-}}"
[ -n "$questions" ] && args+=(--questions "$questions")
# your own list beside such a model: the harness checks it holds none of the questions the model learned
[ -n "${MLRUN_INPUT_QUESTIONS:-}" ] && [ -n "${MLRUN_MODEL_HELDOUT:-}" ] && args+=(--model-heldout "$MLRUN_MODEL_HELDOUT")
# GPU variations: the device the backend recipe was built for, the precision, and the TensorRT engine entry.
[ "$HARNESS_BACKEND" = onnxruntime ] && args+=(--device "${MLRUN_DEVICE:-cpu}")
[ "${MLRUN_INPUT_PRECISION:-fp32}" != fp32 ] && args+=(--precision "$MLRUN_INPUT_PRECISION")
[ -n "${MLRUN_TRT_ENGINE:-}" ] && args+=(--engine "$MLRUN_TRT_ENGINE")
[ -n "${MLRUN_TRT_CACHE:-}" ] && args+=(--trt-cache "$MLRUN_TRT_CACHE")
# The model recipe made the dynamic-axis copy of a fixed-384 model already (or found that none can be made).
[ -n "${MLRUN_MODEL_DYNAMIC_CACHE:-}" ] && args+=(--dynamic-model-cache "$MLRUN_MODEL_DYNAMIC_CACHE")
exec "$MLRUN_PYTHON" -m mlperf_bert.harness "${args[@]}"
