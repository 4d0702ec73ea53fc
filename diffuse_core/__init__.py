"""Dif-fuse Studio engine: healthy counterfactuals and anomaly maps of brain slices (Fontanella et al., Dif-fuse).

Laid out by layer (see README, "Where things are"): ``core`` < ``models``, ``io`` < ``saliency``, ``data``,
``pipeline`` < ``train``, ``cases`` < ``evaluation`` < ``studio`` < ``ui`` < ``cli``. Only ``ui`` imports gradio; the
engine never prints. The CLI (``diffuse-studio``) and the app (``ui``, started by the top-level ``app.py``) are thin
layers over it.
"""

__version__ = "0.1.0"
