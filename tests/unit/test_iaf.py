"""The IAF posterior (Kingma et al. 2016): log q by the change of variables (autograd Jacobian), the identity at
zero-initialised outputs, invertibility, and MADE's autoregressive masks."""

import copy
import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal

from vae_lab.distributions.iaf import IAFDistribution, IAFPosterior
from vae_lab.distributions.posterior import posterior_code, reparameterise, sample_with_seed
from vae_lab.nets.made import MADE

D, C = 3, 4


def random_flow(num_steps: int, seed: int = 0, zero_outputs: bool = False) -> tuple[IAFDistribution, torch.Tensor]:
    """An IAF posterior for one example (float64) with random weights, and its context."""
    torch.manual_seed(seed)
    posterior = IAFPosterior(D, min_scale=1e-4, num_steps=num_steps, hidden_dim=8, hidden_layers=2, context_dim=C)
    with torch.no_grad():
        for name, p in posterior.named_parameters():
            if not (zero_outputs and ".out." in name):
                p.copy_(0.5 * torch.randn(p.shape))
    posterior = posterior.double()
    params = torch.randn(1, 2 * D + C, dtype=torch.float64)
    q = posterior(params)
    base = Independent(Normal(q.base.base_dist.loc.double(), q.base.base_dist.scale.double()), 1)
    return IAFDistribution(base, posterior.steps, params[:, 2 * D:]), params


@pytest.mark.parametrize("num_steps", [1, 2, 3, 5])
def test_log_q_equals_the_change_of_variables_with_the_autograd_jacobian(num_steps):
    q, _ = random_flow(num_steps, seed=num_steps)
    for trial in range(3):
        eps = torch.randn(1, D, dtype=torch.float64)
        z = q.from_noise(eps)
        log_q = q.log_prob(z)  # the cached value of from_noise

        def flow(e):  # eps (D,) -> z_T (D,)
            return q.from_noise(e[None])[0]

        J = jacobian(flow, eps[0])  # (D, D)
        # q(z_T) = N(eps; 0, I) / |det dz_T/d eps| (the base's sigma is part of the map eps -> z_T)
        expected = Normal(0.0, 1.0).log_prob(eps).sum() - torch.linalg.slogdet(J).logabsdet
        torch.testing.assert_close(log_q, expected.reshape(1), atol=1e-10, rtol=0)
        # the flow is autoregressive: dz_T/d eps is triangular up to the (reversed) orders, so det = prod diag
        assert J.det().abs() > 0


def test_zero_initialised_outputs_make_the_flow_the_identity():
    q, _ = random_flow(4, zero_outputs=True)
    eps = torch.randn(5, 1, D, dtype=torch.float64)
    z0 = q.base.base_dist.loc + q.base.base_dist.scale * eps
    assert torch.equal(q.from_noise(eps), z0)
    torch.testing.assert_close(q.log_prob(q.from_noise(eps)), q.base.log_prob(z0), atol=1e-12, rtol=0)
    # a fresh IAFPosterior starts as the identity too: its MADE outputs are zero-initialised
    fresh = IAFPosterior(D, min_scale=1e-4, num_steps=2, hidden_dim=8, hidden_layers=1, context_dim=C)
    params = torch.randn(2, 2 * D + C)
    e = torch.randn(2, D)
    torch.testing.assert_close(reparameterise(fresh(params), e), reparameterise(fresh.base(params), e))


def test_the_flow_is_invertible_and_log_prob_at_any_z_matches_the_cached_value():
    q, _ = random_flow(3, seed=11)
    eps = torch.randn(4, 1, D, dtype=torch.float64)
    z = q.from_noise(eps)
    cached = q.log_prob(z)
    torch.testing.assert_close(q.inverse(z), q.base.base_dist.loc + q.base.base_dist.scale * eps, atol=1e-10, rtol=0)
    torch.testing.assert_close(q.log_prob(z.clone()), cached, atol=1e-10, rtol=0)  # a new tensor: inverted


def test_log_q_integrates_to_one_in_one_dimension():
    posterior = IAFPosterior(1, min_scale=1e-4, num_steps=2, hidden_dim=5, hidden_layers=1, context_dim=2)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in posterior.parameters():
            p.copy_(0.7 * torch.randn(p.shape))
    q = posterior(torch.randn(1, 4))
    grid = torch.linspace(-12, 12, 20001).reshape(-1, 1, 1)  # (N, B=1, D=1)
    density = q.log_prob(grid).exp().squeeze()
    assert abs(torch.trapezoid(density, grid.squeeze()).item() - 1) < 1e-3


def test_made_outputs_depend_only_on_earlier_dimensions_of_its_order():
    torch.manual_seed(0)
    order = [2, 0, 1]  # dimension 1 is first, then 2, then 0
    made = MADE(3, 7, 2, 0, order).double()
    with torch.no_grad():
        for p in made.parameters():
            p.copy_(torch.randn(p.shape))
    J = jacobian(lambda z: made(z[None])[0], torch.randn(3, dtype=torch.float64))  # (2D, D)
    for i in range(3):
        for j in range(3):
            allowed = order[j] < order[i]
            for half in (0, 3):  # m and s
                assert (J[half + i, j] != 0) == allowed, (i, j)


def test_evaluation_noise_and_codes_use_the_flow():
    posterior = IAFPosterior(D, min_scale=1e-4, num_steps=2, hidden_dim=8, hidden_layers=1, context_dim=C)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in posterior.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
    q = posterior(torch.randn(5, 2 * D + C))
    a, b = sample_with_seed(q, 3, seed=9), sample_with_seed(q, 3, seed=9)
    assert torch.equal(a, b) and a.shape == (3, 5, D)
    assert q.log_prob(b).shape == (3, 5)
    code = posterior_code(q)
    torch.testing.assert_close(code, q.from_noise(torch.zeros(5, D)))
    assert not torch.allclose(code, q.base.base_dist.loc)
    assert math.isfinite(q.log_prob(code).sum().item())



def test_log_q_at_a_z_not_drawn_is_never_nan_and_matches_the_change_of_variables():
    """Issue 30: float32 log q(z) at z the flow did not draw, with random weights of std 0.5 (some gates saturate),
    against log N(z_0) - log|det dz/dz_0| (autograd Jacobian, float64) at the float64 inverse z_0, checked to map
    back onto z; where z_0 lies beyond 1e6 (or float range), log q must be astronomically small, never NaN."""
    compared = far = 0
    for seed in range(4):
        torch.manual_seed(seed)
        posterior = IAFPosterior(D, min_scale=1e-4, num_steps=3, hidden_dim=8, hidden_layers=2, context_dim=C)
        with torch.no_grad():
            for p in posterior.parameters():
                p.copy_(0.5 * torch.randn(p.shape))
        params = torch.randn(1, 2 * D + C)
        z = 3 * torch.randn(40, 1, D)  # (N, B=1, D)
        q = posterior(params)
        log_q = q.log_prob(z).squeeze(-1)  # float32 (N,)
        assert not torch.isnan(log_q).any()
        loc, scale = q.base.base_dist.loc.detach().double(), q.base.base_dist.scale.detach().double()
        base = Independent(Normal(loc, scale), 1)
        q64 = IAFDistribution(base, copy.deepcopy(posterior.steps).double(), params[:, 2 * D:].double())
        with torch.no_grad():
            z0 = q64.inverse(z.double())
        for zi, z0i, got in zip(z, z0, log_q.tolist()):
            if not torch.isfinite(z0i).all() or z0i.abs().max() > 1e6:  # log N(z_0) < -5e11
                assert got < -1e10, (seed, zi, got)
                far += 1
                continue
            eps = (z0i - loc) / scale
            torch.testing.assert_close(q64.from_noise(eps), zi.double(), rtol=1e-6, atol=1e-6)
            J = jacobian(lambda x: q64.from_noise((x[None] - loc) / scale)[0], z0i[0])
            expected = base.log_prob(z0i).item() - torch.linalg.slogdet(J).logabsdet.item()
            if abs(expected) < 1e4:
                assert got == pytest.approx(expected, rel=1e-3, abs=1e-2), (seed, zi, got, expected)
                compared += 1
    assert compared > 60 and far > 5, (compared, far)
