"""Benchmarks: one JSON line per figure, each beside the naive way measured in the same run.

    python benchmarks/bench.py                 # every benchmark
    python benchmarks/bench.py cache loader    # a selection

Figures are ratios to a naive baseline so they hold on a noisy machine; absolute
numbers depend on the CPU (see docs/PERFORMANCE.md for recorded figures).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.core.lab import LabCode  # noqa: E402
from helpers.data import image_cache as ic  # noqa: E402
from helpers.data.dataset import CLIP_MEAN, CLIP_STD, make_loader  # noqa: E402

CocoCacheDataset = LabCode.shipped().CocoCacheDataset  # notebook 01's cell
CaptionSafeAugment = LabCode.shipped().CaptionSafeAugment  # notebook 04's cell

BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {}
TRAIN_CAPTIONS = 414_113  # train2014's captions: the whole caption bank (BANK_SIZE=0)


def benchmark(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    BENCHMARKS[fn.__name__.removeprefix("bench_")] = fn
    return fn


def emit(**fields: object) -> None:
    fields.setdefault("cpu_count", os.cpu_count())
    fields.setdefault("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    print(json.dumps(fields), flush=True)


def photo_like_jpegs(folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> dict[int, str]:
    """JPEGs with photo-like detail (smooth structure + sensor noise), ~100-170 KB like COCO's."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    w, h = size
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 10, (h, w, 3)).astype(np.int16)
        name = f"COCO_train2014_{i + 1:012d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, quality=90)
        files[i + 1] = name
    return files


@benchmark
def bench_cache(args: argparse.Namespace) -> None:
    """Building the prepared image cache from 640x480 JPEGs, with the cores this machine has."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "train2014"
        files = photo_like_jpegs(folder, args.images)
        src_bytes = sum((folder / f).stat().st_size for f in files.values())
        part = ic.CachePart("train2014", folder, files)
        t0 = time.perf_counter()
        manifest = ic.build_image_cache([part], Path(tmp) / "cache", size=224, shard_size=10_000, workers=os.cpu_count(), progress=False)
        seconds = time.perf_counter() - t0
        cached = sum(s["bytes"] for s in manifest["parts"]["train2014"]["shards"].values())
        # naive reference: full decode (no draft), same resize, one process
        t0 = time.perf_counter()
        for f in list(files.values())[: args.images // 4]:
            with Image.open(folder / f) as im:
                im = im.convert("RGB").resize((299, 224), Image.BICUBIC).crop((37, 0, 261, 224))
                im.save(io.BytesIO(), format="JPEG", quality=90)
        naive = (args.images // 4) / (time.perf_counter() - t0)
        emit(
            benchmark="image_cache_build",
            images=args.images,
            img_per_s=round(args.images / seconds, 1),
            naive_single_process_img_per_s=round(naive, 1),
            ratio=round(args.images / seconds / naive, 2),
            target_img_per_s=300,
            source_kb_per_image=round(src_bytes / args.images / 1024, 1),
            cached_kb_per_image=round(cached / args.images / 1024, 1),
            projected_full_coco_gb=round(cached / args.images * 123_287 / 1e9, 2),
        )


class NaiveJpegDataset(torch.utils.data.Dataset):
    """What peers did: open the full-size JPEG with PIL on every read, resize, normalise on the CPU."""

    def __init__(self, folder: Path, files: dict[int, str], embed: torch.Tensor):
        self.folder, self.items, self.embed = folder, sorted(files.items()), embed
        self.mean, self.std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image_id, name = self.items[i]
        with Image.open(self.folder / name) as im:
            im = im.convert("RGB").resize((299, 224), Image.BICUBIC).crop((37, 0, 261, 224))
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255)
        return (x - self.mean) / self.std, self.embed[i % len(self.embed)], image_id, "caption"


def _throughput(loader, epochs: int) -> float:
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += batch[0].shape[0]
    return n / (time.perf_counter() - t0)


@benchmark
def bench_loader(args: argparse.Namespace) -> None:
    """The training loader reading the cache against the naive full-JPEG loader, same workers and batch; and the
    cache loader with the ``augment`` variant's crop + jitter (it runs in the workers: it must stay above the GPU's rate)."""
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "train2014"
        files = photo_like_jpegs(folder, args.images)
        ic.build_image_cache([ic.CachePart("train2014", folder, files)], Path(tmp) / "cache", size=224, workers=workers, progress=False)
        cache = ic.ImageCache(Path(tmp) / "cache")
        ids = sorted(files)
        text = {
            "embeddings": torch.randn(len(ids), 512).half(),
            "image_ids": torch.tensor(ids),
            "captions": [f"caption {i}" for i in ids],
        }
        fast = CocoCacheDataset(cache, text, ids, mode="train")  # uint8; normalised on the GPU
        naive = NaiveJpegDataset(folder, files, text["embeddings"].float())
        kw = dict(batch_size=64, shuffle=True, num_workers=workers, drop_last=False)
        fast_rate = _throughput(make_loader(fast, **kw), epochs=args.epochs)
        augmented = CocoCacheDataset(cache, text, ids, mode="train", transform=CaptionSafeAugment())
        augment_rate = _throughput(make_loader(augmented, **kw), epochs=args.epochs)  # the ``augment`` variant's loader
        naive_rate = _throughput(make_loader(naive, **kw), epochs=1)
        unchecked_cache = ic.ImageCache(Path(tmp) / "cache")
        unchecked_cache.verify_crc = False  # the loader as it was before every read checked the image's CRC32
        unchecked = CocoCacheDataset(unchecked_cache, text, ids, mode="train")
        unchecked_rate = _throughput(make_loader(unchecked, **kw), epochs=args.epochs)
        crc_s, decode_s = _crc_and_decode_seconds(cache, ids)
        emit(
            benchmark="loader",
            images=args.images,
            workers=workers,
            cache_img_per_s=round(fast_rate, 1),
            cache_without_crc_img_per_s=round(unchecked_rate, 1),
            crc_us_per_image=round(1e6 * crc_s, 2),
            decode_us_per_image=round(1e6 * decode_s, 1),
            crc_share_of_decode=round(crc_s / decode_s, 4),
            cache_augment_img_per_s=round(augment_rate, 1),
            naive_img_per_s=round(naive_rate, 1),
            ratio=round(fast_rate / naive_rate, 2),
            target_img_per_s=1000,
            target_ratio=5,
        )


def _crc_and_decode_seconds(cache: ic.ImageCache, ids: list[int], rounds: int = 3) -> tuple[float, float]:
    """Seconds per image of the CRC32 check alone and of the JPEG decode alone (one process, the cached bytes)."""
    import zlib

    blobs = [np.array(cache.jpeg_bytes(i)) for i in ids]
    start = time.perf_counter()
    for _ in range(rounds):
        for blob in blobs:
            zlib.crc32(blob)
    crc = (time.perf_counter() - start) / (rounds * len(blobs))
    tensors = [torch.from_numpy(b) for b in blobs]
    start = time.perf_counter()
    for tensor in tensors:
        ic._decode_jpeg(tensor)
    return crc, (time.perf_counter() - start) / len(tensors)


def _train_steps(device: torch.device, backbone: str, batch: int, steps: int, fast: bool, size: int | None = None) -> float:
    """img/s of full training steps (forward, InfoNCE, backward, AdamW) on random data: the doctor's timing.

    ``fast``: AMP (fp16 + GradScaler on a T4, bf16 on newer GPUs; bf16 autocast on a CPU) and channels_last. ``size``: the
    resolution schedule's training size, resized on the device from 224 px batches (None: 224).
    """
    from helpers.clip.embed import amp_dtype
    from helpers.core import config
    from helpers.doctor import time_training

    torch.manual_seed(0)
    cfg = config.from_params(IMAGE_BACKBONE=backbone, IMAGE_WEIGHTS=None, AMP=fast, CHANNELS_LAST=fast)
    dtype = (amp_dtype(device, True) if device.type == "cuda" else torch.bfloat16) if fast else None
    return time_training(cfg, device, steps=steps, batch=batch, dtype=dtype, warmup=2, size=size)["train_img_per_s"]


@benchmark
def bench_train(args: argparse.Namespace) -> None:
    """Training-step throughput: fp32 eager against AMP + channels_last, on the device present."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.train_batch or (64 if device.type == "cuda" else 16)
    steps = args.train_steps or (30 if device.type == "cuda" else 3)
    fp32 = _train_steps(device, args.backbone, batch, steps, fast=False)
    fast = _train_steps(device, args.backbone, batch, steps, fast=True)
    mode = "fp16/bf16 autocast + GradScaler + channels_last" if device.type == "cuda" else "bf16 autocast + channels_last (CPU)"
    emit(
        benchmark="train_step",
        backbone=args.backbone,
        batch=batch,
        steps=steps,
        fp32_img_per_s=round(fp32, 1),
        amp_channels_last_img_per_s=round(fast, 1),
        amp_mode=mode,
        ratio=round(fast / fp32, 2),
        target_t4_img_per_s=350,
        peers_baseline_img_per_s=106,
        full_coco_10_epochs_min_at_amp_rate=round(82_783 * 10 / fast / 60, 1),
    )


@benchmark
def bench_schedule(args: argparse.Namespace) -> None:
    """The resolution schedule (`lowres`, TRAIN_SIZES): the training step's rate at each of its sizes beside 224 px,
    measured in the same run, and what the 10-epoch `lowres` run costs against ten epochs at 224 px."""
    from helpers.core import resolution

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.train_batch or (128 if device.type == "cuda" else 8)
    steps = args.train_steps or (20 if device.type == "cuda" else 2)
    image_size, epochs = 224, 10
    sizes = resolution.ramp(epochs, image_size)
    fast = device.type == "cuda"  # the trainer's precision: AMP + channels_last on a GPU, fp32 on a CPU
    rates = {size: _train_steps(device, args.backbone, batch, steps, fast, size) for size in sorted({*sizes, image_size})}
    per_epoch = [1 / rates[resolution.size_at(e, sizes, image_size)] for e in range(epochs)]
    emit(
        benchmark="resolution_schedule",
        device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        backbone=args.backbone,
        batch=batch,
        steps=steps,
        img_per_s={str(size): round(rate, 1) for size, rate in rates.items()},
        rate_vs_224={str(size): round(rate / rates[image_size], 2) for size, rate in rates.items()},
        pixel_ratio_vs_224={str(size): round((image_size / size) ** 2, 2) for size in rates},
        schedule=resolution.describe(sizes, image_size, epochs),
        lowres_run_time_vs_224=round(sum(per_epoch) / (epochs / rates[image_size]), 3),
        lowres_pixel_fraction=round(resolution.work_fraction(sizes, image_size, epochs), 3),
    )


@benchmark
def bench_bank(args: argparse.Namespace) -> None:
    """The ``bank`` variant's cost: loss + backward with K bank captions against the plain in-batch loss,
    and that extra time next to a ResNet50 training step (measured at a small batch, scaled per image)."""
    from helpers.clip.loss import Negatives
    from helpers.core.lab import LabCode
    from helpers.doctor import seconds_per_call

    clip_loss = LabCode.shipped().clip_loss  # notebook 02's cell

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_captions = TRAIN_CAPTIONS
    bank_all = torch.nn.functional.normalize(torch.randn(n_captions, 512, device=device), dim=-1).half()
    bank_ids = torch.randint(0, 82_783, (n_captions,), device=device)
    reps = 20 if device.type == "cuda" else 3

    def timed(fn) -> float:
        return seconds_per_call(fn, device, reps)

    model_batch = 64 if device.type == "cuda" else 8
    model_s_per_image = 1.0 / _train_steps(device, "resnet50", model_batch, 3 if device.type == "cpu" else 20, fast=device.type == "cuda")
    for batch in (64, 256):
        feats = torch.nn.functional.normalize(torch.randn(batch, 512, device=device), dim=-1).requires_grad_()
        text = torch.nn.functional.normalize(torch.randn(batch, 512, device=device), dim=-1)
        ids = torch.randint(0, 82_783, (batch,), device=device)
        plain = timed(lambda: clip_loss(feats, text, 14.3).backward())  # noqa: B023
        for k in (32_768, n_captions):

            def step(k: int = k) -> None:
                rows = torch.randint(n_captions, (k,), device=device) if k < n_captions else slice(None)
                bank, bids = bank_all[rows], bank_ids[rows]
                clip_loss(feats, text, 14.3, Negatives(bank, ids[:, None] == bids[None, :])).backward()  # noqa: B023

            with_bank = timed(step)
            model_step = model_s_per_image * batch
            emit(
                benchmark="bank_step_cost",
                batch=batch,
                bank_size=k,
                plain_loss_ms=round(1000 * plain, 2),
                bank_loss_ms=round(1000 * with_bank, 2),
                ratio_loss=round(with_bank / plain, 1),
                model_step_ms=round(1000 * model_step, 1),
                model_step_from=f"resnet50 measured at batch {model_batch}, scaled per image",
                bank_overhead_of_step_pct=round(100 * (with_bank - plain) / model_step, 2),
                bank_device_mb=round(bank_all.numel() * 2 / 1e6),
            )


T4_USABLE_GIB = 14.56  # "GPU 0 has a total capacity of 14.56 GiB": a Colab T4 in PyTorch's OOM message (facebookresearch/tribev2#28, 2026)


@benchmark
def bench_memory(args: argparse.Namespace) -> None:
    """Peak GPU memory of a full ResNet50 training step at batch 64, 128 and 256, in the T4's mode (fp16 autocast
    + GradScaler + channels_last), to decide whether ``bigbatch`` fits a 16 GB T4 without gradient caching.

    Peak allocated/reserved are what PyTorch's allocator held; the CUDA context (~0.3-0.5 GB) comes on top.
    The footprint does not depend on the GPU's speed, so the figure carries over to a T4 (cuDNN may pick
    other algorithms there, with other workspaces: the reserved figure leaves room for that).
    """
    if not torch.cuda.is_available():
        emit(benchmark="train_step_memory", skipped="needs a CUDA GPU")
        return
    from helpers.core import config
    from helpers.doctor import time_training

    device = torch.device("cuda")
    cfg = config.from_params(IMAGE_BACKBONE=args.backbone, IMAGE_WEIGHTS=None, AMP=True, CHANNELS_LAST=True)
    for batch in (64, 128, 256):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        timing = time_training(cfg, device, steps=10, batch=batch, dtype=torch.float16, warmup=3)
        allocated, reserved = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
        emit(
            benchmark="train_step_memory",
            backbone=args.backbone,
            batch=batch,
            precision="fp16 autocast + GradScaler + channels_last (the T4's mode)",
            peak_allocated_gib=round(allocated, 2),
            peak_reserved_gib=round(reserved, 2),
            img_per_s=round(timing["train_img_per_s"], 1),
            t4_usable_gib=T4_USABLE_GIB,
            fits_t4_with_bank=reserved + 0.5 + TRAIN_CAPTIONS * 512 * 2 / 2**30 < T4_USABLE_GIB,  # + context + the whole fp16 bank
        )


def coco_like_captions(n: int, seed: int = 0) -> list[str]:
    """Captions shaped like COCO's (about 10 words, 12-14 CLIP tokens)."""
    rng = np.random.default_rng(seed)
    subjects = ["A man", "A woman", "Two people", "A young boy", "A small dog", "A cat", "A group of people", "A large giraffe"]
    verbs = ["riding", "holding", "sitting on", "standing next to", "walking along", "playing with", "looking at", "eating"]
    objects = ["a surfboard", "a red bus", "a wooden bench", "a frisbee", "a plate of food", "a kite", "an umbrella", "a laptop"]
    places = ["on the beach.", "in a park.", "on a city street.", "in the kitchen.", "near the water.", "in a grassy field.", "."]
    out = []
    for _ in range(n):
        words = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}"
        out.append(words.replace(" .", "."))
    return out


@benchmark
def bench_captions(args: argparse.Namespace) -> None:
    """Caption caching: sorted + per-batch padding against padding to 77, a ViT-B/32-sized text tower."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from helpers.data.synthetic import make_tiny_text_tower
    from helpers.data.text_tower import EncodeStats, TextTower

    encode_text = LabCode.shipped().encode_text  # notebook 01's cell

    captions = coco_like_captions(args.captions)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = make_tiny_text_tower(Path(tmp) / "tok", captions)  # a real BPE tokenizer for these words
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
        max_position_embeddings=77, projection_dim=512, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = CLIPTextModelWithProjection(config).eval().requires_grad_(False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tower = TextTower("bench", tokenizer, model.to(device), device)
    stats = EncodeStats()

    def padded_batch(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").to(device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            return torch.nn.functional.normalize(model(**batch).text_embeds.float(), dim=-1).cpu()

    encode_text(captions[:128], tower, batch_size=128)  # warm-up of both paths (CUDA context, kernels, allocator)
    padded_batch(captions[:128])
    t0 = time.perf_counter()
    fast = encode_text(captions, tower, batch_size=128, stats=stats)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    padded = [padded_batch(captions[start : start + 128]) for start in range(0, len(captions), 128)]
    naive_s = time.perf_counter() - t0
    emit(
        benchmark="caption_cache",
        captions=len(captions),
        text_tower="CLIP ViT-B/32 text size (12 layers, width 512), random init",
        tokens=stats.tokens,
        tokens_padded_to_77=stats.tokens_if_padded_to_77,
        token_reduction=round(stats.token_reduction, 2),
        seconds=round(fast_s, 2),
        naive_seconds=round(naive_s, 2),
        ratio=round(naive_s / fast_s, 2),
        max_abs_diff=float((fast - torch.cat(padded)).abs().max()),
        target_token_reduction=4,
    )


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recall_worker(mode: str, n_img: int, n_txt: int, dim: int) -> dict[str, float]:
    """Runs in a fresh process so that its peak RSS belongs to one approach only."""
    from helpers.clip.metrics import retrieval_metrics

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n_img, dim, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n_txt, dim, generator=g), dim=-1)
    t2i = torch.arange(n_txt) % n_img
    base_rss = _current_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_dev = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    if mode == "chunked":
        retrieval_metrics(img, txt, t2i, device=device)
    else:  # the naive way: the full float32 matrix, numpy argsort on the CPU
        sims = (img @ txt.t()).numpy()
        order = np.argsort(-sims, axis=1)
        pos = np.empty_like(order)
        np.put_along_axis(pos, order, np.arange(n_txt)[None, :].repeat(n_img, 0), axis=1)
        owner = t2i.numpy()
        _i2t = np.array([pos[i, owner == i].min() for i in range(n_img)])
        order_t = np.argsort(-sims.T, axis=1)
        _t2i = np.argmax(order_t == owner[:, None], axis=1)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "extra_host_bytes": max(0, _peak_rss_bytes() - base_rss)}
    if device.type == "cuda":
        out["extra_device_bytes"] = torch.cuda.max_memory_allocated() - base_dev
    return out


def _run_worker(mode: str, n_img: int, n_txt: int, dim: int) -> dict[str, float]:
    import subprocess

    code = f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    code += f"import bench; print(json.dumps(bench.recall_worker({mode!r}, {n_img}, {n_txt}, {dim})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@benchmark
def bench_recall(args: argparse.Namespace) -> None:
    """Recall@K at val2014 scale (chunked, on the device) against the naive full matrix + argsort."""
    full_img, full_txt, dim = 40_504, 202_654, 512
    small_img, small_txt = 5_000, 25_000  # the 5k test split: the naive way still fits here
    gb = 1e9
    chunked_full = _run_worker("chunked", full_img, full_txt, dim) if not args.quick else None
    chunked_small = _run_worker("chunked", small_img, small_txt, dim)
    naive_small = _run_worker("naive", small_img, small_txt, dim)
    scale = (full_img * full_txt) / (small_img * small_txt)
    fields = dict(
        benchmark="recall",
        small_scale=f"{small_img}x{small_txt}",
        chunked_small_s=round(chunked_small["seconds"], 2),
        naive_small_s=round(naive_small["seconds"], 2),
        ratio_small=round(naive_small["seconds"] / chunked_small["seconds"], 1),
        naive_small_extra_host_gb=round(naive_small["extra_host_bytes"] / gb, 2),
        chunked_small_extra_host_gb=round(chunked_small["extra_host_bytes"] / gb, 2),
        full_scale=f"{full_img}x{full_txt}x{dim}",
        naive_full_extrapolated_s=round(naive_small["seconds"] * scale * math.log(full_txt) / math.log(small_txt), 0),
        naive_full_matrix_gb=round(full_img * full_txt * 4 / gb, 1),
        naive_full_extrapolated_extra_host_gb=round(naive_small["extra_host_bytes"] * scale / gb, 1),
        target_extra_host_gb=3,
        target_extra_device_gb=2,
    )
    if chunked_full is not None:
        fields.update(
            chunked_full_s=round(chunked_full["seconds"], 1),
            chunked_full_extra_host_gb=round(chunked_full["extra_host_bytes"] / gb, 2),
            chunked_full_extra_device_gb=(
                round(chunked_full["extra_device_bytes"] / gb, 2) if "extra_device_bytes" in chunked_full else "cpu: scores in host RAM"
            ),
        )
    emit(**fields)


@benchmark
def bench_provenance(args: argparse.Namespace) -> None:
    """What a notebook start pays for the proofs of issue 27: a local text tower's digest (first time: every byte hashed;
    then the memo in its folder, as the next notebook reads it), and a run's settings read from a ResNet50 best.pt
    (the source of truth) against reading config.json, the naive way."""
    import json as json_module
    import tempfile

    from helpers.clip.model import build_model
    from helpers.core import provenance
    from helpers.core.lab import LabCode
    from helpers.store import runs

    with tempfile.TemporaryDirectory() as tmp:
        tower = Path(tmp) / "tower"
        tower.mkdir()
        (tower / "model.safetensors").write_bytes(os.urandom(254 * 2**20))  # CLIP ViT-B/32's text tower: ~254 MB in fp32
        for name in ("config.json", "tokenizer.json", "vocab.json", "merges.txt"):
            (tower / name).write_text("{}")
        t0 = time.perf_counter()
        first = provenance.text_tower_id(str(tower))
        hashed = time.perf_counter() - t0
        provenance._TOWER_IDS.clear()  # the next notebook: a fresh process, the memo file in the folder
        t0 = time.perf_counter()
        again = provenance.text_tower_id(str(tower))
        memo = time.perf_counter() - t0
        assert first == again
        run = runs.RunDir(Path(tmp) / "run")
        run.path.mkdir()
        arch = {"image_backbone": "resnet50", "image_weights": None, "hidden_dim": 1024, "embed_dim": 512, "variant": "baseline",
                "temperature": 0.07, "learnable_temperature": False}  # fmt: skip
        config = {"variant": "baseline", "weight_decay": 0.01}
        weights = build_model(arch, LabCode.shipped(), pretrained=False).state_dict()
        torch.save({"model": weights, "arch": arch, "config": config, "epoch": 1}, run.best)
        run.config.write_text(json_module.dumps(config))
        best_mb = run.best.stat().st_size / 2**20
        t0 = time.perf_counter()
        runs.trained_settings(run)
        from_weights = time.perf_counter() - t0
        t0 = time.perf_counter()
        json_module.loads(run.config.read_text())
        naive = time.perf_counter() - t0
    emit(
        benchmark="provenance_notebook_start",
        tower_mb=254,
        tower_digest_first_s=round(hashed, 2),
        tower_digest_memo_s=round(memo, 4),
        settings_from_best_pt_s=round(from_weights, 3),
        best_pt_mb=round(best_mb),
        naive_config_json_s=round(naive, 5),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=[[], *BENCHMARKS], help="benchmarks to run (default: all)")
    parser.add_argument("--images", type=int, default=1024, help="images for the data benchmarks")
    parser.add_argument("--epochs", type=int, default=2, help="passes of the fast loader")
    parser.add_argument("--captions", type=int, default=512, help="captions for the caption-cache benchmark")
    parser.add_argument("--quick", action="store_true", help="recall: skip the full val2014-scale run")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18"], help="for the train benchmark")
    parser.add_argument("--train-batch", type=int, default=None, help="train benchmark batch (default 64 GPU / 16 CPU)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps (default 30 GPU / 3 CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in args.which or list(BENCHMARKS):
        BENCHMARKS[name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
