"""Dev split (cases 1,2,3 calibrate; 6 measures): a map threshold chosen on normal slices. Not shipped."""
import json, numpy as np, torch
torch.set_num_threads(2)
from diffuse_core.data.slice_folder import load_slice_folder
from diffuse_core.run.card import mri_reference_for
from diffuse_core.run.models import load_default_models, RunModels, level_estimator_for
from diffuse_core.run.settings import settings_for
from diffuse_core.run.assembly import run_stack, slices_of
from diffuse_core.core.brain import brain_masks
den, sal = load_default_models("assets/ddpm", None, "cpu", True)
data = load_slice_folder("/tmp/brats_dev", size=128, healthy_only=False, mri_reference=mri_reference_for(den.card, "auto"))
keep = (data["labels"] == 0) | (data["masks"].reshape(len(data["masks"]), -1).mean(1) >= 0.01)
pick = []
for g in sorted(set(data["groups"])):
    for lab, n in ((0, 32 if "pat0006" in g else 16), (1, 6)):
        idx = np.where(keep & (data["groups"] == g) & (data["labels"] == lab))[0]
        pick += idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).astype(int)].tolist()
pick = np.array(sorted(set(pick)))
imgs, labels, masks, groups = data["images"][pick], data["labels"][pick], data["masks"][pick], data["groups"][pick]
print(len(imgs), "slices", (labels == 0).sum(), "normal", flush=True)
models = RunModels(den, sal, "base", level=level_estimator_for(den.card, "cpu"))
out = dict(run_stack(slices_of(imgs, brain_masks(imgs)), models, settings_for(den.card, seed=0), "acat",
                     progress=lambda d, t: print(d, t, flush=True)))
np.savez_compressed("runs/thr_dev.npz", anomaly=np.stack([out[i].result.anomaly for i in range(len(imgs))]),
                    brain=np.stack([out[i].result.brain_mask for i in range(len(imgs))]), labels=labels, masks=masks,
                    groups=groups, level=np.array([np.nan if out[i].level is None else out[i].level for i in range(len(imgs))]),
                    withheld=np.array([out[i].withheld is not None for i in range(len(imgs))]))
