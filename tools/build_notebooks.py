"""Write the lab notebooks from the cell sources below (``python tools/build_notebooks.py``).

Why generate them: the bootstrap cell must be identical in all five notebooks, and
committed notebooks must carry no outputs. A test regenerates them in memory and fails
when a committed notebook differs, so edit this file, then run it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

BOOTSTRAP = """\
# Bootstrap: make the `helpers` package importable, wherever this notebook runs.
# Colab: uses the project folder on Drive (MyDrive/clip-coco-lab) if present, otherwise
# clones the repository to /content and installs requirements.txt. Locally, Kaggle or under
# papermill: the folder holding this notebook (or its parent) is used as is.
import os
import subprocess
import sys
from pathlib import Path

repo_url = os.environ.get("CLIP_LAB_REPO", "https://github.com/clip-coco-lab/clip-coco-lab.git")
in_colab = "COLAB_RELEASE_TAG" in os.environ
if in_colab and not Path("/content/drive/MyDrive").exists():
    from google.colab import drive
    drive.mount("/content/drive")
candidates = [Path.cwd(), Path.cwd().parent, Path("/content/drive/MyDrive/clip-coco-lab"), Path("/content/clip-coco-lab")]
project_dir = next((p for p in candidates if (p / "helpers" / "__init__.py").exists()), None)
if project_dir is None and in_colab:
    subprocess.run(["git", "clone", "--depth", "1", repo_url, "/content/clip-coco-lab"], check=True)
    project_dir = Path("/content/clip-coco-lab")
if project_dir is None:
    raise RuntimeError("Cannot find the helpers/ package: open this notebook from the project folder, or set CLIP_LAB_REPO")
if in_colab:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(project_dir / "requirements.txt")], check=True)
if str(project_dir) not in sys.path:
    sys.path.insert(0, str(project_dir))
print("helpers from", project_dir)"""


def _parameters(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def notebook_01() -> nbformat.NotebookNode:
    md, code = new_markdown_cell, new_code_cell
    cells = [
        md(
            "# 01 · Dataset preparation: COCO 2014 → image cache + caption embeddings\n\n"
            "This notebook gets COCO 2014 onto fast local disk, fixes the train/val/test splits, decodes every image "
            "**once** into a compact cache, and encodes every caption **once** with the frozen CLIP text tower. "
            "Notebooks 02–05 read only these artifacts from `ARTIFACTS_DIR`, so a new Colab session never has to "
            "download or decode COCO again. Re-running skips finished work.\n\n"
            "Typical times on a free Colab T4: download 10–20 min (`coco`), image cache ~4–6 min (2 vCPUs), caption cache ~2 min."
        ),
        code(BOOTSTRAP),
        md("## Parameters\n`None` means *default / full*. In Colab this cell is a form."),
        _parameters(
            'ARTIFACTS_DIR = None  #@param {type:"raw"}\n'
            "# ^ None: Drive (MyDrive/clip_coco) in Colab, /kaggle/working/clip_coco on Kaggle, ./artifacts locally\n"
            'DATA_DIR = None  #@param {type:"raw"}\n'
            "# ^ None: /content/coco in Colab (local disk: Drive is far too slow for 120k files)\n"
            'DATA_SOURCE = "coco"  #@param ["coco", "coco-subset", "kaggle", "local"]\n'
            'TEXT_MODEL = "openai/clip-vit-base-patch32"  #@param {type:"string"}\n'
            'TRAIN_IMAGES = None  #@param {type:"raw"}\n'
            "# ^ None: all 82,783 train2014 images; an int: a seeded subset (quick experiments)\n"
            'VAL_IMAGES = None  #@param {type:"raw"}\n'
            'TEST_IMAGES = None  #@param {type:"raw"}\n'
            "# ^ None: the standard Karpathy 5k val / 5k test splits of val2014\n"
            'IMAGE_SIZE = 224  #@param {type:"integer"}\n'
            'SEED = 0  #@param {type:"integer"}'
        ),
        code(
            "from helpers import acquire, config, env, figures, prepare\n\n"
            "cfg = config.from_notebook(globals())  # unknown or mistyped parameters fail here, named\n"
            "paths = env.resolve_paths(cfg)\n"
            'cfg.save(paths.artifacts_dir / "config_01_dataset_prep.json")\n'
            "print(env.format_summary(env.hardware_summary(paths)))\n"
            'print("\\nARTIFACTS_DIR:", paths.artifacts_dir, "\\nDATA_DIR:", paths.data_dir, "\\nlocal cache:", paths.cache_dir)'
        ),
        md(
            "## 1. Get the data\n"
            "`DATA_SOURCE` picks how: `coco` (official zips, ~20 GB, resumable), `coco-subset` (annotations + a few "
            "thousand single images, ~2 GB, Karpathy val/test images first), `kaggle` (the Kaggle copy via kagglehub) "
            "or `local` (a folder you already have in COCO 2014 layout)."
        ),
        code("data_dir = acquire.acquire(cfg, paths.data_dir)"),
        md(
            "## 2. Splits\n"
            "* **train**: train2014 (82,783 images, ~414k captions), or a seeded subset of `TRAIN_IMAGES`.\n"
            "* **val**: the Karpathy 5k validation images of val2014, used only for model selection (best epoch).\n"
            "* **test**: the disjoint Karpathy 5k test images, used only for reporting: the protocol of the "
            "published CLIP and VSE++ numbers.\n\n"
            "When the data lacks the Karpathy ids (synthetic or partial data), val2014 is split deterministically "
            "and `protocol` says so. Images that have no caption or no file are left out, and counted."
        ),
        code("data = prepare.scan(data_dir)\nsplits = prepare.build_splits(cfg, paths, data)\nprint(splits.describe())"),
        md(
            "## 3. Image pipeline: decode once, into a compact cache\n"
            "Each image is opened with PIL (grayscale, CMYK and PNG-content files are converted to RGB), decoded "
            "with JPEG *draft* mode straight to about the target size, resized so its **shorter side is "
            "`IMAGE_SIZE`** (bicubic) and **centre-cropped to `IMAGE_SIZE`×`IMAGE_SIZE`**: CLIP's own policy, "
            "no distortion, at the price of the outer ~12% on each long side. The result is stored as a "
            "quality-90 JPEG (~20 KB) in shards of 10,000 images: all of COCO fits in ~2.5 GB on Drive, in a few "
            "large files.\n\n"
            "**Normalisation** happens later, on the GPU, per batch: pixels / 255, then CLIP's mean "
            "(0.4815, 0.4578, 0.4082) and std (0.2686, 0.2613, 0.2758). Unreadable images are skipped, counted "
            "and listed under `failed` in the cache manifest."
        ),
        code("manifest = prepare.cache_images(cfg, paths, data, splits)"),
        md(
            "## 4. Text preprocessing: every caption encoded once\n"
            "The CLIP tokenizer (byte-level BPE, lower-cased) wraps each caption in `<|startoftext|>` … "
            "`<|endoftext|>`; captions longer than **77 tokens** are **truncated**. The frozen "
            "`CLIPTextModelWithProjection` gives `text_embeds` (512-d for ViT-B/32), which are L2-normalised and "
            "stored as float16.\n\n"
            "**Padding:** CLIP's text transformer is causal and pools at the end-of-text token, so padding never "
            "changes an embedding. Captions are sorted by length and each batch is padded only to its longest "
            "caption: several times fewer tokens than padding everything to 77, identical results."
        ),
        code("caption_summary = prepare.cache_captions(cfg, paths, data, splits)"),
        md(
            "## 5. The Dataset, and a look at the data\n"
            "`CocoCacheDataset` returns *(normalised image [3, H, W], caption embedding, image_id, caption)*. In "
            "training, each image gets one caption drawn at random per epoch."
        ),
        code(
            "from helpers.dataset import CocoCacheDataset, load_text_embeds\n"
            "from helpers.image_cache import ImageCache\n\n"
            "cache = ImageCache(paths.cache_dir)\n"
            'train_text = load_text_embeds(paths.text_embeds_path("train"), cfg.text_model)\n'
            'train_set = CocoCacheDataset(cache, train_text, splits.train, mode="train", seed=cfg.seed)\n'
            "image, embedding, image_id, caption = train_set[0]\n"
            'print(f"image {tuple(image.shape)} {image.dtype}, embedding {tuple(embedding.shape)}, id {image_id}: {caption!r}")\n'
            "fig = figures.pairs_grid(cache, train_text, n=12, seed=cfg.seed)\n"
            'figures.save_figure(fig, paths.artifacts_dir / "figures" / "pairs_grid.png")'
        ),
        md("## Summary"),
        code(
            "from IPython.display import Markdown, display\n\n"
            "display(Markdown(prepare.summary_markdown(splits, manifest, caption_summary)))"
        ),
    ]
    return _notebook(cells)


def notebook_02() -> nbformat.NotebookNode:
    md, code = new_markdown_cell, new_code_cell
    cells = [
        md(
            "# 02 · Train the image tower into CLIP's frozen text space\n\n"
            "Reads the caches written by `01_dataset_prep.ipynb` from `ARTIFACTS_DIR` and trains a ResNet50 image "
            "tower with a projection head so that each image lands next to its captions' CLIP text embeddings. "
            "Every epoch ends with a checkpoint on Drive: after a disconnect, **re-run the notebook** and it resumes "
            "where it stopped. A finished run is not retrained (set `FORCE_RETRAIN = True` to do so)."
        ),
        code(BOOTSTRAP),
        md("## Parameters\nDefaults are the lab's: AdamW, lr 1e-4, batch 64, 10 epochs."),
        _parameters(
            'ARTIFACTS_DIR = None  #@param {type:"raw"}\n'
            'TEXT_MODEL = "openai/clip-vit-base-patch32"  #@param {type:"string"}\n'
            'IMAGE_WEIGHTS = "IMAGENET1K_V2"  #@param ["IMAGENET1K_V2", "IMAGENET1K_V1"] {allow-input: true}\n'
            "# ^ torchvision ResNet50 weights; write None (no quotes) here to train from scratch\n"
            'VARIANT = "baseline"  #@param {type:"string"}\n'
            'EPOCHS = 10  #@param {type:"integer"}\n'
            'BATCH_SIZE = 64  #@param {type:"integer"}\n'
            "# ^ also the number of in-batch negatives + 1; halved automatically on CUDA out-of-memory\n"
            'LR = 1e-4  #@param {type:"number"}\n'
            'WEIGHT_DECAY = 0.01  #@param {type:"number"}\n'
            'OPTIMIZER = "adamw"  #@param ["adamw", "adam", "sgd"]\n'
            'TEMPERATURE = 0.07  #@param {type:"number"}\n'
            'LEARNABLE_TEMPERATURE = False  #@param {type:"boolean"}\n'
            'RUN_NAME = None  #@param {type:"raw"}\n'
            "# ^ None: derived from the variant and settings, e.g. baseline-resnet50-b64-lr0.0001-adamw-s0\n"
            'SEED = 0  #@param {type:"integer"}\n'
            'IMAGE_SIZE = 224  #@param {type:"integer"}\n'
            "# ^ must match the image cache built by notebook 01\n"
            'AMP = True  #@param {type:"boolean"}\n'
            'LIVE_PLOT = True  #@param {type:"boolean"}\n'
            'FORCE_RETRAIN = False  #@param {type:"boolean"}'
        ),
        code(
            "from IPython.display import Image, Markdown, display\n\n"
            "from helpers import config, env, model, train\n\n"
            "cfg = config.from_notebook(globals())\n"
            "paths = env.resolve_paths(cfg)\n"
            "print(env.format_summary(env.hardware_summary(paths)))\n"
            'print("\\nrun:", paths.runs_dir / train.run_name_for(cfg))'
        ),
        md(
            "## The model: what trains, what is frozen, and why\n"
            "* **Image tower (trains):** torchvision ResNet50 with ImageNet weights. Its 1000-way classifier `fc` is "
            "replaced by the **projection head** Linear(2048 → 1024) → GELU → Linear(1024 → 512). Both the trunk and "
            "the head train: the trunk adapts its features to captions, the head maps them into the text space.\n"
            "* **Text tower (frozen):** CLIP ViT-B/32's text transformer. It is not even loaded here: notebook 01 "
            "cached every caption's embedding, which serve as fixed targets. Freezing it keeps the well-structured "
            "CLIP text space intact (live queries in notebook 03 use the same encoder), costs no text gradients, and "
            "rules out a collapse of the text side.\n"
            "* **Both outputs are L2-normalised**, so a dot product is a cosine similarity.\n"
            "* **Temperature:** logits = similarity / τ. Fixed τ = 0.07 (the CLIP initialisation) by default; with "
            "`LEARNABLE_TEMPERATURE` the model learns log(1/τ), clamped so that 1/τ ≤ 100."
        ),
        code(
            "arch = model.model_config(cfg, embed_dim=train.text_dim(paths, cfg))\n"
            "preview = model.build_model(arch, pretrained=False)\n"
            "display(Markdown(model.parameter_summary(preview)))\n"
            "del preview"
        ),
        md(
            "## Training\n"
            "**Loss:** symmetric InfoNCE. In a batch of B pairs each image must pick its own caption among B and "
            "each caption its own image; the two cross-entropies are averaged (`helpers/loss.py` explains anchors, "
            "positives, negatives and temperature). **Speed:** fp16 autocast + GradScaler on a T4 (bf16 on newer "
            "GPUs), channels_last, cudnn.benchmark, uint8 batches normalised on the GPU. **Each epoch** draws a new "
            "random caption per image, then measures validation loss and Recall@K on the Karpathy **val** split; "
            "the best epoch (highest val rsum = sum of R@1/5/10 both ways) is kept as `best.pt`. **Safety:** "
            "non-finite or spiking losses skip the step; repeated trouble rolls back to the last checkpoint with a "
            "lower learning rate; CUDA out-of-memory halves the batch."
        ),
        code("result = train.run(cfg, paths)"),
        md("## Learning curves\nSaved as `loss_curves.png` in the run folder, ready for the report."),
        code('display(Image(filename=str(result.run_dir / "loss_curves.png")))'),
        md("## Summary"),
        code('display(Markdown(train.summary_markdown(result)))\nprint("artifacts in", result.run_dir)'),
    ]
    return _notebook(cells)


def notebook_03() -> nbformat.NotebookNode:
    md, code = new_markdown_cell, new_code_cell
    cells = [
        md(
            "# 03 · Evaluate: Recall@K, qualitative retrieval, interactive queries\n\n"
            "Loads the best checkpoint of a run from `ARTIFACTS_DIR/runs/` (the architecture is rebuilt from the "
            "checkpoint's own config), embeds every image of the evaluation split once, and scores retrieval "
            "against the cached caption embeddings. Results are written to the run folder as "
            "`eval_<split>.json` / `.csv`, figures to `figures_<split>/`."
        ),
        code(BOOTSTRAP),
        md("## Parameters"),
        _parameters(
            'ARTIFACTS_DIR = None  #@param {type:"raw"}\n'
            'TEXT_MODEL = "openai/clip-vit-base-patch32"  #@param {type:"string"}\n'
            'RUN_NAME = None  #@param {type:"raw"}\n'
            "# ^ None: the default baseline run if trained, else the most recent finished run\n"
            'EVAL_SPLIT = "test"  #@param ["test", "val", "val2014"]\n'
            "# ^ test: Karpathy 5k (report this); val: model-selection split; val2014: every cached val2014 image\n"
            'QUERIES = ["a dog playing", "sport"]  #@param {type:"raw"}\n'
            'CLASSES = ["a person", "an animal", "a landscape"]  #@param {type:"raw"}\n'
            'COMPARE_ZERO_SHOT = False  #@param {type:"boolean"}\n'
            "# ^ also score the zero-shot CLIP image tower on the same split (downloads ~600 MB)\n"
            'INTERACTIVE = True  #@param {type:"boolean"}\n'
            "# ^ the query widget; headless runs set False (creating widgets can stall papermill: jupyter/nbclient#312)"
        ),
        code(
            "from IPython.display import Markdown, display\n\n"
            "from helpers import config, env, evaluate, figures, qualitative, widget\n\n"
            "cfg = config.from_notebook(globals())\n"
            "paths = env.resolve_paths(cfg)"
        ),
        md(
            "## How retrieval is scored\n"
            "**Cosine similarity.** Image and caption embeddings are L2-normalised, so their dot product is the cosine "
            "of the angle between them: 1 for the same direction, 0 for unrelated. One matrix product scores every "
            "image against every caption; it is computed in chunks on the GPU, so even all of val2014 (40k images × "
            "200k captions, 33 GB as a full float32 matrix) stays within a small, fixed amount of memory.\n\n"
            "**Recall@K** is the fraction of queries whose correct answer appears among the K best-scoring candidates. "
            "It asks *is the right answer near the top?*, which is what a search user sees, and it needs no threshold.\n\n"
            "* **Image → text**: each image queries all captions; a hit when **any** of its ~5 captions is in the top K.\n"
            "* **Text → image**: each caption queries all images; a hit when **its** image is in the top K.\n\n"
            "**Why several captions per image matter.** Image→text has ~5 correct answers per query, so it is easier "
            "and its R@K is higher; text→image has exactly one. Scoring one embedding per *image* (not per caption) "
            "also means a top-5 list can never contain the same image twice. Ties count against the query, so a "
            "collapsed model scores 0, not 100%. The standard protocol is the Karpathy 5k test split; the 1k figure "
            "is the mean over 5 folds of 1,000 test images."
        ),
        code(
            "result = evaluate.evaluate(cfg, paths)\n"
            "display(Markdown(evaluate.results_markdown(result.record)))\n"
            'fig_dir = result.data.run_dir / f"figures_{cfg.eval_split}"'
        ),
        md("## Text → image: top-5 images for each query"),
        code(
            "index = qualitative.RetrievalIndex.from_eval(result, cfg.text_model)\n"
            "fig = qualitative.query_grid(index, cfg.queries, k=5)\n"
            'figures.save_figure(fig, fig_dir / "text_queries.png")'
        ),
        md(
            "## Image → class\n"
            'Each class name is embedded in several prompt templates ("a photo of {}.", …) whose embeddings are '
            "averaged (*prompt ensembling*); the image's probabilities are a softmax over its scaled cosine "
            "similarities to the classes."
        ),
        code(
            "import random\n\n"
            "sample_ids = random.Random(0).sample(index.image_ids, min(4, len(index.image_ids)))\n"
            "fig = qualitative.classification_figure(index, sample_ids, cfg.classes)\n"
            'figures.save_figure(fig, fig_dir / "image_classes.png")'
        ),
        md("## Similarity heatmap\nTen images against one caption of each: a trained model lights up the diagonal."),
        code(
            "fig = qualitative.similarity_heatmap(index, result.text_features, result.text_to_image, n=10)\n"
            'figures.save_figure(fig, fig_dir / "similarity_heatmap.png")'
        ),
        md("## Successes and failures (text → image)"),
        code(
            'captions = [result.data.text["captions"][r] for r in result.caption_rows]\n'
            "good, bad = qualitative.success_failure_grids(index, result.text_features, result.text_to_image, captions)\n"
            'figures.save_figure(good, fig_dir / "retrieval_successes.png")\n'
            'figures.save_figure(bad, fig_dir / "retrieval_failures.png")'
        ),
        md(
            "## Try it yourself\n"
            "Type any query (press Enter) and move the slider; pick an image or upload your own to score it "
            "against `CLASSES`."
        ),
        code(
            "if cfg.interactive:\n"
            "    explorer = widget.Explorer(index, cfg.classes, query=cfg.queries[0])\n"
            "    explorer.show()\n"
            "else:  # headless (papermill): widgets can stall execution, so the explorer's search, printed\n"
            "    for hit in index.search(cfg.queries[0], k=5):\n"
            '        print(f"{hit.score:.3f}  image {hit.image_id}: {hit.caption}")'
        ),
    ]
    return _notebook(cells)


def notebook_04() -> nbformat.NotebookNode:
    md, code = new_markdown_cell, new_code_cell
    cells = [
        md(
            "# 04 · Ablation: what each modification changes\n\n"
            "Trains the baseline and each variant with the same settings and seeds, evaluates all of them on the "
            "test split, and compares Recall@K. Runs are resumable and reused: a baseline already trained by "
            "notebook 02 with the same settings is not retrained, and re-running after a disconnect continues."
        ),
        code(BOOTSTRAP),
        md("## Parameters"),
        _parameters(
            'ARTIFACTS_DIR = None  #@param {type:"raw"}\n'
            'TEXT_MODEL = "openai/clip-vit-base-patch32"  #@param {type:"string"}\n'
            'VARIANTS = ["head_ln", "augment", "optim", "disc_lr"]  #@param {type:"raw"}\n'
            "# ^ flags (combine with '+', e.g. 'head_ln+optim'); also head_bn, attn_pool, freeze_bn, restval\n"
            'SEEDS = [0]  #@param {type:"raw"}\n'
            "# ^ several seeds (e.g. [0, 1, 2]) give mean and spread, at several times the cost\n"
            'EPOCHS = 10  #@param {type:"integer"}\n'
            'BATCH_SIZE = 64  #@param {type:"integer"}\n'
            'LR = 1e-4  #@param {type:"number"}\n'
            'IMAGE_WEIGHTS = "IMAGENET1K_V2"  #@param {type:"raw"}\n'
            'IMAGE_SIZE = 224  #@param {type:"integer"}\n'
            'LIVE_PLOT = False  #@param {type:"boolean"}'
        ),
        code(
            "from IPython.display import Image, Markdown, display\n\n"
            "from helpers import ablation, config, env\n\n"
            "cfg = config.from_notebook(globals())\n"
            "paths = env.resolve_paths(cfg)"
        ),
        md(
            "## The modifications\n"
            "The baseline code (`helpers/model.py`: `baseline_head`, the ResNet trunk; `helpers/train.py`) is not "
            "touched; every modification lives in `helpers/variants.py` under its own flag:\n\n"
            "| flag | what changes | why it might help |\n|---|---|---|\n"
            "| `head_ln` | head: Linear → LayerNorm → GELU → Dropout(0.1) → Linear | normalised, regularised projection |\n"
            "| `head_bn` | head: Linear → BatchNorm → GELU → Linear | an earlier kit's variant |\n"
            "| `attn_pool` | learned attention pooling over the 7×7 map instead of average pooling | keeps *where* things are |\n"
            "| `augment` | RandomResizedCrop (scale 0.7–1) + mild brightness/contrast | more views of each image |\n"
            "| `optim` | 5% linear warmup, cosine decay, gradient clipping 1.0, learnable temperature | smoother optimisation |\n"
            "| `disc_lr` | trunk at 0.1× LR, head at 1× | protects the pretrained ImageNet features |\n"
            "| `freeze_bn` | trunk BatchNorm statistics frozen | batch statistics of 64 images are noisy |\n"
            "| `restval` | + the ~30k val2014 images in neither Karpathy split | more data (cache them in 01) |\n\n"
            '**Caption-safe augmentation.** Horizontal flips would turn "a dog on the left" into a wrong caption, '
            'and hue jitter would turn "a red bus" into a green one; both are left out.'
        ),
        md("## Train and evaluate every variant"),
        code(
            "outcomes = ablation.run_ablation(cfg, paths, cfg.variants, cfg.seeds)\n"
            "table = ablation.summarise(outcomes)\n"
            'chart = ablation.save(table, outcomes, cfg, paths.artifacts_dir / "ablation")'
        ),
        md("## Comparison"),
        code("display(Markdown(ablation.table_markdown(table)))\ndisplay(Image(filename=str(chart)))"),
        md(
            "## Reading the table honestly\n"
            "A single seed gives one sample per variant: differences of one or two Recall points are often just "
            "noise from initialisation and data order. With several `SEEDS` the table shows mean ± standard "
            "deviation and marks with `~` every change no larger than that spread. Only changes well outside the "
            "spread, and consistent across R@1/5/10 and both directions, support a claim."
        ),
    ]
    return _notebook(cells)


def notebook_05() -> nbformat.NotebookNode:
    md, code = new_markdown_cell, new_code_cell
    cells = [
        md(
            "# 05 · Report\n\n"
            "Assembles `report.md` from the artifacts of notebooks 01–04 (nothing is recomputed) and copies every "
            "figure it references into `ARTIFACTS_DIR/report/`. Sections whose artifacts are missing say which "
            "notebook to run. Complete the *Reflection on LLM use* section by hand."
        ),
        code(BOOTSTRAP),
        md("## Parameters"),
        _parameters(
            'ARTIFACTS_DIR = None  #@param {type:"raw"}\n'
            'RUN_NAME = None  #@param {type:"raw"}\n'
            "# ^ the run the report centres on; None: the latest finished baseline run"
        ),
        code(
            "from IPython.display import Markdown, display\n\n"
            "from helpers import config, env, report\n\n"
            "cfg = config.from_notebook(globals())\n"
            "paths = env.resolve_paths(cfg)"
        ),
        code(
            "result = report.build_report(paths.artifacts_dir, cfg.run_name)\n"
            'print("report:", result.path)\n'
            'print(f"{len(result.figures)} figures copied to", result.path.parent / "figures")\n'
            "if result.missing:\n"
            '    print("missing:", "; ".join(result.missing))'
        ),
        md("## Preview"),
        code("display(Markdown(result.path.read_text()))"),
    ]
    return _notebook(cells)


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {
    "01_dataset_prep.ipynb": notebook_01,
    "02_train_clip.ipynb": notebook_02,
    "03_evaluate_clip.ipynb": notebook_03,
    "04_ablation.ipynb": notebook_04,
    "05_report.ipynb": notebook_05,
}


def render(name: str) -> str:
    return nbformat.writes(NOTEBOOKS[name](), version=4) + "\n"


def main() -> int:
    for name in NOTEBOOKS:
        (ROOT / name).write_text(render(name))
        print("wrote", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
