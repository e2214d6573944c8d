"""Image-quality metrics, honestly labelled.

- ``frechet_distance`` / ``feature_stats``: the Frechet distance between two Gaussians fitted to
  feature sets (float64; eigen-based matrix square root, or ``scipy.linalg.sqrtm``).
- ``kid``: kernel inception distance *formula* (unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``), mean and std over random subsets.
- ``psnr`` / ``ssim``: full-reference metrics between two image batches in [-1, 1] (e.g. an efficient
  model's samples versus full-precision samples from the same noise), per image and mean.
- ``ClassifierFeatures`` / ``fd_kid_vs_cifar_test``: FD and KID in the feature space of the project's
  own CIFAR-10 classifier ("cifarnet", ``real_models/classifier.py``) against committed CIFAR-10
  test-set statistics. These are reported as **FD_cifarnet** and **KID_cifarnet**. They are *not*
  Inception FID / KID and are not comparable to numbers in papers.
- ``inception_fid``: standard Inception FID (pool3 of the FID Inception-v3 in ``real_models/inception.py``)
  only when the user supplies the pytorch-fid weights file and reference statistics; neither is shipped,
  nothing is approximated, and agreement with pytorch-fid could not be checked here (no weights).

Bad inputs (shape mismatches, NaN/Inf, too few samples) raise ``iec_theory.errors.ConfigError``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError
from real_models.classifier import (
    DEFAULT_WEIGHTS_DIR,
    check_images,
    extract_features,
    load_classifier,
    load_safetensors,
)
from real_models.intervals import (  # noqa: F401  (re-exported)
    BOOTSTRAP_METHOD,
    bootstrap_fd_kid,
    distinguishable,
    indistinguishable_pairs,
    percentile_interval,
)

__all__ = ["frechet_distance", "feature_stats", "kid", "psnr", "ssim", "ClassifierFeatures", "load_test_stats",
           "fd_kid_vs_cifar_test", "inception_fid", "InceptionFIDUnavailable", "FID_INCEPTION_WEIGHTS",
           "load_fid_reference_stats", "bootstrap_fd_kid", "distinguishable", "indistinguishable_pairs",
           "percentile_interval", "fd_kid_intervals_vs_cifar_test", "real_data_floor"]


# ----- helpers ------------------------------------------------------------------------------------------
def _as_f64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numeric array-like, got {type(x).__name__}") from exc
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} contains non-finite values ({int(np.isnan(arr).sum())} NaN, "
                          f"{int(np.isinf(arr).sum())} Inf)")
    return arr


def _features_2d(x: Any, name: str, min_rows: int = 1) -> np.ndarray:
    arr = _as_f64(x, name)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-d array [n, D] of features, got shape {list(arr.shape)}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ConfigError(f"{name} needs at least {min_rows} rows and 1 column, got shape {list(arr.shape)}")
    return arr


# ----- Frechet distance -----------------------------------------------------------------------------------
def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [n, D] (n >= 2)."""
    f = _features_2d(features, "features", min_rows=2)
    mu = f.mean(axis=0)
    cov = np.atleast_2d(np.cov(f, rowvar=False))
    return mu, cov


def _sym_psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any, method: str = "eigh") -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2), in float64.

    ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2))``.

    ``method="eigh"`` (default) computes ``tr((cov1 cov2)^(1/2))`` as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix ``S cov2 S`` with ``S = cov1^(1/2)`` (both from ``eigh``,
    tiny negative eigenvalues from round-off clipped to 0): no complex arithmetic, stable for singular
    covariances. ``method="sqrtm"`` uses ``scipy.linalg.sqrtm(cov1 @ cov2)``; imaginary parts from
    round-off are dropped when small (relative 1e-3 of the largest magnitude), else a ConfigError is
    raised. A tiny negative result from round-off is clipped to 0.
    """
    m1, m2 = np.atleast_1d(_as_f64(mu1, "mu1")), np.atleast_1d(_as_f64(mu2, "mu2"))
    c1, c2 = np.atleast_2d(_as_f64(cov1, "cov1")), np.atleast_2d(_as_f64(cov2, "cov2"))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ConfigError(f"mu1 and mu2 must be vectors of one length, got {list(m1.shape)} and {list(m2.shape)}")
    d = m1.shape[0]
    for name, c in (("cov1", c1), ("cov2", c2)):
        if c.shape != (d, d):
            raise ConfigError(f"{name} must have shape [{d}, {d}] to match the means, got {list(c.shape)}")
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(c).max()))):
            raise ConfigError(f"{name} is not symmetric")
    if method == "eigh":
        s1 = _sym_psd_sqrt(c1)
        inner = s1 @ c2 @ s1
        w = np.linalg.eigvalsh((inner + inner.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    elif method == "sqrtm":
        from scipy.linalg import sqrtm

        covmean = sqrtm(c1 @ c2)
        if not np.isfinite(covmean).all():  # singular product: regularise as is customary
            eps = 1e-6 * np.eye(d)
            covmean = sqrtm((c1 + eps) @ (c2 + eps))
        if np.iscomplexobj(covmean):
            scale = max(1.0, float(np.abs(covmean).max()))
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * scale):
                raise ConfigError(f"sqrtm(cov1 @ cov2) has a large imaginary part "
                                  f"({float(np.abs(covmean.imag).max()):.3g}); covariances not PSD?")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ConfigError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    diff = m1 - m2
    fd = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


# ----- KID ------------------------------------------------------------------------------------------------
def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(feats_a: Any, feats_b: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Unbiased MMD^2 with kernel ``(x.y / d + 1)^3``, averaged over random subsets.

    Each of ``subsets`` rounds draws ``subset_size`` rows of each set without replacement (numpy
    ``default_rng(seed)``) and computes the unbiased estimate
    ``sum_{i!=j} k(a_i,a_j)/(m(m-1)) + sum_{i!=j} k(b_i,b_j)/(m(m-1)) - 2 mean_{i,j} k(a_i,b_j)``.
    Returns ``{"mean", "std", "subsets", "subset_size"}`` (std over subsets, ddof 0). When a subset
    uses every row of both sets, all rounds agree and std is 0.
    """
    a = _features_2d(feats_a, "feats_a", min_rows=2)
    b = _features_2d(feats_b, "feats_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feats_a and feats_b must have the same feature dim, got {a.shape[1]} and {b.shape[1]}")
    subsets, subset_size = int(subsets), int(subset_size)
    if subsets < 1:
        raise ConfigError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2 or subset_size > min(a.shape[0], b.shape[0]):
        raise ConfigError(f"subset_size must be in [2, min(n_a, n_b) = {min(a.shape[0], b.shape[0])}], "
                          f"got {subset_size}")
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for i in range(subsets):
        ia = rng.choice(a.shape[0], subset_size, replace=False)
        ib = rng.choice(b.shape[0], subset_size, replace=False)
        vals[i] = _mmd2_unbiased(a[ia], b[ib])
    return {"mean": float(vals.mean()), "std": float(vals.std()), "subsets": subsets, "subset_size": subset_size}


# ----- PSNR / SSIM ----------------------------------------------------------------------------------------
def _image_pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    ta = torch.from_numpy(_as_f64(a, "a")) if not isinstance(a, torch.Tensor) else a.detach().cpu().double()
    tb = torch.from_numpy(_as_f64(b, "b")) if not isinstance(b, torch.Tensor) else b.detach().cpu().double()
    for name, t in (("a", ta), ("b", tb)):
        if t.ndim != 4:
            raise ConfigError(f"{name} must be an image batch [B, C, H, W], got shape {list(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{name} contains NaN or Inf")
    if ta.shape != tb.shape:
        raise ConfigError(f"a and b must have the same shape, got {list(ta.shape)} and {list(tb.shape)}")
    if ta.shape[0] == 0:
        raise ConfigError("empty image batch")
    return ta, tb


def psnr(a: Any, b: Any, data_range: float = 2.0) -> dict[str, Any]:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image of batches [B, C, H, W].

    For images in [-1, 1] the range is 2. Returns ``{"per_image": float64 ndarray [B], "mean": float}``;
    identical images give ``inf``.
    """
    ta, tb = _image_pair(a, b)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ConfigError(f"data_range must be a positive finite number, got {data_range!r}")
    mse = ((ta - tb) ** 2).flatten(1).mean(1).numpy()
    with np.errstate(divide="ignore"):
        per = 10.0 * np.log10(data_range ** 2 / mse)
    return {"per_image": per, "mean": float(per.mean())}


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: Any, b: Any, data_range: float = 2.0, low: float = -1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> dict[str, Any]:
    """Structural similarity (Wang et al. 2004) per image of batches [B, C, H, W].

    Gaussian window ``win_size`` = 11, ``sigma`` = 1.5, constants ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``
    with ``L = data_range``; local statistics are Gaussian-weighted (biased) moments over the *valid*
    window positions; the SSIM map is computed per channel and averaged over positions and channels.
    Images are first shifted by ``-low`` so that they lie in ``[0, data_range]`` (default: [-1, 1] to
    [0, 2]); this makes the result equal to standard SSIM of the same images in [0, 1] with range 1 or
    in uint8 with range 255 (the luminance term is not shift-invariant, so the shift matters).
    Returns ``{"per_image": float64 ndarray [B], "mean": float}``.
    """
    ta, tb = _image_pair(a, b)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ConfigError(f"data_range must be a positive finite number, got {data_range!r}")
    if win_size < 1 or win_size % 2 == 0:
        raise ConfigError(f"win_size must be a positive odd integer, got {win_size}")
    _, c, h, w = ta.shape
    if h < win_size or w < win_size:
        raise ConfigError(f"images of size {h}x{w} are smaller than the {win_size}x{win_size} SSIM window")
    ta, tb = ta - low, tb - low
    g = _gaussian_window(win_size, sigma)
    wx = g.view(1, 1, 1, win_size).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, win_size, 1).repeat(c, 1, 1, 1)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, wx, groups=c), wy, groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = filt(ta), filt(tb)
    s_aa = filt(ta * ta) - mu_a ** 2
    s_bb = filt(tb * tb) - mu_b ** 2
    s_ab = filt(ta * tb) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    per = smap.flatten(1).mean(1).numpy()
    return {"per_image": per, "mean": float(per.mean())}


# ----- FD / KID in the project classifier's feature space --------------------------------------------------
class ClassifierFeatures:
    """Maps images in [-1, 1] [B, 3, 32, 32] to the committed CIFAR-10 classifier's features [B, D] (float64).

    The features are the global-average-pooled activations feeding the classifier's final linear layer
    (``real_models.classifier.CifarNet.features``), computed in eval mode.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 500) -> None:
        self.weights_dir = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
        self.model = load_classifier(self.weights_dir, device=device)
        self.batch_size = int(batch_size)

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return extract_features(self.model, images, batch_size=self.batch_size)


def load_test_stats(weights_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The committed CIFAR-10 test-set feature statistics: ``mean`` [D], ``cov`` [D, D], ``kid_features`` [n, D]."""
    d = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    raw = load_safetensors(d / "test_stats.safetensors")
    missing = {"mean", "cov", "kid_features"} - set(raw)
    if missing:
        raise ConfigError(f"{d / 'test_stats.safetensors'} lacks {sorted(missing)}")
    out = {k: v.double().numpy() for k, v in raw.items()}
    dim = out["mean"].shape[0]
    if out["cov"].shape != (dim, dim) or out["kid_features"].ndim != 2 or out["kid_features"].shape[1] != dim:
        raise ConfigError(f"{d / 'test_stats.safetensors'}: inconsistent shapes mean {out['mean'].shape}, "
                          f"cov {out['cov'].shape}, kid_features {out['kid_features'].shape}")
    return out


def fd_kid_vs_cifar_test(images: torch.Tensor, weights_dir: str | Path | None = None,
                         extractor: ClassifierFeatures | None = None, kid_subsets: int = 100,
                         kid_subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """FD_cifarnet and KID_cifarnet of images in [-1, 1] [B, 3, 32, 32] against the CIFAR-10 test set.

    Both are measured in the feature space of the project's own CIFAR-10 classifier (cifarnet), against
    the committed statistics of the 10,000 test images (JPEG re-encoding of CIFAR-10): FD uses the
    committed test mean/covariance, KID the committed fixed subset of test features (subset size
    ``min(kid_subset_size, B, n_ref)``). **These are not Inception FID/KID** and are not comparable
    with published FID numbers; compare them only with each other. FD is biased upwards for small B
    (use the same B when comparing models). Returns ``{"FD_cifarnet", "KID_cifarnet", "KID_cifarnet_std",
    "n_images", "feature_dim", "kid_subsets", "kid_subset_size", "reference"}``.
    """
    images = check_images(images)
    if images.shape[0] < 2:
        raise ConfigError(f"need at least 2 images for FD/KID, got {images.shape[0]}")
    ext = extractor if extractor is not None else ClassifierFeatures(weights_dir)
    ref = load_test_stats(ext.weights_dir if extractor is not None and weights_dir is None else weights_dir)
    feats = ext(images).numpy()
    if feats.shape[1] != ref["mean"].shape[0]:
        raise ConfigError(f"classifier feature dim {feats.shape[1]} != reference statistics dim {ref['mean'].shape[0]}")
    mu, cov = feature_stats(feats)
    fd = frechet_distance(mu, cov, ref["mean"], ref["cov"])
    size = min(int(kid_subset_size), feats.shape[0], ref["kid_features"].shape[0])
    k = kid(feats, ref["kid_features"], subsets=kid_subsets, subset_size=size, seed=seed)
    return {"FD_cifarnet": fd, "KID_cifarnet": k["mean"], "KID_cifarnet_std": k["std"], "n_images": int(feats.shape[0]),
            "feature_dim": int(feats.shape[1]), "kid_subsets": k["subsets"], "kid_subset_size": k["subset_size"],
            "reference": "CIFAR-10 test set (10,000 JPEG-re-encoded images), features of the project's cifarnet "
                         "classifier; not Inception FID/KID"}


def fd_kid_intervals_vs_cifar_test(images: torch.Tensor | None = None, feats: Any = None,
                                   extractor: ClassifierFeatures | None = None, weights_dir: str | Path | None = None,
                                   B: int = 200, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """FD_cifarnet and KID_cifarnet with percentile-bootstrap intervals (real_models.intervals).

    Give ``images`` in [-1, 1] [n, 3, 32, 32] or their classifier ``feats`` [n, D]. KID here is the single
    U-statistic of all n generated vs the committed 2,000 reference test features (no random subsets), so it
    differs slightly from ``fd_kid_vs_cifar_test``'s subset mean. Not Inception FID/KID.
    """
    ext = extractor
    if feats is None:
        if images is None:
            raise ConfigError("give images or feats")
        ext = ext if ext is not None else ClassifierFeatures(weights_dir)
        feats = ext(check_images(images)).numpy()
    wd = weights_dir if weights_dir is not None else (ext.weights_dir if ext is not None else None)
    ref = load_test_stats(wd)
    r = bootstrap_fd_kid(feats, ref["mean"], ref["cov"], ref["kid_features"], B=B, seed=seed, level=level)
    return {"FD_cifarnet": r["FD"], "FD_cifarnet_ci": r["FD_ci"], "KID_cifarnet": r["KID"],
            "KID_cifarnet_ci": r["KID_ci"], "n": r["n"], "B": r["B"], "level": level, "seed": seed,
            "method": r["method"], "FD_boot_std": r["FD_boot_std"], "KID_boot_std": r["KID_boot_std"]}


def real_data_floor(n: int, extractor: ClassifierFeatures | None = None, weights_dir: str | Path | None = None,
                    B: int = 200, seed: int = 0, level: float = 0.95, data_root: str | Path | None = None
                    ) -> dict[str, Any]:
    """The same statistics and intervals for n real CIFAR-10 images: the floor at this n (FD is biased up at
    small n, so a generated set is judged against real images at the same n, never against 0).

    Source: n training images drawn with ``default_rng(seed)`` when the data is found (``data_root`` or
    $IEC_CIFAR10_DIR), else n of the committed 2,000 reference test features (they are in the reference
    set: a slightly optimistic floor). ``source`` names which.
    """
    import os

    n = int(n)
    ext = extractor if extractor is not None else ClassifierFeatures(weights_dir)
    rng = np.random.default_rng(seed)
    source = None
    root = data_root if data_root is not None else os.environ.get("IEC_CIFAR10_DIR")
    if root and Path(root).exists():
        try:
            from real_models.data import load_cifar10, to_float_tensor

            imgs, _ = load_cifar10("train", root)
            idx = rng.choice(len(imgs), size=n, replace=False)
            feats = ext(to_float_tensor(imgs[np.sort(idx)])).numpy()
            source = f"{n} CIFAR-10 training images (seed {seed})"
        except Exception as exc:  # unreadable data: fall back to the committed features, say so
            source = f"training data unreadable ({type(exc).__name__}); "
    if source is None or source.endswith("; "):
        ref = load_test_stats(weights_dir if weights_dir is not None else ext.weights_dir)
        pool = ref["kid_features"]
        if n > pool.shape[0]:
            raise ConfigError(f"real-data floor at n={n} needs the CIFAR-10 training data ($IEC_CIFAR10_DIR); the "
                              f"committed reference features hold only {pool.shape[0]}")
        feats = pool[np.sort(rng.choice(pool.shape[0], size=n, replace=False))]
        source = (source or "") + (f"{n} of the committed CIFAR-10 test reference features (seed {seed}; part of "
                                   "the reference set: slightly optimistic floor)")
    out = fd_kid_intervals_vs_cifar_test(feats=feats, extractor=ext, weights_dir=weights_dir, B=B, seed=seed,
                                         level=level)
    out["source"] = source
    return out


# ----- standard Inception FID ------------------------------------------------------------------------------
FID_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


class InceptionFIDUnavailable(ConfigError, NotImplementedError):
    """Standard Inception FID cannot be computed: the weights file or the reference statistics are missing."""


def load_fid_reference_stats(reference_stats: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Reference ``(mu [2048], sigma [2048, 2048], description)`` for standard FID.

    ``reference_stats`` is a path to an ``.npz`` file with arrays ``mu`` and ``sigma`` (the format
    pytorch-fid writes with ``--save-stats``), read with ``np.load(allow_pickle=False)``, or a dict with
    those two keys. Shapes and finiteness are checked here (symmetry by ``frechet_distance``). None or an
    absent file raises ``InceptionFIDUnavailable``: this project ships no Inception reference statistics.
    """
    from real_models.inception import FID_FEATURE_DIM

    if reference_stats is None or (isinstance(reference_stats, (str, Path)) and not Path(reference_stats).is_file()):
        where = ("no reference_stats given" if reference_stats is None
                 else f"{str(reference_stats)!r} does not exist")
        raise InceptionFIDUnavailable(
            f"standard Inception FID needs reference statistics (an .npz with 'mu' [2048] and 'sigma' "
            f"[2048, 2048], as written by pytorch-fid --save-stats from the reference images, e.g. the "
            f"CIFAR-10 training set) computed with the same FID Inception network; {where}. This project "
            f"ships no Inception reference statistics.")
    if isinstance(reference_stats, (str, Path)):
        path = Path(reference_stats)
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:  # not an .npy/.npz, corrupt, or pickled objects (refused)
            raise ConfigError(f"cannot read reference statistics {path} with np.load(allow_pickle=False): "
                              f"{exc}") from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ConfigError(f"{path} is a single array, not an .npz with 'mu' and 'sigma'")
        with loaded as f:
            missing = {"mu", "sigma"} - set(f.files)
            if missing:
                raise ConfigError(f"{path} lacks {sorted(missing)} (has {sorted(f.files)})")
            try:
                mu, sigma = np.array(f["mu"]), np.array(f["sigma"])
            except Exception as exc:  # object arrays are refused without pickle
                raise ConfigError(f"cannot read 'mu'/'sigma' from {path}: {exc}") from exc
        desc = str(path)
    elif isinstance(reference_stats, dict):
        missing = {"mu", "sigma"} - set(reference_stats)
        if missing:
            raise ConfigError(f"reference_stats lacks {sorted(missing)}")
        mu, sigma, desc = reference_stats["mu"], reference_stats["sigma"], "in-memory statistics"
    else:
        raise ConfigError(f"reference_stats must be a path to an .npz or a dict with 'mu' and 'sigma', "
                          f"got {type(reference_stats).__name__}")
    mu = np.atleast_1d(_as_f64(mu, "reference mu"))
    sigma = np.atleast_2d(_as_f64(sigma, "reference sigma"))
    if mu.shape != (FID_FEATURE_DIM,) or sigma.shape != (FID_FEATURE_DIM, FID_FEATURE_DIM):
        raise ConfigError(f"reference statistics must have mu [{FID_FEATURE_DIM}] and sigma "
                          f"[{FID_FEATURE_DIM}, {FID_FEATURE_DIM}] (Inception pool3), got mu {list(mu.shape)} "
                          f"and sigma {list(sigma.shape)}")
    return mu, sigma, desc


def inception_fid(images: torch.Tensor, weights_path: str | Path | None = None, reference_stats: Any = None,
                  batch_size: int = 50, device: str | torch.device = "cpu", quantize: bool = True,
                  method: str = "sqrtm") -> dict[str, Any]:
    """Standard FID: Inception-v3 pool3 (2048-d) features of ``images`` versus user-supplied reference stats.

    Needs two things the user supplies; this project ships neither and never approximates them:

    - ``weights_path``: the pytorch-fid weights file ``pt_inception-2015-12-05-6726825d.pth`` (the PyTorch
      port of the TensorFlow 2015-12-05 Inception graph used by TTUR), from pytorch-fid's GitHub
      releases; loaded tensors-only and verified key by key (``real_models.inception.load_fid_inception``);
    - ``reference_stats``: an ``.npz`` with ``mu`` [2048] and ``sigma`` [2048, 2048] computed with that
      network (``pytorch-fid --save-stats``), or a dict with those keys.

    ``images`` are float [B, 3, H, W] in [-1, 1] (B >= 2); preprocessing as in pytorch-fid on saved PNGs
    (8-bit rounding unless ``quantize=False``, bilinear resize to 299x299, ``align_corners=False``, to
    [-1, 1]); features in batches of ``batch_size``; ``mu``/unbiased covariance in float64; the distance
    by ``frechet_distance(method=method)`` (default ``"sqrtm"``, scipy's matrix square root as in
    pytorch-fid). The network is re-implemented here (``real_models/inception.py``); its numerical
    agreement with pytorch-fid could not be checked on the development machines (no weights there).

    Missing weights or statistics raise ``InceptionFIDUnavailable`` naming what is needed; a malformed
    file raises ``ConfigError`` naming the problem. Returns ``{"FID", "n_images", "feature_dim",
    "weights", "weights_sha256", "reference", "quantize", "method"}``.
    """
    from real_models.inception import (
        FID_WEIGHTS_SOURCE,
        fid_inception_features,
        file_sha256,
        load_fid_inception,
    )

    if weights_path is None or not Path(weights_path).is_file():
        where = "no weights_path given" if weights_path is None else f"{str(weights_path)!r} does not exist"
        raise InceptionFIDUnavailable(
            f"standard Inception FID needs the FID Inception weights file {FID_INCEPTION_WEIGHTS} "
            f"(pytorch-fid's port of the TensorFlow 2015-12-05 Inception graph); {where}. This project does "
            f"not ship it and cannot download it; get it from {FID_WEIGHTS_SOURCE}. Without it use "
            f"FD_cifarnet (real_models.metrics.fd_kid_vs_cifar_test), which is not FID.")
    mu_ref, sigma_ref, ref_desc = load_fid_reference_stats(reference_stats)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 2:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"images must be a tensor [B, 3, H, W] in [-1, 1] with B >= 2, got {shape}")
    model = load_fid_inception(weights_path, device=device)
    feats = fid_inception_features(model, images, batch_size=batch_size, quantize=quantize).numpy()
    mu, cov = feature_stats(feats)
    fid = frechet_distance(mu, cov, mu_ref, sigma_ref, method=method)
    return {"FID": fid, "n_images": int(feats.shape[0]), "feature_dim": int(feats.shape[1]),
            "weights": str(weights_path), "weights_sha256": file_sha256(weights_path), "reference": ref_desc,
            "quantize": bool(quantize), "method": method}
