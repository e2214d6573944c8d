"""Issue 11: training keeps its work on SIGINT/SIGTERM, its log stays consistent with the checkpoint,
exports never lose or mix files, and bad checkpoints / configs are clear errors."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from iec_theory.errors import ConfigError
from real_models.checkpoint import CKPT_NAME, load_checkpoint
from real_models.train import LOG_NAME, TrainConfig, Trainer, export_run, read_log
from real_models.unet import ModelLoadError, tiny_config

torch.set_num_threads(1)


def _images(n: int = 16, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def _cfg(steps: int, **kw) -> TrainConfig:
    base = dict(unet_config=tiny_config(), batch_size=4, lr=2e-3, warmup_steps=2, max_steps=steps, log_every=3,
                ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def _same_checkpoints(a, b) -> None:
    ta, sa = load_checkpoint(a)
    tb, sb = load_checkpoint(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sa["step"] == sb["step"]


def _log_steps_losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_resume_equals_uninterrupted(tmp_path, monkeypatch, sig):
    imgs = _images()
    Trainer(imgs, _cfg(8), tmp_path / "a", progress=False).run()

    tr = Trainer(imgs, _cfg(8), tmp_path / "b", progress=False)
    orig = Trainer.train_step

    def step_then_signal(self):
        loss = orig(self)
        if self.step == 5:
            signal.raise_signal(sig)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    state = tr.run()
    monkeypatch.setattr(Trainer, "train_step", orig)
    assert tr.interrupted == sig and state["step"] == 5
    assert load_checkpoint(tmp_path / "b")[1]["step"] == 5          # nothing lost
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    b2 = Trainer(imgs, _cfg(8), tmp_path / "b", progress=False)
    assert b2.resumed_from == 5
    b2.run()
    _same_checkpoints(tmp_path / "a", tmp_path / "b")
    assert _log_steps_losses(tmp_path / "a") == _log_steps_losses(tmp_path / "b")


def test_resume_truncates_log_lines_after_the_checkpoint(tmp_path):
    imgs = _images()
    Trainer(imgs, _cfg(6), tmp_path / "a", progress=False).run()
    Trainer(imgs, _cfg(3), tmp_path / "b", progress=False).run()
    with open(tmp_path / "b" / LOG_NAME, "a") as f:   # a killed run logged steps after its last checkpoint
        f.write(json.dumps({"step": 6, "loss": 123.0}) + "\n" + '{"step": 7, "lo')
    Trainer(imgs, _cfg(6), tmp_path / "b", progress=False).run()
    steps = [s for s, _ in _log_steps_losses(tmp_path / "b")]
    assert steps == sorted(set(steps)) == [3, 6]
    assert _log_steps_losses(tmp_path / "a") == _log_steps_losses(tmp_path / "b")


def test_fresh_start_drops_the_log_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    import subprocess

    imgs = _images()
    Trainer(imgs, _cfg(6), tmp_path / "a", progress=False).run()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / LOG_NAME).write_text(json.dumps({"step": 3, "loss": 9.0}) + "\n")
    p = subprocess.Popen(["true"])
    p.wait()
    stale = tmp_path / "b" / f".{CKPT_NAME}.tmp{p.pid}"          # a save cut by SIGKILL
    stale.write_bytes(b"partial")
    Trainer(imgs, _cfg(6), tmp_path / "b", progress=False).run()
    assert _log_steps_losses(tmp_path / "a") == _log_steps_losses(tmp_path / "b")
    assert not stale.exists()


def test_checkpoint_without_training_state_is_a_clear_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    save_file({"model.x": torch.zeros(2)}, str(run / CKPT_NAME), metadata={"state": json.dumps({"step": 1})})
    with pytest.raises(ModelLoadError, match="train_config"):
        Trainer(_images(), _cfg(2), run, progress=False)
    with pytest.raises(ModelLoadError, match="train_config"):
        export_run(run, tmp_path / "e")


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("lr", float("nan")), ("grad_clip", float("nan")),
                                         ("grad_clip", -1.0), ("warmup_steps", -1), ("checkpoint_minutes", 0.0),
                                         ("seed", 2**64), ("seed", -1), ("num_train_steps", 10**10)])
def test_train_config_rejects_bad_values(tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        Trainer(_images(4), _cfg(1, **{field: value}), tmp_path / "x", progress=False)


# ----- export ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train") / "run"
    Trainer(_images(), _cfg(2), d, progress=False).run()
    return d


def test_export_refuses_a_folder_that_is_not_an_export_and_keeps_it(run_dir, tmp_path):
    dest = tmp_path / "mine"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "data.txt").write_text("x")
    (dest / "notes.txt").write_text("y")
    with pytest.raises(ConfigError, match="not an .iec train-ddpm. export"):
        export_run(run_dir, dest)
    assert (dest / "sub" / "data.txt").read_text() == "x" and (dest / "notes.txt").read_text() == "y"


def test_export_over_an_export_keeps_unknown_entries_or_refuses(run_dir, tmp_path):
    dest = export_run(run_dir, tmp_path / "e")
    (dest / "extra").mkdir()
    (dest / "extra" / "f.txt").write_text("z")
    with pytest.raises(ConfigError, match="extra"):
        export_run(run_dir, dest)
    assert (dest / "extra" / "f.txt").read_text() == "z"


def test_export_into_dot_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("k")
    with pytest.raises(ConfigError, match="export"):
        export_run(run_dir, ".")
    assert (tmp_path / "keep.txt").read_text() == "k"


def test_export_into_an_empty_folder_works(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    out = export_run(run_dir, tmp_path / "empty")
    assert (out / "metadata.json").is_file() and (out / "config.json").is_file()


def test_reexport_removes_files_describing_the_old_model(run_dir, tmp_path):
    dest = export_run(run_dir, tmp_path / "e")
    for name in ("quality.json", "sample_grid.png", "sample_grid.json", "sample_grid_clip_x0.png"):
        (dest / name).write_text("describes the old weights")
    export_run(run_dir, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(["config.json", "diffusion_pytorch_model.safetensors",
                                                             "metadata.json", LOG_NAME])


def test_reexport_keeps_the_replaced_models_numbers_in_the_history(run_dir, tmp_path):
    from real_models.pretrained import weights_sha256

    dest = export_run(run_dir, tmp_path / "e")
    first = json.loads((dest / "metadata.json").read_text())
    assert first["history"] == []
    sha = weights_sha256(dest)
    quality = {"n": 1000, "T": 100, "seed": 0, "rows": {"ddim_quad": {"out_of_range": 0.0857, "FD_cifarnet": 12.39,
                                                                      "FD_cifarnet_ci": [11.9, 12.9], "T": 100}}}
    (dest / "quality_n1000.json").write_text(json.dumps(quality))
    (dest / "quality.json").write_text("not json")          # unreadable files are skipped, not fatal
    export_run(run_dir, dest)
    second = json.loads((dest / "metadata.json").read_text())
    assert not (dest / "quality_n1000.json").exists()       # it described the old weights
    (h,) = second["history"]
    assert h["steps"] == first["steps"] and h["weights_sha256"] == sha and h["images_seen"] == first["images_seen"]
    (q,) = h["quality"]
    assert q["n"] == 1000 and q["rows"] == {"ddim_quad": {"out_of_range": 0.0857, "FD_cifarnet": 12.39,
                                                          "FD_cifarnet_ci": [11.9, 12.9]}}
    assert q["source"].endswith("quality_n1000.json")
    export_run(run_dir, dest)                                # a third export keeps both earlier models, newest first
    third = json.loads((dest / "metadata.json").read_text())
    assert len(third["history"]) == 2 and third["history"][1] == h and third["history"][0]["quality"] == []


def test_committed_default_needs_an_explicit_flag(run_dir, tmp_path, monkeypatch):
    import real_models.train as train

    fake_default = export_run(run_dir, tmp_path / "weights" / "default")
    (fake_default / "quality.json").write_text("{}")
    monkeypatch.setattr(train, "DEFAULT_EXPORT_DIR", fake_default)
    before = (fake_default / "metadata.json").read_text()
    with pytest.raises(ConfigError, match="--export-default"):
        export_run(run_dir, fake_default)
    assert (fake_default / "metadata.json").read_text() == before and (fake_default / "quality.json").is_file()
    export_run(run_dir, fake_default, allow_default=True)
    assert not (fake_default / "quality.json").exists()


def _image_folder(root, n: int = 8) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / ("airplane", "cat")[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(d / f"{i:04d}.png")
    return str(root)


def test_cli_exports_into_the_run_folder_by_default(tmp_path, capsys, monkeypatch):
    import real_models.train as train
    from iec_theory.cli import main

    fake_default = tmp_path / "weights" / "ddpm_cifar10_small"   # never risk the committed default here
    monkeypatch.setattr(train, "DEFAULT_EXPORT_DIR", fake_default)
    data = _image_folder(tmp_path / "data")
    run = tmp_path / "run"
    rc = main(["train-ddpm", "--data", data, "--config", "tiny", "--max-steps", "2", "--batch-size", "4",
               "--run-dir", str(run), "--no-progress", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    assert (run / "export" / "metadata.json").is_file()
    assert not fake_default.exists()


def test_cli_limit_is_applied_and_checked(tmp_path, capsys):
    from iec_theory.cli import main

    data = _image_folder(tmp_path / "data")
    rc = main(["train-ddpm", "--data", data, "--config", "tiny", "--max-steps", "1", "--batch-size", "2",
               "--limit", "3", "--run-dir", str(tmp_path / "r"), "--no-progress", "--no-export"])
    assert rc == 0
    assert load_checkpoint(tmp_path / "r")[1]["num_train_images"] == 3
