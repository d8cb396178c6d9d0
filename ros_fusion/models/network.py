"""The fusion network, top to bottom (docs/DESIGN.md §7): encoders → gated fusion → CenterPoint head.

Read in order: building blocks, the four encoders (LiDAR, radar, camera with its
lift to BEV, IMU), the gated fusion (GMU generalised to M modalities per BEV
cell), the BEV neck + head, then `FusionNet` which wires them together and
`STAGES`, the per-stage wrappers the ONNX export and the runtime share.

Every tensor name and shape comes from `core/network_io.py`; a change there is a
change of model version. Shapes below: B batch, N cameras, Z height levels,
F feature channels, 64 = FEAT (stride 2 of the 128-cell input rasters).

Why the pieces look as they do:
- Encoders are shallow; the receptive field lives in the *shared* neck after
  fusion, so each modality's features stay local (a cell describes that cell)
  and the compute needed for 30 ms on 2 CPU cores is spent once, not per modality.
- The camera lift samples image features at the projection of each BEV cell at
  several heights (`cam_grid`, computed in numpy from calibration and ego-motion)
  with `grid_sample`: calibration can change without re-export.
- The gate softmax runs only over modalities that are present AND cover the cell;
  the others get exactly 0, and a cell no present modality covers gets all-zero
  gates (not NaN). Features of absent modalities are zeroed before the gate net
  sees them, so a runtime may feed zeros instead of running a missing encoder.
- One head on the fused features: with `present` holding a single modality the
  same weights give that modality's own detections (late fusion, docs/DESIGN.md §8).
- The gate net sees each cell's features (local) and, with `gate_context`, each present
  modality's mean feature over its own coverage (scene-wide). Whether a camera is worth
  trusting at night is a property of the whole image, not of one BEV cell: v5's purely
  local gate kept the camera at 0.63 with the LiDAR missing on night drives, where
  camera + radar scored *below* radar alone (docs/model_history.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core import network_io as nio


@dataclass(frozen=True)
class NetConfig:
    """Sizes of the network. Recorded in checkpoints and the manifest."""

    feat: int = 48  # F: channels of every modality's BEV features
    cam_feat: int = 32  # image feature channels before the lift
    imu_embed: int = 32  # IMU embedding size
    gate_hidden: int = 32
    head_hidden: int = 32
    gate_context: int = 1  # 1: gates also see each modality's mean feature over its coverage

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """conv → BatchNorm → ReLU, the only block the encoders and neck use."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


# --- encoders: each returns BEV features B×F×64×64 (IMU: an embedding B×E) -----------------


class LidarEncoder(nn.Module):
    """Pillar statistics of this sweep and the previous one (B×16×128×128, `LIDAR_CHANNELS`) → B×F×64×64."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        c = len(nio.LIDAR_CHANNELS)
        self.net = nn.Sequential(
            conv_bn(c, 24),  # full 0.8 m resolution: small objects (pedestrians) are 1 cell
            conv_bn(24, cfg.feat, stride=2),
            conv_bn(cfg.feat, cfg.feat),
            conv_bn(cfg.feat, cfg.feat),
        )

    def forward(self, lidar_bev: torch.Tensor) -> torch.Tensor:
        return self.net(lidar_bev)


class RadarEncoder(nn.Module):
    """Radar raster (B×5×128×128) → B×F×64×64. Radar is sparse: a 5×5 first kernel gathers it."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        c = len(nio.RADAR_CHANNELS)
        self.net = nn.Sequential(
            conv_bn(c, 16, k=5),
            conv_bn(16, cfg.feat, stride=2),
            conv_bn(cfg.feat, cfg.feat),
        )

    def forward(self, radar_bev: torch.Tensor) -> torch.Tensor:
        return self.net(radar_bev)


class CameraEncoder(nn.Module):
    """Images → image features at stride 8 → lifted to BEV → B×F×64×64.

    images B×N×3×240×320; cam_grid B×N×Z×64×64×2 (grid_sample coordinates, −2 where the
    point is behind or outside the camera); cam_valid B×N×Z×64×64. For every BEV cell and
    height the image feature under its projection is sampled; invalid samples are masked
    out, cameras are averaged over the ones that see the point, and heights are stacked as
    channels (so the network can tell "seen at 0.3 m" from "seen at 2.4 m") and mixed to F.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        c = cfg.cam_feat
        self.image_cnn = nn.Sequential(
            conv_bn(3, 16, stride=2),  # 120×160
            conv_bn(16, 24, stride=2),  # 60×80
            conv_bn(24, 24),
            conv_bn(24, c, stride=2),  # 30×40: stride 8
            conv_bn(c, c),
            conv_bn(c, c),
        )
        nz = len(nio.CAM_Z_LEVELS)
        self.bev = nn.Sequential(conv_bn(c * nz, cfg.feat, k=1), conv_bn(cfg.feat, cfg.feat))

    def forward(self, images: torch.Tensor, cam_grid: torch.Tensor, cam_valid: torch.Tensor) -> torch.Tensor:
        b, n = images.shape[0], images.shape[1]
        nz, h, w = cam_valid.shape[2], cam_valid.shape[3], cam_valid.shape[4]
        feats = self.image_cnn(images.flatten(0, 1))  # (B·N)×C×30×40
        c = feats.shape[1]
        grid = cam_grid.reshape(b * n, nz * h, w, 2)
        sampled = F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape(b, n, c, nz, h, w)
        valid = cam_valid.unsqueeze(2)  # B×N×1×Z×H×W
        summed = (sampled * valid).sum(dim=1)  # over cameras: B×C×Z×H×W
        count = valid.sum(dim=1).clamp(min=1.0)
        lifted = (summed / count).reshape(b, c * nz, h, w)
        return self.bev(lifted)


class ImuEncoder(nn.Module):
    """IMU window (B×20×6: gyro rad/s, accel m/s²) → B×E embedding that conditions the gates.

    Accelerations are divided by g so both halves of the input are O(1).
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        scale = torch.tensor([1.0, 1.0, 1.0, 1 / 9.81, 1 / 9.81, 1 / 9.81])
        self.register_buffer("scale", scale, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(nio.IMU_WINDOW * nio.IMU_CHANNELS, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, cfg.imu_embed),
            nn.Tanh(),
        )

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        return self.mlp((imu * self.scale).flatten(1))


# --- gated fusion ------------------------------------------------------------------------


def masked_softmax(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 restricted to `allowed` (bool, same shape).

    Excluded entries get exactly 0; where nothing is allowed the result is all 0
    (a plain softmax over all −inf would be NaN).
    """
    neg_inf = torch.full_like(logits, float("-inf"))
    masked = torch.where(allowed, logits, neg_inf)
    peak = masked.amax(dim=1, keepdim=True)
    peak = torch.where(allowed.any(dim=1, keepdim=True), peak, torch.zeros_like(peak))
    e = torch.exp(masked - peak)  # exp(−inf) = 0
    total = e.sum(dim=1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


class GatedFusion(nn.Module):
    """GMU for M modalities per BEV cell: h = Σ_m g_m · tanh(W_m x_m).

    Gate logits come from all (present) features, the coverage masks of present
    modalities and the IMU embedding (added as a per-sample bias of the first layer).
    With `cfg.gate_context` a second per-sample bias comes from each present modality's
    mean feature over the cells it covers (`context`): a scene-wide view, so the gate
    can tell a dark, rain-streaked camera from a good one (see the module docstring).
    That layer starts at zero, so a network without it loads unchanged (`--init`).
    """

    def __init__(self, cfg: NetConfig, modalities: int = len(nio.FUSED_MODALITIES)) -> None:
        super().__init__()
        f = cfg.feat
        self.proj = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(modalities))
        self.gate_in = nn.Conv2d(modalities * f + modalities, cfg.gate_hidden, 1)
        self.gate_imu = nn.Linear(cfg.imu_embed, cfg.gate_hidden)
        self.gate_out = nn.Conv2d(cfg.gate_hidden, modalities, 3, padding=1)
        self.gate_ctx: nn.Linear | None = None
        if cfg.gate_context:
            self.gate_ctx = nn.Linear(modalities * f, cfg.gate_hidden)
            nn.init.zeros_(self.gate_ctx.weight)
            nn.init.zeros_(self.gate_ctx.bias)

    @staticmethod
    def context(xs: list[torch.Tensor], avail: torch.Tensor) -> torch.Tensor:
        """B×(M·F): each modality's mean feature over the cells it covers (0 when absent)."""
        pooled = []
        for m, x in enumerate(xs):
            w = avail[:, m : m + 1]  # B×1×H×W
            pooled.append((x * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp(min=1.0))
        return torch.cat(pooled, dim=1)

    def forward(
        self, feats: list[torch.Tensor], imu_emb: torch.Tensor, coverage: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        avail = coverage * present[:, :, None, None]  # B×M×H×W, 1 = present and covering the cell
        xs = [x * present[:, m, None, None, None] for m, x in enumerate(feats)]
        hidden = self.gate_in(torch.cat([*xs, avail], dim=1)) + self.gate_imu(imu_emb)[:, :, None, None]
        if self.gate_ctx is not None:
            hidden = hidden + self.gate_ctx(self.context(xs, avail))[:, :, None, None]
        logits = self.gate_out(F.relu(hidden))
        gates = masked_softmax(logits, avail > 0.5)
        fused = sum(gates[:, m : m + 1] * torch.tanh(p(x)) for m, (p, x) in enumerate(zip(self.proj, xs, strict=True)))
        return fused, gates


# --- neck + CenterPoint head ---------------------------------------------------------------


class Head(nn.Module):
    """Fused BEV features → heatmap logits per class + REG_CHANNELS regression.

    A small U-shaped neck (64→32→64 cells) gives the receptive field of a large vehicle
    (a bus is ~15 m = 9 feature cells); then one branch per output, CenterPoint style.
    """

    def __init__(self, cfg: NetConfig, n_classes: int = len(nio.CLASSES), n_reg: int = len(nio.REG_CHANNELS)) -> None:
        super().__init__()
        f = cfg.feat
        self.stem = conv_bn(f, f)
        self.down = nn.Sequential(conv_bn(f, 2 * f, stride=2), conv_bn(2 * f, 2 * f), conv_bn(2 * f, 2 * f))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * f, f, 2, stride=2, bias=False), nn.BatchNorm2d(f), nn.ReLU())
        self.merge = conv_bn(2 * f, f, k=1)
        self.heatmap = nn.Sequential(conv_bn(f, cfg.head_hidden), nn.Conv2d(cfg.head_hidden, n_classes, 1))
        self.regression = nn.Sequential(conv_bn(f, cfg.head_hidden), nn.Conv2d(cfg.head_hidden, n_reg, 1))
        # CenterNet prior: start with p(object) ≈ 0.1 so the focal loss does not explode at step 0.
        nn.init.constant_(self.heatmap[-1].bias, -2.19)

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(fused)
        x = self.merge(torch.cat([x, self.up(self.down(x))], dim=1))
        return self.heatmap(x), self.regression(x)


# --- the whole network ----------------------------------------------------------------------


class FusionNet(nn.Module):
    """Encoders → gated fusion → head. `forward` takes the contract's inputs by name."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NetConfig()
        self.lidar = LidarEncoder(self.cfg)
        self.radar = RadarEncoder(self.cfg)
        self.camera = CameraEncoder(self.cfg)
        self.imu = ImuEncoder(self.cfg)
        self.fusion = GatedFusion(self.cfg)
        self.head = Head(self.cfg)
        self.frozen: frozenset[str] = frozenset()  # parts kept as they are while training (`freeze`)

    def freeze(self, parts: Iterable[str]) -> None:
        """Fine-tune only the other parts: these get no gradient and keep their BatchNorm statistics.

        `parts` are names of the top-level modules (`PARTS`). `train()` keeps frozen parts
        in eval mode, so their BatchNorms normalise with, and never update, the loaded statistics.
        """
        parts = frozenset(parts)
        unknown = sorted(parts - set(PARTS))
        if unknown:
            raise ValueError(f"unknown network parts {unknown}; choose from {list(PARTS)}")
        self.frozen = parts
        for name, module in self.named_children():
            for p in module.parameters():
                p.requires_grad_(name not in parts)
        self.train(self.training)

    def train(self, mode: bool = True) -> FusionNet:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every encoder's output: camera_feat, lidar_feat, radar_feat (B×F×64×64), imu_emb (B×E)."""
        return {
            "camera_feat": self.camera(inputs["images"], inputs["cam_grid"], inputs["cam_valid"]),
            "lidar_feat": self.lidar(inputs["lidar_bev"]),
            "radar_feat": self.radar(inputs["radar_bev"]),
            "imu_emb": self.imu(inputs["imu"]),
        }

    def fuse_and_detect(
        self, feats: dict[str, torch.Tensor], coverage: torch.Tensor, present: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Gated fusion + head. `present` with one modality set = that modality's own detections."""
        per_modality = [feats[f"{m}_feat"] for m in nio.FUSED_MODALITIES]
        fused, gates = self.fusion(per_modality, feats["imu_emb"], coverage, present)
        heatmap, regression = self.head(fused)
        return {"heatmap": heatmap, "regression": regression, "gates": gates}

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.fuse_and_detect(self.encode(inputs), inputs["coverage"], inputs["present"])


#: The top-level parts of a FusionNet, as `freeze` and `ros-fusion train --train-only` name them.
PARTS: tuple[str, ...] = ("camera", "lidar", "radar", "imu", "fusion", "head")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- stages: what is exported to ONNX and run by the runtime backends ---------------------------


@dataclass(frozen=True)
class Stage:
    """One separately exported/run piece of the network, with fixed tensor names."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("lidar", ("lidar_bev",), ("lidar_feat",)),
        Stage("radar", ("radar_bev",), ("radar_feat",)),
        Stage("camera", ("images", "cam_grid", "cam_valid"), ("camera_feat",)),
        Stage("imu", ("imu",), ("imu_emb",)),
        Stage(
            "fusion_head",
            ("camera_feat", "lidar_feat", "radar_feat", "imu_emb", "coverage", "present"),
            ("heatmap", "regression", "gates"),
        ),
    )
}


class StageModule(nn.Module):
    """Wraps one stage of a FusionNet as a positional-input module (what ONNX export needs)."""

    def __init__(self, net: FusionNet, stage: str) -> None:
        super().__init__()
        self.net = net
        self.stage = STAGES[stage]

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.stage.inputs, args, strict=True))
        name = self.stage.name
        if name == "lidar":
            out = {"lidar_feat": self.net.lidar(named["lidar_bev"])}
        elif name == "radar":
            out = {"radar_feat": self.net.radar(named["radar_bev"])}
        elif name == "camera":
            out = {"camera_feat": self.net.camera(named["images"], named["cam_grid"], named["cam_valid"])}
        elif name == "imu":
            out = {"imu_emb": self.net.imu(named["imu"])}
        else:
            out = self.net.fuse_and_detect(named, named["coverage"], named["present"])
        return tuple(out[k] for k in self.stage.outputs)


def stage_input_shapes(cfg: NetConfig, n_cameras: int = 1) -> dict[str, tuple[int, ...]]:
    """Shape (without batch) of every tensor any stage consumes or produces."""
    shapes = {s.name: s.shape for s in nio.input_specs(n_cameras)}
    shapes |= {s.name: s.shape for s in nio.output_specs()}
    for m in nio.FUSED_MODALITIES:
        shapes[f"{m}_feat"] = (cfg.feat, nio.FEAT, nio.FEAT)
    shapes["imu_emb"] = (cfg.imu_embed,)
    return shapes
