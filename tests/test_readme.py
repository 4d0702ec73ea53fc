"""The README's Python example runs as written and saves what it says (the docs cannot silently rot)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_api_example_runs_and_writes_its_outputs(tmp_path, monkeypatch):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python API example"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), str(README), "exec"), {})
    out = tmp_path / "out" / "example"
    for name in ("counterfactual.png", "mask.png", "anomaly.png", "result.json"):
        assert (out / name).stat().st_size > 0, name


def test_readme_names_the_two_commands_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in text and 'pip install -q -e ".[test]"' in ci
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci
