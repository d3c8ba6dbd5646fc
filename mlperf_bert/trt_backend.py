"""Native TensorRT backend: an engine built by mlperf_bert.trt_build (a profile per sequence-length bucket) run
with the harness's contract: run(ids, mask, segments) [B, L] -> (start, end) float32 [B, L].

Device buffers are allocated once, at each tensor's largest shape over the profiles, and reused by every call;
each (profile, batch, length) is run once by TensorRT, then captured in a CUDA graph and replayed, unless the
capture fails (a layer that cannot be captured), when it keeps running through TensorRT.
Needs the `tensorrt` and `cuda-python` packages (get-backend-tensorrt's venv) and an NVIDIA GPU.
"""
from types import SimpleNamespace

import numpy as np

from engine.errors import StepError
from mlperf_bert import seq_plan
from mlperf_bert.gpu import GpuUnavailable

_LOGGER = None


def tensorrt():
    """The tensorrt module, or GpuUnavailable saying why it cannot load (a venv without it, a missing library)."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise GpuUnavailable(f"TensorRT's Python package cannot be loaded here ({error})",
                             hint="the native TensorRT backend runs in get-backend-tensorrt's venv "
                                  "(tensorrt-cu12 with its libraries) on a machine with an NVIDIA GPU") from None
    return trt


def trt_logger():
    global _LOGGER
    trt = tensorrt()
    _LOGGER = _LOGGER or trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as error:
            raise GpuUnavailable(f"cuda-python cannot be loaded here ({error})",
                                 hint="it comes with get-backend-tensorrt's venv") from None
    return runtime


def check(result):
    """cuda-python returns (error, values...): raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise StepError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


class DeviceBuffer:
    """Device memory of `nbytes`, kept for the backend's life."""

    def __init__(self, nbytes):
        self.cudart = _cudart()
        self.nbytes = nbytes
        self.pointer = int(check(self.cudart.cudaMalloc(nbytes)))

    def upload(self, array, stream=0):
        check(self.cudart.cudaMemcpyAsync(self.pointer, array.ctypes.data, array.nbytes,
                                          self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def download(self, array, stream=0):
        check(self.cudart.cudaMemcpyAsync(array.ctypes.data, self.pointer, array.nbytes,
                                          self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))


class TrtBackend:
    def __init__(self, engine_path, use_cuda_graphs=True):
        trt = self.trt = tensorrt()
        self.cudart = _cudart()
        self.runtime = trt.Runtime(trt_logger())  # kept: the engine must not outlive its runtime
        with open(engine_path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise GpuUnavailable(f"TensorRT {trt.__version__} cannot load {engine_path} (built for another GPU or "
                                 "TensorRT version?)", hint="its recipe's key names both: rebuild it here")
        self.path, self.threads, self.use_cuda_graphs = engine_path, 1, use_cuda_graphs
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.io = SimpleNamespace(input_dtype=np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.inputs[0]))))
        # (largest batch, largest length) of each profile, in the order of their lengths
        self.profiles = [tuple(self.engine.get_tensor_profile_shape(self.inputs[0], p)[2])
                         for p in range(self.engine.num_optimization_profiles)]
        batch = max(b for b, _ in self.profiles)
        self.stream = int(check(self.cudart.cudaStreamCreate()))  # a handle TensorRT and cuda-python both take
        self.buffers = {}
        for name in names:  # an output may be [B, L, 2]: size it by its element count per token
            per_token = 2 if name in self.outputs and len(self.engine.get_tensor_shape(name)) == 3 else 1
            itemsize = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
            self.buffers[name] = DeviceBuffer(batch * seq_plan.FEATURE_WIDTH * per_token * itemsize)
            self.context.set_tensor_address(name, self.buffers[name].pointer)
        self.current, self.graphs, self.graph_failures = None, {}, 0

    def plan(self, buckets):
        """The SeqPlan the engine serves: each sample at its bucket (the largest length of a profile)."""
        lengths = tuple(sorted(length for _, length in self.profiles))
        if isinstance(buckets, tuple) and buckets != lengths:
            raise StepError(f"{self.path} has profiles for lengths {lengths}, not the --buckets {buckets} asked")
        return seq_plan.SeqPlan(lengths, f"buckets {','.join(map(str, lengths))} (a TensorRT profile each)")

    def run(self, ids, mask, segments):
        batch, length = np.shape(ids)
        profile = next(p for p, (most, longest) in enumerate(self.profiles) if longest >= length and most >= batch)
        if profile != self.current:
            self.context.set_optimization_profile_async(profile, self.stream)
            self.current = profile
        for name, array in zip(self.inputs, (ids, mask, segments)):
            self.context.set_input_shape(name, (batch, length))
            self.buffers[name].upload(np.ascontiguousarray(array, dtype=self.io.input_dtype), self.stream)
        self._execute((profile, batch, length))
        outputs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))))
            self.buffers[name].download(host, self.stream)
            outputs.append(host)
        check(self.cudart.cudaStreamSynchronize(self.stream))
        if len(outputs) == 1:  # one [B, L, 2] output
            outputs = [outputs[0][..., 0], outputs[0][..., 1]]
        return tuple(np.ascontiguousarray(out, dtype=np.float32) for out in outputs[:2])

    def _execute(self, shape):
        graph = self.graphs.get(shape)
        if graph is not None:
            check(self.cudart.cudaGraphLaunch(graph, self.stream))
            return
        if not self.context.execute_async_v3(self.stream):
            raise StepError(f"TensorRT failed on a batch of shape {list(shape[1:])}")
        if self.use_cuda_graphs and shape not in self.graphs:
            self.graphs[shape] = self._capture()  # after a first run at this shape, as TensorRT asks

    def _capture(self):
        cudart = self.cudart
        try:
            check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self.context.execute_async_v3(self.stream)
            graph = check(cudart.cudaStreamEndCapture(self.stream))
            return check(cudart.cudaGraphInstantiate(graph, 0))
        except StepError:
            self.graph_failures += 1
            return None  # run through TensorRT at this shape

    def describe(self):
        return {"engine": self.path, "tensorrt": self.trt.__version__, "profiles": self.profiles,
                "cuda_graphs": sum(graph is not None for graph in self.graphs.values()),
                "cuda_graph_failures": self.graph_failures}
