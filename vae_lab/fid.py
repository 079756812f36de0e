"""Sample quality in a feature space: the Frechet distance (FID, Heusel et al. 2017) and improved precision /
recall (Kynkaanniemi et al. 2019), of samples and of reconstructions against real images."""

import torch
from torch import Tensor


def moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) between two Gaussians (Dowson & Landau 1982).

    Tr (C1 C2)^(1/2) = sum of the square roots of the eigenvalues of C1^(1/2) C2 C1^(1/2), which is symmetric
    positive semi-definite, so eigvalsh applies (no complex sqrtm); tiny negative eigenvalues are rounding.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    w, v = torch.linalg.eigh(cov1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T  # C1^(1/2)
    middle = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * middle
    return float(value.clamp(min=0))


def fid(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets (N, F) and (M, F)."""
    return frechet_distance(*moments(real), *moments(fake))


def _knn_radii(f: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in its own set (itself excluded): (N,)."""
    out = []
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i:i + chunk], f)  # (c, N)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def _covered(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """Whether each point lies in at least one ball (centre, radius): (N,) bool."""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i:i + chunk], centres)  # (c, M)
        out.append((d <= radii.unsqueeze(0)).any(1))
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, Eq. 1-2): the share of fake points inside the
    real manifold (union of balls reaching each real point's k-th neighbour), and of real points inside the fake one."""
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points in each set")
    precision = _covered(fake, real, _knn_radii(real, k)).double().mean()
    recall = _covered(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


def sample_quality(model, real: Tensor, labels: Tensor | None, features, k: int = 3, seed: int = 0,
                   batch_size: int = 500) -> dict:
    """FID and precision/recall of `len(real)` samples (mean of p(x|z), z ~ p(z); a conditional model draws the
    real images' labels) and of the reconstructions of `real` (N, C, H, W), in the feature space of `features`."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        samples, recons = [], []
        with torch.no_grad():
            for i in range(0, len(real), batch_size):
                x = real[i:i + batch_size].to(device)
                y = model.labels(None if labels is None else labels[i:i + batch_size].to(device))
                samples.append(model.sample(len(x), y).clamp(0, 1).cpu())
                recons.append(model.reconstruct(x, y).clamp(0, 1).cpu())
    f_real = features.features(real)
    f_samples, f_recons = features.features(torch.cat(samples)), features.features(torch.cat(recons))
    p, r = precision_recall(f_real, f_samples, k)
    rp, rr = precision_recall(f_real, f_recons, k)
    return {"features": features.description, "num_examples": len(real), "k": k,
            "fid_samples": fid(f_real, f_samples), "fid_reconstructions": fid(f_real, f_recons),
            "precision_samples": p, "recall_samples": r,
            "precision_reconstructions": rp, "recall_reconstructions": rr,
            "fid_real_halves": fid(f_real[0::2], f_real[1::2]),
            "note": "samples and reconstructions are the mean of p(x|z); fid_real_halves (even vs odd real examples) "
                    "is the floor at this sample size"}
