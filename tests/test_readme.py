"""The README's Python example runs as written and saves what it says (the docs cannot silently rot)."""

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_python_api_example_runs_and_writes_its_outputs(tmp_path, monkeypatch):
    """The example as written: the files it names hold the run it made (the counterfactual, the region it was
    given, the settings it asked for), not just some bytes."""
    import numpy as np
    from PIL import Image

    from diffuse_core.io.export import to_uint8

    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python API example"
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block.group(1), str(README), "exec"), scope)
    result, mask, image = scope["result"], scope["mask"], scope["image"]
    out = tmp_path / "out" / "example"
    np.testing.assert_array_equal(np.asarray(Image.open(out / "counterfactual.png")), to_uint8(result.counterfactual[0]))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mask.png")), mask * 255)       # the region it was given
    assert np.asarray(Image.open(out / "anomaly.png")).shape == (64, 64, 3)
    summary = json.loads((out / "result.json").read_text())
    assert (summary["k"], summary["steps"], summary["seed"]) == (500, 20, 0)
    assert summary["network_calls"] == 2 * 20 and summary["seconds"] == round(result.seconds, 3)
    # outside the region the counterfactual is the input's own walk, inside it is redrawn: the change sits in m
    change = np.abs(result.counterfactual[0] - image[0])
    assert change[mask > 0].mean() > change[mask == 0].mean()


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
