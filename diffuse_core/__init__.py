"""Dif-fuse Studio engine: healthy counterfactuals and anomaly maps of brain slices (Fontanella et al., Dif-fuse).

The engine never imports gradio and never prints; the CLI (`diffuse-studio`) and the app (`app.py`) are thin layers
over it.
"""

__version__ = "0.1.0"
