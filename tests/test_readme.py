"""The README's example runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_finds_a_good_member(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.best.step == 100  # type: ignore[attr-defined]
    assert result.best.score > 0.99  # type: ignore[attr-defined]
    assert "lr" in capsys.readouterr().out
