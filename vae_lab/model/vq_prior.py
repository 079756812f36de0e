"""The VQ-VAE family, stage 2 (van den Oord et al. 2017, Sec. 3.2): a frozen stage-1 VQ-VAE and an autoregressive
prior p(z) over its code grid (a gated PixelCNN, nets.pixelcnn), class-conditional on labelled data.

The bound is stage 1's with the uniform prior replaced by the learned one: log p(x) >= log p(x|z*) + log p(z*),
so the rate is the prior's negative log-likelihood of the code grid, -sum_i log p(z*_i | z*_<i, y), and the ELBO
objective trains the prior alone (the distortion is a constant of the frozen stage 1). Its artifact holds both
stages (stage1.* and prior_net.* weights; config.json: stage 1's init args and the prior's).
"""

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms, check_temperature
from vae_lab.model.vqvae import EXACT, VQVAE
from vae_lab.nets.pixelcnn import GatedPixelCNN


class VQPrior(
    ModelFamily,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae_lab",
    tags=["vq-vae", "vae_lab", "pixelcnn-prior"],
    repo_url="https://github.com/vae-lab/vae_lab",
):
    """Stage 2 of a VQ-VAE: stage 1's init args (VQVAE's, except `conditional`) plus the prior's.

    Args:
        conditional: the prior sees the one-hot label (class-conditional samples).
        pixelcnn_channels: width of the PixelCNN.
        pixelcnn_layers: its gated layers.
        pixelcnn_kernel: its kernel size.
    """

    family = "vqvae_prior"
    flat_code = False
    aux_units = {"code_nll_per_position": "_nats"}

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
        pixelcnn_channels: int = 64,
        pixelcnn_layers: int = 8,
        pixelcnn_kernel: int = 5,
    ):
        super().__init__()
        if conditional and num_classes < 1:
            raise ConfigError("a class-conditional prior needs a labelled dataset (num_classes >= 1)")
        self.stage1 = VQVAE(in_shape, codebook_size, code_dim, quantizer, codebook, ema_decay, commitment,
                            dead_code_threshold, net, likelihood, likelihood_scale, likelihood_min_scale,
                            likelihood_components, likelihood_levels, False, num_classes)
        self.stage1.requires_grad_(False)
        self.stage1.eval()
        self.in_shape, self.grid, self.num_codes = self.stage1.in_shape, self.stage1.grid, self.stage1.num_codes
        self.conditional, self.num_classes = conditional, num_classes
        self.likelihood, self.likelihood_levels = self.stage1.likelihood, self.stage1.likelihood_levels
        self.prior_net = GatedPixelCNN(self.num_codes, pixelcnn_channels, pixelcnn_layers, pixelcnn_kernel,
                                       num_classes if conditional else 0)

    def train(self, mode: bool = True):
        """Stage 1 stays in eval mode (frozen: no codebook updates, no restarts) while the prior trains."""
        super().train(mode)
        self.stage1.eval()
        return self

    def latent_groups(self) -> tuple[LatentGroup, ...]:
        return (LatentGroup("codes", self.grid),)

    @property
    def rate_estimator(self) -> str:
        return EXACT

    def code_log_prob(self, codes: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(codes | y) = sum over positions of log p(z_i | z_<i, y): (B,), float32."""
        logits = self.prior_net(codes, self.condition(y, codes.shape[0])).float()  # (B, K, h, w)
        return -F.cross_entropy(logits, codes, reduction="none").flatten(1).sum(1)

    def terms(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, seed: int | None = None,
              with_log_q: bool = False) -> Terms:
        """Stage 1's code grid z* and p(x|z*) (no gradients), and rate = -log p_prior(z*): (B, 1)."""
        codes = self.stage1.encode_codes(x)  # (B, h, w)
        with torch.no_grad():
            p_x = self.stage1.decode(self.stage1.quantizer.embed(codes), lead=(1,))  # batch (1, B)
            log_px = p_x.log_prob(x).expand(num_samples, -1)  # (K, B)
        log_pz = self.code_log_prob(codes, y)  # (B,)
        log_q = log_p = None
        if with_log_q:  # q is a point mass at z*: log q = 0
            log_q, log_p = torch.zeros_like(log_px), log_pz.unsqueeze(0).expand(num_samples, -1)
        positions = math.prod(self.grid)
        return Terms(x=x, p_x=p_x, log_px_given_z=log_px, rate=-log_pz.unsqueeze(1), rate_estimator=EXACT,
                     reconstruction=lambda: p_x.mean[0], log_q=log_q, log_p=log_p,
                     aux_terms={"code_nll_per_position": -log_pz.detach() / positions})

    def _labels(self, n: int, y: Tensor | None, device) -> Tensor | None:
        """y, or for a conditional prior without labels the classes in turn (0, 1, ..., 0, 1, ...)."""
        if not self.conditional:
            return None
        return (torch.arange(n, device=device) % self.num_classes) if y is None else y.to(device)

    @torch.no_grad()
    def sample_codes(self, n: int, y: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """n code grids (n, h, w), position by position in raster order from softmax(logits / temperature)."""
        temperature = check_temperature(temperature)
        device = next(self.prior_net.parameters()).device
        c = self.condition(self._labels(n, y, device), n)
        codes = torch.zeros((n, *self.grid), dtype=torch.long, device=device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                logits = self.prior_net(codes, c)[:, :, i, j].float() / temperature  # (n, K)
                codes[:, i, j] = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
        return codes

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0, mean: bool = True) -> Tensor:
        """n images: code grids from the learned prior (logits / temperature), then the mean (or a sample) of
        stage 1's p(x|z). A conditional prior without y draws the classes in turn."""
        p_x = self.stage1.decode_codes(self.sample_codes(n, y, temperature))
        return p_x.mean if mean else p_x.sample()

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Stage 1's reconstruction of x: (B, C, H, W)."""
        return self.stage1(x)
