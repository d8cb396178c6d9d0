"""A model bundle: `models/manifest.yaml` + the ONNX files it lists, verified before use.

The manifest is untrusted input like any file: every problem is a `BundleError`
(a `ConfigError`, so startup code catches one type) naming the key or file and
what to fix. Each file's sha256 is checked against the manifest: a model that
was swapped, truncated or half-copied is refused rather than run. The grid,
channels and classes the model was trained with are checked against this
package's `core/network_io` contract and the rig, so a model built for another
contract or rig fails at startup, not with wrong boxes at runtime.

No torch here: the ONNX Runtime and TensorRT backends run a bundle without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core import network_io as nio
from ..core.files import sha256_file
from ..core.model_contract import MANIFEST_FORMAT, MANIFEST_NAME, STAGE_NAMES, contract_grid
from ..core.rig import ConfigError, Rig
from ..core.types import Modality


class BundleError(ConfigError):
    """The manifest or a model file is missing, malformed, or does not match."""


@dataclass
class TensorSpec:
    """A stage input/output: `shape` holds ints and symbolic names ("batch", "cameras")."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"


@dataclass
class StageFile:
    name: str
    path: Path
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_abs_error: float | None = None


@dataclass
class ModelBundle:
    """A verified manifest: stage files (hash-checked), classes, grid and provenance."""

    root: Path
    stages: dict[str, StageFile]
    classes: list[str]
    grid: dict[str, Any]
    status: str
    raw: dict[str, Any] = field(default_factory=dict)

    def path(self, stage: str) -> Path:
        return self.stages[stage].path

    def check_rig(self, rig: Rig) -> None:
        """Refuse a rig the model cannot serve: too many cameras, or a fused modality it lacks entirely."""
        n_cam = len(rig.of(Modality.CAMERA))
        if n_cam > nio.MAX_CAMERAS:
            raise BundleError("rig.sensors", f"{n_cam} cameras but the model takes at most {nio.MAX_CAMERAS}",
                              rig.source)
        if not any(rig.of(Modality(m)) for m in nio.FUSED_MODALITIES):
            raise BundleError("rig.sensors", f"no camera, LiDAR or radar: the model fuses {nio.FUSED_MODALITIES}",
                              rig.source)
        cam = self.stages.get("camera")
        if cam is not None and n_cam:
            dim = cam.inputs[0].shape[1] if len(cam.inputs[0].shape) > 1 else None
            if isinstance(dim, int) and dim != n_cam:
                raise BundleError(f"stages.camera.inputs.{cam.inputs[0].name}",
                                  f"exported for {dim} camera(s) but the rig has {n_cam}", str(self.root))


def _req(d: Any, key: str, kind: type | tuple[type, ...], where: str, source: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise BundleError(f"{where}{key}", "missing", source)
    v = d[key]
    if not isinstance(v, kind):
        raise BundleError(f"{where}{key}", f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}",
                          source)
    return v


def _specs(items: Any, where: str, source: str) -> list[TensorSpec]:
    if not isinstance(items, list) or not items:
        raise BundleError(where, "expected a non-empty list of {name, shape, dtype}", source)
    out = []
    for i, it in enumerate(items):
        name = _req(it, "name", str, f"{where}[{i}].", source)
        shape = _req(it, "shape", list, f"{where}[{i}].", source)
        if not all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in shape):
            raise BundleError(f"{where}[{i}].shape", f"entries must be ints or dimension names, got {shape}", source)
        out.append(TensorSpec(name, list(shape), str(it.get("dtype", "float32"))))
    return out


def load_bundle(path: Path | str, *, verify: bool = True, rig: Rig | None = None) -> ModelBundle:
    """Read `path` (a manifest file or the folder holding manifest.yaml) and verify it.

    verify: check every file's sha256 (a mismatch raises BundleError naming the file).
    rig: also check the rig is compatible with the model.
    """
    path = Path(path)
    manifest = path / MANIFEST_NAME if path.is_dir() else path
    src = str(manifest)
    if not manifest.is_file():
        raise BundleError("manifest", f"{manifest} not found (run `ros-fusion export` or point to a model folder)",
                          src)
    try:
        raw = yaml.safe_load(manifest.read_text())
    except yaml.YAMLError as e:
        raise BundleError("manifest", f"not valid YAML: {e}", src) from e
    if not isinstance(raw, dict):
        raise BundleError("manifest", "expected a mapping at the top level", src)
    fmt = raw.get("format")
    if fmt != MANIFEST_FORMAT:
        raise BundleError("format", f"expected {MANIFEST_FORMAT!r}, got {fmt!r}", src)
    classes = _req(raw, "classes", list, "", src)
    if [str(c) for c in classes] != list(nio.CLASSES):
        raise BundleError("classes", f"model classes {classes} differ from this package's {list(nio.CLASSES)}", src)
    grid = _req(raw, "grid", dict, "", src)
    expected = contract_grid()
    for key, want in expected.items():
        got = grid.get(key)
        if got != want:
            raise BundleError(f"grid.{key}", f"model was trained with {got!r}, this package pre-processes "
                                             f"{want!r}: re-export or update the package", src)
    stages_raw = _req(raw, "stages", dict, "", src)
    stages: dict[str, StageFile] = {}
    root = manifest.parent
    for name in STAGE_NAMES:
        if name not in stages_raw:
            raise BundleError(f"stages.{name}", "missing", src)
        s = stages_raw[name]
        where = f"stages.{name}."
        rel = _req(s, "file", str, where, src)
        digest = _req(s, "sha256", str, where, src)
        fpath = (root / rel).resolve()
        if not fpath.is_relative_to(root.resolve()):
            raise BundleError(f"{where}file", f"{rel!r} points outside the model folder", src)
        if not fpath.is_file():
            raise BundleError(f"{where}file", f"{fpath} not found", src)
        if verify:
            actual = sha256_file(fpath)
            if actual != digest.lower():
                raise BundleError(f"{where}sha256", f"{fpath.name}: sha256 {actual} does not match the manifest's "
                                                    f"{digest} — the file was changed or corrupted; refusing it",
                                  src)
        err = s.get("max_abs_error")
        stages[name] = StageFile(name, fpath, digest, _specs(s.get("inputs"), f"{where}inputs", src),
                                 _specs(s.get("outputs"), f"{where}outputs", src),
                                 float(err) if isinstance(err, (int, float)) else None)
    bundle = ModelBundle(root, stages, [str(c) for c in classes], grid, str(raw.get("status", "")), raw)
    if rig is not None:
        bundle.check_rig(rig)
    return bundle
