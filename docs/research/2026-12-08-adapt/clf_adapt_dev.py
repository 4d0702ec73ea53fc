"""Dev split: the ACAT classifier adapted on real normal slices (cases 1-3) + SynthBrain lesions pasted into them.
Diagnostic on pat0006 (held out). Not shipped."""
import json, sys, numpy as np, torch
torch.set_num_threads(2)
from diffuse_core.data.slice_folder import load_slice_folder
from diffuse_core.data.synthbrain import generate_slice, sample_seed
from diffuse_core.train.data import normalise_slices, synthbrain_pool, as_arrays
from diffuse_core.train.saliency import train_classifier
from diffuse_core.run.card import mri_reference_for
from diffuse_core.models.denoiser import load_denoiser
from diffuse_core.models.checkpoint import load_classifier
from diffuse_core.core.brain import brain_masks

steps, lr = int(sys.argv[1]), float(sys.argv[2])
card = json.load(open("assets/ddpm/model_card.json"))
ref = mri_reference_for(card, "auto")
dev = load_slice_folder("/tmp/brats_dev", size=128, healthy_only=False, mri_reference=ref)
is6 = np.array(["pat0006" in g for g in dev["groups"]])
train_normals = dev["images"][(dev["labels"] == 0) & ~is6]
brains = brain_masks(train_normals)
rng = np.random.default_rng(0)
pos, i, tries = [], 0, 0
while len(pos) < 4 * len(train_normals) and tries < 20000:
    tries += 1
    seed = sample_seed("train", 7, tries)
    d = generate_slice(seed, ("flair",), 128, healthy=False)
    if d.lesion_mask.mean() < 0.004:
        continue
    h = generate_slice(seed, ("flair",), 128, healthy=True, lesion_type=d.lesion_type)
    t = normalise_slices(np.stack([d.image, h.image]).astype(np.float32), "tissue")
    diff = t[0] - t[1]
    j = int(rng.integers(len(train_normals)))
    m = d.lesion_mask > 0
    if (m & brains[j]).sum() < 0.8 * m.sum():
        continue
    pos.append(np.clip(train_normals[j] + diff * brains[j], -1, 1))
pos = np.stack(pos).astype(np.float32)
print("pasted", len(pos), "from", tries, "tries; real normals", len(train_normals), flush=True)
syn = as_arrays(synthbrain_pool(2000, "train", 0, 128, ("flair",), healthy=None))
syn_imgs = normalise_slices(syn["images"].astype(np.float32), "tissue").astype(np.float32)
images = np.concatenate([train_normals, pos, syn_imgs])
labels = np.concatenate([np.zeros(len(train_normals)), np.ones(len(pos)), (syn["labels"] > 0)]).astype(np.int64)
# real normals are few: repeat them so a balanced batch's healthy half is half real
reps = max(1, int((syn["labels"] == 0).sum() // len(train_normals)))
images = np.concatenate([images] + [train_normals] * (reps - 1))
labels = np.concatenate([labels, np.zeros(len(train_normals) * (reps - 1), np.int64)])
Image = None
np.save("runs/clf_adapt_pos_example.npy", pos[:8])
out = train_classifier(f"runs/clf_adapt_dev_{steps}", steps=steps, lr=lr, data={"images": images, "labels": labels, "source": "dev"},
                       init_from="assets/classifier", resume=False, progress=False, checkpoint_every=10**9)
for name, folder in (("base", "assets/classifier"), ("adapted", out)):
    clf = load_classifier(folder)
    def p(x):
        with torch.no_grad():
            return torch.softmax(clf(torch.as_tensor(x)).float(), 1)[:, 1].numpy()
    p6n = p(dev["images"][(dev["labels"] == 0) & is6])
    m6 = (dev["labels"] == 1) & is6 & (dev["masks"].reshape(len(dev["masks"]), -1).mean(1) >= 0.01)
    p6t = p(dev["images"][m6])
    ps = p(normalise_slices(as_arrays(synthbrain_pool(200, "val", 0, 128, ("flair",), healthy=None))["images"].astype(np.float32), "tissue"))
    sv = as_arrays(synthbrain_pool(200, "val", 0, 128, ("flair",), healthy=None))["labels"] > 0
    print(f"{name}: pat6 normals P>0.5 {np.mean(p6n > .5):.2f} mean {p6n.mean():.3f} | pat6 tumour P>0.5 {np.mean(p6t > .5):.2f} mean {p6t.mean():.3f} (n {len(p6t)}) | synth val healthy mean {ps[~sv].mean():.3f} diseased mean {ps[sv].mean():.3f}", flush=True)
