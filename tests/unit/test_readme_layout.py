"""The README's Layout section is true: every path it names exists, and every part of the package is named.

A newcomer reads the Layout first; a module moved or renamed without the
README following it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1].strip("\n").splitlines()


def _named_paths() -> list[Path]:
    """Each entry's first word, read as a path under the folder it is indented in."""
    paths, parent = [], ROOT
    for line in _layout_block():
        if not line.strip() or line.startswith(" " * 6):  # a continuation line of a description
            continue
        name = line.split()[0]
        if line.startswith("  "):
            paths.append(parent / name)
        else:
            paths.append(ROOT / name)
            parent = ROOT / name if name.endswith("/") else ROOT
    return paths


def test_every_path_the_layout_names_exists():
    missing = [str(p.relative_to(ROOT)) for p in _named_paths() if not p.exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


def test_every_package_folder_and_top_level_module_is_in_the_layout():
    named = {p.relative_to(ROOT).as_posix().rstrip("/") for p in _named_paths()}
    package = ROOT / "keditlab"
    parts = {f"keditlab/{p.name}" for p in package.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists())
             or (p.suffix == ".py" and not re.match(r"__\w+__\.py", p.name))}
    assert parts - named == set(), f"parts of the package the README's Layout does not name: {sorted(parts - named)}"


def test_every_module_the_layout_mentions_exists():
    """``hooks.py``, ``layers.py`` ... named in a description are modules of the folder the entry names."""
    folder = None
    missing = []
    for line in _layout_block():
        if line.startswith("  ") and not line.startswith(" " * 6):
            folder = ROOT / "keditlab" / line.split()[0]
        elif not line.startswith(" "):
            folder = None
        if folder is None or not folder.is_dir():
            continue
        for module in re.findall(r"\b(\w+\.py)\b", line.split(None, 1)[1] if not line.startswith(" " * 6) else line):
            if not (folder / module).exists():
                missing.append(f"{folder.relative_to(ROOT)}/{module}")
    assert not missing, f"README's Layout mentions modules that do not exist: {missing}"
