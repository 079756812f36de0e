"""The VQ-VAE family, stage 1 (van den Oord et al. 2017): a deterministic encoder to a grid of code vectors, a
quantiser (vector quantisation with an EMA codebook, or FSQ), a decoder to p(x|z), and a uniform prior over the
K codes at each of the N grid positions. Stage 2 (a learned prior over the codes) is vae_lab.model.vq_prior.

The bound. q(z|x) is a point mass at the quantised code z*(x), so log q = 0 and for any prior
log p(x) = log sum_z p(x|z) p(z) >= log p(x|z*) + log p(z*): the ELBO, and the IWAE bound for every K (each
sample is the same z*). With the uniform prior, -log p(z*) = N ln K: the rate is that constant, 'exact'. Under a
normalised likelihood (a discretised one on 8-bit data, Bernoulli on binary data) the bound is an honest, loose,
log-likelihood in nats and bits/dim; with `gaussian` (fixed sigma, the paper's MSE) it is not (vae_lab.units says so).
"""

import math
from typing import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms, check_temperature
from vae_lab.nets.quantizer import CODEBOOKS, build_quantizer
from vae_lab.nets.vqvae import build_vq_nets, grid_shape

EXACT = "exact"  # rate_estimator: -log p(z*) of the one code the point-mass posterior puts mass on, no estimate


def code_statistics(codes: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """(perplexity exp(H(usage)), fraction of the K codes used) of the codes in a batch (any shape)."""
    counts = torch.bincount(codes.flatten(), minlength=num_codes).float()
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VQVAE(
    ModelFamily,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae_lab",
    tags=["vq-vae", "vae_lab", "vector-quantization"],
    repo_url="https://github.com/vae-lab/vae_lab",
):
    """Stage 1 of a VQ-VAE; its init args (all JSON-able) are its whole config.

    Args:
        in_shape: (C, H, W) of the images, values in [0, 1].
        codebook_size: K codes (both quantisers: FSQ's levels are K's factorisation, nets.quantizer.fsq_levels).
        code_dim: D of a vq code vector (FSQ: the number of its levels instead).
        quantizer: "vq" or "fsq" (Mentzer et al. 2023).
        codebook: how a vq codebook learns: "ema" (decay `ema_decay`) or "loss" (the codebook loss).
        commitment: beta of the commitment loss beta ||z_e - sg(e)||^2 (vq; summed over the grid per example).
        dead_code_threshold: restart a vq code whose moving average of assignments per batch is below this
            (nets.quantizer.VectorQuantizer); 0: never.
        net: channels (one stride-2 stage each), residual_blocks, residual_hidden (nets.vqvae.build_vq_nets).
        likelihood: p(x|z) as for the VAE (vae_lab.distributions.LIKELIHOODS), with its likelihood_* args.
        num_classes: labels of the data (unused by stage 1, whose prior is uniform; the stage-2 prior uses them).
    """

    family = "vqvae"
    flat_code = False
    aux_units = {"commitment": "", "perplexity": "", "codes_used": "", "dead_code_restarts": ""}

    def __init__(
        self,
        in_shape: Sequence[int],
        codebook_size: int = 512,
        code_dim: int = 64,
        quantizer: str = "vq",
        codebook: str = "ema",
        ema_decay: float = 0.99,
        commitment: float = 0.25,
        dead_code_threshold: float = 1.0,
        net: dict | None = None,
        likelihood: str = "discretized_logistic",
        likelihood_scale: float = 0.1,
        likelihood_min_scale: float = 1e-3,
        likelihood_components: int = 10,
        likelihood_levels: int | None = 256,
        conditional: bool = False,
        num_classes: int = 0,
    ):
        super().__init__()
        if conditional:
            raise ConfigError("model.conditional=true is invalid for model.family=vqvae: stage 1 has a uniform prior "
                              "and no label; the stage-2 prior (prior_of=<run>) is class-conditional on labelled data")
        if codebook_size < 2:
            raise ConfigError(f"model.codebook_size={codebook_size} is invalid: must be >= 2")
        if codebook not in CODEBOOKS:
            from vae_lab.errors import choices_error

            raise choices_error("model.codebook", codebook, CODEBOOKS)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.conditional, self.num_classes = False, num_classes
        self.set_likelihood(likelihood, likelihood_scale, likelihood_min_scale, likelihood_components,
                            likelihood_levels)
        self.quantizer = build_quantizer(quantizer, codebook_size, code_dim, codebook == "ema", ema_decay, commitment,
                                         dead_code_threshold)
        self.num_codes = self.quantizer.size  # K: exactly codebook_size
        net = dict(net or {})
        self.grid = grid_shape(self.in_shape, len(net.get("channels", (64, 128))))
        out_channels = self.likelihood.out_channels(self.in_shape[0], likelihood_components)
        self.encoder, self.decoder = build_vq_nets(self.in_shape, self.quantizer.dim, out_channels, **net)

    # --- the code grid -------------------------------------------------------------------------------------------
    def latent_groups(self) -> tuple[LatentGroup, ...]:
        return (LatentGroup("codes", self.grid),)

    @property
    def rate_estimator(self) -> str:
        return EXACT

    @property
    def uniform_rate(self) -> float:
        """-log p(z) of any code grid under the uniform prior: N ln K nats."""
        return math.prod(self.grid) * math.log(self.num_codes)

    def quantize(self, x: Tensor):
        """x (B, C, H, W) -> the quantiser's pass over the encoder's grid (nets.quantizer.Quantized)."""
        return self.quantizer(self.encoder(x))

    @torch.no_grad()
    def encode_codes(self, x: Tensor) -> Tensor:
        """The code grid of x: (B, h, w) long (no codebook update, whatever the mode)."""
        training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantize(x).codes
        finally:
            self.quantizer.train(training)

    def decode_codes(self, codes: Tensor):
        """p(x|z) at code grids (B, h, w): batch shape (B,)."""
        return self.decode(self.quantizer.embed(codes))

    def decode(self, z_q: Tensor, lead: tuple[int, ...] = ()):
        """p(x|z) at code vectors (B, D, h, w): batch shape (*lead, B) (lead: leading dims of size 1)."""
        raw = self.decoder(z_q)  # (B, P, H, W)
        return self.likelihood(raw.reshape(*lead, *raw.shape), **self.likelihood_kwargs)

    # --- the interface ---------------------------------------------------------------------------------------------
    def terms(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, seed: int | None = None,
              with_log_q: bool = False) -> Terms:
        """x -> z_e -> z* (nearest code; EMA codebook step and dead-code restarts when training) -> p(x|z*).

        The posterior is a point mass, so the K samples are K copies of z*: p_x has batch shape (1, B), log p(x|z)
        is expanded to (K, B), and every bound over them equals the ELBO. rate = N ln K (uniform prior).
        """
        q = self.quantize(x)
        p_x = self.decode(q.z_q, lead=(1,))  # batch (1, B): the K samples are one code
        log_px = p_x.log_prob(x).expand(num_samples, -1)  # (K, B); not the fused log_prob: it has no backward
        rate = torch.full((x.shape[0], 1), self.uniform_rate, device=x.device)
        log_q = log_p = None
        if with_log_q:
            log_q, log_p = torch.zeros_like(log_px), torch.full_like(log_px, -self.uniform_rate)
        return Terms(x=x, p_x=p_x, log_px_given_z=log_px, rate=rate, rate_estimator=EXACT,
                     reconstruction=lambda: p_x.mean[0], log_q=log_q, log_p=log_p, aux_loss=q.aux_loss.mean(),
                     aux_terms=self._aux_terms(q, x.shape[0]))

    def _aux_terms(self, q, batch: int) -> dict[str, Tensor]:
        """Per example (B,): the commitment term; the batch's perplexity, fraction of codes used and restarts
        repeated per example (their epoch means are means over batches)."""
        perplexity, used = code_statistics(q.codes, self.num_codes)
        full = lambda v: torch.full((batch,), float(v), device=q.codes.device)  # noqa: E731
        return {"commitment": q.commitment, "perplexity": perplexity.expand(batch), "codes_used": used.expand(batch),
                "dead_code_restarts": full(q.restarts)}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0, mean: bool = True) -> Tensor:
        """n images from stage 1's own prior, uniform over the K codes at each position (no picture of the data:
        that is stage 2's job). temperature is checked and has no effect on a uniform prior."""
        check_temperature(temperature)
        device = next(self.parameters()).device
        codes = torch.randint(self.num_codes, (n, *self.grid), device=device)
        p_x = self.decode_codes(codes)
        return p_x.mean if mean else p_x.sample()

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|z*) at x's code grid: (B, C, H, W). No codebook update."""
        return self.decode_codes(self.encode_codes(x)).mean

