"""The evaluation loop: ELBO terms, IWAE log p(x) over chunks of samples, reconstruction quality, active units."""

import math
from collections.abc import Iterable

import torch
from torchmetrics import MeanSquaredError

from vae_lab.distributions import posterior_code
from vae_lab.estimators import iwae_log_px
from vae_lab.metrics import ActiveUnits, KLPerDimension, ReconstructionQuality, bits_per_dim
from vae_lab.model import VAE, ModelFamily
from vae_lab.distributions.kl import ANALYTIC, is_diagonal_gaussian, rate_estimator, rate_per_dim
from vae_lab.units import Status, likelihood_status

# What `evaluate` returns (and scripts/evaluate.py writes to evaluation.json), besides the run's description;
# BITS_KEYS too when the bound is a normalised log-likelihood (`log_likelihood.normalised`).
RESULT_KEYS = (
    "num_examples", "iwae_samples", "num_dims", "latent_dim", "log_likelihood",
    "elbo_nats", "elbo_stderr_nats", "distortion_nats", "rate_nats",
    "iwae_nats", "iwae_stderr_nats",
    "ssim", "psnr_db", "mse",
    "active_units", "active_unit_threshold", "posterior_mean_variance", "kl_per_dim_nats", "rate_nats_per_group",
    "rate_estimator", "notes",
)  # fmt: skip
BITS_KEYS = ("elbo_bits_per_dim", "iwae_bits_per_dim")


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error std / sqrt(N) (0 for a single example)."""
    n = values.numel()
    stderr = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0
    return values.mean().item(), stderr


def _bounds(model, per_example: dict, status: Status | None, binary: bool, num_dims: int):
    """The per-example values joined, the ELBO's and IWAE's means and standard errors, what the bound is (status:
    given, else decided from the likelihood and whether every pixel seen was 0 or 1) and bits/dim where it is a
    normalised log-likelihood."""
    values = {name: torch.cat(parts) for name, parts in per_example.items()}
    elbo, iwae = _mean_and_stderr(values["elbo"]), _mean_and_stderr(values["iwae"])
    status = status or likelihood_status(model.likelihood.name, binary_data=binary, levels=model.likelihood_levels)
    bits = {}
    if status.normalised:
        bits = {f"{name}_bits_per_dim": float(bits_per_dim(torch.tensor(value[0]), num_dims, status.log_bin_width))
                for name, value in (("elbo", elbo), ("iwae", iwae))}
    return values, elbo, iwae, status, bits


@torch.no_grad()
def evaluate(
    model: ModelFamily,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    iwae_samples: int = 5000,
    max_decoded: int = 16384,
    max_examples: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
    status: Status | None = None,
    decoder_dtype: torch.dtype | None = None,
) -> dict:
    """Every evaluation number of `model` on `batches` of (x, y) in [0, 1]; keys in RESULT_KEYS (+ BITS_KEYS).

    Per example, K = iwae_samples draws z ~ q(z|x) give both the IWAE bound L_K (log p(x) estimate) and the
    reconstruction term of the ELBO; the rate is the analytic KL for two diagonal Gaussians, else its Monte Carlo
    estimate over the same K samples (`rate_estimator` says which). Reconstructions decode the posterior code
    (E_q[z]; for an IAF the flow of the base mean). KL per dimension needs a factorised rate and active units an
    analytic E_q[z]: where either is undefined it is omitted ([] / None) and `notes` says why.

    Args:
        max_decoded: at most this many images decoded per forward pass (samples x examples); the estimator also keeps
            a pass within its memory budget (vae_lab.estimators.MEMORY_BUDGET_MB).
        max_examples: stop after this many examples (the first ones of the split); None: all.
        total: examples expected, for the progress bar only.
        status: what the bound is (vae_lab.units.likelihood_status of the model's likelihood and the data); None:
            decided from the model's likelihood and whether every pixel seen was 0 or 1, taking the data as not
            dequantised (so a density is never claimed to bound 8-bit data unless the caller says so).
        decoder_dtype: torch.bfloat16 runs the IWAE decoder passes in bf16 on a GPU (opt-in; log-probs in float32).
    """
    model = model.to(device).eval()
    if not model.flat_code:
        return _evaluate_groups(model, batches, iwae_samples, max_decoded, max_examples, device, progress, total,
                                status, decoder_dtype)
    latent_dim = model.latent_dim
    p_z = model.prior()  # once: a VampPrior encodes its pseudo-inputs to build it
    quality, mse = ReconstructionQuality().to(device), MeanSquaredError().to(device)
    active, kl_dims = ActiveUnits(latent_dim).to(device), KLPerDimension(latent_dim).to(device)
    per_example: dict[str, list[torch.Tensor]] = {"elbo": [], "distortion": [], "rate": [], "iwae": []}
    num_dims, seen, binary = None, 0, True
    limit = max_examples if max_examples is not None else math.inf
    bar = _progress_bar(progress, min(total, limit) if total is not None else None)
    for x, y in batches:
        if seen >= limit:
            break
        keep = int(min(x.shape[0], limit - seen))
        x, y = x[:keep].to(device), y[:keep].to(device)
        y = model.labels(y)
        num_dims = x[0].numel()
        binary = binary and bool(((x == 0) | (x == 1)).all())

        q_z = model.encode(x, y)
        iwae = iwae_log_px(model, x, y, iwae_samples, q_z=q_z, max_decoded=max_decoded, decoder_dtype=decoder_dtype)
        estimator = rate_estimator(q_z, p_z)
        distortion = -iwae.mean_log_px_given_z()
        if estimator == ANALYTIC:
            rate_dims = rate_per_dim(q_z, p_z)  # (B, D)
            kl_dims.update(rate_dims)
            rate = rate_dims.double().sum(-1)
        else:  # (1/K) sum_k log q(z_k|x) - log p(z_k) = mean log p(x|z) - mean log w
            rate = iwae.mean_log_px_given_z() - iwae.mean_log_w()
        for name, value in (("elbo", -(distortion + rate)), ("distortion", distortion), ("rate", rate),
                            ("iwae", iwae.bound())):
            per_example[name].append(value.cpu())

        x_hat = model.decode(posterior_code(q_z), y).mean  # (B, C, H, W): reconstruction through the code
        quality.update(x_hat, x)
        mse.update(x_hat.float(), x.float())
        if is_diagonal_gaussian(q_z):
            active.update(q_z.mean)
        seen += keep
        bar.advance(keep)
    bar.close()
    if seen == 0:
        raise ValueError("no examples to evaluate")

    values, (elbo, elbo_se), (iwae_mean, iwae_se), status, bits = _bounds(model, per_example, status, binary,
                                                                            num_dims)
    notes, has_mean = [], is_diagonal_gaussian(q_z)
    if estimator != ANALYTIC:
        notes.append(f"rate_nats is Monte Carlo over the {iwae_samples} samples and kl_per_dim_nats is omitted: "
                     "KL(q || p) has no closed form per latent dimension with this prior/posterior")
    if not has_mean:
        notes.append("active_units is omitted: E_q[z] of this posterior has no closed form (Burda et al. 2016 "
                     "define active units by Cov_x(E_q[z_u]))")
    return {
        "num_examples": seen,
        "iwae_samples": iwae_samples,
        "num_dims": num_dims,
        "latent_dim": latent_dim,
        "log_likelihood": status.as_json(),
        "elbo_nats": elbo,
        "elbo_stderr_nats": elbo_se,
        "distortion_nats": values["distortion"].mean().item(),
        "rate_nats": values["rate"].mean().item(),
        "iwae_nats": iwae_mean,
        "iwae_stderr_nats": iwae_se,
        **bits,
        **quality.compute(),
        "mse": float(mse.compute()),
        "active_units": int(active.compute()) if has_mean else None,
        "active_unit_threshold": active.threshold,
        "posterior_mean_variance": active.variance().tolist() if has_mean else None,
        "kl_per_dim_nats": kl_dims.compute().tolist() if estimator == ANALYTIC else [],
        "rate_nats_per_group": {model.latent_groups()[0].name: values["rate"].mean().item()},
        "rate_estimator": estimator,
        "notes": notes,
    }


# Samples of the groups above that each group's analytic KL is averaged over (a family with latent groups).
GROUP_RATE_SAMPLES = 16


def _evaluate_groups(model, batches, iwae_samples, max_decoded, max_examples, device, progress, total, status,
                     decoder_dtype) -> dict:
    """`evaluate` for a family with latent groups: IWAE-k through its log_weights; the rate of each group its
    analytic KL(q(z_l|x, z_<l) || p(z_l|z_<l)) averaged over GROUP_RATE_SAMPLES seeded draws of the groups above."""
    quality, mse = ReconstructionQuality().to(device), MeanSquaredError().to(device)
    per_example: dict[str, list[torch.Tensor]] = {"elbo": [], "distortion": [], "rate": [], "iwae": []}
    group_sums, num_dims, seen, binary, estimator, codes = None, None, 0, True, ANALYTIC, None
    limit = max_examples if max_examples is not None else math.inf
    bar = _progress_bar(progress, min(total, limit) if total is not None else None)
    for x, y in batches:
        if seen >= limit:
            break
        keep = int(min(x.shape[0], limit - seen))
        x, y = x[:keep].to(device), y[:keep].to(device)
        y = model.labels(y)
        num_dims = x[0].numel()
        binary = binary and bool(((x == 0) | (x == 1)).all())
        iwae = iwae_log_px(model, x, y, iwae_samples, max_decoded=max_decoded, decoder_dtype=decoder_dtype)
        t = model.terms(x, y, GROUP_RATE_SAMPLES, seed=seen)
        estimator = t.rate_estimator
        rates = t.rate.double()  # (B, G)
        group_sums = rates.sum(0) if group_sums is None else group_sums + rates.sum(0)
        distortion, rate = -iwae.mean_log_px_given_z(), rates.sum(-1)
        for name, value in (("elbo", -(distortion + rate)), ("distortion", distortion), ("rate", rate),
                            ("iwae", iwae.bound())):
            per_example[name].append(value.cpu())
        x_hat = t.reconstruction()
        quality.update(x_hat, x)
        mse.update(x_hat.float(), x.float())
        codes = _code_counts(model, x, codes)
        seen += keep
        bar.advance(keep)
    bar.close()
    if seen == 0:
        raise ValueError("no examples to evaluate")
    values, (elbo, elbo_se), (iwae_mean, iwae_se), status, bits = _bounds(model, per_example, status, binary,
                                                                            num_dims)
    names = [g.name for g in model.latent_groups()]
    notes = [f"rate_nats per latent group ({len(names)}) is its {estimator} averaged over {GROUP_RATE_SAMPLES} "
             "samples of the groups above; active_units and kl_per_dim_nats are for one flat code"]
    return {
        "num_examples": seen,
        "iwae_samples": iwae_samples,
        "num_dims": num_dims,
        "latent_dim": model.latent_size,
        "log_likelihood": status.as_json(),
        "elbo_nats": elbo,
        "elbo_stderr_nats": elbo_se,
        "distortion_nats": values["distortion"].mean().item(),
        "rate_nats": values["rate"].mean().item(),
        "iwae_nats": iwae_mean,
        "iwae_stderr_nats": iwae_se,
        **bits,
        **quality.compute(),
        "mse": float(mse.compute()),
        "active_units": None,
        "active_unit_threshold": None,
        "posterior_mean_variance": None,
        "kl_per_dim_nats": [],
        "rate_nats_per_group": dict(zip(names, (group_sums / seen).tolist())),
        "rate_estimator": estimator,
        "notes": notes,
        **_code_usage(codes),
    }


def _code_counts(model, x: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor | None:
    """Running counts of each discrete code over the split (a family with a codebook: `encode_codes`), else None."""
    encode = getattr(model, "encode_codes", None) or getattr(getattr(model, "stage1", None), "encode_codes", None)
    if encode is None:
        return None
    num_codes = model.num_codes
    batch = torch.bincount(encode(x).flatten(), minlength=num_codes).cpu()
    return batch if counts is None else counts + batch


def _code_usage(counts: torch.Tensor | None) -> dict:
    """Codebook diagnostics over the whole split: perplexity exp(H(usage)), the fraction of codes used, the usage
    histogram (counts per code)."""
    if counts is None:
        return {}
    p = counts.double() / counts.sum()
    entropy = -(p * p.clamp(min=1e-300).log()).sum()
    return {"code_perplexity": float(entropy.exp()), "codes_used_fraction": float((counts > 0).double().mean()),
            "code_usage": counts.tolist()}


def disentanglement_report(model: VAE, datamodule, seed: int = 0, device: str | torch.device = "cpu",
                           **sizes) -> dict:
    """The disentanglement scores of `model` when the data has ground-truth factors, else why they are skipped."""
    grid = datamodule.factor_grid()
    if grid is None:
        return {"skipped": f"dataset {datamodule.hparams.name!r} has no ground-truth factors"}
    from vae_lab.disentanglement import disentanglement_scores

    return disentanglement_scores(model, grid, seed, device, **sizes)


def _sample_quality(cfg, model, datamodule, batches, device) -> dict:
    """vae_lab.fid.sample_quality on the first fid.num_examples of the split (cfg.fid, configs/evaluate.yaml)."""
    from vae_lab.feature_nets import feature_net
    from vae_lab.fid import sample_quality
    from vae_lab.pictures import first_examples

    features = feature_net(cfg.fid.features, datamodule, cfg.fid.cache_dir, cfg.fid.classifier_epochs, cfg.seed)
    real, labels = first_examples(batches, cfg.fid.num_examples, split=cfg.split)
    return sample_quality(model.to(device), real, labels, features, cfg.fid.k, cfg.seed)


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


from vae_lab.rules import DEVICES, EVAL_SPLITS  # noqa: E402 (the tools' shared choices)


def evaluate_model(cfg, data_overrides: list[str] = ()) -> tuple[dict, "Path"]:
    """scripts/evaluate.py: load `cfg.model`, rebuild its data (with `dataset.*` overrides), evaluate, write the JSON.

    Returns the report and where it was written (`cfg.out`, else next to the model, else the current directory).
    """
    import time
    from pathlib import Path

    from vae_lab.data.source_record import data_source
    from vae_lab.io import atomic_write_json
    from vae_lab.loading import datamodule_for, load_model
    from vae_lab.rules import Rule, check_rules
    from omegaconf import OmegaConf

    from vae_lab.units import likelihood_status

    started = time.time()
    check_rules(cfg, [
        Rule("split", "choice", choices=lambda: EVAL_SPLITS), Rule("iwae_samples", "int", lo=1),
        Rule("batch_size", "int", lo=1), Rule("max_decoded", "int", lo=1),
        Rule("max_examples", "int", lo=1, nullable=True), Rule("seed", "int", lo=0),
        Rule("data_seed", "int", lo=0, nullable=True), Rule("device", "choice", choices=lambda: DEVICES),
        Rule("progress", "bool"),
    ])
    fid_features = OmegaConf.select(cfg, "fid.features")
    if fid_features is not None:  # a missing weights file: one line before any work
        from vae_lab.feature_nets import CLASSIFIER_NAMES, check_weights_file

        check_rules(cfg, [Rule("fid.num_examples", "int", lo=4), Rule("fid.k", "int", lo=1),
                          Rule("fid.classifier_epochs", "int", lo=1)])
        if fid_features not in CLASSIFIER_NAMES:
            check_weights_file(fid_features)
    loaded = load_model(cfg.model)
    if cfg.out is not None:
        out = Path(cfg.out).expanduser()
        out = out / "evaluation.json" if out.is_dir() else out
    else:
        out = loaded.default_output("evaluation.json")  # inside the run/artifact dir, links resolved: before the work
    datamodule = datamodule_for(loaded, list(data_overrides), data_dir=cfg.paths.data_dir, seed=cfg.data_seed,
                                batch_size=cfg.batch_size)
    batches = datamodule.val_dataloader() if cfg.split == "val" else datamodule.test_dataloader()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    h = datamodule.hparams
    model_levels, data_levels = loaded.model.likelihood_levels, datamodule.spec.levels
    if loaded.model.likelihood.kind == "discrete" and model_levels != data_levels:
        from vae_lab.errors import DataError

        raise DataError(f"the model's {loaded.model.likelihood.name} bins {model_levels} grey levels but these data "
                        f"have {data_levels or 'continuous values'}: evaluate it on data of its own bit depth")
    status = likelihood_status(loaded.model.likelihood.name, binary_data=datamodule.spec.binary,
                               dequantize=h.dequantize, levels=datamodule.spec.levels)
    torch.manual_seed(cfg.seed)
    results = evaluate(loaded.model, batches, iwae_samples=cfg.iwae_samples, max_decoded=cfg.max_decoded,
                       max_examples=cfg.max_examples, device=device, progress=cfg.progress, total=batches.n,
                       status=status)
    report = {
        "model": str(cfg.model), "source": str(loaded.source), "split": cfg.split, "dataset": h.name,
        "binarize": h.binarize, "data_dir": h.data_dir, "data_seed": h.seed, "seed": cfg.seed, "device": device,
        "likelihood": loaded.model.likelihood.name, **results,
        "data_source": data_source(h.name, h.options, cfg.split, h.data_dir),  # which data these numbers are of
    }
    if getattr(datamodule.spec, "factor_names", None):  # ground-truth factors: the disentanglement scores too
        report["disentanglement"] = disentanglement_report(loaded.model, datamodule, cfg.seed, device)
    if fid_features is not None:
        report["sample_quality"] = _sample_quality(cfg, loaded.model, datamodule, batches, device)
    report["wall_time_s"] = round(time.time() - started, 2)
    atomic_write_json(out, report)
    return report, out
