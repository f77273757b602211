"""The README is one screen that a student reads first; the reference pages in docs/ hold the rest."""

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_keeps_the_two_commands_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in README and "python3 -m pytest -q" in ci  # run the tests: what CI calls
    assert "python3 -m helpers.run_all --demo" in README  # run the pipeline
    assert "lint-imports" in ci and "ruff check" in ci


def test_readme_is_about_one_screen_and_every_link_resolves():
    prose = re.sub(r"^\|.*\|$", "", README, flags=re.M)  # the notebook table aside
    assert len(prose.split()) < 450, len(prose.split())
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", README)
    assert {"docs/troubleshooting.md", "docs/parameters.md", "docs/artifacts.md", "docs/development.md"} <= set(links)
    for link in links:
        assert (ROOT / link).exists(), link


def test_every_docs_page_has_one_title_and_its_relative_links_resolve():
    for page in (ROOT / "docs").glob("*.md"):
        text = page.read_text()
        assert len(re.findall(r"^# ", text, flags=re.M)) == 1, page.name
        for link in re.findall(r"\]\(([\w./-]+\.md)\)", text):
            assert (page.parent / link).exists(), (page.name, link)


def _pages() -> dict[str, str]:
    pages = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")}}
    for name in ("01_dataset_prep", "02_train_clip", "03_evaluate_clip", "04_ablation", "05_report"):
        pages[f"{name}.ipynb"] = (ROOT / f"{name}.ipynb").read_text()  # their Markdown makes promises too
    return pages


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchored_links_name_a_heading_of_their_page():
    found = 0
    for name, text in _pages().items():
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)#([\w-]+)\)", text):
            page = (ROOT / name).parent / target
            headings = {_slug(h) for h in re.findall(r"^#+ (.*)$", page.read_text(), flags=re.M)}
            assert anchor in headings, (name, target, anchor)
            found += 1
    assert found >= 3  # the README, docs/colab.md and docs/notebooks.md point at the time budget


def test_the_t4_budget_lives_in_performance_md_alone_and_is_what_the_doctor_computes():
    from helpers.core import config, resolution
    from helpers.training import budget

    settings = config.from_params({}).to_dict()  # the lab's defaults, with notebook 04's default VARIANTS
    rates = budget.Rates(device="CPU", step={224: 1.0})  # a CPU: the T4 figures come from the published rates
    lab = budget.plan(settings, ["head_ln", "augment"], rates, 82_783, 5_000)
    scheduled = budget.plan({**settings, "train_sizes": resolution.ramp(10, 224)}, ["head_ln", "augment"], rates, 82_783, 5_000)

    def span(minutes):
        return f"{budget.minutes_text(minutes[1])}-{budget.minutes_text(minutes[0])}"

    figures = [span(lab.lab_t4_minutes), span(scheduled.lab_t4_minutes), span(lab.run.t4_minutes), span(scheduled.run.t4_minutes),
               "295-425 img/s"]  # fmt: skip
    pages = _pages()
    for figure in figures:
        holders = [name for name, text in pages.items() if figure in text]
        assert holders == ["docs/PERFORMANCE.md"], (figure, holders)  # stated once, and true of today's code
    assert lab.fits() is True and "fits one free session" in pages["docs/PERFORMANCE.md"]
    for stale in ("well under an hour", "about 2.5 hours", "two-variant ablation", "no GPU figure is recorded yet", "about 4 h"):
        assert not [name for name, text in pages.items() if stale in text], stale
    for minutes in re.findall(r"download[^.|\n]{0,40}?(\d+\s*[–-]\s*\d+ min)", "\n".join(pages.values())):
        assert minutes == "8-20 min", minutes  # the download time, quoted one way


def test_the_test_suites_size_and_time_are_stated_once_in_the_readme():
    pattern = re.compile(r"\b\d{3} (?:tests|passed)\b|\d+(?:\.\d+)? min of tests")
    holders = {name: pattern.findall(text) for name, text in _pages().items() if pattern.search(text)}
    assert list(holders) == ["README.md"], holders
    assert "under load" in README.lower() and "idle" in README
