"""What things are made of and how big they are: one table for every sensor model.

Sizes are sampled uniformly from published ranges so detectors never see one
template per class:
- car/truck/bus/pedestrian/cyclist/barrier: ranges bracketing the nuScenes
  per-class mean sizes (Caesar et al., CVPR 2020, devkit `detection` config;
  car 4.6×1.95×1.73 m, truck ~6.9×2.5×2.8, bus ~11×2.9×3.5, pedestrian
  0.73×0.67×1.77, bicycle+rider 1.76×0.6×1.3–1.8, barrier 0.5×2.5×1.0) and EU
  Directive 96/53/EC limits (width ≤ 2.55 m, rigid truck ≤ 12 m, height ≤ 4 m).
LiDAR reflectivity is the diffuse reflectance at 905 nm (asphalt 5–15 %,
concrete ~30 %, vegetation ~50 % in the NIR red edge, retroreflective paint and
barrier sheeting high). Radar RCS in dBsm at 77 GHz follows typical values
reported in the automotive-radar literature (e.g. car ≈ 10, truck ≈ 20,
pedestrian ≈ −8…−5, bicycle+rider ≈ −5…0 dBsm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.types import DEFAULT_CLASSES


@dataclass(frozen=True)
class Material:
    name: str
    reflectivity: float  # LiDAR diffuse reflectance at 905 nm, 0..1
    rgb: tuple[float, float, float]  # linear albedo for the camera, 0..1
    rcs_dbsm: float  # radar cross-section when the object is a clutter source


#: Index = material id used in the ray-cast maps.
MATERIALS: tuple[Material, ...] = (
    Material("grass", 0.45, (0.18, 0.30, 0.10), -10.0),       # 0
    Material("asphalt", 0.10, (0.16, 0.16, 0.17), -20.0),     # 1
    Material("sidewalk", 0.28, (0.45, 0.44, 0.42), -20.0),    # 2
    Material("concrete", 0.30, (0.55, 0.52, 0.48), 20.0),     # 3 buildings, walls
    Material("metal_pole", 0.35, (0.40, 0.42, 0.45), 5.0),    # 4 poles, signs
    Material("bark", 0.30, (0.25, 0.17, 0.10), -5.0),         # 5 tree trunks
    Material("foliage", 0.50, (0.10, 0.28, 0.08), -10.0),     # 6 canopies, hedges
    Material("guardrail", 0.55, (0.62, 0.63, 0.65), 10.0),    # 7
    Material("vehicle", 0.25, (0.5, 0.5, 0.5), 10.0),         # 8 colour per actor
    Material("person", 0.25, (0.3, 0.25, 0.3), -6.0),         # 9 colour per actor
    Material("barrier", 0.70, (0.85, 0.35, 0.05), 0.0),       # 10 retroreflective sheeting
)
MAT = {m.name: i for i, m in enumerate(MATERIALS)}
REFLECTIVITY = np.array([m.reflectivity for m in MATERIALS], np.float64)
ALBEDO = np.array([m.rgb for m in MATERIALS], np.float64)
CLUTTER_RCS = np.array([m.rcs_dbsm for m in MATERIALS], np.float64)


@dataclass(frozen=True)
class ClassModel:
    name: str
    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    material: int
    rcs_dbsm: float
    radar_points: tuple[int, int]  # min/max detections per scan for a fully visible object

    @property
    def label(self) -> int:
        return DEFAULT_CLASSES.index(self.name)


CLASSES: dict[str, ClassModel] = {
    "car": ClassModel("car", (3.9, 5.1), (1.70, 2.05), (1.40, 1.85), MAT["vehicle"], 10.0, (1, 3)),
    "truck": ClassModel("truck", (6.0, 12.0), (2.35, 2.55), (2.8, 4.0), MAT["vehicle"], 20.0, (2, 5)),
    "bus": ClassModel("bus", (10.5, 12.5), (2.50, 2.55), (3.0, 3.6), MAT["vehicle"], 20.0, (2, 5)),
    "pedestrian": ClassModel("pedestrian", (0.5, 0.9), (0.5, 0.8), (1.5, 1.95), MAT["person"], -6.0, (1, 1)),
    "cyclist": ClassModel("cyclist", (1.6, 1.9), (0.55, 0.75), (1.6, 1.9), MAT["person"], -3.0, (1, 2)),
    "barrier": ClassModel("barrier", (0.4, 0.6), (1.8, 2.6), (0.8, 1.1), MAT["barrier"], 0.0, (1, 1)),
}

#: Car paint colours (linear RGB), roughly the global colour popularity mix
#: (white, black, grey, silver, blue, red dominate).
PAINTS = np.array([
    [0.80, 0.80, 0.80], [0.03, 0.03, 0.03], [0.25, 0.25, 0.26], [0.55, 0.56, 0.58],
    [0.05, 0.10, 0.35], [0.45, 0.04, 0.03], [0.60, 0.55, 0.40], [0.10, 0.25, 0.12],
])
PAINT_P = np.array([0.30, 0.20, 0.15, 0.12, 0.09, 0.08, 0.03, 0.03])
