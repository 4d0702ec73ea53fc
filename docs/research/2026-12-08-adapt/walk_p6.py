import sys, numpy as np, torch
torch.set_num_threads(2)
from diffuse_core.data.slice_folder import load_slice_folder
from diffuse_core.run.card import mri_reference_for
from diffuse_core.run.models import load_default_models, RunModels, level_estimator_for
from diffuse_core.run.settings import settings_for
from diffuse_core.run.assembly import run_stack, slices_of
from diffuse_core.core.brain import brain_masks
from diffuse_core.core.metrics import dice
sal_dir = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None
den, sal = load_default_models("assets/ddpm", sal_dir, "cpu", True)
data = load_slice_folder("/tmp/brats_p6", size=128, healthy_only=False, mri_reference=mri_reference_for(den.card, "auto"))
keep = (data["labels"] == 0) | (data["masks"].reshape(len(data["masks"]), -1).mean(1) >= 0.01)
pick = []
for lab, n in ((0, 32), (1, 6)):
    idx = np.where(keep & (data["labels"] == lab))[0]
    pick += idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).astype(int)].tolist()
pick = np.array(sorted(set(pick)))
imgs, labels, masks = data["images"][pick], data["labels"][pick], data["masks"][pick]
out = dict(run_stack(slices_of(imgs, brain_masks(imgs)), RunModels(den, sal, "x", level=level_estimator_for(den.card, "cpu")), settings_for(den.card, seed=0), "acat"))
fl, dc, calls, mask_share = [], [], [], []
for i in range(len(imgs)):
    r = out[i].result; b = r.brain_mask.astype(bool); f = (r.anomaly > out[i].threshold) & b
    if labels[i] == 0:
        fl.append(f[b].mean()); mask_share.append(out[i].mask_share)
        v = out[i].verdict; calls.append(None if v is None else v.abnormal)
    else:
        dc.append(dice(f, masks[i].astype(bool) & b))
fl = np.array(fl)
called = [c for c in calls if c is not None]
print(f"normals {len(fl)}: flag mean {fl.mean():.3f} max {fl.max():.3f} >5% {(fl > .05).sum()} mask share {np.mean(mask_share):.3f}; called abnormal {sum(called)} of {len(called)}; tumour Dice {np.mean(dc):.3f} (n {len(dc)})")
