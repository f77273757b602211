"""A synthetic, learnable COCO-2014-layout dataset and a tiny CLIP text tower, built offline.

Why: neither COCO nor pretrained weights can be downloaded in CI or on a laptop
without internet, yet the whole pipeline must run end to end. Each image shows one or
two coloured shapes at named positions, and its ~5 captions say exactly that, so a
short CPU training run must lift Recall@K far above chance: an end-to-end test of
data, loss, training and metrics together. The tiny text tower is a randomly
initialised ``CLIPTextModelWithProjection`` with a real byte-level BPE tokenizer
trained on the captions, saved with ``save_pretrained`` like a hub model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .splits import karpathy_ids

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "middle", "right")
TEMPLATES = (
    "a {color} {shape} on the {pos}",
    "there is a {color} {shape} on the {pos}",
    "a picture of a {color} {shape} on the {pos}",
    "the {pos} side shows a {color} {shape}",
    "one {color} {shape} placed on the {pos}",
    "a {size} {color} {shape} on the {pos}",
)
SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _draw(objects: list[tuple[str, str, str, str]], size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    shade = rng.randint(200, 250)
    im = Image.new("RGB", size, (shade, shade, shade))
    d = ImageDraw.Draw(im)
    for color, shape, pos, big in objects:
        # inside the centred h x h square, which survives the cache's centre crop
        side = min(w, h)
        cx = w // 2 + {"left": -1, "middle": 0, "right": 1}[pos] * side // 3 + rng.randint(-side // 40, side // 40)
        cy = h // 2 + rng.randint(-side // 8, side // 8)
        r = (side // 7 if big == "large" else side // 10) + rng.randint(-1, 1)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[color]
        if shape == "circle":
            d.ellipse(box, fill=fill)
        elif shape == "square":
            d.rectangle(box, fill=fill)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return im


def _captions(objects: list[tuple[str, str, str, str]], rng: random.Random, n: int) -> list[str]:
    out = []
    for k in range(n):
        parts = [TEMPLATES[(k + i) % len(TEMPLATES)].format(color=c, shape=s, pos=p, size=b) for i, (c, s, p, b) in enumerate(objects)]
        out.append(" and ".join(parts))
    rng.shuffle(out)
    return out


def make_synthetic_coco(
    root: str | Path,
    n_train: int = 200,
    n_val: int = 100,
    image_size: tuple[int, int] = (128, 96),
    captions_per_image: int = 5,
    seed: int = 0,
    karpathy: bool = False,
    base_url: str = "http://images.cocodataset.org",
) -> Path:
    """Write ``train2014/``, ``val2014/``, ``annotations/captions_{train,val}2014.json`` and
    ``annotations/instances_val2014.json`` under ``root``.

    The instances file is COCO's object annotations for the generated shapes: one category per colour and shape ("red
    circle", 18 in all), one box per drawn shape, so 03's classification over categories runs offline as it does on COCO.
    ``karpathy=True`` gives val2014 images ids from the Karpathy val and test lists (half
    each), so the standard-protocol code path runs; otherwise ids avoid those lists.
    """
    root = Path(root)
    rng = random.Random(seed)
    banned = set(karpathy_ids("val")) | set(karpathy_ids("test"))
    if karpathy:
        val_ids = karpathy_ids("val")[: n_val // 2] + karpathy_ids("test")[: n_val - n_val // 2]
    else:
        val_ids = [i for i in range(1_000_000, 1_000_000 + 2 * n_val) if i not in banned][:n_val]
    train_ids = list(range(1, n_train + 1))
    ann_id = 1
    drawn: dict[int, list[tuple[str, str, str, str]]] = {}  # val2014 image id -> its shapes (the instances file)
    for folder, ids in (("train2014", train_ids), ("val2014", val_ids)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in ids:
            objects = [
                (rng.choice(list(COLORS)), rng.choice(SHAPES), pos, rng.choice(("small", "large")))
                for pos in rng.sample(POSITIONS, rng.choice((1, 1, 2)))
            ]
            file_name = f"COCO_{folder}_{image_id:012d}.jpg"
            if folder == "val2014":
                drawn[image_id] = objects
            _draw(objects, image_size, rng).save(root / folder / file_name, quality=90)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": image_size[0],
                    "height": image_size[1],
                    "coco_url": f"{base_url}/{folder}/{file_name}",
                }
            )
            for text in _captions(objects, rng, captions_per_image):
                annotations.append({"id": ann_id, "image_id": image_id, "caption": text})
                ann_id += 1
        (root / "annotations").mkdir(exist_ok=True)
        info = {"description": "synthetic COCO 2014 layout (helpers.data.synthetic)", "synthetic": True}  # results say so
        doc = {"info": info, "images": images, "annotations": annotations}
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(doc))
        if folder == "val2014":
            write_instances(root / "annotations" / "instances_val2014.json", images, drawn, info, image_size)
    return root


def shape_categories() -> list[dict[str, object]]:
    """The generated data's object categories, in COCO's form: one per colour and shape ("red circle")."""
    names = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    return [{"id": k, "name": name, "supercategory": name.split()[1]} for k, name in enumerate(names, 1)]


def write_instances(path: Path, images: list[dict], drawn: dict[int, list[tuple[str, str, str, str]]], info: dict,
                    image_size: tuple[int, int]) -> None:  # fmt: skip
    """COCO's ``instances_*.json`` layout for the drawn shapes: images, categories, one annotation (box) per shape."""
    categories = shape_categories()
    by_name = {c["name"]: c["id"] for c in categories}
    side = min(image_size)
    annotations = []
    for image in images:
        for color, shape, pos, big in drawn[image["id"]]:
            r = side // 7 if big == "large" else side // 10
            cx = image_size[0] // 2 + {"left": -1, "middle": 0, "right": 1}[pos] * side // 3
            box = [cx - r, image_size[1] // 2 - r, 2 * r, 2 * r]  # x, y, width, height (the shape's place, not to the pixel)
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": by_name[f"{color} {shape}"],
                                "bbox": box, "area": float(4 * r * r), "iscrowd": 0})  # fmt: skip
    path.write_text(json.dumps({"info": info, "images": images, "categories": categories, "annotations": annotations}))


def all_captions(root: str | Path) -> list[str]:
    texts = []
    for folder in ("train2014", "val2014"):
        doc = json.loads((Path(root) / "annotations" / f"captions_{folder}.json").read_text())
        texts += [a["caption"] for a in doc["annotations"]]
    return texts


def make_tiny_text_tower(out_dir: str | Path, corpus: list[str], projection_dim: int = 64, seed: int = 0) -> Path:
    """Save a tiny random CLIP text tower + trained BPE tokenizer with ``save_pretrained``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    out = Path(out_dir)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()  # like CLIP's tokenizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, show_progress=False, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos, eos = (tok.token_to_id(s) for s in SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A {SPECIALS[1]}", special_tokens=[(SPECIALS[0], bos), (SPECIALS[1], eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIALS[0],
        eos_token=SPECIALS[1],
        pad_token=SPECIALS[1],
        unk_token=SPECIALS[1],
        model_max_length=77,
        model_input_names=["input_ids", "attention_mask"],  # as CLIP's tokenizer: no token_type_ids
    )
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=bos,
        eos_token_id=eos,  # not 2: the model pools at the first EOS token
        pad_token_id=eos,
    )
    from .text_tower import no_loading_bars

    with no_loading_bars():  # transformers' "Writing model shards" bar: noise in the demo's first lines
        CLIPTextModelWithProjection(config).save_pretrained(out)
        make_tiny_vision_tower(out / VISION_SUBFOLDER, projection_dim, seed)
    return out


VISION_SUBFOLDER = "vision"  # a local tower's image half (COMPARE_ZERO_SHOT): the hub's CLIP models hold both in one folder


def make_tiny_vision_tower(out_dir: str | Path, projection_dim: int = 64, seed: int = 0) -> Path:
    """A tiny random ``CLIPVisionModelWithProjection`` (32 px, 8 px patches) into the tiny tower's text space.

    Why: COMPARE_ZERO_SHOT scores "zero-shot CLIP" with the image tower of TEXT_MODEL; offline, this stands in for it, so
    the zero-shot rows of 03's tables are computed in the demo and the tests. Random: its figures are chance level."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed + 1)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                              patch_size=8, projection_dim=projection_dim)  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(out_dir)
    return Path(out_dir)


def add_bad_images(root: str | Path, folder: str = "train2014") -> dict[str, int]:
    """Turn a few images of ``folder`` into the awkward cases COCO users meet. Returns file kind -> image id.

    corrupt (random bytes), truncated JPEG, grayscale, CMYK, PNG content named .jpg, and a missing file.
    """
    root = Path(root)
    doc = json.loads((root / "annotations" / f"captions_{folder}.json").read_text())
    images = doc["images"][:6]
    kinds = ("corrupt", "truncated", "grayscale", "cmyk", "png", "missing")
    out = {}
    for kind, img in zip(kinds, images):
        path = root / folder / img["file_name"]
        data = path.read_bytes()
        im = Image.open(path).convert("RGB")
        if kind == "corrupt":
            path.write_bytes(b"\xff\xd8\xff" + bytes(random.Random(1).randrange(256) for _ in range(500)))
        elif kind == "truncated":
            path.write_bytes(data[: len(data) // 3])
        elif kind == "grayscale":
            im.convert("L").save(path, format="JPEG")
        elif kind == "cmyk":
            im.convert("CMYK").save(path, format="JPEG")
        elif kind == "png":
            im.save(path, format="PNG")
        else:
            path.unlink()
        out[kind] = img["id"]
    return out


def make_synthetic_flickr(root: str | Path, n_images: int = 60, captions_per_image: int = 5, seed: int = 7,
                          image_size: tuple[int, int] = (150, 120)) -> Path:  # fmt: skip
    """Write a Flickr30k-1k-layout folder under ``root``: ``test_1k_flickr.csv`` (a ``filename`` and a ``raw`` JSON list
    of captions per image) and ``images_flickr_1k_test.zip``, as the Hugging Face dataset holds them, plus a
    ``source`` column saying "synthetic", which every result made from it reads. Shapes like the COCO stand-in's, with other seeds: the
    transfer test of 03 runs offline in the demo and the tests."""
    import csv
    import io
    import zipfile

    from .flickr import CSV_NAME, GENERATED, IMAGES_FOLDER, ZIP_NAME

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    with zipfile.ZipFile(root / ZIP_NAME, "w") as archive:
        for k in range(n_images):
            image_id = 2_000_000_000 + k  # Flickr photo ids are large integers; the file is named by its id
            objects = [(rng.choice(list(COLORS)), rng.choice(SHAPES), pos, rng.choice(("small", "large")))
                       for pos in rng.sample(POSITIONS, rng.choice((1, 2)))]  # fmt: skip
            buf = io.BytesIO()
            _draw(objects, image_size, rng).save(buf, format="JPEG", quality=90)
            archive.writestr(f"{IMAGES_FOLDER}/{image_id}.jpg", buf.getvalue())
            captions = json.dumps(_captions(objects, rng, captions_per_image))
            source = f"{GENERATED} (helpers.data.synthetic)"
            rows.append({"filename": f"{image_id}.jpg", "raw": captions, "split": "test", "source": source})
    with (root / CSV_NAME).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["raw", "split", "filename", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return root
