"""The documentation renders as written and its runnable parts run.

`mkdocs build --strict` catches broken links and pages but not a table that Markdown no longer
reads as a table (a blank line inside it, a missing separator row): those rows come out as a
paragraph of literal `| a | b |` text. Here every docs page and the README is rendered with
Python-Markdown and the extensions mkdocs.yml gives the site, and no table row may be left in a
paragraph or a list item. The README's Python snippets are run as a user would paste them.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

markdown = pytest.importorskip("markdown", reason="the docs check needs Markdown (the test extra)")
pytest.importorskip("pymdownx", reason="the docs check needs pymdown-extensions (the test extra)")

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

# A table row: starts with a pipe (after optional indentation) and has at least one more cell
# divider, so that a sentence beginning with a quoted `|` does not count.
_TABLE_ROW = re.compile(r"^\s*\|.*\|")


def _site_markdown():
    """A Markdown converter with the extensions and settings of mkdocs.yml."""
    site = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    names, configs = [], {}
    for entry in site["markdown_extensions"]:
        if isinstance(entry, dict):
            ((name, options),) = entry.items()
            configs[name] = options or {}
        else:
            name = entry
        names.append(name)
    return markdown.Markdown(extensions=names, extension_configs=configs)


def _rows_left_as_text(page_html: str) -> list[str]:
    """Lines that look like table rows inside a paragraph or a list item (tags stripped)."""
    found = []
    for block in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", page_html, flags=re.S):
        text = html.unescape(re.sub(r"<[^>]+>", "", block))
        found += [line.strip() for line in text.splitlines() if _TABLE_ROW.match(line)]
    return found


def test_table_rows_are_detected_when_a_blank_line_splits_a_table():
    md = _site_markdown()
    whole = md.convert("| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n")
    assert "<table>" in whole and _rows_left_as_text(whole) == []
    split = md.reset().convert("| a | b |\n| --- | --- |\n| 1 | 2 |\n\n| 3 | 4 |\n")
    assert _rows_left_as_text(split) == ["| 3 | 4 |"]
    # a code span or code block holding a pipe is not a table
    assert _rows_left_as_text(md.reset().convert("Use `| a | b |` rows.\n\n```\n| x | y |\n```\n")) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_table_renders_as_a_table(page):
    rendered = _site_markdown().convert(page.read_text(encoding="utf-8"))
    assert _rows_left_as_text(rendered) == [], (
        f"{page.relative_to(REPO)}: table rows rendered as text (a blank line inside a table?)"
    )


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_snippets_run(tmp_path):
    blocks = _python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "the README's library snippet is a ```python block"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for code in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"README snippet failed:\n{code}\n{proc.stderr[-3000:]}"
    # the snippet trains into runs/x and evaluates there
    assert (tmp_path / "runs" / "x" / "eval.json").is_file()


def test_the_cartpole_evaluation_sample_shows_the_presets_epsilon():
    # docs/evaluation.md shows the output of evaluating a preset=cartpole run: its protocol
    # line and eval.json must carry that preset's explore.eval_epsilon, as a real run prints.
    eps = yaml.safe_load((REPO / "conf" / "preset" / "cartpole.yaml").read_text())["explore"]["eval_epsilon"]
    text = (REPO / "docs" / "evaluation.md").read_text(encoding="utf-8")
    sample = text[text.index("Sample: `python -m dqnfast.train preset=cartpole") :]
    assert f"protocol: 100 games on 10 envs, eps {float(eps)}, seed 10001" in sample
    shown = sample[sample.index("```json") :]
    assert f'"epsilon": {float(eps)}, "human_normalized"' in shown and f'"epsilon": {float(eps)}, "seed"' in shown


def test_the_home_page_links_every_page_of_the_site():
    site = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = [next(iter(entry.values())) for entry in site["nav"]]
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    assert [p for p in pages if p != "index.md" and f"]({p})" not in index] == []
