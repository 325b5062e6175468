"""The ```python blocks of README.md and docs/*.md, for the tests that check and run them.

Shared by ``tests/unit/test_docs_python.py`` (every block parses, every
``keditlab`` name it uses exists, the doctest blocks run) and
``tests/integration/test_docs_python_real.py`` (the blocks that need the
embedded model run on it).  A block is named ``FILE:LINE`` (the line of its
opening fence), so a failure points at the place to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def is_doctest(self) -> bool:
        return self.code.lstrip().startswith(">>>")

    @property
    def is_ipython(self) -> bool:
        """A notebook cell: magics (``%load_ext``) or shell escapes, plain Python once IPython has transformed it."""
        return any(line.lstrip().startswith(("%", "!")) for line in self.code.splitlines())

    def python(self) -> str:
        """The block as plain Python source (IPython's own transformation for notebook cells)."""
        if not self.is_ipython:
            return self.code
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(self.code)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks() -> list[Block]:
    blocks = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            indent = match.group("indent")
            code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in match.group("code").splitlines())
            blocks.append(Block(path.relative_to(ROOT).as_posix(), text[:match.start()].count("\n") + 1, code + "\n"))
    return blocks


def block(file: str, first_line_contains: str) -> Block:
    """The block of ``file`` whose text contains ``first_line_contains`` (blocks move; their content names them)."""
    found = [b for b in python_blocks() if b.file == file and first_line_contains in b.code]
    assert len(found) == 1, f"{len(found)} python blocks in {file} contain {first_line_contains!r}"
    return found[0]
