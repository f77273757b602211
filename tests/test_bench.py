"""The benchmark script stays runnable: a small run of its cheap benchmarks prints one JSON line each, beside the
naive way, with the figures docs/PERFORMANCE.md records. (The figures themselves are measured, never asserted
here: speed is the benchmarks' business, not the tests'.)"""

import json
import subprocess
import sys

from conftest import ROOT, SLOWDOWN


def test_bench_prints_one_json_line_per_figure_beside_the_naive_way():
    cmd = [sys.executable, "benchmarks/bench.py", "memory", "cache", "loader", "captions"]
    cmd += ["--images", "24", "--captions", "48", "--epochs", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600 * SLOWDOWN)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    by_name = {line["benchmark"]: line for line in lines}
    assert set(by_name) == {"train_step_memory", "image_cache_build", "loader", "caption_cache"}, out.stdout
    assert by_name["train_step_memory"]["skipped"] == "needs a CUDA GPU"  # CPU machine: says so, measures nothing
    cache, loader, captions = by_name["image_cache_build"], by_name["loader"], by_name["caption_cache"]
    assert cache["images"] == 24 and cache["img_per_s"] > 0 and cache["naive_single_process_img_per_s"] > 0
    assert loader["cache_img_per_s"] > 0 and loader["cache_augment_img_per_s"] > 0 and loader["naive_img_per_s"] > 0
    assert captions["captions"] == 48 and captions["tokens"] < captions["tokens_padded_to_77"]
    assert captions["max_abs_diff"] < 1e-4  # per-batch padding encodes exactly what padding to 77 does


def test_bench_schedule_prints_each_size_beside_224_in_the_same_run():
    cmd = [sys.executable, "benchmarks/bench.py", "schedule", "--backbone", "resnet18", "--train-batch", "4", "--train-steps", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600 * SLOWDOWN)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert line["benchmark"] == "resolution_schedule" and set(line["img_per_s"]) == {"160", "192", "224"}
    assert line["rate_vs_224"]["224"] == 1.0 and all(rate > 0 for rate in line["img_per_s"].values())
    assert line["pixel_ratio_vs_224"]["160"] == 1.96 and line["lowres_pixel_fraction"] == 0.653
    assert line["schedule"] == "160 px for epochs 1-6, 192 px for epochs 7-8, 224 px for epochs 9-10"
    assert line["lowres_run_time_vs_224"] > 0  # measured, not asserted: a ratio below 1 is the benchmark's figure to read
