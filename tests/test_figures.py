from PIL import Image

from helpers.core import figures
from helpers.data import pairs, prepare
from helpers.data.dataset import load_text_embeds
from helpers.data.image_cache import ImageCache


def test_pairs_grid_png_and_summary(prepared, tmp_path):
    paths = prepared["paths"]
    cache = ImageCache(paths.cache_dir)
    text = load_text_embeds(paths.text_embeds_path("train"))
    fig = pairs.pairs_grid(cache, text, n=6, seed=1, cols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and all("id " in t for t in titles)
    out = figures.save_figure(fig, tmp_path / "figs" / "grid.png")
    assert Image.open(out).format == "PNG" and not list((tmp_path / "figs").glob(".*tmp"))
    md = prepare.summary_markdown(prepared["splits"], prepared["manifest"], {"train": {"captions": 600, "token_reduction": 3.9}})
    assert "| train | 120 |" in md and "deterministic" in md and "3.9x fewer tokens" in md


def test_captions_are_wrapped_and_cut_between_words_with_an_ellipsis():
    from helpers.core.figures import wrap_caption

    short = wrap_caption("a red bus", 30, 2)
    assert short == "a red bus"
    long = wrap_caption("a man riding a wave on top of a surfboard next to a lighthouse at sunset", 20, 2)
    lines = long.split("\n")
    assert len(lines) == 2 and lines[-1].endswith("…") and all(len(line) <= 20 for line in lines)
    words = set(["a", "man", "riding", "a", "wave", "on", "top", "of", "a", "surfboard", "next", "to", "a", "lighthouse", "at", "sunset"])
    assert all(w in words for line in lines for w in line.replace(" …", "").split())  # never cut mid-word

