"""What the healthy DDPM knows at each noise level: the error of its x0 estimate by timestep.

For held-out healthy SynthBrain slices x0, noise them to x_t (eq. 5) at a few timesteps t, predict eps and form
x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t) (eq. 9, clipped to [-1, 1] as the samplers clip). Reported
per t: the mean absolute error of x0_hat in the background (outside the head, where every training slice is -1) and
inside the brain, and the error of the image's mean brightness. The naive bound is the same numbers for x0_hat = 0
(mid grey, what a network that cannot see the image at all and has learnt nothing about its brightness would give).

Where the errors grow (above t = 800 for the shipped model) is where samples from pure noise get their overall
brightness (the card's ``quality.samples_from_noise``; docs/real_scans.md section 7); Dif-fuse itself only inverts
to K <= 500.

    python benchmarks/bench_noise_levels.py [--model assets/ddpm] [--n 32] [--out levels.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffuse_core.evaluation.protocol import normalised_set, synthbrain_set
from diffuse_core.models.denoiser import load_denoiser

TIMESTEPS = (100, 300, 500, 700, 800, 900, 999)


@torch.no_grad()
def noise_level_errors(model: str, n: int = 32, seed: int = 0, timesteps=TIMESTEPS, batch_size: int = 16) -> dict:
    den = load_denoiser(model, device="cpu")
    data = synthbrain_set("test", n, healthy_fraction=1.0)
    data = normalised_set(data, den.card.get("input_normalisation", "absolute"))
    x0 = torch.from_numpy(data.images).float()
    brain = torch.from_numpy(data.brains).bool().unsqueeze(1)
    background = torch.from_numpy(data.images <= -0.98) & ~brain   # air around the head (-1 in every slice)
    abar = den.schedule.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen)
    rows = []
    for t in timesteps:
        a = abar[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        batches = x_t.split(batch_size)
        eps_hat = torch.cat([den.schedule.eps_from_output(b, den.unet(b, torch.full((len(b),), t)).sample.float(), int(t))
                             for b in batches])
        x0_hat = ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)
        err = (x0_hat - x0).abs()
        naive = x0.abs()
        rows.append({
            "t": int(t), "snr": float(a / (1 - a)),
            "background_error": float(err[background].mean()), "background_naive": float(naive[background].mean()),
            "brain_error": float(err[brain].mean()), "brain_naive": float(naive[brain].mean()),
            "mean_brightness_error": float((x0_hat.mean((1, 2, 3)) - x0.mean((1, 2, 3))).abs().mean()),
            "mean_brightness_naive": float(x0.mean((1, 2, 3)).abs().mean()),
            "background_predicted": float(x0_hat[background].mean()),
        })
    return {"model": str(model), "n_slices": n, "split": "test (healthy)", "seed": seed, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/ddpm")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    res = noise_level_errors(args.model, args.n, args.seed)
    res["seconds"] = round(time.time() - t0, 1)
    print(f"{'t':>5} {'SNR':>9} {'bg err':>7} {'(naive)':>7} {'bg x0^':>7} {'brain err':>9} {'(naive)':>7} "
          f"{'mean err':>8} {'(naive)':>7}")
    for r in res["rows"]:
        print(f"{r['t']:>5} {r['snr']:>9.2e} {r['background_error']:>7.3f} {r['background_naive']:>7.3f} "
              f"{r['background_predicted']:>7.3f} {r['brain_error']:>9.3f} {r['brain_naive']:>7.3f} "
              f"{r['mean_brightness_error']:>8.3f} {r['mean_brightness_naive']:>7.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
