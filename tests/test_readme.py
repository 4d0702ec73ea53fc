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
    assert 'pip install -c constraints.txt -e ".[test]"' in text and 'pip install -q -c constraints.txt -e ".[test]"' in ci
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci


def test_constraints_pin_every_dependency_the_project_names():
    """A fresh install gets the versions CI tested: constraints.txt pins each direct dependency (torch in pyproject)."""
    import tomllib

    root = README.parent
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~ \[]", d)[0].lower().replace("_", "-") for d in
             deps["dependencies"] + deps["optional-dependencies"]["test"]]
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (root / "constraints.txt").read_text().split()
              if "==" in line}
    assert "-c constraints.txt" in (root / "requirements.txt").read_text()
    missing = [n for n in names if n != "torch" and n not in pinned]
    assert not missing, f"constraints.txt does not pin {missing}: regenerate it (see its header)"
    assert [d for d in deps["dependencies"] if d.startswith("torch")] == ["torch==2.13.0"]
