"""Dif-fuse Studio as a Hugging Face Space (README front matter: ``app_file: app.py``), or locally:
``python app.py [--host H] [--port P]`` (the same as ``diffuse-studio app``), then open http://127.0.0.1:7860.

The page lives in :mod:`diffuse_core.ui`, the services behind it in :mod:`diffuse_core.studio` (settings and
environment variables there). On ZeroGPU hardware the model work runs under ``spaces.GPU`` when that package is
present.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # runnable from a clone without installing the package
    sys.path.insert(0, str(ROOT))

from diffuse_core.ui.launch import get_demo, launch, main  # noqa: E402

demo = get_demo()   # module level, as a Space and `gradio app.py` (reload mode) expect

__all__ = ["demo", "launch", "main"]

if __name__ == "__main__":
    sys.exit(main())
