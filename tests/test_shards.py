"""Sharded evaluation core (real_models/shards.py): plans, seed-determined x_T, exact merge (FD to 1e-10),
shard files and their checks, torchrun ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.metrics import feature_stats, frechet_distance, kid
from real_models.shards import (
    RankInfo,
    ShardPlan,
    ShardStats,
    evaluate_shard,
    load_shard,
    merge_shards,
    rank_from_env,
    save_shard,
    shard_name,
)


@pytest.mark.parametrize("n_samples, batch", [(1, 1), (7, 3), (100, 10), (101, 10), (50, 64)])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 8])
def test_shards_are_disjoint_and_cover_every_sample(n_samples, batch, n_shards):
    plan = ShardPlan(n_samples, batch, seed=0)
    seen: list[int] = []
    for i in range(n_shards):
        rng = plan.sample_range(i, n_shards)
        idx = [j for _, r in plan.batches(i, n_shards) for j in r]
        assert idx == list(rng)
        seen += idx
    assert seen == list(range(n_samples))


def test_x_T_depends_only_on_seed_and_index():
    plan = ShardPlan(10, 4, seed=7)
    full = plan.x_T(range(10), (3, 2, 2))
    assert torch.equal(plan.x_T([3, 9], (3, 2, 2)), full[[3, 9]])
    for n_shards in (2, 3, 5):
        parts = [plan.x_T(plan.sample_range(i, n_shards), (3, 2, 2)) for i in range(n_shards)]
        assert torch.equal(torch.cat(parts), full)
    assert not torch.equal(ShardPlan(10, 4, seed=8).x_T(range(10), (3, 2, 2)), full)
    assert ShardPlan(10, 4, seed=2**63 - 1).x_T([0], (2,)).shape == (1, 2)     # any valid seed works


def _features(n: int = 1200, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return 4.0 + rng.standard_normal((n, d)) @ a * np.linspace(0.1, 2.0, d)   # large mean, anisotropic


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7, 24])
def test_merged_fd_equals_single_process_fd(tmp_path, n_shards):
    feats = _features()
    plan = ShardPlan(len(feats), 50, seed=0)
    ref_mu, ref_cov = feature_stats(_features(800, seed=1))
    fd_single = frechet_distance(*feature_stats(feats), ref_mu, ref_cov)
    for i in range(n_shards):
        st = ShardStats()
        for _, idx in plan.batches(i, n_shards):
            st.add(features=feats[idx.start:idx.stop])
        save_shard(tmp_path, st, plan, i, n_shards, meta={"spec_hash": "abc"})
    merged = merge_shards(tmp_path, expect_meta={"spec_hash": "abc"})
    mu, cov = merged.fd_stats()
    assert merged.count == len(feats)
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats, rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.outer_sum, feats.T @ feats, rtol=1e-12)
    assert abs(frechet_distance(mu, cov, ref_mu, ref_cov) - fd_single) < 1e-10
    ref_feats = _features(300, seed=2)
    assert np.array_equal(merged.features, feats)                   # KID sees exactly the same features
    assert kid(merged.features, ref_feats, subsets=3, subset_size=100) == kid(feats, ref_feats, subsets=3,
                                                                              subset_size=100)


def test_curves_and_scalars_merge_exactly():
    rng = np.random.default_rng(3)
    curves, final = rng.random((30, 6)), rng.random(30)
    plan = ShardPlan(30, 4, seed=0)
    merged = ShardStats()
    for i in range(4):
        st = ShardStats()
        for _, idx in plan.batches(i, 4):
            st.add(curves={"prop": curves[idx.start:idx.stop]}, scalars={"final": final[idx.start:idx.stop]})
        merged = ShardStats.merge(merged, st)
    np.testing.assert_allclose(merged.curve_mean("prop"), curves.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(merged.curve_std("prop"), curves.std(axis=0), rtol=1e-10)
    assert merged.scalars["final"]["min"] == final.min() and merged.scalars["final"]["max"] == final.max()
    assert merged.scalars["final"]["sum"] == pytest.approx(final.sum(), rel=1e-14)


def test_tiny_unet_sharded_evaluation_equals_unsharded(tmp_path):
    from iec_theory.sampler import sample
    from iec_theory.schedules import Schedule
    from real_models.metrics import ClassifierFeatures
    from real_models.unet import UNetEpsModel, build_unet, tiny_config

    torch.manual_seed(0)
    model = UNetEpsModel(build_unet(tiny_config()))
    schedule = Schedule.linear(1000)
    extractor = ClassifierFeatures()
    plan = ShardPlan(7, 3, seed=11)

    def sample_fn(x_T: torch.Tensor, b: int) -> dict:
        traj = sample(model, schedule, x_T, 2)
        err = (traj.xs - traj.xs[0]).flatten(2).norm(dim=2).T          # [n, T+1] per-sample curves
        return {"images": traj.xs[-1].clamp(-1, 1), "curves": {"drift": err}}

    single = evaluate_shard(plan, 0, 1, sample_fn, extractor, (3, 32, 32))
    for i in range(3):
        save_shard(tmp_path, evaluate_shard(plan, i, 3, sample_fn, extractor, (3, 32, 32)), plan, i, 3)
    merged = merge_shards(tmp_path)
    assert np.array_equal(merged.features, single.features)            # same images whatever the shard count
    mu, cov = feature_stats(single.features)        # 7 samples in 128 dims: a singular covariance, where FD
    np.testing.assert_allclose(merged.fd_stats()[0], mu, rtol=0, atol=1e-12)   # itself is ill-conditioned
    np.testing.assert_allclose(merged.fd_stats()[1], cov, rtol=0, atol=1e-12)  # (the 1e-10 FD test is above)
    np.testing.assert_allclose(merged.curve_mean("drift"), single.curve_mean("drift"), rtol=1e-13)


def test_merge_refuses_incomplete_or_inconsistent_shards(tmp_path):
    plan = ShardPlan(20, 5, seed=0)
    feats = _features(20, 4)
    paths = []
    for i in range(4):
        st = ShardStats().add(features=feats[plan.sample_range(i, 4).start:plan.sample_range(i, 4).stop])
        paths.append(save_shard(tmp_path / "a", st, plan, i, 4))
    with pytest.raises(ConfigError, match="shards missing: 2 of 4"):
        merge_shards([p for k, p in enumerate(paths) if k != 2])
    with pytest.raises(ConfigError, match="appears twice"):
        merge_shards([*paths, paths[1]])
    with pytest.raises(ConfigError, match="meta spec_hash"):
        merge_shards(tmp_path / "a", expect_meta={"spec_hash": "x"})
    other = ShardStats().add(features=feats[:10])
    odd = save_shard(tmp_path / "b", other, ShardPlan(20, 5, seed=1), 0, 2)
    with pytest.raises(ConfigError, match="plan"):
        merge_shards([*paths, odd])
    paths[3].write_text("")                                             # a 0-byte completion marker
    with pytest.raises(ConfigError, match="not a valid shard record"):
        merge_shards(tmp_path / "a")
    blob = paths[0].with_suffix(".safetensors")
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ConfigError, match="sha256"):
        load_shard(paths[0])
    with pytest.raises(ConfigError, match="the plan says"):
        save_shard(tmp_path / "c", other, plan, 0, 4)
    assert shard_name(3, 8) == "shard-00003-of-00008"


def test_rank_from_env():
    assert rank_from_env({}) == RankInfo(0, 1, 0)
    assert rank_from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == RankInfo(5, 8, 1)
    for env, msg in [({"RANK": "8", "WORLD_SIZE": "8"}, "RANK must be in"), ({"RANK": "1"}, "incomplete"),
                     ({"RANK": "a", "WORLD_SIZE": "2"}, "not an integer"), ({"RANK": "0", "WORLD_SIZE": "0"}, ">= 1")]:
        with pytest.raises(ConfigError, match=msg):
            rank_from_env(env)
    assert RankInfo(0, 1, 0).device(prefer_cuda=False) == torch.device("cpu")
    with pytest.raises(ConfigError, match="shard must be in"):
        ShardPlan(10, 2, 0).sample_range(4, 4)


def _fake_sample(x_T: torch.Tensor, b: int) -> dict:
    return {"images": torch.tanh(x_T), "curves": {"norm": x_T.flatten(1).norm(dim=1, keepdim=True).repeat(1, 3)}}


def _fake_features(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)[:, :6].double() + 2.0


def test_dask_sharded_run_equals_unsharded_and_resumes(tmp_path):
    distributed = pytest.importorskip("distributed")
    from real_models.shards import run_shards

    plan = ShardPlan(40, 4, seed=3)
    single = evaluate_shard(plan, 0, 1, _fake_sample, _fake_features, (3, 4, 4))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        paths = run_shards(client, plan, 4, _fake_sample, _fake_features, (3, 4, 4), tmp_path, meta={"spec_hash": "h"})
        stamp = [p.stat().st_mtime_ns for p in paths]
        paths[1].write_text("")                              # a broken marker: that shard alone is redone
        run_shards(client, plan, 4, _fake_sample, _fake_features, (3, 4, 4), tmp_path, meta={"spec_hash": "h"})
    assert [p.stat().st_mtime_ns for k, p in enumerate(paths) if k != 1] == [s for k, s in enumerate(stamp) if k != 1]
    merged = merge_shards(tmp_path, expect_meta={"spec_hash": "h"})
    assert np.array_equal(merged.features, single.features)
    fd = frechet_distance(*merged.fd_stats(), np.zeros(6), np.eye(6))
    assert abs(fd - frechet_distance(*feature_stats(single.features), np.zeros(6), np.eye(6))) < 1e-10
    np.testing.assert_allclose(merged.curve_mean("norm"), single.curve_mean("norm"), rtol=1e-13)
