"""Dev-split sweep of adapt's learning rate (cases 1,2,3,6 only; pat0006 held out). Not shipped."""
import json, sys, time
import torch
torch.set_num_threads(2)
from diffuse_core.evaluation.adapt import adapt
res = []
for lr in [float(x) for x in sys.argv[1:]]:
    t = time.time()
    rec = adapt("/tmp/brats_dev", f"runs/adapt_dev_lr{lr:g}", minutes=20, holdout=0.25, n_measure=24, lr=lr)
    rec["wall"] = time.time() - t
    res.append(rec)
    print(json.dumps({"lr": lr, "before": rec["false_flags_before"], "after": rec["false_flags_after"], "steps": rec["steps"], "wall": rec["wall"]}), flush=True)
    json.dump(res, open("runs/adapt_lr.json", "w"), indent=1)
