import random

import pytest
import torch
import torch.nn.functional as F

from helpers.clip.metrics import fold_metrics, retrieval_metrics


def brute_force(img, txt, t2i, ks=(1, 5, 10)):
    """Plain loops over the full matrix, same definitions (ties count against the query)."""
    sims = (img @ txt.t()).tolist()
    n_img, n_txt = len(sims), len(sims[0])
    out = {}
    i2t_ranks = []
    for i in range(n_img):
        own = [j for j in range(n_txt) if t2i[j] == i]
        best = max(sims[i][j] for j in own)
        i2t_ranks.append(sum(1 for j in range(n_txt) if j not in own and sims[i][j] >= best))
    t2i_ranks = []
    for j in range(n_txt):
        own = sims[t2i[j]][j]
        t2i_ranks.append(sum(1 for i in range(n_img) if i != t2i[j] and sims[i][j] >= own))
    for name, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in ks:
            out[f"{name}_R@{k}"] = sum(r < k for r in ranks) / len(ranks)
        out[f"{name}_mean_rank"] = sum(ranks) / len(ranks) + 1
    return out


def random_problem(n_img, seed, d=8, quantise=False):
    rng = random.Random(seed)
    t2i = [i for i in range(n_img) for _ in range(rng.randint(1, 7))]
    rng.shuffle(t2i)
    img = F.normalize(torch.randn(n_img, d, generator=torch.Generator().manual_seed(seed)), dim=-1)
    txt = F.normalize(img[t2i] + 0.8 * torch.randn(len(t2i), d, generator=torch.Generator().manual_seed(seed + 1)), dim=-1)
    if quantise:  # coarse values: many exact ties
        img, txt = (img * 2).round() / 2, (txt * 2).round() / 2
    return img, txt, torch.tensor(t2i)


@pytest.mark.parametrize(("seed", "chunk", "quantise"), [(0, 7, False), (1, 13, True), (2, None, False), (3, 1, True)])
def test_matches_brute_force(seed, chunk, quantise):
    img, txt, t2i = random_problem(37, seed, quantise=quantise)
    got = retrieval_metrics(img, txt, t2i, chunk_size=chunk)
    ref = brute_force(img, txt, t2i.tolist())
    for key, value in ref.items():
        assert abs(got[key] - value) < 1e-6, key
    assert abs(got["rsum"] - sum(ref[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))) < 1e-5


def test_chunked_equals_one_chunk():
    img, txt, t2i = random_problem(120, 9)
    assert retrieval_metrics(img, txt, t2i, chunk_size=11) == retrieval_metrics(img, txt, t2i, chunk_size=100_000)


def test_perfect_and_collapsed_models():
    img = F.normalize(torch.randn(20, 16), dim=-1)
    t2i = torch.arange(20).repeat_interleave(5)
    perfect = retrieval_metrics(img, img[t2i], t2i)
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 1.0 and perfect["t2i_median_rank"] == 1
    flat = torch.ones(20, 16) / 4
    collapsed = retrieval_metrics(flat, torch.ones(100, 16) / 4, t2i)
    assert collapsed["i2t_R@10"] == 0.0 and collapsed["t2i_R@10"] == 0.0  # ties never count as hits


def test_input_validation():
    img = torch.eye(3)
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(img, img[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="captions but"):
        retrieval_metrics(img, img, torch.tensor([0, 1]))


def test_fold_metrics_is_the_mean_over_folds():
    img, txt, t2i = random_problem(50, 4)
    order = torch.argsort(t2i, stable=True)  # captions grouped by image, as in a dataset
    txt, t2i = txt[order], t2i[order]
    folds = fold_metrics(img, txt, t2i, fold_size=10, folds=5)
    manual = []
    for f in range(5):
        mask = (t2i >= 10 * f) & (t2i < 10 * f + 10)
        manual.append(retrieval_metrics(img[10 * f : 10 * f + 10], txt[mask], t2i[mask] - 10 * f)["t2i_R@1"])
    assert abs(folds["t2i_R@1"] - sum(manual) / 5) < 1e-6
    with pytest.raises(ValueError, match="needs 5000 images"):
        fold_metrics(img, txt, t2i)
