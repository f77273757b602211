"""The prepared image cache: every image decoded once, resized, stored in a few large shards.

Why: peers decoded full-size 640x480 JPEGs every epoch and spent 45-63 min per epoch
starved on 2 vCPUs. Here each image is decoded once (JPEG draft mode lets libjpeg
decode at 1/2 or 1/4 scale directly), resized so its shorter side is IMAGE_SIZE,
centre-cropped to IMAGE_SIZE x IMAGE_SIZE (CLIP's own policy) and re-encoded as a
small JPEG (~20 KB at quality 90). All of COCO 2014 fits in ~2.5 GB, in shards of
SHARD_SIZE images: a few large files, which Drive handles well. Reading a 224 px JPEG
back is ~10x cheaper than the full-size decode.

Layout of a cache folder::

    manifest.json                 written last, after every shard (atomic)
    train2014-00000.bin           concatenated JPEG bytes
    train2014-00000.idx.npy       int64 [n, 4]: image_id, byte offset, byte length, CRC32 of the bytes
    ...

A shard counts only once the manifest lists it with matching byte sizes, so a kill
during a build loses at most the shard being written. Every read checks the image's CRC32
(a bit flip on disk keeps the shard's size and often still decodes, to other pixels), and
the digest of any set of images is computed from the index rows (helpers/core/provenance.py). Images that cannot be decoded
are listed under the shard's ``failed`` entry with the reason, and warned about.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.artifacts import ArtifactError, first_line, load_json
from ..core.faults import kill_point
from ..core.storage import atomic_copy, atomic_write_bytes, atomic_write_json, ensure_free_space, read_json, sha256_file

# torchvision 0.29 deprecates its JPEG codec in favour of TorchCodec, yet it decodes 224 px JPEGs
# ~1.7x faster than PIL here (both libjpeg-turbo). Keep it while it exists; PIL is the fallback.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)
try:
    from torchvision.io import decode_jpeg as _decode_jpeg
except ImportError:  # pragma: no cover - a future torchvision without the codec
    _decode_jpeg = None

CACHE_FORMAT = 2  # 2: a CRC32 per image in the index (format 1 had none and is rebuilt)
MANIFEST = "manifest.json"
BYTES_PER_IMAGE_ESTIMATE = 30_000  # upper estimate at 224 px, quality 90, for the free-space check


def prepare_image(path: str | os.PathLike, size: int, quality: int) -> bytes:
    """Decode one image (any mode: RGB, L, CMYK, P, PNG content), resize and centre-crop, encode as JPEG."""
    with Image.open(path) as im:
        w, h = im.size
        scale = size / min(w, h)
        if im.format == "JPEG":
            # libjpeg DCT scaling: decode straight to >= the target size, 2-8x less work.
            im.draft("RGB", (max(size, int(w * scale + 1)), max(size, int(h * scale + 1))))
        im = to_rgb(im)
        w, h = im.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((new_w, new_h), Image.BICUBIC, reducing_gap=2.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=False)
        return buf.getvalue()


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any pixel mode a COCO-like folder can hold, with the right brightness.

    ``Image.convert("RGB")`` alone clips 16-bit and 32-bit integer images (a mid-grey 16-bit
    PNG became pure white), and drops alpha onto whatever colour hides under transparent
    pixels. Here 16-bit values are scaled to 8 bits, transparency is composited onto white,
    and modes with no sensible mapping (floating point) are refused with the reason, so the
    image is counted as unreadable instead of cached wrong.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(im, dtype=np.float64)
        if mode in SIXTEEN_BIT_MODES or values.max(initial=0) > 255:  # a 16-bit range
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        raise ValueError("floating-point pixels (mode F) have no standard 8-bit mapping; convert the file to 8-bit RGB")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    except ValueError as exc:
        raise ValueError(f"pixel mode {mode} cannot be converted to RGB ({exc})") from None


def _prepare_job(job: tuple[int, str, int, int]) -> tuple[int, bytes | None, str | None]:
    image_id, path, size, quality = job
    try:
        return image_id, prepare_image(path, size, quality), None
    except FileNotFoundError:
        return image_id, None, "missing file"
    except Exception as exc:
        return image_id, None, f"{exc.__class__.__name__}: {exc}"


@dataclass
class CachePart:
    """One group of images to cache: a COCO folder and the ids wanted from it."""

    name: str  # "train2014" or "val2014"
    folder: Path
    files: dict[int, str]  # image_id -> file name inside ``folder``
    source: dict[str, str] | None = None  # the folder's caption file and image files (provenance.source_record)

    def ids_digest(self) -> str:
        """The part's identity: its ids and, when known, its source (another dataset with the same ids is rebuilt)."""
        ids = np.array(sorted(self.files), dtype=np.int64)
        h = hashlib.sha256(ids.tobytes())
        if self.source:
            h.update(json.dumps(self.source, sort_keys=True).encode())
        return h.hexdigest()[:16]


def _load_manifest(cache_dir: Path, size: int, quality: int) -> dict[str, Any]:
    path = cache_dir / MANIFEST
    if path.exists():
        try:
            m = read_json(path)
            if m.get("format") == CACHE_FORMAT and m.get("image_size") == size and m.get("quality") == quality:
                return m
            warnings.warn(f"{path} was built with other settings (size/quality/format): rebuilding the cache", stacklevel=3)
        except ValueError:
            warnings.warn(f"{path} is unreadable: rebuilding the cache", stacklevel=3)
    return {"format": CACHE_FORMAT, "image_size": size, "quality": quality, "parts": {}}


def _shard_ok(cache_dir: Path, shard: dict[str, Any], verify: bool = False) -> bool:
    """Both files present with the manifest's sizes; ``verify``: the data file's sha256 matches too
    (a bit flip keeps the size; streaming the hash costs seconds, a rebuild minutes)."""
    for key in ("file", "index_file"):
        p = cache_dir / shard[key]
        if not p.exists() or p.stat().st_size != shard[key.replace("file", "bytes")]:
            return False
    return not verify or sha256_file(cache_dir / shard["file"]) == shard.get("sha256")


def _layout_shard_size(entry: dict[str, Any], requested: int) -> int:
    """The shard size a part was built with: the manifest is the truth, whatever SHARD_SIZE says now."""
    if entry.get("shard_size"):
        return int(entry["shard_size"])
    shards = [entry["shards"][name] for name in sorted(entry["shards"])]
    if len(shards) >= 2:  # manifests of older versions: the first full shard's size
        return shards[0]["count"] + len(shards[0]["failed"])
    return max(requested, int(entry.get("num_images", 0))) if shards else requested


def build_image_cache(
    parts: Iterable[CachePart],
    cache_dir: str | os.PathLike,
    size: int = 224,
    quality: int = 90,
    shard_size: int = 10_000,
    workers: int | None = None,
    publish_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or finish) the cache in ``cache_dir``; copy each finished shard to ``publish_dir``.

    ``cache_dir`` is fast local disk; ``publish_dir`` is the persistent copy in
    ARTIFACTS_DIR (Drive), from which :func:`restore_cache` brings it back in a new
    session. Shards already listed in the published manifest are not rebuilt.
    """
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    publish = Path(publish_dir) if publish_dir is not None else cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    publish.mkdir(parents=True, exist_ok=True)
    for folder in {cache_dir, publish}:
        for stale in folder.glob(".*.tmp"):  # half-written shards of a killed build: never used, just removed
            stale.unlink(missing_ok=True)
    manifest = _load_manifest(publish, size, quality)
    workers = workers or os.cpu_count() or 1

    todo: list[tuple[CachePart, int, list[int]]] = []
    for part in parts:
        entry = manifest["parts"].get(part.name)
        if entry is None or entry.get("ids_digest") != part.ids_digest():
            entry = {"ids_digest": part.ids_digest(), "num_images": len(part.files), "shard_size": shard_size, "shards": {}}
            manifest["parts"][part.name] = entry
        entry["source"] = part.source  # what a run checks against splits.json (an older cache gains it here: same digest)
        layout = entry["shard_size"] = _layout_shard_size(entry, shard_size)
        if layout != shard_size and len(part.files) > min(layout, shard_size):
            print(f"{part.name}: the cache was built with SHARD_SIZE={layout}; keeping that layout (delete {publish} to rebuild)")
        ids = sorted(part.files)
        for k in range(0, max(1, len(ids)), layout):
            shard_ids = ids[k : k + layout]
            name = f"{part.name}-{k // layout:05d}"
            done = entry["shards"].get(name)
            if done is not None and _shard_ok(publish, done, verify=True):
                continue
            if done is not None:
                print(f"{name}: missing, incomplete or damaged (checksum): rebuilding it")
            todo.append((part, k // layout, shard_ids))
    if not todo:
        if (publish / MANIFEST).exists() and read_json(publish / MANIFEST) != manifest:
            atomic_write_json(publish / MANIFEST, manifest)  # an up-to-date cache of an older kit: its sources recorded
            if publish != cache_dir:
                atomic_write_json(cache_dir / MANIFEST, manifest)
        return manifest

    n_images = sum(len(t[2]) for t in todo)
    ensure_free_space(cache_dir, n_images * BYTES_PER_IMAGE_ESTIMATE, f"the image cache ({n_images:,} images)")
    if publish != cache_dir:
        ensure_free_space(publish, n_images * BYTES_PER_IMAGE_ESTIMATE, f"the image cache copy in {publish}")
    bar = tqdm(total=n_images, desc="Caching images", unit="img", disable=not progress)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) if workers > 1 else _InlinePool() as pool:
        for part, shard_no, shard_ids in todo:
            name = f"{part.name}-{shard_no:05d}"
            jobs = [(i, str(part.folder / part.files[i]), size, quality) for i in shard_ids]
            blob = io.BytesIO()
            index: list[tuple[int, int, int, int]] = []
            failed: list[dict[str, Any]] = []
            for image_id, data, error in pool.imap(_prepare_job, jobs, chunksize=16):
                bar.update(1)
                if data is None:
                    failed.append({"image_id": image_id, "file": part.files[image_id], "error": error})
                    continue
                index.append((image_id, blob.tell(), len(data), zlib.crc32(data)))
                blob.write(data)
            idx_buf = io.BytesIO()
            np.save(idx_buf, np.array(index, dtype=np.int64).reshape(-1, 4))
            bin_path = atomic_write_bytes(cache_dir / f"{name}.bin", blob.getvalue())
            idx_path = atomic_write_bytes(cache_dir / f"{name}.idx.npy", idx_buf.getvalue())
            record = {
                "file": bin_path.name,
                "bytes": bin_path.stat().st_size,
                "sha256": sha256_file(bin_path),
                "index_file": idx_path.name,
                "index_bytes": idx_path.stat().st_size,
                "count": len(index),
                "failed": failed,
            }
            if publish != cache_dir:
                atomic_copy(bin_path, publish / bin_path.name)
                atomic_copy(idx_path, publish / idx_path.name)
            manifest["parts"][part.name]["shards"][name] = record
            atomic_write_json(publish / MANIFEST, manifest)  # last: the shard now counts
            kill_point("image_cache_shard")
            if failed:
                warnings.warn(
                    f"{name}: skipped {len(failed)} unreadable image(s), e.g. {failed[0]['file']} ({failed[0]['error']}); "
                    f"all are listed under 'failed' in {publish / MANIFEST}",
                    stacklevel=2,
                )
    bar.close()
    if publish != cache_dir:
        atomic_write_json(cache_dir / MANIFEST, manifest)
    return manifest


class _InlinePool:
    """A stand-in for ``multiprocessing.Pool`` with one worker: no processes to spawn."""

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn, jobs, chunksize: int = 1):
        return map(fn, jobs)


def failures(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image the cache skipped, with its reason."""
    return [f for part in manifest["parts"].values() for s in part["shards"].values() for f in s["failed"]]


def cached_image_size(publish_dir: str | os.PathLike) -> int | None:
    """The side length notebook 01 cached the images at (from the manifest alone), or None when there is no cache."""
    try:
        return int(load_json(Path(publish_dir) / MANIFEST, "manifest")["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def restore_cache(publish_dir: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True, verify: bool = False) -> Path:
    """Copy the persistent cache (Drive) to fast local disk, skipping shards already there.

    The local manifest is written last, so an interrupted restore is simply redone. ``verify``
    (notebook 01) also checks each local shard's sha256, so a damaged local copy is replaced.
    """
    from tqdm.auto import tqdm

    publish, local = Path(publish_dir), Path(cache_dir)
    if publish.resolve() == local.resolve():
        return local
    src_manifest_path = publish / MANIFEST
    if not src_manifest_path.exists():
        raise FileNotFoundError(f"No image cache in {publish}: run 01_dataset_prep.ipynb first")
    manifest = load_json(src_manifest_path, "manifest")
    shards = [s for part in manifest["parts"].values() for s in part["shards"].values()]
    stale = [s for s in shards if not _shard_ok(local, s, verify)]
    need = sum(s["bytes"] + s["index_bytes"] for s in stale)
    if need:
        ensure_free_space(local, need, "the local copy of the image cache")
    for shard in tqdm(stale, desc="Restoring image cache", unit="shard", disable=not progress or not need):
        for key in ("file", "index_file"):
            atomic_copy(publish / shard[key], local / shard[key])
        if sha256_file(local / shard["file"]) != shard["sha256"]:
            (local / shard["file"]).unlink()
            raise OSError(f"Checksum mismatch copying {shard['file']} from {publish}: re-run to copy it again")
    atomic_write_json(local / MANIFEST, manifest)
    return local


class ImageCache:
    """Random access to cached images by COCO image id.

    Shards are memory-mapped lazily, per process, so the object pickles cheaply into
    DataLoader workers and the OS page cache is shared between them.
    """

    verify_crc = True  # every read checks the image's CRC32; benchmarks/bench.py turns it off to measure its cost

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"No image cache manifest at {path}: run 01_dataset_prep.ipynb (cache images) first")
        self.manifest = load_json(path, "manifest")
        if self.manifest.get("format") != CACHE_FORMAT:
            raise ArtifactError(
                f"{path} is an image cache of format {self.manifest.get('format')} (this kit reads format {CACHE_FORMAT}, with a "
                "checksum per image): re-run 01_dataset_prep.ipynb, it rebuilds the cache"
            )
        self.image_size: int = self.manifest["image_size"]
        self.quality: int = self.manifest["quality"]
        self.shard_files: list[str] = []
        locs: dict[int, tuple[int, int, int, int]] = {}
        for part in self.manifest["parts"].values():
            for shard in part["shards"].values():
                if not _shard_ok(self.cache_dir, shard):
                    raise OSError(f"Cache shard {shard['file']} in {self.cache_dir} is missing or incomplete: re-run 01_dataset_prep.ipynb")
                shard_no = len(self.shard_files)
                self.shard_files.append(shard["file"])
                for image_id, offset, length, crc in np.load(self.cache_dir / shard["index_file"]).tolist():
                    locs[image_id] = (shard_no, offset, length, crc)
        self._locs = locs
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._locs

    def __len__(self) -> int:
        return len(self._locs)

    @property
    def image_ids(self) -> list[int]:
        return sorted(self._locs)

    def digest(self, image_ids: list[int] | set[int]) -> str:
        """The digest of these cached images (size, quality, each one's CRC32 and length): cheap, from the index."""
        from ..core.provenance import images_digest

        rows = np.array([self._locs[i][3:] + (self._locs[i][2],) for i in sorted(image_ids) if i in self._locs], dtype=np.int64)
        missing = [i for i in image_ids if i not in self._locs]
        return images_digest(rows.reshape(-1, 2), self.image_size, self.quality) + (f"-{len(missing)}missing" if missing else "")

    def jpeg_bytes(self, image_id: int) -> np.ndarray:
        """The cached JPEG of ``image_id`` as a uint8 view (no copy), checked against its CRC32."""
        try:
            shard_no, offset, length, crc = self._locs[image_id]
        except KeyError:
            raise KeyError(f"Image {image_id} is not in the image cache {self.cache_dir} (skipped as unreadable, or not cached)") from None
        mm = self._maps.get(shard_no)
        if mm is None:
            mm = np.memmap(self.cache_dir / self.shard_files[shard_no], dtype=np.uint8, mode="r")
            self._maps[shard_no] = mm
        data = mm[offset : offset + length]
        if self.verify_crc and zlib.crc32(data) != crc:
            raise ArtifactError(
                f"Image {image_id} in the image-cache shard {self.cache_dir / self.shard_files[shard_no]} fails its checksum "
                "(CRC32): the shard is damaged. Re-run 01_dataset_prep.ipynb: it verifies every shard's checksum and rebuilds "
                "or re-copies damaged ones."
            )
        return data

    def load_uint8(self, image_id: int):  # -> torch.Tensor [3, H, W] uint8
        """Decode one cached image to a uint8 CHW tensor (libjpeg-turbo via torchvision)."""
        import torch

        data = self.jpeg_bytes(image_id)  # checked against its CRC32 (a damaged shard raises here, naming it)
        try:
            if _decode_jpeg is None:
                pixels = np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB")).copy()
                return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
            return _decode_jpeg(torch.from_numpy(np.array(data)))
        except (RuntimeError, OSError, ValueError) as exc:
            shard = self.cache_dir / self.shard_files[self._locs[image_id][0]]
            raise ArtifactError(  # a file written damaged (its CRC32 matches bytes that were never a JPEG)
                f"Image {image_id} in the image-cache shard {shard} cannot be decoded ({first_line(exc)}): the shard "
                "is damaged. Re-run 01_dataset_prep.ipynb: it verifies every shard's checksum and rebuilds or re-copies damaged ones."
            ) from None

    def load_pil(self, image_id: int) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg_bytes(image_id).tobytes())).convert("RGB")
