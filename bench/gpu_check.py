"""The GPU backends on a GPU machine, in one prepared run (issue 14): what CI without a GPU cannot show.

    python3 bench/gpu_check.py --mirror DIR [--out DIR] [--budget 480] [--shapes large,base] [--wheels DIR]

On a random-weight BERT-Large-shaped model (and BERT-Base with --shapes large,base, to set beside the ixRT
figures), with real SQuAD lengths, it runs through bin/mlrun:
  1. the CPU backend (onnxruntime _cpu), accuracy mode on the first --samples samples: the reference answers;
  2. per GPU backend and precision (onnxruntime _cuda fp32 and tf32, native _tensorrt fp16, onnxruntime
     _tensorrt-ep fp16, native _tensorrt int8): the same accuracy run, the share of samples whose answer text
     equals the CPU's (>= 95% expected for fp32/fp16; tf32 and int8 are reported, not judged), then a short Offline run (samples/s)
     and a short SingleStream run (p90 latency), with --batch-size samples per inference call.
Everything is installed by the recipes (venvs from PyPI, TensorRT's libraries from NVIDIA's index: a machine
without them needs --wheels DIR holding every wheel), so the first lines check that pip can reach a package
index (or the wheel folder) and that nvidia-smi sees a GPU, and stop at once, saying why, when not.
After --budget seconds no new step starts. The report, rewritten after each step so a killed run still leaves
one: OUT/gpu_check.json and OUT/gpu_check.md (default OUT: $OUT, else a new /tmp/gpu-check-* folder). Run records stay in
OUT/../gpu-check-runs (or --runs). Accuracy of a random model means nothing: only the agreement is a check.

--python PY runs the same steps without mlrun, with an interpreter that already holds what the GPU venvs would
(onnxruntime-gpu and its CUDA libraries, LoadGen, numpy, onnx, nvidia-ml-py; tensorrt and cuda-python for the
TensorRT rows): for a GPU machine with no package index, where the recipes' venvs cannot be built. Each step is
the command its recipe runs (squad_features, random_model, gpu ort-trt-cache, trt_build, harness), in --runs;
nothing is cached, and a row whose libraries are missing records the error the product prints.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MLRUN = os.path.join(ROOT, "bin", "mlrun")
SHAPES = {"large": ["--dep.model.layers=24", "--dep.model.hidden=1024", "--dep.model.heads=16"],
          "base": ["--dep.model.layers=12", "--dep.model.hidden=768", "--dep.model.heads=12"],
          # a smoke run's (the tests'): every row's plumbing, no figure worth reading
          "tiny": ["--dep.model.layers=2", "--dep.model.hidden=64", "--dep.model.heads=2"]}
GPU_BACKENDS = [("onnxruntime _cuda", "fp32", "_onnxruntime _cuda"),
                ("onnxruntime _cuda", "tf32", "_onnxruntime _cuda"),
                ("tensorrt", "fp16", "_tensorrt"),
                ("onnxruntime _tensorrt-ep", "fp16", "_onnxruntime _tensorrt-ep"),
                ("tensorrt", "int8", "_tensorrt")]
AGREEMENT_GOAL = 0.95
STARTED = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - STARTED:6.0f} s] {text}", flush=True)


SMI_TIMEOUT = 30   # seconds nvidia-smi has to answer, as the get-gpu-nvidia probe gives it


def preflight(args):
    """None when the machine can run the check, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: this machine has no NVIDIA driver"
    try:   # a hung driver: said, as the probe recipe says it (it was a TimeoutExpired traceback, no report)
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"nvidia-smi did not answer within {SMI_TIMEOUT:g} s: the driver hangs (see dmesg, or reset the GPU)"
    if done.returncode:
        return f"nvidia-smi fails: {(done.stdout + done.stderr).strip()[:200]}"
    say(f"GPU: {done.stdout.strip()}")
    if args.python:
        return None if shutil.which(args.python) else f"--python {args.python}: not found"
    if args.wheels:
        return None if os.path.isdir(args.wheels) else f"--wheels {args.wheels}: no such folder"
    try:
        probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", "/tmp/gpu-check-pip",
                                "nvidia-ml-py==13.580.82"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        probe = subprocess.CompletedProcess([], 1, "", "")
    if probe.returncode:
        return ("pip cannot reach a package index, and the GPU venvs (onnxruntime-gpu ~300 MB, the CUDA/cuDNN "
                "wheels, TensorRT ~2 GB) are installed from it: give --wheels DIR holding them all "
                f"({probe.stderr.strip().splitlines()[-1][:160] if probe.stderr.strip() else 'no answer'})")
    return None


class Checker:
    def __init__(self, args):
        self.args = args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUN_")}
        self.env.update(MLRUN_CACHE=args.cache, MLRUN_RUNS=args.runs, MLRUN_MIRROR=args.mirror)
        self.extra = [f"--env.PIP_FIND_LINKS={args.wheels}", "--env.PIP_NO_INDEX=1"] if args.wheels else []
        self.direct = Direct(args, self) if args.python else None
        self.report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "samples": args.samples,
                       "batch_size": args.batch_size, "batch_pad": args.batch_pad, "gpu": None, "rows": [], "notes": []}

    def left(self):
        return self.args.budget - (time.monotonic() - STARTED)

    def mlrun(self, query, *flags):
        """(run record or None, error text or None) of one `mlrun run`, bounded by the time left."""
        argv = [MLRUN, "run", query, "--json", *flags, *self.extra]
        say("$ mlrun run " + " ".join([repr(query), *flags]))
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True, cwd=ROOT,
                                  timeout=max(self.left(), 30), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None, "out of time (--budget)"
        run_id = None
        try:
            run_id = json.loads(done.stdout)["run"]
        except (ValueError, KeyError, TypeError):
            pass
        record = None
        if run_id:
            with open(os.path.join(self.args.runs, run_id, "run.json")) as f:
                record = json.load(f)
        error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[0][:400]
        say(f"  -> exit {done.returncode}" + (f": {error}" if error else ""))
        return record, error

    def step(self, shape, words, precision, common, *flags):
        """(run record or None, error or None) of one app run of `words` (backend variations) at `precision`."""
        if self.args.python:
            return self.direct.app(shape, words, precision, *flags)
        flags = [*flags, *common] + ([f"--precision={precision}"] if precision != "fp32" else [])
        return self.mlrun(f"app mlperf bert {words} _random", *flags)

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "gpu_check.json"), "w") as f:
            json.dump(self.report, f, indent=1)
        with open(os.path.join(self.args.out, "gpu_check.md"), "w") as f:
            f.write(markdown(self.report))

    def run(self):
        large_first = sorted(self.args.shapes.split(","), key=lambda s: s != "large")
        for shape in large_first:
            common = [*SHAPES[shape], f"--batch_size={self.args.batch_size}", f"--batch_pad={self.args.batch_pad}"]
            reference, error = self.step(shape, "_onnxruntime _cpu", "fp32", common, "--mode=accuracy",
                                         f"--count={self.args.samples}")
            ref_dir = reference["steps"][-1]["path"] if reference and not error else None
            self.report["rows"].append({"shape": shape, "backend": "onnxruntime _cpu", "precision": "fp32",
                                        "error": error, "run": reference and reference["id"]})
            self.write()
            for label, precision, words in GPU_BACKENDS:
                if self.left() <= 0:
                    self.report["notes"].append(f"out of time before {shape} {label} {precision}")
                    break
                self.report["rows"].append(self.backend(shape, label, precision, words, common, ref_dir))
                self.write()

    def backend(self, shape, label, precision, words, common, ref_dir):
        row = {"shape": shape, "backend": label, "precision": precision}
        record, row["error"] = self.step(shape, words, precision, common, "--mode=accuracy",
                                         f"--count={self.args.samples}")
        if record is None or row["error"]:
            return row
        row["build_seconds"] = round(sum(s.get("seconds") or 0 for s in record["steps"][:-1]), 1)
        self.report["gpu"] = self.report["gpu"] or (record.get("results") or {}).get("gpu")
        if ref_dir:
            row["agreement"], row["compared"] = agreement(ref_dir, record["steps"][-1]["path"])
            # the bar is for fp32 and fp16; TF32 and int8 change the arithmetic more: reported, not judged
            row["agreement_ok"] = row["agreement"] >= AGREEMENT_GOAL if precision in ("fp32", "fp16") else None
        for scenario, count in (("Offline", self.args.offline_count), ("SingleStream", self.args.singlestream_count)):
            if self.left() <= 0:
                break
            perf, error = self.step(shape, words, precision, common, "--mode=performance",
                                    f"--scenario={scenario}", f"--count={count}")
            loadgen = ((perf or {}).get("results") or {}).get("loadgen") or {}
            row[scenario] = {"result": loadgen.get("result"), "error": error,
                             "samples_per_second": (loadgen.get("metric") or {}).get("Samples per second"),
                             "p90_ms": (loadgen.get("latency_ms") or {}).get("p90")}
        return row


class Direct:
    """The steps the recipes run, run here with --python (no mlrun, no venvs, no cache): see the docstring."""

    def __init__(self, args, checker):
        self.args, self.checker, self.work = args, checker, args.runs
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        self.built = {}  # build step name -> (seconds, error or None): each runs once per check
        self.count = 0

    def command(self, name, *argv):
        """(seconds, error text or None) of `PYTHON ARGV`, its output kept in WORK/NAME.log."""
        os.makedirs(self.work, exist_ok=True)
        say(f"$ {name}: python {' '.join(argv)}")
        started, log = time.monotonic(), os.path.join(self.work, f"{name}.log")
        try:
            with open(log, "w") as out:
                done = subprocess.run([self.args.python, *argv], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=self.work, timeout=max(self.checker.left(), 30), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return round(time.monotonic() - started, 1), "out of time (--budget)"
        seconds, error = round(time.monotonic() - started, 1), None
        if done.returncode:
            lines = [line for line in open(log, errors="replace").read().splitlines() if line.strip()]
            said = [line for line in lines if line.startswith(("error:", "hint:"))] or lines[-2:]
            error = f"exit {done.returncode}: " + " / ".join(said)[:400]
        say(f"  -> {error or 'exit 0'} ({seconds} s)")
        return seconds, error

    def build(self, name, *argv):
        if name not in self.built:
            self.built[name] = self.command(name, *argv)
        return self.built[name]

    def app(self, shape, words, precision, *flags):
        """What `mlrun run "app mlperf bert WORDS _random" FLAGS` runs: (a record-shaped dict, error)."""
        args, squad = self.args, os.path.join(self.args.mirror, "squad", "dev-v1.1.json")
        features, model = os.path.join(self.work, "features"), os.path.join(self.work, f"model-{shape}.onnx")
        shape_flags = [part for flag in SHAPES[shape] for part in flag.replace("--dep.model.", "--").split("=")]
        steps = [self.build("features", "-m", "mlperf_bert.squad_features", "--squad", squad, "--vocab",
                            os.path.join(args.mirror, "bert-vocab", "vocab.txt"), "--out", features),
                 self.build(f"model-{shape}", "-m", "mlperf_bert.random_model", "--out", model, "--seq", "dynamic",
                            *shape_flags)]
        batch, harness = str(args.batch_size), ["--backend", "onnxruntime", "--device", "cpu"]
        if "_cuda" in words:
            harness = ["--backend", "onnxruntime", "--device", "cuda", "--precision", precision]
        elif "_tensorrt-ep" in words:
            cache = os.path.join(self.work, f"ort-trt-cache-{shape}-{precision}")
            steps.append(self.build(os.path.basename(cache), "-m", "mlperf_bert.gpu", "ort-trt-cache", "--model",
                                    model, "--out", cache, "--precision", precision, "--batch-sizes", batch))
            harness = ["--backend", "onnxruntime", "--device", "tensorrt-ep", "--trt-cache", cache,
                       "--precision", precision]
        elif "_tensorrt" in words:
            engine = os.path.join(self.work, f"engine-{shape}-{precision}.plan")
            build = ["-m", "mlperf_bert.trt_build", "--model", model, "--out", engine, "--precision", precision,
                     "--batch-sizes", batch]
            if precision == "int8":
                if not args.calibration_list:
                    return None, "int8 needs --calibration-list (the MLPerf list of 100 calibration features)"
                build += ["--features", features, "--calibration-list", args.calibration_list,
                          "--calibration-cache", os.path.join(self.work, f"calibration-{shape}.cache")]
            steps.append(self.build(os.path.basename(engine), *build))
            harness = ["--backend", "tensorrt", "--engine", engine, "--precision", precision]
        failed = [error for _, error in steps if error]
        if failed:
            return None, failed[0]
        options = dict(flag[2:].split("=", 1) for flag in flags)
        scenario = options.get("scenario", "Offline")
        self.count += 1
        run = os.path.join(self.work, f"{self.count:02d}-{shape}-{'-'.join(w.strip('_') for w in words.split())}-"
                                      f"{precision}-{options['mode']}-{scenario}")
        seconds, error = self.command(os.path.basename(run), "-m", "mlperf_bert.harness", "--features", features,
                                      "--squad", squad, "--model", model, "--out", run, "--scenario", scenario,
                                      "--mode", options["mode"], "--count", options["count"], "--batch-size", batch,
                                      "--batch-pad", str(args.batch_pad), *harness)
        if not os.path.isfile(os.path.join(run, "summary.json")):
            return None, error or "the harness wrote no summary.json"
        record = {"id": os.path.basename(run), "results": json.load(open(os.path.join(run, "summary.json"))),
                  "steps": [{"seconds": s} for s, _ in steps[2:]] + [{"path": run, "seconds": seconds}]}
        return record, error


def agreement(ref_dir, run_dir):
    """(share of samples whose best answer text is the same in both runs' accuracy logs, samples compared)."""
    from mlperf_bert import accuracy
    texts = []
    for folder in (ref_dir, run_dir):
        summary = json.load(open(os.path.join(folder, "summary.json")))
        features = accuracy.load(summary["features"])
        responses = accuracy.read_log(os.path.join(folder, "mlperf_log_accuracy.json"), len(features.lengths))
        out = {}
        for index, logits in responses.items():
            feature = features.features[index]
            span = accuracy.best_span(feature, logits)
            out[index] = accuracy.span_text(feature, features.examples[feature["example_index"]], span[1],
                                            span[2]) if span else ""
        texts.append(out)
    common = sorted(set(texts[0]) & set(texts[1]))
    same = sum(texts[0][i] == texts[1][i] for i in common)
    return (round(same / len(common), 4) if common else 0.0), len(common)


def markdown(report):
    lines = [f"# GPU check ({report['started']})", "",
             f"GPU: {report['gpu'] or 'not read (no GPU run finished)'}", "",
             f"Random-weight models (accuracy means nothing); agreement = same answer text as the CPU on the first "
             f"{report['samples']} samples; batch size {report['batch_size']}, batch padding "
             f"{report.get('batch_pad', 0)} tokens.", "",
             "| shape | backend | precision | agreement | Offline samples/s | SingleStream p90 ms | engine/venv "
             "build s | error |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        off, single = row.get("Offline") or {}, row.get("SingleStream") or {}
        agree = f"{row['agreement']:.1%} of {row['compared']}" if "agreement" in row else "-"
        lines.append(f"| {row['shape']} | {row['backend']} | {row['precision']} | {agree} | "
                     f"{_fig(off.get('samples_per_second'))} {off.get('result') or ''} | "
                     f"{_fig(single.get('p90_ms'))} {single.get('result') or ''} | {row.get('build_seconds', '-')} | "
                     f"{row.get('error') or off.get('error') or single.get('error') or ''} |")
    lines += [""] + [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def _fig(value):
    return "-" if value is None else f"{value:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True, help="folder with squad/dev-v1.1.json and bert-vocab/vocab.txt")
    # never the checkout (a run there left gpu-check/ among its files): $OUT, else a new folder under /tmp
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--runs", help="run records (default: OUT/../gpu-check-runs)")
    parser.add_argument("--cache", default=os.environ.get("MLRUN_CACHE") or "/tmp/mlrun-gpu-check-cache")
    parser.add_argument("--budget", type=float, default=480, help="seconds after which no new step starts")
    parser.add_argument("--shapes", default="large", help="large, base or large,base (tiny: a smoke run)")
    parser.add_argument("--samples", type=int, default=200, help="samples of the accuracy runs")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per inference call (engine profiles)")
    parser.add_argument("--batch-pad", type=int, default=0, help="masked tokens a sample may be padded by to "
                        "join a batch (the app's --batch_pad; same for every row, the CPU's included)")
    parser.add_argument("--offline-count", type=int, default=4096)
    parser.add_argument("--singlestream-count", type=int, default=1024)
    parser.add_argument("--wheels", help="a folder of wheels to install from instead of a package index")
    parser.add_argument("--python", help="run the recipes' steps with this interpreter, without mlrun (see above)")
    parser.add_argument("--calibration-list", help="--python, int8: the MLPerf list of calibration features")
    args = parser.parse_args(argv)
    unknown = [shape for shape in args.shapes.split(",") if shape not in SHAPES]
    if unknown:   # a KeyError once the GPU rows began
        parser.error(f"--shapes: {', '.join(unknown)} is none of {', '.join(SHAPES)}")
    args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="gpu-check-"))   # made once it will be used
    args.mirror = os.path.abspath(args.mirror)
    if args.python and shutil.which(args.python):  # the steps run in --runs: a relative path must not move
        args.python = os.path.abspath(shutil.which(args.python))
    args.runs = os.path.abspath(args.runs or os.path.join(os.path.dirname(args.out), "gpu-check-runs"))
    checker = Checker(args)
    why = preflight(args)
    if why:
        checker.report["notes"].append(f"not run: {why}")
        checker.write()
        say(f"not run: {why}")
        return 2
    checker.run()
    checker.write()
    say(f"report: {os.path.join(args.out, 'gpu_check.md')}")
    print(markdown(checker.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
