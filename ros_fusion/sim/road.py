"""Road centreline built from curvature: straights, clothoid transitions and arcs.

Real roads are laid out as straight → clothoid (curvature ramps linearly) → arc
→ clothoid → straight, so heading and lateral acceleration stay continuous; we
integrate that curvature profile on a fine arc-length grid and answer every
"where is s / where is lane d" question by interpolation. Lanes are lateral
offsets `d` from the centreline (positive = left of the driving direction,
REP 103), right-hand traffic: our lanes have d < 0, oncoming lanes d > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Arc-length step of the integrated centreline [m]; fine enough that linear
#: interpolation of heading is exact to < 1 mm laterally for radii >= 30 m.
DS = 0.25


@dataclass
class RoadLayout:
    """Cross-section: lane width, lanes per direction, shoulder/sidewalk width [m]."""

    lane_width: float
    lanes_per_dir: int
    sidewalk: float  # urban: sidewalk; highway: paved shoulder
    urban: bool

    @property
    def half_width(self) -> float:
        return self.lane_width * self.lanes_per_dir

    def lane_centre(self, lane: int, oncoming: bool) -> float:
        """Lateral offset of lane `lane` (0 = innermost, next to the centre line)."""
        d = (lane + 0.5) * self.lane_width
        return d if oncoming else -d


@dataclass
class Road:
    """Densely sampled centreline: s, x, y, heading, curvature (all 1-D, same length)."""

    s: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    kappa: np.ndarray
    layout: RoadLayout

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def frame(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) of the centreline at arc lengths `s` (clamped to the road)."""
        s = np.clip(np.asarray(s, dtype=np.float64), self.s[0], self.s[-1])
        return np.interp(s, self.s, self.x), np.interp(s, self.s, self.y), np.interp(s, self.s, self.heading)

    def point(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y) of offset `d` at arc length `s`, and the road heading there."""
        x, y, h = self.frame(s)
        d = np.asarray(d, dtype=np.float64)
        return x - d * np.sin(h), y + d * np.cos(h), h


def build_road(rng: np.random.Generator, length_m: float, layout: RoadLayout,
               radius_range: tuple[float, float], straight_range: tuple[float, float]) -> Road:
    """Random sequence of straight / clothoid / arc / clothoid pieces covering `length_m`.

    Clothoid length is chosen so the curvature ramp is gentle (design practice
    keeps lateral jerk ≲ 0.5 m/s³; with the speeds we drive, 20–60 m ramps do).
    """
    kap: list[np.ndarray] = []
    total = 0.0
    first = True
    while total < length_m:
        straight = rng.uniform(*straight_range) if not first else max(straight_range[0], 80.0)
        first = False
        radius = rng.uniform(*radius_range) * rng.choice([-1.0, 1.0])
        k = 1.0 / radius
        ramp = rng.uniform(20.0, 60.0)
        arc = rng.uniform(20.0, 90.0)
        pieces = [
            np.zeros(int(straight / DS)),
            np.linspace(0.0, k, int(ramp / DS), endpoint=False),
            np.full(int(arc / DS), k),
            np.linspace(k, 0.0, int(ramp / DS), endpoint=False),
        ]
        for p in pieces:
            kap.append(p)
            total += len(p) * DS
    kappa = np.concatenate(kap)
    n = len(kappa)
    s = np.arange(n) * DS
    heading = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * DS)])
    # Midpoint-heading integration of position (second order).
    hm = 0.5 * (heading[1:] + heading[:-1])
    x = np.concatenate([[0.0], np.cumsum(np.cos(hm) * DS)])
    y = np.concatenate([[0.0], np.cumsum(np.sin(hm) * DS)])
    return Road(s, x, y, heading, kappa, layout)
