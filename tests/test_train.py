"""Training loop: a few steps lower the loss; determinism; resume; modality dropout (docs/DESIGN.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ros_fusion.core import network_io as nio  # noqa: E402
from ros_fusion.models.checkpoint import load_checkpoint  # noqa: E402
from ros_fusion.models.network import NetConfig  # noqa: E402
from ros_fusion.models.train import (  # noqa: E402
    SUBSETS,
    DataError,
    ShardDataset,
    TrainConfig,
    batch_loss,
    dropout_presence,
    dropout_previous_sweep,
    precise_batchnorm,
    synthetic_shard,
    train,
)

SMALL = NetConfig(feat=16, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "train").mkdir()
    (root / "val").mkdir()
    synthetic_shard(root / "train" / "a.npz", 8, seed=1)
    synthetic_shard(root / "val" / "a.npz", 4, seed=2)
    return root


def _cfg(data, out, **kw):
    kw.setdefault("net", SMALL)
    return TrainConfig(data=data, out=out, batch_size=4, lr=5e-3, threads=2, device="cpu",
                       progress=False, **kw)


def _fixed_batch_loss(ckpt, data):
    batch = next(ShardDataset.from_dir(data, "val").batches(4, None))
    with torch.no_grad():
        return float(batch_loss(ckpt.model, {k: torch.from_numpy(v) for k, v in batch.items()})["total"])


def test_few_steps_lower_the_loss(data, tmp_path):
    r = train(_cfg(data, tmp_path / "run", epochs=6), log=lambda *_: None)
    hist = r["history"]
    assert len(hist) == 6 and hist[-1]["step"] == 12
    assert hist[-1]["train"]["total"] < 0.5 * hist[0]["train"]["total"]
    assert hist[-1]["val"]["total"] < hist[0]["val"]["total"]
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.step == 12 and ckpt.provenance["train"]["seeds"] == [1]


def test_same_seed_same_result_and_resume_matches(data, tmp_path):
    a = train(_cfg(data, tmp_path / "a", epochs=2), log=lambda *_: None)
    b1 = train(_cfg(data, tmp_path / "b", epochs=2, until_epoch=1), log=lambda *_: None)  # "interrupted"
    assert len(b1["history"]) == 1
    assert b1["history"][0]["train"] == a["history"][0]["train"]
    b2 = train(_cfg(data, tmp_path / "b", epochs=2), resume=True, log=lambda *_: None)
    assert [h["step"] for h in b2["history"]] == [2, 4]
    wa = load_checkpoint(tmp_path / "a" / "last.pt").model.state_dict()
    wb = load_checkpoint(tmp_path / "b" / "last.pt").model.state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert b2["history"][1]["val"]["total"] == pytest.approx(a["history"][1]["val"]["total"], rel=1e-4)


def test_modality_dropout_uses_every_nonempty_subset_and_never_empties():
    assert len(SUBSETS) == 7 and SUBSETS[0] == (1, 1, 1) and all(any(s) for s in SUBSETS)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        p = dropout_presence(np.ones((4, 3), np.float32), rng, p_all=0.4)
        assert (p.sum(axis=1) > 0).all()
        seen |= {tuple(int(v) for v in row) for row in p}
    assert seen == set(SUBSETS)
    # a sample without camera in the data never gets the camera back, and never ends up empty
    no_cam = np.array([[0, 1, 1]] * 64, np.float32)
    p = dropout_presence(no_cam, rng, p_all=0.0)
    assert (p[:, 0] == 0).all() and (p.sum(axis=1) > 0).all()


def test_previous_sweep_dropout_blanks_only_the_older_sweep():
    rng = np.random.default_rng(3)
    n = len(nio.LIDAR_SWEEP_CHANNELS)
    x = np.random.default_rng(0).uniform(0.1, 1, (400, len(nio.LIDAR_CHANNELS), 4, 4)).astype(np.float32)
    y = dropout_previous_sweep(x, rng, 0.25)
    np.testing.assert_array_equal(y[:, :n], x[:, :n])  # the newest sweep is never touched
    blank = ~y[:, n:].reshape(len(y), -1).any(axis=1)
    kept = (y[:, n:] == x[:, n:]).reshape(len(y), -1).all(axis=1)
    assert (blank ^ kept).all() and 0.15 < blank.mean() < 0.35
    assert x[:, n:].all()  # the input is not modified
    np.testing.assert_array_equal(dropout_previous_sweep(x, rng, 0.0), x)


def test_bad_shards_are_refused_with_their_name(tmp_path):
    np.savez(tmp_path / "bad.npz", lidar_bev=np.zeros((1, 8, 128, 128), np.float32))
    with pytest.raises(DataError, match="bad.npz: missing arrays"):
        ShardDataset([tmp_path / "bad.npz"])
    with pytest.raises(DataError, match="no train shards"):
        ShardDataset.from_dir(tmp_path / "nothing", "train")


def test_regression_loss_sums_weighted_channels_per_object() -> None:
    """CenterPoint's recipe: per object the weighted SUM over channels, averaged over objects."""
    from ros_fusion.models.losses import REG_CHANNEL_WEIGHTS, regression_loss

    r = len(REG_CHANNEL_WEIGHTS)
    pred = torch.zeros(2, r, 8, 8)
    target = torch.zeros(2, r, 8, 8)
    mask = torch.zeros(2, 8, 8)
    mask[0, 2, 3] = mask[1, 5, 5] = 1.0
    target[0, :, 2, 3] = 1.0  # error 1 in every channel of one object, 0 for the other
    target[1, :, 0, 0] = 9.0  # not an object centre: ignored
    loss = regression_loss(pred, target, mask, channel_weights=REG_CHANNEL_WEIGHTS)
    assert float(loss) == pytest.approx(sum(REG_CHANNEL_WEIGHTS) / 2)
    assert float(regression_loss(pred, target, mask)) == pytest.approx(r / 2)
    cell = torch.ones(2, 8, 8)
    cell[1] = 0.0  # the second sample's object is outside every present modality's view
    assert float(regression_loss(pred, target, mask, cell)) == pytest.approx(r)
    with pytest.raises(ValueError, match="channel weights"):
        regression_loss(pred, target, mask, channel_weights=(1.0, 2.0))


def test_precise_batchnorm_averages_over_batches_and_leaves_weights_alone(data) -> None:
    from ros_fusion.models.network import FusionNet

    torch.manual_seed(0)
    net = FusionNet(SMALL).eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    train_data = ShardDataset.from_dir(data, "train")  # one shard of 8 samples: two batches of 4
    n = precise_batchnorm(net, train_data, batches=10, batch_size=4, rng=np.random.default_rng(0), p_all=1.0,
                          device=torch.device("cpu"))
    assert n == 2 and not net.training  # the mode it was in is restored
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    # the first LiDAR BatchNorm now holds the plain mean of its conv's output over all 8 samples
    conv, bn = net.lidar.net[0][0], net.lidar.net[0][1]
    x = torch.from_numpy(train_data.load(0)["lidar_bev"])
    with torch.no_grad():
        expected = conv(x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1  # restored for further training


def test_precise_batchnorm_does_not_change_the_training_trajectory(data, tmp_path) -> None:
    a = train(_cfg(data, tmp_path / "a", epochs=2, precise_bn_batches=0), log=lambda *_: None)
    b = train(_cfg(data, tmp_path / "b", epochs=2, precise_bn_batches=50), log=lambda *_: None)
    assert [h["train"] for h in a["history"]] == [h["train"] for h in b["history"]]
    wa, wb = (load_checkpoint(r["checkpoint"]).model.state_dict() for r in (a, b))
    for k in wa:
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(wa[k], wb[k]), k


def _one_batch(data):
    b = next(ShardDataset.from_dir(data, "train").batches(4, None))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


def test_aux_single_loss_trains_the_camera_even_when_dropout_removed_it(data) -> None:
    torch.manual_seed(0)
    from ros_fusion.models.network import FusionNet

    net = FusionNet(SMALL).train()
    b = _one_batch(data)
    cam = nio.FUSED_MODALITIES.index("camera")
    b["present_data"] = b["present"].clone()
    b["present"] = b["present"].clone()
    b["present"][:, cam] = 0.0  # dropout took the camera from every sample
    assert b["present_data"][:, cam].all()

    def camera_grad(aux):
        net.zero_grad()
        losses = batch_loss(net, b, aux=aux)
        losses["total"].backward()
        grad = sum(float(p.grad.abs().sum()) for p in net.camera.parameters() if p.grad is not None)
        return {k: v.detach() for k, v in losses.items()}, grad

    plain, g_plain = camera_grad(None)
    with_aux, g_aux = camera_grad({"camera": 0.5})
    assert g_plain == 0.0 and g_aux > 0.0
    assert "aux_camera" in with_aux and "aux_camera" not in plain
    assert float(with_aux["heatmap"]) == pytest.approx(float(plain["heatmap"]), rel=1e-5)
    assert float(with_aux["total"]) == pytest.approx(float(plain["total"]) + 0.5 * float(with_aux["aux_camera"]),
                                                     rel=1e-5)
    # Samples whose data has no camera add no camera loss.
    b["present_data"][:, cam] = 0.0
    assert float(batch_loss(net, b, aux={"camera": 0.5})["aux_camera"].detach()) == 0.0


def test_aux_names_are_checked_and_resume_refuses_other_aux(data, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown modalities"):
        _cfg(data, tmp_path / "x", aux_single=("cam",)).aux()
    with pytest.raises(ValueError, match="aux_weight"):
        _cfg(data, tmp_path / "x", aux_single=("camera",), aux_weight=0.0).aux()
    r = train(_cfg(data, tmp_path / "a", epochs=1, aux_single=("camera",)), log=lambda *_: None)
    assert "aux_camera" in r["history"][-1]["train"]
    with pytest.raises(ValueError, match="auxiliary losses"):
        train(_cfg(data, tmp_path / "a", epochs=2), resume=True, log=lambda *_: None)


def test_init_starts_from_the_checkpoint_weights_and_records_it(data, tmp_path) -> None:
    train(_cfg(data, tmp_path / "src", epochs=1), log=lambda *_: None)
    src = load_checkpoint(tmp_path / "src" / "last.pt")
    # lr 0 with no weight decay: the fine-tuned weights must be exactly the source's.
    cfg = _cfg(data, tmp_path / "ft", epochs=1, init=tmp_path / "src" / "last.pt", weight_decay=0.0,
               precise_bn_batches=0)
    cfg.lr = 0.0
    train(cfg, log=lambda *_: None)
    ft = load_checkpoint(tmp_path / "ft" / "last.pt")
    for (k, a), b in zip(src.model.state_dict().items(), ft.model.state_dict().values(), strict=True):
        if a.is_floating_point() and "running" not in k:
            assert torch.equal(a, b), k
    init = ft.provenance["init_from"]
    assert init["checkpoint"].endswith("last.pt") and len(init["sha256"]) == 64 and init["train_seeds"] == [1]
    other = NetConfig(feat=8, cam_feat=8, imu_embed=8, gate_hidden=8, head_hidden=8)
    with pytest.raises(ValueError, match="does not match"):
        train(TrainConfig(data=data, out=tmp_path / "bad", net=other, init=tmp_path / "src" / "last.pt",
                          threads=2, device="cpu", progress=False, epochs=1), log=lambda *_: None)


def test_train_only_fusion_leaves_every_other_part_and_its_batchnorm_untouched(data, tmp_path) -> None:
    train(_cfg(data, tmp_path / "src", epochs=1, net=NetConfig(**{**SMALL.to_dict(), "gate_context": 0})),
          log=lambda *_: None)
    src = load_checkpoint(tmp_path / "src" / "last.pt")
    assert src.model.cfg.gate_context == 0
    r = train(_cfg(data, tmp_path / "ft", epochs=1, init=tmp_path / "src" / "last.pt", train_only=("fusion",),
                   precise_bn_batches=2), log=lambda *_: None)
    ft = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert ft.model.cfg.gate_context == 1
    old = src.model.state_dict()
    changed = {k for k, v in ft.model.state_dict().items() if k not in old or not torch.equal(v, old[k])}
    assert changed and all(k.startswith("fusion.") for k in changed), sorted(changed)  # BN buffers included
    assert any(k.startswith("fusion.gate_ctx.") for k in changed)
    assert r["provenance"]["init_from"]["added"].startswith("fusion.gate_ctx")
    # the other way round (dropping a trained context) and freezing without --init are refused
    with pytest.raises(ValueError, match="does not match"):
        train(_cfg(data, tmp_path / "back", epochs=1, init=tmp_path / "ft" / "last.pt",
                   net=NetConfig(**{**SMALL.to_dict(), "gate_context": 0})), log=lambda *_: None)
    with pytest.raises(ValueError, match="needs --init"):
        train(_cfg(data, tmp_path / "noinit", epochs=1, train_only=("fusion",)), log=lambda *_: None)
    with pytest.raises(ValueError, match="unknown network parts"):
        _cfg(data, tmp_path / "x", train_only=("neck",)).frozen_parts()
    with pytest.raises(ValueError, match="train_only"):
        train(_cfg(data, tmp_path / "ft", epochs=2, init=tmp_path / "src" / "last.pt"), resume=True,
              log=lambda *_: None)


def test_checkpoints_from_before_gate_context_load_as_the_local_gate(data, tmp_path) -> None:
    train(_cfg(data, tmp_path / "a", epochs=2, until_epoch=1, net=NetConfig(**{**SMALL.to_dict(), "gate_context": 0})),
          log=lambda *_: None)
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    del state["net_config"]["gate_context"]  # as written before the field existed
    torch.save(state, tmp_path / "a" / "old.pt")
    ck = load_checkpoint(tmp_path / "a" / "old.pt")
    assert ck.model.cfg.gate_context == 0 and ck.model.fusion.gate_ctx is None
    # such a run resumes as the local gate it is, and refuses to become another network
    (tmp_path / "b").mkdir()
    torch.save(state, tmp_path / "b" / "last.pt")
    with pytest.raises(ValueError, match="was trained with network"):
        train(_cfg(data, tmp_path / "b", epochs=2), resume=True, log=lambda *_: None)
    r = train(_cfg(data, tmp_path / "b", epochs=2, net=NetConfig(**{**SMALL.to_dict(), "gate_context": 0})),
              resume=True, log=lambda *_: None)
    assert [h["epoch"] for h in r["history"]] == [1, 2]


def test_several_dataset_folders_are_pooled_and_named(data, tmp_path) -> None:
    """`--data A B`: one set of weights for two rigs. Both folders' shards train, the provenance names them."""
    other = tmp_path / "other"
    for split, n, seed in (("train", 4, 7), ("val", 4, 8)):
        (other / split).mkdir(parents=True)
        synthetic_shard(other / split / "a.npz", n, seed=seed)  # same file name as in `data`
    pooled = ShardDataset.from_dirs([data, other], "train")
    assert len(pooled) == 8 + 4 and len(pooled.files) == 2
    assert pooled.provenance()["shards"] == [f"{data.name}/a.npz", "other/a.npz"]
    assert pooled.provenance()["seeds"] == [1, 7]
    assert ShardDataset.from_dir(data, "train").provenance()["shards"] == ["a.npz"]  # one folder: plain names
    with pytest.raises(DataError, match="no dataset folders"):
        ShardDataset.from_dirs([], "train")
    with pytest.raises(DataError, match="no val shards under .*nothing"):
        ShardDataset.from_dirs([data, tmp_path / "nothing"], "val")

    cfg = _cfg((data, other), tmp_path / "run", epochs=1)
    assert cfg.to_dict()["data"] == [str(data), str(other)] and _cfg(data, tmp_path).to_dict()["data"] == str(data)
    r = train(cfg, log=lambda *_: None)
    assert r["history"][-1]["step"] == 3  # 12 samples in batches of 4: both folders were used
    assert r["provenance"]["train"]["seeds"] == [1, 7] and r["provenance"]["val"]["seeds"] == [2, 8]
