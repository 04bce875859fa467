"""Every Python example of docs/embedding.md (and the README's asyncio one) runs as
printed, in a folder holding the bundled examples; the notebook's cell as a kernel runs
it, with top-level await."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "embedding.md"
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
BLOCKS = _BLOCK.findall(GUIDE.read_text()) + [
    block for block in _BLOCK.findall(README.read_text()) if "cardmill.aio" in block
]
KERNEL = textwrap.dedent(
    """
    import ast, asyncio, sys
    cell = open(sys.argv[1]).read()
    code = compile(cell, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async def run():
        result = eval(code, {"__name__": "__main__"})
        if result is not None:
            await result
    asyncio.run(run())
    """
)


def test_the_guide_and_the_readme_have_their_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_example_runs_as_printed(block: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "example.py"
    script.write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    try:
        compile(block, str(script), "exec")
        command = [sys.executable, str(script)]
    except SyntaxError:  # a notebook cell: await at its top level
        command = [sys.executable, "-c", KERNEL, str(script)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
