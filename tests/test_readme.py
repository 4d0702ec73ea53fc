"""The README's Python example runs as written and saves what it says (the docs cannot silently rot)."""

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_python_api_example_runs_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    """The example as written, on the shipped models: the summary it returns is the result.json it wrote, the views
    are at the input's size, and the teaching stroke it names is called abnormal and found (Dice against the
    expert's outline), as it prints."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python API example"
    (tmp_path / "teaching_sets").symlink_to(README.parent / "teaching_sets")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block.group(1), str(README), "exec"), scope)
    summary = scope["summary"]
    out = tmp_path / "out" / "case05"
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(summary))
    shape = nib.load(tmp_path / "teaching_sets/default/case05_flair_stroke_image.nii.gz").shape[:2]
    for view in ("counterfactual.png", "anomaly.png", "overlay.png", "mask.png"):
        assert sorted(np.asarray(Image.open(out / view)).shape[:2]) == sorted(shape), view
    assert (out / "counterfactual.nii.gz").is_file()
    assert summary["verdict"]["label"] == "abnormal" and summary["dice"] > 0.5, summary
    assert capsys.readouterr().out.split() == ["abnormal", str(summary["dice"])]


def test_readme_names_the_two_commands_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -c constraints.txt -e ".[test]"' in text and 'pip install -q -c constraints.txt -e ".[test]"' in ci
    command = 'python -m pytest -q -m "not slow"'
    assert command in text and command in ci, "the README's test command is the one CI runs"
    assert 'python -m pytest -q -m slow' in ci, "CI runs the slow tests the README's command leaves out"
    assert ci.index(command) < ci.index("python -m pytest -q -m slow")


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
