"""The README's Python snippets run as written and print what the README says."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n\n")[1]
    assert "make demo" in head and "make test" in head


def test_api_snippet_runs_and_prints_what_it_claims():
    snippet = _snippets()[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "tensor([2.2500, 4.0000, 0.0625], dtype=torch.float64)"
    assert lines[1] == "48 1"
