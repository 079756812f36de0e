"""The VQ-VAE families' init args as rules (config.json schema and model.* checks). Stage 2's set-up from
`prior_of=` is vae_lab/vq_stage2.py."""

from vae_lab.rules import Rule


def _likelihoods():
    from vae_lab.distributions import LIKELIHOODS

    return LIKELIHOODS


def _quantizers():
    from vae_lab.nets.quantizer import QUANTIZERS

    return QUANTIZERS


def _codebooks():
    from vae_lab.nets.quantizer import CODEBOOKS

    return CODEBOOKS


VQVAE_RULES = (
    Rule("codebook_size", "int", lo=2),
    Rule("code_dim", "int", lo=1),
    Rule("quantizer", "choice", choices=_quantizers),
    Rule("codebook", "choice", choices=_codebooks),
    Rule("ema_decay", "float", lo=0, hi=1, lo_open=True, hi_open=True),
    Rule("commitment", "float", lo=0),
    Rule("dead_code_threshold", "float", lo=0),
    Rule("likelihood", "choice", choices=_likelihoods),
    Rule("likelihood_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_min_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_components", "int", lo=1),
    Rule("likelihood_levels", "int", lo=2, hi=65536, nullable=True),
    Rule("conditional", "bool"),
)
PIXELCNN_RULES = (
    Rule("pixelcnn_channels", "int", lo=1),
    Rule("pixelcnn_layers", "int", lo=1),
    Rule("pixelcnn_kernel", "int", lo=1),
)
VQPRIOR_RULES = VQVAE_RULES + PIXELCNN_RULES
