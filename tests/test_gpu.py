"""The CUDA paths: AMP (fp16 + GradScaler, bf16), channels_last, a real out-of-memory, device-side Recall@K,
fp16 caption encoding, and NCCL under torchrun. Skipped without a GPU; run them with `python -m pytest -m gpu`
on any CUDA machine (docs/PERFORMANCE.md records the last run)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers.training import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run `python -m pytest -m gpu` on a GPU machine"),
]
AMP_REL_TOL = 2e-2  # AMP kernels are not bit-reproducible across processes: losses agree to ~1e-3, allow 2%
AMP_WEIGHT_TOL = 5e-2


def quiet(cfg, paths, **kwargs):
    return train.Trainer(cfg, paths, progress=False, log=lambda m: None, **kwargs).fit()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16+GradScaler", "bf16"])
def test_an_amp_epoch_through_the_real_trainer(workspace, monkeypatch, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no native bf16")
    monkeypatch.setattr(train, "amp_dtype", lambda device, enabled: dtype if enabled and device.type == "cuda" else None)
    cfg, paths = workspace
    seen = {}

    def on_step(trainer):
        seen.update(scaler=trainer.scaler.is_enabled(), channels_last=trainer.channels_last)

    result = quiet(cfg.replace(epochs=1, run_name=f"gpu-{dtype}", channels_last=True, amp=True), paths, on_step=on_step)
    assert result.metrics["amp_dtype"] == str(dtype).replace("torch.", "") and result.metrics["channels_last"] is True
    assert seen == {"scaler": dtype == torch.float16, "channels_last": True}
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"])) and result.metrics["skipped_steps"] == 0


def _headless_history(cfg, paths, tmp_path) -> list[dict]:
    """Train ``cfg`` to the end in its own process (as the killed-and-resumed run is), return its history."""
    from test_train import ROOT

    from helpers.core.storage import read_json

    cmd = [sys.executable, "-m", "helpers.train", "--config", str(cfg.save(tmp_path / f"{cfg.run_name}.json")), "--no-progress"]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return read_json(paths.runs_dir / cfg.run_name / "history.json")["epochs"]


def test_amp_resume_after_sigkill_matches_within_tolerance(workspace, tmp_path):
    """A resumed AMP run must land within the run-to-run noise of two uninterrupted AMP runs in separate processes
    (3x their spread, at least 2% on the losses): in one process two runs are bit-identical (seen on an H100), but
    cuDNN's autotuner picks kernels by timing, so two processes do not train bit-identically."""
    from test_train import _kill_then_resume_matches, _weights

    cfg, paths = workspace
    names = [f"gpu-noise-{i}" for i in range(2)]
    a, b = (_headless_history(cfg.replace(epochs=2, run_name=name), paths, tmp_path) for name in names)
    spread = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-6) for x, y in zip(a, b) for k in ("train_loss", "val_loss"))
    w0, w1 = (_weights(paths.runs_dir / name / "checkpoint.pt") for name in names)
    weight_spread = max((w0[k].float() - w1[k].float()).abs().max().item() for k in w0)
    print(f"two uninterrupted AMP runs in separate processes differ by {spread:.2%} (losses), {weight_spread:.3g} (weights)")
    # val rsum is not compared: after 2 epochs most val ranks are near-ties, which the same noise flips
    _kill_then_resume_matches(
        workspace,
        tmp_path,
        "baseline",
        epochs=2,
        rel_tol=max(AMP_REL_TOL, 3 * spread),
        weight_tol=max(AMP_WEIGHT_TOL, 3 * weight_spread),
        rsum_abs_tol=math.inf,
    )


def test_a_real_cuda_out_of_memory_halves_the_batch(workspace, monkeypatch):
    """Fill the GPU so that batch 256 cannot fit but batch 32 can: real OOMs must halve the batch until it fits.

    The room left is halfway between the two batches' peak allocated memory (not reserved: under pressure the
    allocator returns its cached blocks and retries). cuDNN is off: its autotuner's trial workspaces swamp the
    batch's own memory, and it picks leaner kernels when memory is short. Seen on an H100: ~290 against ~400 MiB."""
    cfg, paths = workspace
    big, small = 256, 32  # 256 of the 320 train images: one step
    cfg = cfg.replace(epochs=1, run_name="gpu-oom", max_steps_per_epoch=1, batch_size=big)
    monkeypatch.setattr(torch.backends.cudnn, "enabled", False)

    def peak(batch_size: int) -> int:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        quiet(cfg.replace(run_name=f"gpu-oom-probe-{batch_size}", batch_size=batch_size), paths)
        return torch.cuda.max_memory_allocated()

    need_small, need_big = peak(small), peak(big)
    print(f"peak allocated: batch {small} {need_small / 2**20:.0f} MiB, batch {big} {need_big / 2**20:.0f} MiB")
    assert need_big > need_small + (64 << 20), (need_small, need_big)  # else the halfway room cannot separate them
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    filler = torch.empty(max(0, free - (need_small + need_big) // 2), dtype=torch.uint8, device="cuda")
    try:
        result = quiet(cfg, paths)
    finally:
        del filler
        torch.cuda.empty_cache()
    assert small <= result.history[0]["batch_size"] < big
    assert any(f"CUDA out of memory at batch size {big}" in e for e in result.metrics["events"])


def test_recall_at_val2014_scale_stays_within_the_chunk_budget():
    from helpers.clip.metrics import retrieval_metrics

    n_img, n_txt, dim, budget = 40_504, 202_654, 512, 1 << 30
    generator = torch.Generator(device="cuda").manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n_img, dim, device="cuda", generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n_txt, dim, device="cuda", generator=generator), dim=-1)
    owner = torch.arange(n_txt, device="cuda") % n_img
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    metrics = retrieval_metrics(images, texts, owner, device="cuda", memory_budget=budget)
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= 1.1 * budget, f"{extra / 2**30:.2f} GiB above the features"
    assert 0 <= metrics["t2i_R@10"] < 0.01  # random features: near chance


def test_fp16_caption_encoding_equals_fp32(tiny_tower):
    from helpers.core.lab import LabCode
    from helpers.data.text_tower import load_text_tower

    encode_text = LabCode.shipped().encode_text  # notebook 01's cell

    captions = ["a red circle on the left", "two blue squares", "a green triangle above a yellow circle"] * 20
    on_gpu = encode_text(captions, load_text_tower(str(tiny_tower), "cuda"))  # fp16 autocast
    on_cpu = encode_text(captions, load_text_tower(str(tiny_tower), "cpu"))  # fp32
    assert torch.nn.functional.cosine_similarity(on_gpu, on_cpu).min().item() >= 0.999


def test_one_process_nccl_torchrun_trains_and_resumes(workspace, tmp_path):
    from test_distributed import ROOT, _free_port

    from helpers.core.storage import read_json

    cfg, paths = workspace
    path = cfg.replace(epochs=1, run_name="gpu-nccl", max_steps_per_epoch=3).save(tmp_path / "nccl.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port", str(_free_port())]
    cmd += ["-m", "helpers.train", "--config", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([*cmd, "--set", "EPOCHS=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [h["epoch"] for h in read_json(paths.runs_dir / "gpu-nccl" / "history.json")["epochs"]] == [1, 2]
    assert json.loads(first.stdout.strip().splitlines()[-1])["backend"] == "nccl"
