"""The fusion network: contract shapes, gate masking (exact zeros), gradients (docs/DESIGN.md §7)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ros_fusion.core import network_io as nio  # noqa: E402
from ros_fusion.models.export import sample_inputs  # noqa: E402
from ros_fusion.models.network import (  # noqa: E402
    FusionNet,
    GatedFusion,
    NetConfig,
    masked_softmax,
    parameter_count,
)

CAM, LIDAR, RADAR = (nio.FUSED_MODALITIES.index(m) for m in ("camera", "lidar", "radar"))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = FusionNet(NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)).eval()
    torch.nn.init.normal_(n.fusion.gate_ctx.weight, std=0.5)  # starts at 0: make the masking tests see it
    return n


def _inputs(batch=2, cams=1, seed=0):
    x = sample_inputs(NetConfig(feat=16, imu_embed=8), batch=batch, n_cameras=cams, seed=seed)
    return {s.name: x[s.name] for s in nio.input_specs(cams)}


@pytest.mark.parametrize("cams", [1, 2])
def test_output_shapes_follow_the_contract(net, cams):
    x = _inputs(batch=2, cams=cams)
    with torch.no_grad():
        out = net(x)
    for spec in nio.output_specs():
        assert tuple(out[spec.name].shape) == (2, *spec.shape), spec.name
        assert torch.isfinite(out[spec.name]).all()


def test_missing_modality_gets_exactly_zero_gate_and_no_influence(net):
    x = _inputs(batch=1)
    x["present"] = torch.tensor([[1.0, 1.0, 0.0]])  # radar missing
    with torch.no_grad():
        out = net(x)
        # garbage in the missing modality's input must not change anything
        y = dict(x, radar_bev=torch.rand_like(x["radar_bev"]) * 100)
        out2 = net(y)
    assert (out["gates"][:, RADAR] == 0).all()
    assert torch.equal(out["heatmap"], out2["heatmap"])
    assert torch.equal(out["gates"], out2["gates"])


def test_camera_gate_is_zero_outside_camera_coverage(net):
    x = _inputs(batch=1)
    x["present"] = torch.ones(1, 3)
    cov = torch.ones(1, 3, nio.FEAT, nio.FEAT)
    cov[:, CAM, : nio.FEAT // 2] = 0  # camera sees only the front half
    x["coverage"] = cov
    with torch.no_grad():
        g = net(x)["gates"]
    assert (g[:, CAM, : nio.FEAT // 2] == 0).all()
    assert (g[:, CAM, nio.FEAT // 2 :] > 0).all()
    torch.testing.assert_close(g.sum(dim=1), torch.ones(1, nio.FEAT, nio.FEAT))


def test_cell_no_present_modality_covers_has_all_zero_gates_not_nan(net):
    x = _inputs(batch=1)
    x["present"] = torch.tensor([[1.0, 0.0, 0.0]])
    cov = torch.ones(1, 3, nio.FEAT, nio.FEAT)
    cov[:, CAM, :10] = 0
    x["coverage"] = cov
    with torch.no_grad():
        out = net(x)
    g = out["gates"]
    assert torch.isfinite(g).all() and torch.isfinite(out["heatmap"]).all()
    assert (g[:, :, :10] == 0).all()
    assert torch.equal(g[:, CAM, 10:], torch.ones_like(g[:, CAM, 10:]))


def test_nothing_present_gives_finite_outputs_and_zero_gates(net):
    x = _inputs(batch=1)
    x["present"] = torch.zeros(1, 3)
    with torch.no_grad():
        out = net(x)
    assert (out["gates"] == 0).all()
    assert all(torch.isfinite(v).all() for v in out.values())


def test_masked_softmax_matches_softmax_over_allowed_entries():
    logits = torch.tensor([[[[1.0]], [[2.0]], [[50.0]]]])
    allowed = torch.tensor([[[[True]], [[True]], [[False]]]])
    g = masked_softmax(logits, allowed)
    expected = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    torch.testing.assert_close(g[0, :2, 0, 0], expected)
    assert g[0, 2, 0, 0] == 0


def test_single_modality_run_uses_only_that_modalitys_features(net):
    x = _inputs(batch=1)
    x["present"] = torch.tensor([[0.0, 1.0, 0.0]])  # LiDAR-only detections (late fusion)
    with torch.no_grad():
        a = net(x)
        b = net(dict(x, images=torch.randn_like(x["images"]), radar_bev=torch.rand_like(x["radar_bev"])))
    torch.testing.assert_close(a["heatmap"], b["heatmap"], rtol=0, atol=0)
    covered = x["coverage"][:, LIDAR] > 0.5
    assert (a["gates"][:, LIDAR][covered] == 1).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    net = FusionNet(NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)).train()
    x = _inputs(batch=2)
    x["cam_valid"] = torch.ones_like(x["cam_valid"])
    x["cam_grid"] = torch.rand_like(x["cam_grid"]) * 1.6 - 0.8
    out = net(x)
    (out["heatmap"].mean() + out["regression"].mean() + out["gates"][:, 0].mean()).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, dead


def test_default_size_is_small():
    n = parameter_count(FusionNet())
    assert 1e5 < n < 3e6


# --- gate context: the scene-wide view of each modality ------------------------------------------------


def _small(context: int) -> FusionNet:
    torch.manual_seed(3)
    return FusionNet(NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8,
                               gate_context=context)).eval()


def test_gate_context_starts_at_zero_so_older_weights_compute_the_same():
    old, new = _small(0), _small(1)
    result = new.load_state_dict(old.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fusion.gate_ctx.bias", "fusion.gate_ctx.weight"]
    x = _inputs(batch=2, seed=4)
    with torch.no_grad():
        a, b = old(x), new(x)
    for k in ("heatmap", "regression", "gates"):
        assert torch.equal(a[k], b[k]), k


def test_gate_context_lets_a_far_cell_change_the_gate(net):
    """A local gate (1×1 then 3×3 convs) cannot see 40 cells away; the context can."""
    x = _inputs(batch=1, seed=5)
    x["present"] = torch.ones(1, 3)
    x["coverage"] = torch.ones(1, 3, nio.FEAT, nio.FEAT)
    with torch.no_grad():
        feats = net.encode(x)
        far = dict(feats)
        cam = feats["camera_feat"].clone()
        cam[:, :, 50:, 50:] += 3.0  # the camera's features change only in one far corner
        far["camera_feat"] = cam
        g0 = net.fuse_and_detect(feats, x["coverage"], x["present"])["gates"]
        g1 = net.fuse_and_detect(far, x["coverage"], x["present"])["gates"]
        local = _small(0)
        l0 = local.fuse_and_detect(feats, x["coverage"], x["present"])["gates"]
        l1 = local.fuse_and_detect(far, x["coverage"], x["present"])["gates"]
    assert (g0[..., :10, :10] - g1[..., :10, :10]).abs().max() > 1e-4
    assert torch.equal(l0[..., :10, :10], l1[..., :10, :10])


def test_gate_context_is_the_mean_over_covered_cells_and_zero_when_absent():
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, :2] = 2.0  # covered rows
    f[0, 0, 2:] = 100.0  # outside coverage: must not count
    avail = torch.zeros(1, 2, 4, 4)
    avail[0, 0, :2] = 1.0
    ctx = GatedFusion.context([f, torch.full((1, 2, 4, 4), 7.0)], avail)
    assert ctx.shape == (1, 4)
    torch.testing.assert_close(ctx, torch.tensor([[2.0, 0.0, 0.0, 0.0]]))


def test_freeze_keeps_parts_in_eval_mode_and_checks_names():
    n = _small(1)
    n.freeze(["camera", "head"])
    n.train()
    assert not n.camera.training and not n.head.training and n.fusion.training and n.lidar.training
    assert not any(p.requires_grad for p in n.camera.parameters())
    assert all(p.requires_grad for p in n.fusion.parameters())
    with pytest.raises(ValueError, match="unknown network parts"):
        n.freeze(["neck"])
