"""The documents hold: every relative link resolves, and the README's Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
README_LIMIT = 16_000  # bytes: the README is read in five minutes; depth lives in docs/


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def python_example(readme: str) -> str:
    section = readme.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    missing = [t for t in relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{path.name}: {missing}"


def test_the_link_check_sees_links():
    # a checker that found no links would pass whatever the documents said
    assert "docs/benchmarks.md" in relative_links(REPO / "README.md")
    assert all(doc.exists() for doc in DOCUMENTS) and len(DOCUMENTS) >= 5


def test_the_cli_reference_has_every_verb_and_flag():
    from tinymnist.cli import build_parser
    from tinymnist.cli.common import verb_parsers

    text = (REPO / "docs" / "cli.md").read_text()
    missing = []
    for words, parser in verb_parsers(build_parser()):
        if f"### `{' '.join(('tinymnist', *words))}`" not in text:
            missing.append(" ".join(words))
        missing += [flag for action in parser._actions for flag in action.option_strings
                    if not re.search(re.escape(flag) + r"\b", text)]
    assert not missing, f"not in docs/cli.md (run scripts/cli_reference.py): {sorted(set(missing))}"


def test_the_readme_is_short_and_says_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= README_LIMIT
    assert "make train" in text and "make test" in text


def test_the_readme_python_example_runs(mnist, mnist_dir, tmp_path, monkeypatch):
    """Executed as written, in a fresh folder with a digit image, with every run made a dry run."""
    import tinymnist.config as config

    real = config.preset_config
    monkeypatch.setattr(config, "preset_config", lambda name, **kw: real(name, **{**kw, "dry_run": True}))
    monkeypatch.setenv("TINYMNIST_DATA", str(mnist_dir))
    monkeypatch.chdir(tmp_path)
    Image.fromarray(255 - mnist.test_images[0].cpu().numpy().astype(np.uint8)).resize((140, 140)).save("digit.png")
    namespace: dict = {}
    exec(compile(python_example((REPO / "README.md").read_text()), "README.md", "exec"), namespace)
    assert namespace["result"].steps == 3 and Path(namespace["result"].checkpoint).is_file()
    assert len(namespace["predictions"]) == 1 and namespace["errors"] == []  # a 3-step model: any label
