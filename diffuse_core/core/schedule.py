"""The DDPM noise schedule and its respacing (paper Sec. III-A, eqs. 1-5).

The forward process adds Gaussian noise with variances beta_t that grow linearly from 1e-4 to 0.02 over
T = 1000 steps (Ho et al. 2020, used unchanged by Dif-fuse, Sec. III-C). With alpha_t = 1 - beta_t and
alpha_bar_t = prod_{s<=t} alpha_s, a noised image is x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (eq. 5).

What the network predicts is part of the schedule's data (``prediction_type``, diffusers' name): ``epsilon`` (the
paper's, eq. 6) or ``v_prediction`` (Salimans & Ho 2022, "Progressive distillation", Sec. 4: the velocity
v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0, from which x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
without dividing by sqrt(alpha_bar), so the clean-image estimate stays accurate at high noise).

Timesteps are 0-based as in diffusers: index t in [0, T-1] is the (t+1)-th noising step. A *respaced* schedule is
an increasing subsequence of timesteps; samplers then jump between consecutive entries, so a run costs one network
call per entry instead of one per training step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ScheduleConfig:
    """The forward process, saved next to the weights (``schedule`` block of a model's config.json)."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"      # epsilon | v_prediction (what the UNet outputs)

    def to_dict(self) -> dict:
        return asdict(self)


PREDICTION_TYPES = ("epsilon", "v_prediction")


class NoiseSchedule:
    """Linear-beta DDPM schedule with the quantities the samplers need, in float64 for accuracy."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        if self.config.beta_schedule != "linear":
            raise ValueError(f"only the linear beta schedule of the paper is supported, got {self.config.beta_schedule!r}")
        if self.config.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                             f"got {self.config.prediction_type!r}")
        if self.config.num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be at least 1")
        # Linear betas as in Ho et al. (2020) and diffusers' DDPMScheduler ("linear"); computed in float32 then
        # promoted, so the values match diffusers' bit for bit.
        betas = torch.linspace(self.config.beta_start, self.config.beta_end, self.config.num_train_timesteps,
                               dtype=torch.float32)
        self.betas = betas.double()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t for a timestep index t in [0, T-1]; t = -1 stands for the clean image (alpha_bar = 1)."""
        if t < 0:
            return 1.0
        return float(self.alphas_cumprod[t])

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean images x0 to timesteps t in one jump (eq. 5)."""
        ab = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for x_t = q_sample(x0, t, noise): eps, or v = sqrt(ab) eps - sqrt(1 - ab) x0."""
        if self.prediction_type == "epsilon":
            return noise
        ab = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * noise - (1.0 - ab).sqrt() * x0

    def eps_from_output(self, x_t: torch.Tensor, output: torch.Tensor, t: int) -> torch.Tensor:
        """The network's output at integer timestep t as an epsilon prediction (the samplers' one currency):
        eps = sqrt(1 - ab) x_t + sqrt(ab) v for a v-prediction model, the output itself for an epsilon model."""
        if self.prediction_type == "epsilon":
            return output
        ab = self.alpha_bar(t)
        return (1.0 - ab) ** 0.5 * x_t + ab ** 0.5 * output

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at timesteps t (for min-SNR loss weighting)."""
        ab = self.alphas_cumprod.to(t.device)[t]
        return ab / (1.0 - ab)

    def respaced_timesteps(self, k: int, steps: int) -> list[int]:
        """An increasing list of ``steps`` timestep indices that ends at the noise level K.

        ``k`` counts noising steps as the paper does (K in [1, T]); its timestep index is K - 1. The list is evenly
        spaced over (0, K] like diffusers' "trailing" spacing, so the last entry is exactly K - 1 and the walk back
        from K reaches the clean image after ``steps`` network calls. With ``steps >= k`` every timestep is used.
        """
        validate_noise_level(k, steps, self.num_train_timesteps)
        steps = min(steps, k)
        # trailing spacing: K/steps * i - 1 for i = 1..steps, rounded
        ts = [int(round(k * (i + 1) / steps)) - 1 for i in range(steps)]
        return sorted(set(ts))

    def to_dict(self) -> dict:
        return self.config.to_dict()


def validate_noise_level(k: int, steps: int, num_train_timesteps: int) -> None:
    """Raise a ValueError naming the problem when K or the step count is out of range."""
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"K must be an integer number of noising steps, got {k!r}")
    if not 1 <= k <= num_train_timesteps:
        raise ValueError(f"K must lie in [1, {num_train_timesteps}] (the paper uses 500), got {k}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"the number of sampling steps must be an integer >= 1, got {steps!r}")
