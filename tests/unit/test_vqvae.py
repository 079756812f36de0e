"""VQ-VAE maths against hand computations: the quantisers, the uniform-prior bound, the learned prior's code NLL and
its causality, save -> load."""

import math

import pytest
import torch

from vae_lab.errors import ConfigError
from vae_lab.metrics import bits_per_dim
from vae_lab.model.vq_prior import VQPrior
from vae_lab.model.vqvae import VQVAE, code_statistics
from vae_lab.nets.pixelcnn import GatedPixelCNN
from vae_lab.nets.quantizer import FiniteScalarQuantizer, VectorQuantizer, fsq_levels
from vae_lab.objectives import build_objective

SMALL = {"channels": [8, 16], "residual_blocks": 1, "residual_hidden": 8}  # 8x8 images -> a 2x2 grid


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    torch.manual_seed(0)


def test_nearest_code_is_the_brute_force_argmin():
    vq = VectorQuantizer(7, 3).eval()
    vq.codebook.copy_(torch.randn(7, 3))
    z = torch.randn(2, 3, 4, 5)
    codes = vq(z).codes  # (2, 4, 5)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                d = [float(((z[b, :, i, j] - vq.codebook[k]) ** 2).sum()) for k in range(7)]
                assert codes[b, i, j] == min(range(7), key=d.__getitem__)
    assert torch.allclose(vq(z).z_q, vq.embed(codes), atol=1e-6)  # the forward value: the code vector (z + (e - z))


def test_straight_through_gradient_reaches_the_encoder():
    model = VQVAE([1, 8, 8], codebook_size=4, code_dim=3, net=SMALL, likelihood="bernoulli").train()
    x = (torch.rand(5, 1, 8, 8) > 0.5).float()
    t = model.terms(x)
    t.distortion.mean().backward()  # the distortion alone: only the straight-through path leads to the encoder
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    # and dz_q/dz_e is the identity
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    (model.quantizer(z).z_q * torch.arange(12.0).view(1, 3, 2, 2)).sum().backward()
    assert torch.equal(z.grad, torch.arange(12.0).view(1, 3, 2, 2))


def test_ema_update_equals_a_hand_computation():
    gamma, eps = 0.9, 1e-5
    vq = VectorQuantizer(3, 2, decay=gamma, dead_threshold=0.0, eps=eps).train()
    e0 = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    vq.codebook.copy_(e0)
    vq.ema_sum.copy_(e0)
    vq.usage.copy_(torch.tensor([1.0, 2.0, 3.0]))
    rows = torch.tensor([[0.1, 0.0], [0.9, 1.2], [1.1, 0.8], [-0.2, 0.1]])  # codes 0, 1, 1, 0; code 2 unused
    vq(rows.reshape(1, 2, 2, 2).permute(0, 3, 1, 2))  # (B, D, H, W) whose grid rows are `rows`
    n = torch.tensor([2.0, 2.0, 0.0])
    s = torch.stack([rows[0] + rows[3], rows[1] + rows[2], torch.zeros(2)])
    usage = gamma * torch.tensor([1.0, 2.0, 3.0]) + (1 - gamma) * n
    ema_sum = gamma * e0 + (1 - gamma) * s
    total = usage.sum()
    smoothed = (usage + eps) / (total + 3 * eps) * total
    assert torch.allclose(vq.usage, usage)
    assert torch.allclose(vq.ema_sum, ema_sum)
    assert torch.allclose(vq.codebook, ema_sum / smoothed[:, None])


def test_a_dead_code_is_restarted_at_an_encoder_output_by_the_rule():
    vq = VectorQuantizer(3, 2, decay=0.5, dead_threshold=0.3).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.usage.copy_(torch.tensor([4.0, 4.0, 0.5]))  # code 2: 0.5 -> 0.25 < 0.3 after this pass
    z = torch.tensor([[0.1, 0.0], [0.9, 1.1], [1.0, 0.9], [0.0, 0.2]]).reshape(1, 2, 2, 2).permute(0, 3, 1, 2)
    out = vq(z)
    assert out.restarts == 1 and int(vq.restart_count) == 1
    rows = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert any(torch.equal(vq.codebook[2], r) for r in rows)  # moved onto one of this batch's encoder outputs
    assert vq.usage[2] == pytest.approx(0.3) and torch.equal(vq.ema_sum[2], vq.codebook[2])
    vq.eval()
    vq(z)
    assert int(vq.restart_count) == 1  # never in evaluation


def test_fsq_levels_and_rounding_by_hand():
    assert fsq_levels(64) == [8, 8] and fsq_levels(512) == [8, 8, 8]
    assert fsq_levels(1000) == [8, 5, 5, 5] and fsq_levels(240) == [8, 6, 5]  # Mentzer et al. 2023, Table 3
    with pytest.raises(ConfigError, match="codebook_size=34 is invalid with model.quantizer=fsq"):
        fsq_levels(34)  # 2 * 17
    fsq = FiniteScalarQuantizer([3, 4])
    # L = 3: tanh(z) * (1 - eps), rounded to {-1, 0, 1}, /1.  L = 4: tanh(z + tan(0.5 / h)) * h - 0.5 with
    # h = 1.5 (1 - eps), rounded to {-2, -1, 0, 1}, /2.
    z = torch.tensor([[0.2, -3.0], [0.8, 0.0], [-5.0, 5.0]])  # rows: (channel 0, channel 1) at 3 positions
    out = fsq(z.t().reshape(1, 2, 3, 1))
    h = 1.5 * (1 - 1e-3)
    expect = []
    for a, b in z.tolist():
        q0 = round(math.tanh(a) * (1 - 1e-3))
        q1 = round(math.tanh(b + math.tan(0.5 / h)) * h - 0.5)
        expect.append((q0, q1 / 2, (q0 + 1) + 3 * (q1 + 2)))
    assert out.z_q[0, :, :, 0].t().tolist() == [[e[0], e[1]] for e in expect]
    assert out.codes[0, :, 0].tolist() == [e[2] for e in expect]
    assert torch.equal(fsq.embed(out.codes), out.z_q)  # codes -> vectors inverts the index
    all_codes = torch.arange(12).view(1, 12, 1)
    assert fsq.embed(all_codes).unique(dim=2).shape[2] == 12  # 12 distinct vectors


def test_uniform_prior_bits_per_dim_by_hand():
    model = VQVAE([1, 8, 8], codebook_size=5, code_dim=3, net=SMALL, likelihood="discretized_logistic").eval()
    x = torch.randint(0, 256, (4, 1, 8, 8)).float() / 255
    t = model.terms(x, num_samples=3, with_log_q=True)
    out = build_objective("elbo")(t)
    n, k, d = 4, 5, 64  # a 2x2 grid of 5 codes; 64 pixels
    distortion = -model.likelihood.log_prob(model.decode_codes(model.encode_codes(x)), x)  # (B,)
    assert torch.allclose(out.terms["distortion"], distortion)
    assert torch.allclose(out.terms["rate"], torch.full((4,), n * math.log(k)))
    expected = (distortion + n * math.log(k)) / (d * math.log(2))
    assert torch.allclose(bits_per_dim(out.terms["elbo"], d), expected)
    assert torch.allclose(torch.logsumexp(t.log_weights(), 0) - math.log(3), out.terms["elbo"])  # IWAE = ELBO
    assert t.log_q.abs().max() == 0


def test_terms_update_the_codebook_only_in_training_and_report_usage():
    model = VQVAE([1, 8, 8], codebook_size=6, code_dim=3, net=SMALL, likelihood="bernoulli")
    x = torch.rand(8, 1, 8, 8).round()
    before = model.quantizer.codebook.clone()
    model.eval().terms(x)
    assert torch.equal(model.quantizer.codebook, before)
    t = model.train().terms(x)
    assert not torch.equal(model.quantizer.codebook, before)
    assert set(t.aux_terms) == set(VQVAE.aux_units) and all(v.shape == (8,) for v in t.aux_terms.values())
    assert t.aux_loss.shape == () and t.aux_loss > 0
    perplexity, used = code_statistics(torch.tensor([0, 0, 1, 1]), 4)
    assert perplexity == pytest.approx(2.0) and used == 0.5


def test_learned_prior_code_nll_is_the_sum_of_the_prior_log_probs():
    model = VQPrior([1, 8, 8], codebook_size=5, code_dim=3, net=SMALL, likelihood="bernoulli", conditional=True,
                    num_classes=3, pixelcnn_channels=8, pixelcnn_layers=2, pixelcnn_kernel=3).eval()
    x, y = torch.rand(4, 1, 8, 8).round(), torch.tensor([0, 1, 2, 0])
    t = model.terms(x, y)
    codes = model.stage1.encode_codes(x)
    logits = model.prior_net(codes, torch.nn.functional.one_hot(y, 3).float())  # (B, K, h, w)
    log_p = torch.zeros(4)
    for i in range(2):
        for j in range(2):
            log_p += logits[:, :, i, j].log_softmax(-1).gather(1, codes[:, i, j, None]).squeeze(1)
    assert torch.allclose(t.rate[:, 0], -log_p, atol=1e-5)
    assert torch.allclose(t.aux_terms["code_nll_per_position"], -log_p / 4, atol=1e-6)
    # the distortion is stage 1's
    assert torch.allclose(t.distortion, model.stage1.eval().terms(x).distortion)


def test_the_prior_trains_and_stage_one_stays_frozen():
    model = VQPrior([1, 8, 8], codebook_size=5, code_dim=3, net=SMALL, likelihood="bernoulli",
                    pixelcnn_channels=8, pixelcnn_layers=2, pixelcnn_kernel=3).train()
    assert not model.stage1.training and not any(p.requires_grad for p in model.stage1.parameters())
    before = {k: v.clone() for k, v in model.stage1.state_dict().items()}
    build_objective("elbo")(model.terms(torch.rand(4, 1, 8, 8).round())).loss.backward()
    assert all(torch.equal(v, model.stage1.state_dict()[k]) for k, v in before.items())
    assert model.prior_net.head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cond_dim", [0, 3])
def test_causality_perturbing_code_i_leaves_logits_up_to_i_unchanged(cond_dim):
    net = GatedPixelCNN(6, channels=8, layers=3, kernel=5, cond_dim=cond_dim)
    codes = torch.randint(0, 6, (2, 4, 5))
    c = torch.eye(3)[:2] if cond_dim else None
    base = net(codes, c)
    for p in range(20):
        changed = codes.clone()
        changed.view(2, -1)[:, p] = (changed.view(2, -1)[:, p] + 1) % 6
        diff = (net(changed, c) - base).abs().amax(1).reshape(2, -1)  # (B, positions)
        assert diff[:, : p + 1].max() == 0, p  # positions <= p do not see code p
        if p < 19:
            assert diff[:, p + 1].max() > 0  # the next position does


def test_sampling_with_temperature_gives_valid_codes_and_images():
    model = VQPrior([1, 8, 8], codebook_size=5, code_dim=3, net=SMALL, likelihood="bernoulli", conditional=True,
                    num_classes=3, pixelcnn_channels=8, pixelcnn_layers=2, pixelcnn_kernel=3).eval()
    codes = model.sample_codes(6, temperature=0.9)
    assert codes.shape == (6, 2, 2) and codes.min() >= 0 and codes.max() < 5
    assert model.sample(3, torch.tensor([0, 1, 2]), temperature=0.5).shape == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match="temperature=0"):
        model.sample(2, temperature=0)
    stage1 = VQVAE([1, 8, 8], codebook_size=5, code_dim=3, net=SMALL, likelihood="bernoulli").eval()
    assert stage1.sample(2).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("family", ["vq_ema", "vq_loss", "fsq", "prior"])
def test_save_then_load_is_exact(tmp_path, family):
    from vae_lab.loading import load_artifact
    from vae_lab.publish import save_artifact

    args = dict(in_shape=[1, 8, 8], codebook_size=8, code_dim=3, net=SMALL, likelihood="discretized_logistic")
    if family == "prior":
        model = VQPrior(**args, conditional=True, num_classes=3, pixelcnn_channels=8, pixelcnn_layers=2)
    else:
        model = VQVAE(**args, quantizer="fsq" if family == "fsq" else "vq", codebook=family.split("_")[-1]
                      if family != "fsq" else "ema")
    x = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    (model.stage1 if family == "prior" else model).train().terms(x)  # EMA buffers and usage away from their init
    model.eval()
    save_artifact(tmp_path / "artifact", model)
    loaded = load_artifact(tmp_path / "artifact")
    assert type(loaded) is type(model)
    state, got = model.state_dict(), loaded.state_dict()
    assert state.keys() == got.keys() and all(torch.equal(state[k], got[k]) for k in state)
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if family == "prior" else None
    assert torch.equal(model.terms(x, y).rate, loaded.terms(x, y).rate)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))


@pytest.mark.parametrize("args, message", [
    ({"codebook_size": 1}, "model.codebook_size=1 is invalid: must be >= 2"),
    ({"net": {"channels": [4, 4, 4, 4, 4]}}, "the code grid does not fit (at most 3 halvings"),
    ({"conditional": True}, "model.conditional=true is invalid for model.family=vqvae"),
    ({"codebook": "kmeans"}, "model.codebook"),
])
def test_bad_init_args_are_one_config_error(args, message):
    with pytest.raises(ConfigError, match=None) as err:
        VQVAE([1, 8, 8], **{"code_dim": 3, **args})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_evaluate_reports_codebook_usage_over_the_split_and_iwae_equals_the_elbo():
    """A point-mass posterior: IWAE-k equals the ELBO; the usage histogram counts every position of every example,
    perplexity and the used fraction follow from it (brute force)."""
    from vae_lab.evaluation import evaluate

    torch.manual_seed(0)
    model = VQVAE([1, 8, 8], codebook_size=6, code_dim=3, net=SMALL, likelihood="bernoulli").eval()
    x = (torch.rand(10, 1, 8, 8) > 0.5).float()
    report = evaluate(model, [(x[:6], torch.zeros(6, dtype=torch.long)), (x[6:], torch.zeros(4, dtype=torch.long))],
                      iwae_samples=3)
    counts = torch.bincount(model.encode_codes(x).flatten(), minlength=6)
    assert report["code_usage"] == counts.tolist() and sum(report["code_usage"]) == 10 * math.prod(model.grid)
    p = counts.double() / counts.sum()
    assert report["code_perplexity"] == pytest.approx(float((-(p[p > 0] * p[p > 0].log()).sum()).exp()))
    assert report["codes_used_fraction"] == pytest.approx(float((counts > 0).double().mean()))
    assert report["iwae_nats"] == pytest.approx(report["elbo_nats"], abs=1e-4)
