"""The README's Python snippets run as written and print what the README says."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n\n")[1]
    assert "make demo" in head and "make test" in head


def test_api_snippet_runs_and_prints_what_it_claims():
    text = README.read_text()
    snippet = re.search(r"```python\n(.*?)```", text[text.index("## Python API"):], re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "tensor([2.2500, 4.0000, 0.0625], dtype=torch.float64)"
    assert lines[1] == "48 1"


def test_your_own_model_section_runs_as_written(tmp_path, monkeypatch):
    """The README's "Your own model" example: compile, search, evaluate, finetune, TCP, save/load."""
    text = README.read_text()
    section = text[text.index("## Your own model"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "['act', 'pool', 'act#1', 'pool#1'] True"  # every comparison takes bits
    plain, reduced = (float(v) for v in re.findall(r"\d\.\d+", lines[1]))
    assert plain > 0.6 and abs(plain - reduced) < 0.05
    assert re.fullmatch(r"finetuned 0\.\d{3}", lines[2])
    assert re.fullmatch(r"private: accuracy 0\.\d{3}, \d+ rounds, \d\.\d\d MB per image", lines[3])
    assert lines[4] == "True"
    assert (tmp_path / "my-private-model" / "ringlet-model.json").is_file()
