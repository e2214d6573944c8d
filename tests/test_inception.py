"""Tests of the FID Inception-v3 re-implementation (real_models/inception.py) and metrics.inception_fid.

The expected parameter list below is written independently of the module, from the public sources
(torchvision ``models/inception.py`` for block widths and kernels; pytorch-fid ``inception.py`` for
``num_classes=1008``, ``aux_logits=False``). Numerical agreement with the real weights cannot be tested:
the file ``pt_inception-2015-12-05-6726825d.pth`` is not available here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iec_theory.errors import ConfigError
from real_models import inception as inc
from real_models import metrics

torch.set_num_threads(1)


# ----- an independent list of the state dict, from the public source -----------------------------------
def _conv(name, c_in, c_out, kh, kw=None):
    kw = kh if kw is None else kw
    return {f"{name}.conv.weight": (c_out, c_in, kh, kw), f"{name}.bn.weight": (c_out,), f"{name}.bn.bias": (c_out,),
            f"{name}.bn.running_mean": (c_out,), f"{name}.bn.running_var": (c_out,),
            f"{name}.bn.num_batches_tracked": ()}


def _reference_shapes():
    d = {}
    for spec in [("Conv2d_1a_3x3", 3, 32, 3), ("Conv2d_2a_3x3", 32, 32, 3), ("Conv2d_2b_3x3", 32, 64, 3),
                 ("Conv2d_3b_1x1", 64, 80, 1), ("Conv2d_4a_3x3", 80, 192, 3)]:
        d.update(_conv(*spec))
    for name, c_in, pool in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        for spec in [("branch1x1", c_in, 64, 1), ("branch5x5_1", c_in, 48, 1), ("branch5x5_2", 48, 64, 5),
                     ("branch3x3dbl_1", c_in, 64, 1), ("branch3x3dbl_2", 64, 96, 3), ("branch3x3dbl_3", 96, 96, 3),
                     ("branch_pool", c_in, pool, 1)]:
            d.update(_conv(f"{name}.{spec[0]}", *spec[1:]))
    for spec in [("branch3x3", 288, 384, 3), ("branch3x3dbl_1", 288, 64, 1), ("branch3x3dbl_2", 64, 96, 3),
                 ("branch3x3dbl_3", 96, 96, 3)]:
        d.update(_conv(f"Mixed_6a.{spec[0]}", *spec[1:]))
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        for spec in [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
                     ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1, 1),
                     ("branch7x7dbl_2", c7, c7, 7, 1), ("branch7x7dbl_3", c7, c7, 1, 7),
                     ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
                     ("branch_pool", 768, 192, 1, 1)]:
            d.update(_conv(f"{name}.{spec[0]}", *spec[1:]))
    for spec in [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3), ("branch7x7x3_1", 768, 192, 1, 1),
                 ("branch7x7x3_2", 192, 192, 1, 7), ("branch7x7x3_3", 192, 192, 7, 1),
                 ("branch7x7x3_4", 192, 192, 3, 3)]:
        d.update(_conv(f"Mixed_7a.{spec[0]}", *spec[1:]))
    for name, c_in in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        for spec in [("branch1x1", c_in, 320, 1, 1), ("branch3x3_1", c_in, 384, 1, 1),
                     ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
                     ("branch3x3dbl_1", c_in, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
                     ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
                     ("branch_pool", c_in, 192, 1, 1)]:
            d.update(_conv(f"{name}.{spec[0]}", *spec[1:]))
    d["fc.weight"] = (1008, 2048)
    d["fc.bias"] = (1008,)
    return d


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return inc.FIDInceptionV3().eval()


@pytest.fixture(scope="module")
def synthetic_state():
    """A full state dict with random (non-default) values everywhere, BN statistics included."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for k, v in inc.FIDInceptionV3().state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory, synthetic_state):
    path = tmp_path_factory.mktemp("fidw") / inc.FID_INCEPTION_WEIGHTS
    torch.save(synthetic_state, path)
    return path


# ----- architecture -----------------------------------------------------------------------------------------
def test_state_dict_matches_public_layout(model):
    ref = _reference_shapes()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(ref) == 94 * 6 + 2 == 566  # 94 BasicConv2d (conv + 5 BN tensors) + fc weight/bias
    assert set(got) == set(ref), (sorted(set(got) - set(ref))[:5], sorted(set(ref) - set(got))[:5])
    assert got == ref
    assert inc.expected_state_dict_shapes() == ref
    # a sample spelled out literally
    assert got["fc.weight"] == (1008, 2048)
    assert got["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert got["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert got["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert not any(k.startswith("AuxLogits") for k in got)
    assert not any(k.endswith("conv.bias") for k in got)  # convolutions have no bias


def test_parameter_count_matches_torchvision_minus_aux(model):
    # torchvision's Inception_V3_Weights meta: num_params 27,161,264 (1000 classes, with AuxLogits).
    # AuxLogits: conv0 768*128 + 2*128, conv1 128*768*25 + 2*768, fc 768*1000 + 1000 = 3,326,696.
    # fc 1008 instead of 1000 classes: + 8*2048 + 8 = 16,392.
    expected = 27_161_264 - (768 * 128 + 256 + 128 * 768 * 25 + 1536 + 768 * 1000 + 1000) + 8 * 2048 + 8
    assert expected == 23_850_960
    assert sum(p.numel() for p in model.parameters()) == expected


def test_batchnorm_and_conv_settings(model):
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(bns) == len(convs) == 94
    assert all(m.eps == pytest.approx(0.001) for m in bns)
    assert all(m.bias is None for m in convs)
    assert model.Conv2d_1a_3x3.conv.stride == (2, 2)
    assert model.Conv2d_2b_3x3.conv.padding == (1, 1)
    assert model.Mixed_6a.branch3x3.conv.stride == (2, 2)
    assert model.Mixed_7a.branch7x7x3_4.conv.stride == (2, 2)
    assert model.Mixed_6b.branch7x7_2.conv.padding == (0, 3)


def test_forward_gives_finite_nonnegative_pool3(model):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        feats = model(inc.preprocess_for_fid(x))
    assert feats.shape == (2, 2048)
    assert bool(torch.isfinite(feats).all())
    assert float(feats.min()) >= 0.0  # average of post-ReLU activations
    assert float(feats.abs().sum()) > 0.0
    f2 = inc.fid_inception_features(model, x, batch_size=1)
    assert f2.dtype == torch.float64 and f2.shape == (2, 2048)
    torch.testing.assert_close(f2.float(), feats, rtol=1e-4, atol=1e-9)


def _block_input(c, seed=0, size=7):
    return torch.randn(1, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_pool_branches_use_fid_variants(model):
    """The pool branch is the last slice of each block output: check which pooling feeds it."""
    cases = [(model.Mixed_5b, 192, 32, "avg"), (model.Mixed_6c, 768, 192, "avg"), (model.Mixed_7b, 1280, 192, "avg"),
             (model.Mixed_7c, 2048, 192, "max")]
    with torch.no_grad():
        for block, c_in, n_pool, kind in cases:
            x = _block_input(c_in)
            out = block(x)[:, -n_pool:]
            tf_avg = block.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            torch_avg = block.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))
            mx = block.branch_pool(F.max_pool2d(x, 3, 1, 1))
            want = mx if kind == "max" else tf_avg
            torch.testing.assert_close(out, want)
            for other in ([tf_avg, torch_avg] if kind == "max" else [torch_avg, mx]):
                assert not torch.allclose(out, other)


def test_block_output_widths(model):
    with torch.no_grad():
        assert model.Mixed_5b(_block_input(192)).shape[1] == 256
        assert model.Mixed_5d(_block_input(288)).shape[1] == 288
        assert model.Mixed_6a(_block_input(288)).shape[1:] == (768, 3, 3)
        assert model.Mixed_7a(_block_input(768)).shape[1:] == (1280, 3, 3)
        assert model.Mixed_7b(_block_input(1280)).shape[1] == 2048


# ----- preprocessing ----------------------------------------------------------------------------------------
def test_preprocessing_constant_image():
    for v, quantize in [(0.0, False), (-1.0, True), (1.0, True), (0.5, False)]:
        y = inc.preprocess_for_fid(torch.full((1, 3, 32, 32), v), quantize=quantize)
        assert y.shape == (1, 3, 299, 299)
        torch.testing.assert_close(y, torch.full_like(y, v), rtol=0, atol=1e-6)
    # 8-bit rounding: 0.0 -> 0.5 -> round(127.5) = 128 -> 128/255, then 2x - 1
    y = inc.preprocess_for_fid(torch.zeros(1, 3, 8, 8), quantize=True)
    torch.testing.assert_close(y, torch.full_like(y, 2 * 128 / 255 - 1), rtol=0, atol=1e-6)


def test_preprocessing_is_bilinear_align_corners_false():
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = inc.preprocess_for_fid(x, quantize=False)
    want = 2 * F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(y, want)
    other = 2 * F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=True) - 1
    assert not torch.allclose(y, other, atol=1e-4)


def test_preprocessing_rejects_bad_images():
    with pytest.raises(ConfigError, match="\\[-1, 1\\]"):
        inc.preprocess_for_fid(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ConfigError, match="shape"):
        inc.preprocess_for_fid(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="NaN"):
        inc.preprocess_for_fid(torch.full((1, 3, 8, 8), float("nan")))


# ----- loading ----------------------------------------------------------------------------------------------
def test_weights_round_trip_exactly(synthetic_file, synthetic_state):
    loaded = inc.load_fid_inception(synthetic_file)
    assert not loaded.training
    sd = loaded.state_dict()
    assert set(sd) == set(synthetic_state)
    for k, v in synthetic_state.items():
        assert torch.equal(sd[k], v), k


def test_state_dict_without_num_batches_tracked_is_accepted(synthetic_state):
    trimmed = {k: v for k, v in synthetic_state.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) == 94 * 5 + 2
    full = inc.check_fid_state_dict(trimmed)
    assert len(full) == 566
    model = inc.FIDInceptionV3()
    model.load_state_dict(full, strict=True)
    key = "Mixed_7c.branch_pool.bn.running_var"
    assert torch.equal(model.Mixed_7c.branch_pool.bn.running_var, synthetic_state[key])


def test_missing_key_is_named(synthetic_state):
    bad = dict(synthetic_state)
    del bad["Mixed_6b.branch7x7_2.conv.weight"]
    with pytest.raises(ConfigError, match="missing keys: Mixed_6b.branch7x7_2.conv.weight"):
        inc.check_fid_state_dict(bad, "w.pth")


def test_unexpected_key_is_named(synthetic_state):
    bad = dict(synthetic_state)
    bad["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    with pytest.raises(ConfigError, match="unexpected keys: AuxLogits.fc.weight"):
        inc.check_fid_state_dict(bad)


def test_wrong_shape_is_named(synthetic_state):
    bad = dict(synthetic_state)
    bad["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's 1000-class head, not the FID 1008
    msg = r"shape mismatches: fc.weight: file \[1000, 2048\] != expected \[1008, 2048\]"
    with pytest.raises(ConfigError, match=msg):
        inc.check_fid_state_dict(bad)


def test_non_finite_or_integer_weights_rejected(synthetic_state):
    bad = dict(synthetic_state)
    bad["fc.bias"] = torch.full((1008,), float("nan"))
    with pytest.raises(ConfigError, match="fc.bias contains NaN"):
        inc.check_fid_state_dict(bad)
    bad["fc.bias"] = torch.zeros(1008, dtype=torch.long)
    with pytest.raises(ConfigError, match="fc.bias has dtype"):
        inc.check_fid_state_dict(bad)


def test_small_wrong_files(tmp_path):
    p = tmp_path / "tiny.pth"
    torch.save({"something.weight": torch.zeros(3)}, p)
    with pytest.raises(ConfigError, match="missing keys: .*472 in all.*unexpected keys: something.weight"):
        inc.load_fid_inception(p)
    st = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, str(st))
    with pytest.raises(ConfigError, match="missing keys: Conv2d_1a_3x3"):
        inc.load_fid_inception(st)
    junk = tmp_path / inc.FID_INCEPTION_WEIGHTS
    junk.write_bytes(b"x")
    with pytest.raises(ConfigError, match="weights_only=True"):
        inc.load_fid_inception(junk)
    notdict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], notdict)
    with pytest.raises(ConfigError, match="not a plain state dict"):
        inc.load_fid_inception(notdict)


def test_pickled_objects_are_refused(tmp_path):
    p = tmp_path / "obj.pth"
    torch.save({"fc.weight": torch.zeros(2), "meta": ConfigError("x")}, p)
    with pytest.raises(ConfigError, match="weights_only=True"):
        inc.load_fid_inception(p)


def test_absent_weights_name_the_file(tmp_path):
    for arg in (None, tmp_path / "nothing.pth"):
        with pytest.raises(inc.InceptionWeightsMissing) as e:
            inc.load_fid_inception(arg)
        assert "pt_inception-2015-12-05-6726825d.pth" in str(e.value)
        assert "github.com/mseitzer/pytorch-fid/releases" in str(e.value)
    assert metrics.FID_INCEPTION_WEIGHTS == inc.FID_INCEPTION_WEIGHTS


# ----- inception_fid ----------------------------------------------------------------------------------------
def test_inception_fid_needs_weights_and_stats(tmp_path, synthetic_file):
    images = torch.zeros(2, 3, 32, 32)
    with pytest.raises(metrics.InceptionFIDUnavailable, match="pt_inception-2015-12-05-6726825d.pth"):
        metrics.inception_fid(images)
    with pytest.raises(metrics.InceptionFIDUnavailable, match="ships no Inception reference statistics"):
        metrics.inception_fid(images, synthetic_file)
    with pytest.raises(metrics.InceptionFIDUnavailable, match="does not exist"):
        metrics.inception_fid(images, synthetic_file, tmp_path / "stats.npz")


def test_reference_stats_validation(tmp_path):
    p = tmp_path / "wrong.npz"
    np.savez(p, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ConfigError, match="2048"):
        metrics.load_fid_reference_stats(p)
    q = tmp_path / "nokeys.npz"
    np.savez(q, m=np.zeros(3))
    with pytest.raises(ConfigError, match="lacks"):
        metrics.load_fid_reference_stats(q)
    r = tmp_path / "obj.npz"
    np.savez(r, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(2))
    with pytest.raises(ConfigError, match="mu"):
        metrics.load_fid_reference_stats(r)
    s = tmp_path / "ok.npz"
    np.savez(s, mu=np.ones(2048), sigma=np.eye(2048))
    mu, sigma, desc = metrics.load_fid_reference_stats(s)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and desc == str(s)


def test_inception_fid_pipeline(tmp_path, synthetic_file, monkeypatch):
    """Features -> float64 stats -> Frechet distance against the file's statistics (distance call spied on,
    since a 2048-d matrix square root takes many seconds on these CPUs; frechet_distance has its own tests)."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    model = inc.load_fid_inception(synthetic_file)
    feats = inc.fid_inception_features(model, images).numpy()
    mu, cov = metrics.feature_stats(feats)
    ref_mu, ref_sigma = mu + 0.25, np.eye(2048) * 0.01
    stats = tmp_path / "ref.npz"
    np.savez(stats, mu=ref_mu, sigma=ref_sigma)
    calls = []

    def spy(m1, c1, m2, c2, method="eigh"):
        calls.append((m1, c1, m2, c2, method))
        return 42.0

    monkeypatch.setattr(metrics, "frechet_distance", spy)
    out = metrics.inception_fid(images, synthetic_file, stats, batch_size=2)
    assert out["FID"] == 42.0 and out["n_images"] == 3 and out["feature_dim"] == 2048
    assert out["method"] == "sqrtm" and out["quantize"] is True and out["reference"] == str(stats)
    assert len(out["weights_sha256"]) == 64
    (m1, c1, m2, c2, method), = calls
    np.testing.assert_allclose(m1, mu, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c1, cov, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(m2, ref_mu)
    np.testing.assert_array_equal(c2, ref_sigma)
    assert method == "sqrtm"
    with pytest.raises(ConfigError, match="B >= 2"):
        metrics.inception_fid(images[:1], synthetic_file, stats)


@pytest.mark.slow
def test_inception_fid_zero_against_own_stats(tmp_path, synthetic_file):
    """Real distance (2048-d eigendecomposition, ~10-20 s on two shared cores): own statistics give 0."""
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    feats = inc.fid_inception_features(inc.load_fid_inception(synthetic_file), images).numpy()
    mu, cov = metrics.feature_stats(feats)
    out = metrics.inception_fid(images, synthetic_file, {"mu": mu, "sigma": cov}, method="eigh")
    assert out["FID"] == pytest.approx(0.0, abs=1e-6 * max(1.0, float(np.trace(cov))))
