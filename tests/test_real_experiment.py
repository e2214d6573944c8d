"""Real-model experiment runner (real_models.experiment): results layout on a tiny random UNet, exact zero
propagated error of FP vs FP, positive errors for quantized models, and spec validation that names the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.experiment import is_real_spec, load_real_spec, run_real_spec, validate_real_spec

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

TINY_SPEC = {
    "kind": "real", "name": "tiny", "seed": 0,
    "sampler": {"T": 4, "batch": 4},
    "quant": {"calibration": {"T": 4, "trajectories": 1, "batch_size": 2}, "options": {"mse_grid": 8}},
    "configs": [{"quant": "none"}, {"quant": "W4A8", "iec": [False, True], "baselines": ["ddim_matched"]},
                {"cache": 2, "iec": [True]}, {"cache": 2, "correction": True, "iec": [False]}],
    "cache": {"calibration": {"n": 2, "batch_size": 2}},
    "jacobian": {"steps": [0, -1], "samples": 1, "n_iter": 1, "n_starts": 1},
    "metrics": {"kid_subsets": 2, "bootstrap": 20, "growth_batches": 2},
    "grid": {"n": 2, "rows": ["FP", "W4A8", "W4A8+IEC"]},
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from real_models.unet import build_unet, small_config

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_unet")
    cfg = small_config(block_out_channels=(8, 16), layers_per_block=1, attention_level=1, norm_num_groups=4)
    build_unet(cfg).save_pretrained(str(d), safe_serialization=True)
    return d


@pytest.fixture(scope="module")
def tiny_results(tiny_model_dir, tmp_path_factory) -> Path:
    spec = validate_real_spec(copy.deepcopy(TINY_SPEC))
    return run_real_spec(spec, tmp_path_factory.mktemp("out"), model_dir=tiny_model_dir, quiet=True)


def test_results_layout(tiny_results):
    out = tiny_results
    for f in ("results.json", "arrays.npz", "table.md", "grid.png"):
        assert (out / f).is_file(), f
    r = json.loads((out / "results.json").read_text())
    labels = [row["label"] for row in r["rows"]]
    assert labels == ["FP", "FP+IEC", "W4A8", "W4A8+IEC", "W4A8+DDIM8", "cache2+IEC", "cache2+affine"]
    for key in ("spec_hash", "provenance", "quality_table", "growth", "jacobian", "theorem_checks", "settings",
                "model", "quant_reports"):
        assert key in r, key
    assert r["provenance"]["seed"] == 0 and len(r["spec_hash"]) == 64
    assert r["quality_table"]["columns"][0] == "row" and len(r["quality_table"]["rows"]) == len(labels) + 1
    assert r["quality_table"]["rows"][-1][0] == "real data (n=4)"          # the floor at the same n
    assert r["floor"]["n"] == 4 and r["floor"]["FD_cifarnet_ci"][0] <= r["floor"]["FD_cifarnet_ci"][1]
    assert r["settings"]["cache_branch"] == 2 and r["settings"]["growth_batches"] == 2
    assert r["cache_corrections"]["2"]["steps"] == [1, 3]
    cmp_fd = r["comparisons"]["FD_cifarnet"]["not_distinguishable"]
    assert ["FP", "FP+IEC"] in cmp_fd or ["FP+IEC", "FP"] in cmp_fd       # 4 images: nothing is distinguishable
    assert r["comparisons"]["n"] == 4 and "percentile bootstrap" in r["comparisons"]["method"]
    rows = {row["label"]: row for row in r["rows"]}
    assert rows["FP"]["NFE"] == 4 and rows["FP+IEC"]["NFE_nominal"] == 8 and rows["W4A8+DDIM8"]["NFE"] == 8
    assert rows["cache2+IEC"]["iec"]["steps"] == [0, 2]
    for row in r["rows"]:
        q = row["quality"]
        assert {"FD_cifarnet", "KID_cifarnet", "PSNR", "SSIM", "FD_cifarnet_ci", "KID_cifarnet_ci", "out_of_range",
                "FD_cifarnet_not_distinguishable_from"} <= set(q)
        lo, hi = q["FD_cifarnet_ci"]
        assert lo <= hi and q["n"] == 4
        gb = row["growth_batches"]["propagated"]
        assert gb["batches"] == 2 and len(gb["labels"]) == 2 and abs(sum(gb["share"].values()) - 1) < 1e-12
        assert row["growth_propagated"]["label"] in ("zero", "linear", "superlinear", "exponential", "inconclusive")
        assert row["wall_s"] >= 0
    assert [p["step"] for p in r["jacobian"]["per_step"]] == [0, 3]
    assert all(np.isfinite(p["L"]["mean"]) and p["L"]["mean"] > 0 for p in r["jacobian"]["per_step"])
    assert all(c["estimate"] for c in r["theorem_checks"]) and r["theorem_checks"]
    a = np.load(out / "arrays.npz")
    assert a["x_T"].shape == (4, 3, 32, 32)
    assert a["W4A8/propagated_xbar"].shape == (5,) and a["W4A8+DDIM8/propagated_xbar"].shape == (9,)
    assert a["jacobian/L"].shape == (2, 1)


def test_fp_propagated_zero_and_quantized_positive(tiny_results):
    a = np.load(tiny_results / "arrays.npz")
    for lab in ("FP", "FP+IEC"):
        assert np.all(a[f"{lab}/propagated_xbar"] == 0.0) and np.all(a[f"{lab}/eta"] == 0.0)
    assert np.all(a["FP/deployment_xbar"] == 0.0)
    assert a["FP+IEC/deployment_xbar"][-1] > 0          # IEC changes the FP samples
    for lab in ("W4A8", "W4A8+IEC", "W4A8+DDIM8", "cache2+IEC"):
        assert a[f"{lab}/propagated_xbar"][0] == 0.0     # same x_T
        assert a[f"{lab}/propagated_xbar"][-1] > 0
        assert np.all(a[f"{lab}/eta"] > 0) or lab.startswith("cache")
    assert np.all(a["W4A8/eta"] > 0) and np.all(a["W4A8/eta_ref"] > 0)
    assert a["cache2+IEC/eta"][0] == 0.0 and a["cache2+IEC/eta"][1] > 0   # refresh step exact, reuse not


def _bad(mutate, field: str) -> None:
    raw = copy.deepcopy(TINY_SPEC)
    mutate(raw)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        validate_real_spec(raw)


def test_spec_validation_names_the_field():
    _bad(lambda r: r.pop("kind"), "kind")
    _bad(lambda r: r.update(kind="toy"), "kind")
    _bad(lambda r: r.pop("name"), "name")
    _bad(lambda r: r.update(colour=1), "colour")
    _bad(lambda r: r["sampler"].update(T=1), "sampler.T")
    _bad(lambda r: r["sampler"].update(batch="4"), "sampler.batch")
    _bad(lambda r: r["sampler"].update(spacing="log"), "sampler.spacing")
    _bad(lambda r: r["configs"][1].update(quant="W2A2"), "configs[1].quant")
    _bad(lambda r: r["configs"][2].update(cache=-1), "configs[2].cache")
    _bad(lambda r: r["configs"][0].update(speed=2), "configs[0].speed")
    _bad(lambda r: r["configs"][1].update(baselines=["euler"]), "configs[1].baselines")
    _bad(lambda r: r["configs"][1].update(iec="yes"), "configs[1].iec")
    _bad(lambda r: r["configs"].append({"quant": "none"}), "configs")
    _bad(lambda r: r["jacobian"].update(steps=[9]), "jacobian.steps")
    _bad(lambda r: r["grid"].update(rows=["W8A8"]), "grid.rows")
    _bad(lambda r: r.update(iec={"preset": "paper"}), "iec.preset")
    _bad(lambda r: r["quant"].update(options={"w_method": "best"}), "quant.options")
    _bad(lambda r: r["quant"]["calibration"].update(trajectories=0), "quant.calibration.trajectories")
    _bad(lambda r: r["quant"].update(options={"per_timestep": True}), "quant.options.per_timestep")
    _bad(lambda r: r.update(model={"device": "bogus"}), "model.device")
    _bad(lambda r: r["sampler"].update(batch=1e9), "sampler.batch")
    _bad(lambda r: r.update(cache={"branch": 3}), "cache.branch")
    _bad(lambda r: r["configs"][0].update(correction=True), "configs[0].correction")
    _bad(lambda r: r["metrics"].update(growth_batches=3), "metrics.growth_batches")
    _bad(lambda r: r["metrics"].update(diagnostic_samples=8), "metrics.diagnostic_samples")


def test_huge_batch_is_refused_with_a_memory_estimate_before_allocating():
    for big in (10**9, 1e9):                # TOML `batch = 1e9` is a float
        raw = copy.deepcopy(TINY_SPEC)
        raw["sampler"]["batch"] = big
        with pytest.raises(ConfigError, match=r"sampler\.batch: 1000000000 images need about .* GiB .* available") \
                as e:
            validate_real_spec(raw)
        assert "\n" not in str(e.value)
    _bad(lambda r: r["sampler"].update(batch=16.5), "sampler.batch")


def test_unavailable_cuda_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw = copy.deepcopy(TINY_SPEC)
    raw["model"] = {"device": "cuda"}
    with pytest.raises(ConfigError, match="model.device: 'cuda' requested but CUDA is not available"):
        validate_real_spec(raw)


def test_real_eval_command_exits_2_on_a_bad_spec(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "real"\nname = "x"\n[model]\ndevice = "bogus"\n[[configs]]\nquant = "none"\n')
    p = subprocess.run([sys.executable, "-m", "iec_theory.cli", "real-eval", str(bad)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2 and "model.device" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_toy_spec_or_a_folder_is_named_as_such():
    """A toy spec handed to real-eval says kind is missing (not a list of unknown fields); a folder is a folder."""
    with pytest.raises(ConfigError, match="kind: required.*iec run"):
        load_real_spec(ROOT / "experiments" / "stiff.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_real_spec(ROOT / "experiments")


def test_committed_specs_validate():
    quick, full = (load_real_spec(ROOT / "experiments" / f"{n}.toml") for n in ("real_quick", "real_full"))
    for name, spec in (("real_quick", quick), ("real_full", full)):
        assert is_real_spec(ROOT / "experiments" / f"{name}.toml")
        assert spec.name == name and spec.iec_preset == "official_ddpm" and spec.cache_branch == 2
        assert spec.batch >= 256 and spec.metrics["growth_batches"] >= 4 and spec.metrics["bootstrap"] >= 200
        labels = spec.row_labels()
        for lab in ("FP", "FP+IEC", "W8A8", "W8A8+IEC", "W4A8", "W4A8+IEC"):
            assert lab in labels, (name, lab)
        assert any(lab.startswith("W4A8+DDIM") for lab in labels)
    for lab in ("cache5", "cache5+IEC"):
        assert lab in quick.row_labels()
    # the official CIFAR-10 settings: T = 100, quadratic spacing, refresh every 10 steps, calibrated correction
    assert (full.T_requested, full.spacing, full.eta) == (100, "quad", 0.0)
    assert full.T == 96            # the distinct official quad timesteps (real_models.experiment.grids)
    for lab in ("cache10", "cache10+IEC", "cache10+affine", "cache10+affine+IEC", "cache10+W8A8+IEC", "W4A8+Heun"):
        assert lab in full.row_labels(), lab
    assert not is_real_spec(ROOT / "experiments" / "stiff.toml")


def test_spectral_radius_and_differentiable_copy(tiny_model_dir):
    from real_models.experiment import differentiable_eps, spectral_radius
    from real_models.unet import load_unet

    scale = torch.linspace(-2.0, 1.0, 3 * 4 * 4).reshape(3, 4, 4)      # J = diag(scale): radius 2

    def lin(x, t):
        return x * scale

    est = spectral_radius(lin, torch.randn(2, 3, 4, 4), 10, n_iter=60, generator=torch.Generator().manual_seed(0))
    assert np.allclose(est.value, 2.0, rtol=2e-2)

    unet = load_unet(tiny_model_dir)
    f = differentiable_eps(unet)
    x, t = torch.randn(2, 3, 32, 32), torch.full((2,), 500)
    with torch.no_grad():
        assert torch.allclose(f(x, t), unet(x, t).sample, atol=1e-5)
    v = torch.randn_like(x)
    jv = torch.func.jvp(lambda y: f(y, t), (x,), (v,))[1]
    with torch.no_grad():
        fd = (f(x + 1e-2 * v, t) - f(x - 1e-2 * v, t)) / 2e-2
    assert float((jv - fd).norm() / fd.norm()) < 1e-2


_VOLATILE = {"wall_s", "cpu_s", "seconds", "timings_s", "provenance", "resumed", "total", "total_cpu"}


def _stable(v):
    """A results.json document without its clock readings (what a resumed run must reproduce exactly)."""
    if isinstance(v, dict) and "columns" in v and "rows" in v:       # the quality table: drop its clock columns
        keep = [i for i, c in enumerate(v["columns"]) if c not in _VOLATILE]
        return {"columns": [v["columns"][i] for i in keep], "rows": [[_stable(r[i]) for i in keep] for r in v["rows"]]}
    if isinstance(v, dict):
        return {k: _stable(x) for k, x in v.items() if k not in _VOLATILE}
    if isinstance(v, list):
        return [_stable(x) for x in v]
    return v


def test_interrupted_run_resumes_at_its_first_unfinished_row(tiny_results, tiny_model_dir, tmp_path, monkeypatch):
    """Kill the run after its fourth row: the rerun restores rows 0-3 from progress/, computes the rest, and
    writes the same results and arrays as the uninterrupted run (tiny_results), then removes progress/."""
    from real_models.experiment import progress as progress_mod

    original, calls = progress_mod.RowProgress.save, []

    def save_then_die(self, index, label, arrays, **record):
        original(self, index, label, arrays, **record)
        calls.append(label)
        if len(calls) == 4:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    spec = validate_real_spec(copy.deepcopy(TINY_SPEC))
    monkeypatch.setattr(progress_mod.RowProgress, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_real_spec(spec, out, model_dir=tiny_model_dir, quiet=True)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "progress").glob("row-*.json")) == [f"row-00{i}.json" for i in range(4)]
    assert not (out / "results.json").exists()

    run_real_spec(spec, out, model_dir=tiny_model_dir, quiet=True)
    full = json.loads((tiny_results / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed"]["rows_restored"] == calls and full["resumed"] is None
    assert set(resumed["resumed"]["git_commits"]) == set(calls)
    assert all(c == resumed["provenance"]["git_commit"] for c in resumed["resumed"]["git_commits"].values())
    assert _stable(resumed) == _stable(full)
    assert set(resumed["quant_reports"]) == {"W4A8"} and set(resumed["references"]) == set(full["references"])
    a, b = np.load(tiny_results / "arrays.npz"), np.load(out / "arrays.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
    assert not (out / "progress").exists()


def test_checkpoints_of_another_run_are_refused(tiny_model_dir, tmp_path):
    """A results folder whose progress/ belongs to another spec is refused with one line naming the field,
    and nothing in it is touched."""
    out = tmp_path / "out"
    (out / "progress").mkdir(parents=True)
    meta = out / "progress" / "meta.json"
    meta.write_text(json.dumps({"spec_hash": "0" * 64, "weights_sha256": "x", "device": "cpu"}))
    spec = validate_real_spec(copy.deepcopy(TINY_SPEC))
    with pytest.raises(ConfigError, match="another run.*spec_hash.*weights_sha256"):
        run_real_spec(spec, out, model_dir=tiny_model_dir, quiet=True)
    assert sorted(p.name for p in out.rglob("*")) == ["meta.json", "progress"]
