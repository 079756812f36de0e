"""The evaluation loop: ELBO terms, IWAE log p(x) over chunks of samples, reconstruction quality, active units."""

import math
from collections.abc import Iterable, Iterator

import torch
from torchmetrics import MeanSquaredError

from vae_lab.metrics import ActiveUnits, KLPerDimension, ReconstructionQuality, bits_per_dim
from vae_lab.model import VAE
from vae_lab.objectives.elbo import rate_per_dim
from vae_lab.objectives.iwae import log_weights

# What `evaluate` returns (and scripts/evaluate.py writes to evaluation.json), besides the run's description.
RESULT_KEYS = (
    "num_examples", "iwae_samples", "num_dims", "latent_dim",
    "elbo_nats", "elbo_stderr_nats", "distortion_nats", "rate_nats",
    "iwae_nats", "iwae_stderr_nats", "elbo_bits_per_dim", "iwae_bits_per_dim",
    "ssim", "psnr_db", "mse",
    "active_units", "active_unit_threshold", "posterior_mean_variance", "kl_per_dim_nats",
)  # fmt: skip


class ChunkedIWAE:
    """L_K = log (1/K) sum_k w_k and the Monte Carlo E_q[log p(x|z)], accumulated over chunks of the K samples.

    logsumexp is associative: log sum_k w_k = logaddexp over chunks of each chunk's logsumexp, so any chunking
    gives the same bound as one (K, B) tensor while memory stays that of one chunk. float64 accumulators.
    """

    def __init__(self):
        self.log_sum_w: torch.Tensor | None = None  # (B,)
        self.sum_log_px_given_z: torch.Tensor | None = None  # (B,)
        self.num_samples = 0

    def update(self, log_w: torch.Tensor, log_px_given_z: torch.Tensor) -> None:
        """log_w, log_px_given_z: (S, B) for S more samples."""
        lse = torch.logsumexp(log_w.double(), dim=0)  # (B,)
        total = log_px_given_z.double().sum(0)  # (B,)
        if self.log_sum_w is None:
            self.log_sum_w, self.sum_log_px_given_z = lse, total
        else:
            self.log_sum_w = torch.logaddexp(self.log_sum_w, lse)
            self.sum_log_px_given_z = self.sum_log_px_given_z + total
        self.num_samples += log_w.shape[0]

    def bound(self) -> torch.Tensor:
        """L_K per example (B,), Eq. 8 of Burda et al. 2016."""
        return self.log_sum_w - math.log(self.num_samples)

    def mean_log_px_given_z(self) -> torch.Tensor:
        """(1/K) sum_k log p(x|z_k): the reconstruction term of the ELBO, (B,)."""
        return self.sum_log_px_given_z / self.num_samples


def importance_chunks(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, q_z, num_samples: int, max_decoded: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(log w, log p(x|z)), each (S, B), for num_samples draws z ~ q(z|x) in chunks of <= max_decoded images."""
    p_z = model.prior()
    per_chunk = max(1, max_decoded // x.shape[0])
    for start in range(0, num_samples, per_chunk):
        z = q_z.sample((min(per_chunk, num_samples - start),))  # (S, B, D)
        log_px_given_z = model.decode(z, y).log_prob(x)  # (S, B)
        yield log_weights(q_z, p_z, z, log_px_given_z), log_px_given_z


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
) -> dict:
    """Every evaluation number of `model` on `batches` of (x, y) in [0, 1]; keys in RESULT_KEYS.

    Per example, K = iwae_samples draws z ~ q(z|x) give both the IWAE bound L_K (log p(x) estimate) and the
    reconstruction term of the ELBO; the rate is the analytic KL. Reconstructions decode the posterior mean.

    Args:
        max_decoded: images decoded per forward pass (samples x examples), which bounds memory.
        max_examples: stop after this many examples (the first ones of the split); None: all.
        total: examples expected, for the progress bar only.
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
        iwae = ChunkedIWAE()
        for log_w, log_px_given_z in importance_chunks(model, x, y, q_z, iwae_samples, max_decoded):
            iwae.update(log_w, log_px_given_z)
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


def disentanglement_report(model: VAE, datamodule, seed: int = 0, device: str | torch.device = "cpu",
                           **sizes) -> dict:
    """The disentanglement scores of `model` when the data has ground-truth factors, else why they are skipped."""
    grid = datamodule.factor_grid()
    if grid is None:
        return {"skipped": f"dataset {datamodule.hparams.name!r} has no ground-truth factors"}
    from vae_lab.disentanglement import disentanglement_scores

    return disentanglement_scores(model, grid, seed, device, **sizes)


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
