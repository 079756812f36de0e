"""The evaluation loop: ELBO terms, IWAE log p(x) over chunks of samples, reconstruction quality, active units."""

import math
from collections.abc import Iterable

import torch
from torchmetrics import MeanSquaredError

from vae_lab.estimators import iwae_log_px
from vae_lab.metrics import ActiveUnits, KLPerDimension, ReconstructionQuality, bits_per_dim
from vae_lab.model import VAE
from vae_lab.objectives.elbo import rate_per_dim

# What `evaluate` returns (and scripts/evaluate.py writes to evaluation.json), besides the run's description.
RESULT_KEYS = (
    "num_examples", "iwae_samples", "num_dims", "latent_dim",
    "elbo_nats", "elbo_stderr_nats", "distortion_nats", "rate_nats",
    "iwae_nats", "iwae_stderr_nats", "elbo_bits_per_dim", "iwae_bits_per_dim",
    "ssim", "psnr_db", "mse",
    "active_units", "active_unit_threshold", "posterior_mean_variance", "kl_per_dim_nats",
)  # fmt: skip


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error std / sqrt(N) (0 for a single example)."""
    n = values.numel()
    stderr = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0
    return values.mean().item(), stderr


@torch.no_grad()
def evaluate(
    model: VAE,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    iwae_samples: int = 5000,
    max_decoded: int = 16384,
    max_examples: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
    decoder_dtype: torch.dtype | None = None,
) -> dict:
    """Every evaluation number of `model` on `batches` of (x, y) in [0, 1]; keys in RESULT_KEYS.

    Per example, K = iwae_samples draws z ~ q(z|x) give both the IWAE bound L_K (log p(x) estimate) and the
    reconstruction term of the ELBO; the rate is the analytic KL. Reconstructions decode the posterior mean.

    Args:
        max_decoded: at most this many images decoded per forward pass (samples x examples); the estimator also keeps
            a pass within its memory budget (vae_lab.estimators.MEMORY_BUDGET_MB).
        max_examples: stop after this many examples (the first ones of the split); None: all.
        total: examples expected, for the progress bar only.
        decoder_dtype: torch.bfloat16 runs the IWAE decoder passes in bf16 on a GPU (opt-in; log-probs in float32).
    """
    model = model.to(device).eval()
    latent_dim = model.latent_dim
    p_z = model.prior()
    quality, mse = ReconstructionQuality(model.in_shape).to(device), MeanSquaredError().to(device)
    active, kl_dims = ActiveUnits(latent_dim).to(device), KLPerDimension(latent_dim).to(device)
    per_example: dict[str, list[torch.Tensor]] = {"elbo": [], "distortion": [], "rate": [], "iwae": []}
    num_dims, seen = None, 0
    limit = max_examples if max_examples is not None else math.inf
    bar = _progress_bar(progress, min(total, limit) if total is not None else None)
    for x, y in batches:
        if seen >= limit:
            break
        keep = int(min(x.shape[0], limit - seen))
        x, y = x[:keep].to(device), y[:keep].to(device)
        y = y if model.conditional else None
        num_dims = x[0].numel()

        q_z = model.encode(x, y)
        iwae = iwae_log_px(model, x, y, iwae_samples, q_z=q_z, max_decoded=max_decoded, decoder_dtype=decoder_dtype)
        rate_dims = rate_per_dim(q_z, p_z)  # (B, D), analytic
        distortion = -iwae.mean_log_px_given_z()
        rate = rate_dims.double().sum(-1)
        for name, value in (("elbo", -(distortion + rate)), ("distortion", distortion), ("rate", rate),
                            ("iwae", iwae.bound())):
            per_example[name].append(value.cpu())

        x_hat = model.decode(q_z.mean, y).mean  # (B, C, H, W): reconstruction through the posterior mean
        quality.update(x_hat, x)
        mse.update(x_hat.float(), x.float())
        active.update(q_z.mean)
        kl_dims.update(rate_dims)
        seen += keep
        bar.advance(keep)
    bar.close()
    if seen == 0:
        raise ValueError("no examples to evaluate")

    values = {name: torch.cat(parts) for name, parts in per_example.items()}
    elbo, elbo_se = _mean_and_stderr(values["elbo"])
    iwae_mean, iwae_se = _mean_and_stderr(values["iwae"])
    discrete = model.likelihood.discrete_targets
    return {
        "num_examples": seen,
        "iwae_samples": iwae_samples,
        "num_dims": num_dims,
        "latent_dim": latent_dim,
        "elbo_nats": elbo,
        "elbo_stderr_nats": elbo_se,
        "distortion_nats": values["distortion"].mean().item(),
        "rate_nats": values["rate"].mean().item(),
        "iwae_nats": iwae_mean,
        "iwae_stderr_nats": iwae_se,
        "elbo_bits_per_dim": float(bits_per_dim(torch.tensor(elbo), num_dims, discrete)),
        "iwae_bits_per_dim": float(bits_per_dim(torch.tensor(iwae_mean), num_dims, discrete)),
        **quality.compute(),
        "mse": float(mse.compute()),
        "active_units": int(active.compute()),
        "active_unit_threshold": active.threshold,
        "posterior_mean_variance": active.variance().tolist(),
        "kl_per_dim_nats": kl_dims.compute().tolist(),
    }


class _NoBar:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    """A rich progress bar over examples, on stderr."""

    def __init__(self, total: int | None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True))
        self.progress.start()
        self.task = self.progress.add_task("evaluate", total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        self.progress.stop()


def _progress_bar(enabled: bool, total: int | None):
    return _RichBar(total) if enabled else _NoBar()
