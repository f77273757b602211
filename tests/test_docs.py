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
