"""Time to compile DeepSparse's engines, one per length bucket: a whole static copy per engine (as before)
against mlperf_bert.ds_backend.StaticCopies (the weights written once as ONNX external data, a graph of a few
KB per engine).

    $(bin/mlrun "get python venv _deepsparse" --json | python3 -c \\
        'import json,sys; print(json.load(sys.stdin)["exports"]["MLRUN_PYTHON"])') -m bench.deepsparse_compile \\
        [--layers 24 --hidden 1024 --heads 16] [--buckets 128,192,256,384]

DeepSparse 1.8 cannot keep a compiled engine between processes (its engine object has no save or
serialise method and cannot be pickled; its library reads no cache-folder variable), so what a run can save
is the writing of the copies it compiles from: this prints both ways, per engine and in total.
"""
import os
import tempfile
import time

from bench.harness import fixed_model, model_args
from mlperf_bert import ds_backend, seq_plan


def main(argv=None):
    parser = model_args(__doc__.splitlines()[0], None, None)   # it compiles: no samples run, no passes
    parser.add_argument("--buckets", default="128,192,256,384")
    args = parser.parse_args(argv)
    deepsparse = ds_backend.import_deepsparse()
    args.scratch.mkdir(parents=True, exist_ok=True)
    model, _ = seq_plan.prepare(str(fixed_model(args, args.scratch)), "auto", args.scratch)
    lengths = [int(n) for n in args.buckets.split(",")]
    print(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}, "
          f"{os.path.getsize(model) / 1e6:.0f} MB; engines for lengths {args.buckets}, batch 1")

    def compile_all(copy_path):
        write = build = 0.0
        for length in lengths:
            started = time.perf_counter()
            path = copy_path(length)
            wrote = time.perf_counter()
            deepsparse.compile_model(path, batch_size=1)
            write, build = write + wrote - started, build + time.perf_counter() - wrote
        return write, build

    graph = ds_backend._load_graph(model)
    with tempfile.TemporaryDirectory(prefix="bench-deepsparse-") as scratch:
        def whole(length):
            path = os.path.join(scratch, f"len{length}.onnx")
            ds_backend._save_static(graph, [1, length], path)
            return path
        before = compile_all(whole)
    copies = ds_backend.StaticCopies(model)
    try:
        after = compile_all(lambda length: copies.path([1, length]))
    finally:
        copies.close()
    for name, (write, build) in (("a whole copy per engine", before), ("StaticCopies (weights once)", after)):
        print(f"{name:30s} writing {write:7.2f} s  compiling {build:7.2f} s  total {write + build:7.2f} s")
    print(f"setup time: {sum(after) / sum(before):.2f}x of before ({sum(before) - sum(after):.1f} s saved)")


if __name__ == "__main__":
    from bench.entry import run
    run(main)
