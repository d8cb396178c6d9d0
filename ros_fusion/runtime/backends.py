"""Inference backends behind one interface (DESIGN §7, §3 `runtime/`).

    backend = create_backend("onnxruntime", bundle)          # or "tensorrt", "torch"
    out = backend.run("lidar", {"lidar_bev": raster[None]})  # {"lidar_feat": ...}

Every backend runs the same stages (`STAGE_IO`: the names the ONNX export fixed)
on float32 numpy arrays with a leading batch axis, and checks its inputs against
the manifest's specs first: a wrong name, shape or dtype, or a NaN, is a
`RejectedInput` naming the tensor, never a crash deep inside a runtime.

- `onnxruntime`: CPU everywhere; the CUDA and TensorRT execution providers are
  used when `onnxruntime-gpu` is installed (`providers="auto"` takes the best one
  available, or name them).
- `tensorrt`: builds one engine per stage from the bundle's ONNX (FP16, optional
  INT8 calibrated on recorded frames), cached on disk under a key of ONNX sha256 +
  GPU + TensorRT version + precision, so a changed model, card or TensorRT never
  loads a stale engine. Needs `tensorrt` and `cuda-python`.
- `torch`: the training-time model itself (checkpoint), for development and for
  checking the other two. torch is imported only here, lazily: the runtime works
  without it.

A backend whose package is missing raises `BackendUnavailable` naming what to install.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.types import RejectedInput
from .model_bundle import ModelBundle, TensorSpec

log = logging.getLogger(__name__)

#: Inputs and outputs of each stage (same as models.network.STAGES, restated here without torch).
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lidar": (("lidar_bev",), ("lidar_feat",)),
    "radar": (("radar_bev",), ("radar_feat",)),
    "camera": (("images", "cam_grid", "cam_valid"), ("camera_feat",)),
    "imu": (("imu",), ("imu_emb",)),
    "fusion_head": (("camera_feat", "lidar_feat", "radar_feat", "imu_emb", "coverage", "present"),
                    ("heatmap", "regression", "gates")),
}
BACKENDS = ("onnxruntime", "tensorrt", "torch")
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
_INSTALL = {
    "onnxruntime": "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA/TensorRT execution providers)",
    "tensorrt": "install NVIDIA TensorRT's Python bindings (JetPack ships them; desktop: pip install tensorrt) "
                "and cuda-python (pip install cuda-python)",
    "torch": "pip install torch (development backend; see requirements-train)",
}


class BackendUnavailable(RuntimeError):
    """The backend's package (or a GPU it needs) is not there; the message says what to install."""


def check_inputs(stage: str, inputs: dict[str, np.ndarray], specs: Sequence[TensorSpec] | None = None) -> None:
    """Refuse inputs a stage cannot take: unknown stage, missing name, wrong dtype/shape, NaN/Inf."""
    if stage not in STAGE_IO:
        raise RejectedInput("unknown_stage", f"stage {stage!r} is not one of {sorted(STAGE_IO)}", "stage")
    names = STAGE_IO[stage][0]
    by_name = {s.name: s for s in specs} if specs else {}
    batch = None
    for name in names:
        a = inputs.get(name)
        if a is None:
            raise RejectedInput("missing_input", f"stage {stage} needs {list(names)}", name)
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise RejectedInput("dtype", f"expected a float32 numpy array, got {getattr(a, 'dtype', type(a))}", name)
        spec = by_name.get(name)
        if spec is not None:
            if a.ndim != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, a.shape,
                                                                                             strict=True)):
                raise RejectedInput("shape", f"expected {spec.shape}, got {list(a.shape)}", name)
        if batch is None:
            batch = a.shape[0]
        elif a.shape[0] != batch:
            raise RejectedInput("shape", f"batch {a.shape[0]} differs from the stage's other inputs ({batch})", name)
        if not np.isfinite(a).all():
            raise RejectedInput("nan", "contains NaN or Inf", name)
    extra = set(inputs) - set(names)
    if extra:
        raise RejectedInput("unknown_input", f"stage {stage} takes {list(names)}, not {sorted(extra)}", stage)


class Backend(ABC):
    """Runs the model's stages by name. Subclasses implement `_run`."""

    name: str = ""

    def __init__(self, bundle: ModelBundle | None) -> None:
        self.bundle = bundle

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = self.bundle.stages[stage].inputs if self.bundle is not None and stage in self.bundle.stages else None
        check_inputs(stage, inputs, specs)
        return self._run(stage, inputs)

    @abstractmethod
    def _run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions/engines (optional)."""


# --- ONNX Runtime ---------------------------------------------------------------------------

ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    """One `InferenceSession` per stage file of the bundle."""

    name = "onnxruntime"

    def __init__(self, bundle: ModelBundle, *, providers: str | Sequence[str] = "auto", threads: int | None = None,
                 trt_cache_dir: Path | None = None, spinning: bool = False) -> None:
        """`spinning` lets idle intra-op threads busy-wait for work (onnxruntime's default). Off here:
        every stage has its own session and thread pool, and the pools of the stage that just ran
        kept spinning on the cores the next stage needed — measured on this 2-core machine, a whole
        bundle took 56 ms with spinning and 17 ms without (fusion head alone 23 → 6.7 ms)."""
        super().__init__(bundle)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"backend 'onnxruntime' needs the onnxruntime package: {_INSTALL['onnxruntime']}"
                                     ) from e
        available = ort.get_available_providers()
        if providers == "auto":
            chosen = [p for p in ORT_PROVIDER_ORDER if p in available]
        else:
            chosen = [providers] if isinstance(providers, str) else list(providers)
            missing = [p for p in chosen if p not in available]
            if missing:
                raise BackendUnavailable(f"onnxruntime execution provider(s) {missing} not available (have "
                                         f"{available}); for CUDA/TensorRT: pip install onnxruntime-gpu")
        opts: list[dict[str, Any]] = []
        for p in chosen:
            if p == "TensorrtExecutionProvider":
                cache = str(trt_cache_dir or (bundle.root / "engines" / "ort_trt"))
                opts.append({"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache})
            else:
                opts.append({})
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = chosen
        self.sessions = {name: ort.InferenceSession(str(sf.path), so, providers=chosen, provider_options=opts)
                         for name, sf in bundle.stages.items()}

    def _run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = STAGE_IO[stage][1]
        return dict(zip(outs, self.sessions[stage].run(list(outs), inputs), strict=True))

    def describe(self) -> str:
        return f"onnxruntime [{', '.join(self.providers)}]"


# --- torch (development) -----------------------------------------------------------------------


class TorchBackend(Backend):
    """The torch model of a training checkpoint (or a FusionNet object) run stage by stage.

    On a CUDA device the convolutions and matmuls run in true fp32 unless `tf32=True`:
    torch lets cuDNN use TF32 (10-bit mantissa) by default on Ampere and later, and on an
    H200 that moved the shipped model's outputs by up to 1e-2 from ONNX Runtime CPU
    (3.8e-3 heatmap logits); in fp32 they agree to 1.1e-5 (measured, docs/results.md §6).
    """

    name = "torch"

    def __init__(self, model: Any, bundle: ModelBundle | None = None, *, device: str = "cpu",
                 tf32: bool = False) -> None:
        super().__init__(bundle)
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailable(f"backend 'torch' needs torch: {_INSTALL['torch']}") from e
        from ..models.network import FusionNet, StageModule

        if not isinstance(model, FusionNet):
            from ..models.checkpoint import load_checkpoint

            model = load_checkpoint(Path(model)).model
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.modules = {name: StageModule(self.model, name) for name in STAGE_IO}
        self.tf32 = tf32

    def _run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names, outs = STAGE_IO[stage]
        torch = self._torch
        matmul = torch.backends.cuda.matmul
        saved = matmul.allow_tf32
        try:
            # Process-wide flags in torch: set for this call only, restored after.
            matmul.allow_tf32 = self.tf32
            with torch.no_grad(), torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                                             benchmark=torch.backends.cudnn.benchmark,
                                                             deterministic=torch.backends.cudnn.deterministic,
                                                             allow_tf32=self.tf32):
                res = self.modules[stage](*(torch.from_numpy(inputs[n]).to(self.device) for n in names))
                return {n: r.detach().cpu().numpy() for n, r in zip(outs, res, strict=True)}
        finally:
            matmul.allow_tf32 = saved


# --- TensorRT -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineProfile:
    """Shape range an engine accepts: batch 1..max_batch, cameras 1..max_cameras (opt = 1)."""

    max_batch: int = 1
    max_cameras: int = 1


def _concrete(spec: TensorSpec, batch: int, cameras: int) -> tuple[int, ...]:
    dims = {"batch": batch, "cameras": cameras}
    return tuple(d if isinstance(d, int) else dims.get(d, 1) for d in spec.shape)


def engine_cache_key(onnx_sha256: str, gpu: str, trt_version: str, precision: str, profile: EngineProfile) -> str:
    """Key of a cached engine: anything that changes the engine changes the key."""
    text = json.dumps({"onnx": onnx_sha256, "gpu": gpu, "tensorrt": trt_version, "precision": precision,
                       "profile": [profile.max_batch, profile.max_cameras]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _import_tensorrt() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"backend 'tensorrt' needs TensorRT: {_INSTALL['tensorrt']}") from e
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise BackendUnavailable(f"backend 'tensorrt' needs cuda-python for GPU buffers: {_INSTALL['tensorrt']}"
                                     ) from e
    return trt, cudart


def _cuda_check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def _make_calibrator(trt: Any, cudart: Any, frames: list[dict[str, np.ndarray]], cache: Path) -> Any:
    """INT8 entropy calibrator fed with recorded frames (dicts of one stage's inputs, batch 1)."""

    if True:  # the class needs `trt` in scope, so it is defined here

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.frames = iter(frames)
                self.buffers: dict[str, int] = {}

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> list[int] | None:
                frame = next(self.frames, None)
                if frame is None:
                    return None
                ptrs = []
                for n in names:
                    a = np.ascontiguousarray(frame[n], np.float32)
                    if n not in self.buffers:
                        self.buffers[n] = _cuda_check(cudart.cudaMalloc(a.nbytes))
                    _cuda_check(cudart.cudaMemcpy(self.buffers[n], a.ctypes.data, a.nbytes,
                                                  cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                    ptrs.append(self.buffers[n])
                return ptrs

            def read_calibration_cache(self) -> bytes | None:
                return cache.read_bytes() if cache.is_file() else None

            def write_calibration_cache(self, data: bytes) -> None:
                cache.write_bytes(bytes(data))

        return Calibrator()


def build_engine(onnx_path: Path, out_path: Path, *, inputs: Sequence[TensorSpec], precision: str = "fp16",
                 profile: EngineProfile = EngineProfile(), calibration: Iterable[dict[str, np.ndarray]] = (),
                 workspace_mb: int = 1024) -> Path:
    """Build one TensorRT engine from ONNX (TensorRT ≥ 8.6 Python API) and write it to `out_path`."""
    trt, cudart = _import_tensorrt()
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    for spec in inputs:
        lo, hi = _concrete(spec, 1, 1), _concrete(spec, profile.max_batch, profile.max_cameras)
        opt_profile.set_shape(spec.name, lo, lo, hi)
    config.add_optimization_profile(opt_profile)
    if precision == "int8":
        frames = list(calibration)
        if not frames:
            raise ValueError("int8 needs calibration frames (recorded pre-processed inputs of this stage)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(opt_profile)
        config.int8_calibrator = _make_calibrator(trt, cudart, frames, out_path.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name} (see the log above)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(out_path)
    return out_path


def gpu_name(cudart: Any, device: int = 0) -> str:
    props = _cuda_check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return f"{name.strip(chr(0))} sm_{props.major}{props.minor}"


class TensorRTBackend(Backend):
    """One TensorRT engine per stage, built on first use and cached (`engine_cache_key`)."""

    name = "tensorrt"

    def __init__(self, bundle: ModelBundle, *, precision: str = "fp16", cache_dir: Path | None = None,
                 profile: EngineProfile = EngineProfile(),
                 calibration: dict[str, list[dict[str, np.ndarray]]] | None = None) -> None:
        super().__init__(bundle)
        trt, cudart = _import_tensorrt()
        self._trt, self._cudart = trt, cudart
        self.precision = precision
        self.profile = profile
        self.cache_dir = cache_dir or bundle.root / "engines"
        self.gpu = gpu_name(cudart)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.stream = _cuda_check(cudart.cudaStreamCreate())
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self.engine_paths: dict[str, Path] = {}
        self._buffers: dict[tuple[str, str], tuple[int, int]] = {}
        for stage, sf in bundle.stages.items():
            path = self.engine_path(stage)
            if not path.is_file():
                log.info("building TensorRT %s engine for %s (%s)", precision, stage, self.gpu)
                build_engine(sf.path, path, inputs=sf.inputs, precision=precision, profile=profile,
                             calibration=(calibration or {}).get(stage, ()))
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load engine {path}; delete it to rebuild")
            self.engines[stage] = engine
            self.contexts[stage] = engine.create_execution_context()
            self.engine_paths[stage] = path

    def engine_path(self, stage: str) -> Path:
        sf = self.bundle.stages[stage]  # type: ignore[union-attr]
        key = engine_cache_key(sf.sha256, self.gpu, self._trt.__version__, self.precision, self.profile)
        return self.cache_dir / f"{stage}-{self.precision}-{key}.engine"

    def _buffer(self, stage: str, name: str, nbytes: int) -> int:
        held = self._buffers.get((stage, name))
        if held is None or held[1] < nbytes:
            if held is not None:
                self._cudart.cudaFree(held[0])
            held = (_cuda_check(self._cudart.cudaMalloc(max(nbytes, 4))), nbytes)
            self._buffers[(stage, name)] = held
        return held[0]

    def _run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ctx = self.contexts[stage]
        names, outs = STAGE_IO[stage]
        for n in names:
            a = np.ascontiguousarray(inputs[n])
            ptr = self._buffer(stage, n, a.nbytes)
            _cuda_check(cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, self.stream))
            ctx.set_input_shape(n, a.shape)
            ctx.set_tensor_address(n, ptr)
        results = {}
        for n in outs:
            shape = tuple(ctx.get_tensor_shape(n))
            results[n] = np.empty(shape, np.float32)
            ctx.set_tensor_address(n, self._buffer(stage, n, results[n].nbytes))
        if not ctx.execute_async_v3(self.stream):
            raise RuntimeError(f"TensorRT execution of stage {stage} failed")
        for n in outs:
            r = results[n]
            _cuda_check(cudart.cudaMemcpyAsync(r.ctypes.data, self._buffers[(stage, n)][0], r.nbytes, d2h,
                                               self.stream))
        _cuda_check(cudart.cudaStreamSynchronize(self.stream))
        return results

    def describe(self) -> str:
        return f"tensorrt {self._trt.__version__} {self.precision} on {self.gpu}"

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()


# --- selection ------------------------------------------------------------------------------------------


def create_backend(name: str, bundle: ModelBundle | None, **options: Any) -> Backend:
    """The backend called `name` ("onnxruntime", "tensorrt", "torch"; aliases ort, trt, pytorch).

    torch needs `model=` (a FusionNet or a checkpoint path); the others run `bundle`.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if key == "torch":
        model = options.pop("model", None)
        if model is None:
            raise ValueError("backend 'torch' needs model= (a FusionNet or a training checkpoint path)")
        return TorchBackend(model, bundle, **options)
    if bundle is None:
        raise ValueError(f"backend {key!r} needs a model bundle (models/manifest.yaml)")
    if key == "onnxruntime":
        return OnnxRuntimeBackend(bundle, **options)
    return TensorRTBackend(bundle, **options)
