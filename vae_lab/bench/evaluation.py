"""The benchmark's evaluation sides: IWAE log p(x) by vae_lab's evaluation against a straightforward loop."""

import time

from vae_lab.bench.clock import now, peak_rss_mb, sync, weights_fingerprint
from vae_lab.bench.sides import autocast, build_model, matmul_tflops, no_lightning_globals, num_classes, raw_data


def iwae_loop(model, batches, num_samples: int, max_decoded: int) -> float:
    """A straightforward IWAE-k estimate of log p(x) (Burda et al. 2016, Eq. 8): mean over examples, nats.

    What a user writes from the paper: chunks of max_decoded images (samples x examples) through the decoder, the
    Distributions' log_prob, one logsumexp; under torch.no_grad (the caller's).
    """
    import math

    import torch

    estimates = []
    for x, _ in batches:
        per_chunk = max(1, max_decoded // len(x))  # samples per decoder pass, as vae_lab chunks them
        if not getattr(model, "flat_code", True):  # a family without one flat code: its own log weights, by chunks
            log_w = [model.log_weights(x, None, min(per_chunk, num_samples - start))[0]
                     for start in range(0, num_samples, per_chunk)]
            estimates.append(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))
            continue
        q_z, p_z = model.encode(x), model.prior()
        log_w = []
        for start in range(0, num_samples, per_chunk):
            z = q_z.sample((min(per_chunk, num_samples - start),))  # (S, B, D)
            log_w.append(model.decode(z).log_prob(x) + p_z.log_prob(z) - q_z.log_prob(z))  # (S, B)
        estimates.append(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))  # (B,)
    return float(torch.cat(estimates).mean())


def vae_lab_iwae(model, batches, num_samples: int, max_decoded: int) -> float:
    """vae_lab's evaluation (what scripts/evaluate.py runs): IWAE, ELBO terms, SSIM, active units ..."""
    from vae_lab.evaluation import evaluate

    device = batches[0][0].device
    return evaluate(model, batches, iwae_samples=num_samples, max_decoded=max_decoded, device=device)["iwae_nats"]


def _flops_per_image(model, x, y, num_samples: int, max_decoded: int) -> float:
    """Matmul and convolution FLOPs of IWAE-k for one image (torch's FLOP counter on the straightforward loop)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # With gradients on: the counter's module tracker hooks every input that requires a gradient, and under no_grad
    # it fails on a parameter handed straight to a module (the hierarchical top-down path's learned start). A
    # forward pass counts the same FLOPs either way.
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        iwae_loop(model, [(x[:1], y[:1])], num_samples, max_decoded)
    return float(counter.get_total_flops())


def _eval_side(spec: dict, estimate, name: str, count_flops: bool = False) -> dict:
    """Images/s of `estimate` on the first `num_images` test images, after an untimed warm-up on a few.

    count_flops: also the FLOPs per image and the large-matmul yardstick (untimed), for the share of the machine.
    """
    import torch

    from vae_lab.data.batches import to_unit

    raw = raw_data(spec)
    ev, device = spec["evaluation"], spec["device"]
    images = raw.test_x if raw.test_x is not None else raw.train_x
    x = to_unit(images[: ev["num_images"]].to(device), raw.levels)  # (N, C, H, W) in [0, 1], as training serves it
    y = torch.zeros(len(x), dtype=torch.int64, device=device)
    batches = [(x[i : i + ev["batch_size"]], y[i : i + ev["batch_size"]]) for i in range(0, len(x), ev["batch_size"])]
    model = build_model(spec, x.shape[1:], num_classes(raw)).eval()
    no_lightning_globals()
    with torch.no_grad(), autocast(device, spec["precision"]):
        estimate(model, batches[:1], 1, ev["max_decoded"])  # warm-up, untimed
        sync(device)
        wall, cpu = now()
        log_px = estimate(model, batches, ev["iwae_samples"], ev["max_decoded"])
        sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        extra = {}
        if count_flops:
            extra["flops_per_image"] = _flops_per_image(model, x, y, ev["iwae_samples"], ev["max_decoded"])
    if count_flops:
        extra["matmul_tflops"] = matmul_tflops(device, spec["precision"])
    return {
        "side": name,
        "images_per_s": len(x) / wall,
        "images_per_cpu_s": len(x) / cpu,
        "timed_s": wall,
        "iwae_nats": log_px,
        "peak_rss_mb": peak_rss_mb(),
        **weights_fingerprint(model),
        **extra,
    }


def side_eval_vae_lab(spec: dict) -> dict:
    return _eval_side(spec, vae_lab_iwae, "eval_vae_lab")


def side_eval_loop(spec: dict) -> dict:
    return _eval_side(spec, iwae_loop, "eval_loop", count_flops=True)
