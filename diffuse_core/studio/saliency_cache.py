"""Saliency maps of recent slices, kept: the mask's percentile slider answers at once (a preview before any run),
and a rerun of a slice skips ACAT (issue: teaching v2, item 3; issue: performance).

A saliency map depends only on the slice, the saliency method and the ACAT models, never on K, the steps, the seed or
the percentile, so a kept map is the one the method would compute again (tested). At most :data:`SIZE` maps (64 KB
each at 128²); an entry holds its models, so reloaded weights never meet another model's map.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

SIZE = 32


class SaliencyCache:
    def __init__(self, size: int = SIZE):
        self.size, self._lock, self._items = int(size), threading.Lock(), OrderedDict()
        self.hits = 0

    @staticmethod
    def key(image: np.ndarray, brain: np.ndarray, method: str) -> tuple:
        h = hashlib.sha256(np.ascontiguousarray(image, np.float32).tobytes())
        h.update(np.ascontiguousarray(brain, np.uint8).tobytes())
        return h.hexdigest(), tuple(np.shape(image)), str(method)

    def saliency(self, case, method: str, models) -> np.ndarray:
        """The ``method`` saliency map (R, R) float32 in [0, 1] of ``case`` (a CaseInput), inside its brain."""
        from diffuse_core.saliency.dispatch import compute_saliency

        key = self.key(case.image, case.brain_mask, method)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] is models:
                self._items.move_to_end(key)
                self.hits += 1
                return hit[1]
        saliency = np.asarray(compute_saliency(method, case.image, models, brain_mask=case.brain_mask), np.float32)
        saliency = saliency * case.brain_mask
        with self._lock:
            self._items[key] = (models, saliency)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return saliency

    def clear(self) -> None:
        """Forget every kept map (the next run of any slice computes its saliency again)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


SALIENCY_CACHE = SaliencyCache()


def mask_preview(lc, method: str, percentile: float, mask_rule: str | None = None,
                 model_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, saliency) of a library or uploaded case at ``percentile`` (the paper's rule) or by the model card's rule
    (``mask_rule`` "card", the default), as the run would make them; ``model_dir``: an adapted model's folder (its
    card and its own ACAT pair), else the installed model."""
    from diffuse_core.run.region import redrawn_region
    from diffuse_core.run.settings import mask_rule as rule_of
    from diffuse_core.run.settings import settings_for
    from diffuse_core.studio.model_store import MODELS, model_device
    from diffuse_core.studio.settings import DEFAULTS, check_percentile

    check_percentile(percentile)
    MODELS.require_acat()
    device = model_device()
    models = MODELS.saliency(device, lc.case.modality, model_dir)
    saliency = SALIENCY_CACHE.saliency(lc.case, method, models)
    card = MODELS.denoiser(device, lc.case.modality, model_dir).card
    settings = settings_for(card, k=DEFAULTS["k"], steps=DEFAULTS["steps"], percentile=percentile,
                            rule=mask_rule or DEFAULTS["mask_rule"])
    return redrawn_region(lc.case, saliency, rule_of(settings, card), models), saliency
