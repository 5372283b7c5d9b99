"""IWAE bound and VIMCO surrogate: values against numpy, gradients against exact enumeration.

Toy model: P i.i.d. particles z_j ~ Bernoulli(sigmoid(theta)), log w_j = phi * z_j + log p(z_j)
- log q_theta(z_j) with a fixed Bernoulli prior p. theta plays the inference network of SQAIR's
z_pres (score-function path plus the direct -log q path); phi plays a reparameterised/decoder
parameter (pathwise only). With P = 4 all 2^4 configurations can be enumerated, which gives the
exact gradient of E[log mean_j w_j] and the exact expectation of each estimator.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsqair_bench.models.objective import (
    iwae_bound,
    leave_one_out_bound,
    sqair_loss,
    vimco_surrogate,
)

P = 4
THETA = 1.0
PHI = 4.0
PRIOR_P1 = 0.5
N_DRAWS = 20_000


def _toy_log_weights(z: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, P] in {0, 1}; theta, phi broadcastable to [N, 1] -> (log w [N, P], log q [N, P])."""
    log_q = z * F.logsigmoid(theta) + (1 - z) * F.logsigmoid(-theta)  # [N, P]
    log_p = z * math.log(PRIOR_P1) + (1 - z) * math.log(1 - PRIOR_P1)  # [N, P]
    return phi * z + log_p - log_q, log_q


def _no_baseline(lw: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """REINFORCE with signal L for every particle: unbiased, no variance reduction."""
    bound = iwae_bound(lw)
    return bound + (bound.detach().unsqueeze(-1) * lq).sum(-1)


ESTIMATORS = {
    "vimco": lambda lw, lq: vimco_surrogate(lw, lq),
    "sqair_tf": lambda lw, lq: vimco_surrogate(lw, lq, variant="sqair_tf"),
    "no_score_term": lambda lw, lq: iwae_bound(lw),  # drops the discrete gradient entirely
    "no_baseline": _no_baseline,
}


def _per_draw_grads(z: torch.Tensor, estimator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the surrogate w.r.t. (theta, phi) separately for every row of z [N, P]."""
    n = z.shape[0]
    theta = torch.full((n, 1), THETA, dtype=torch.float64, requires_grad=True)
    phi = torch.full((n, 1), PHI, dtype=torch.float64, requires_grad=True)
    lw, lq = _toy_log_weights(z, theta, phi)
    estimator(lw, lq).sum().backward()
    return theta.grad[:, 0], phi.grad[:, 0]  # [N], [N]


def _exact() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All configurations [2^P, P], their probabilities, and the exact gradient of E[bound]."""
    configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=P)), dtype=torch.float64)
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True)
    phi = torch.tensor(PHI, dtype=torch.float64, requires_grad=True)
    lw, lq = _toy_log_weights(configs, theta, phi)
    prob = lq.sum(-1).exp()  # [2^P], depends on theta
    expected_bound = (prob * iwae_bound(lw)).sum()
    g_theta, g_phi = torch.autograd.grad(expected_bound, (theta, phi))
    return configs, prob.detach(), torch.stack([g_theta, g_phi])


def test_iwae_bound_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    lw = rng.normal(scale=30.0, size=(7, 5))
    expected = np.log(np.mean(np.exp(lw - lw.max(1, keepdims=True)), axis=1)) + lw.max(1)
    got = iwae_bound(torch.from_numpy(lw)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-10)


def test_leave_one_out_bound_matches_hand_computation() -> None:
    lw = np.array([[0.0, 1.0, -2.0, 3.0]])
    expected = []
    for j in range(4):
        swapped = lw[0].copy()
        swapped[j] = np.delete(lw[0], j).mean()
        expected.append(np.log(np.mean(np.exp(swapped))))
    got = leave_one_out_bound(torch.from_numpy(lw)).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_surrogate_value_is_bound_and_loss_is_its_negative_mean() -> None:
    gen = torch.Generator().manual_seed(1)
    lw = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    lq = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(vimco_surrogate(lw, lq), iwae_bound(lw))
    loss, bound = sqair_loss(lw, lq)
    assert loss.dim() == 0 and bound.shape == (3,) and not bound.requires_grad
    torch.testing.assert_close(loss, -iwae_bound(lw).mean())


def test_continuous_gradient_uses_self_normalised_weights() -> None:
    """With no discrete latents the gradient wrt log w_j is softmax(log w)_j / B."""
    lw = torch.tensor([[0.0, 1.0, 2.0], [5.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    loss, _ = sqair_loss(lw, torch.zeros(2, 3, dtype=torch.float64))
    loss.backward()
    torch.testing.assert_close(lw.grad, -torch.softmax(lw.detach(), -1) / 2)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="log_q_discrete"):
        vimco_surrogate(torch.zeros(2, 3), torch.zeros(2, 4))


def test_vimco_expectation_equals_exact_gradient_by_enumeration() -> None:
    """Deterministic and sharp: E[estimator] computed over all 2^P configurations."""
    configs, prob, exact = _exact()
    expectations = {}
    for name, est in ESTIMATORS.items():
        g_theta, g_phi = _per_draw_grads(configs, est)
        expectations[name] = torch.stack([(prob * g_theta).sum(), (prob * g_phi).sum()])
    torch.testing.assert_close(expectations["vimco"], exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(expectations["no_baseline"], exact, rtol=1e-10, atol=1e-12)
    # The reference TF variant and the score-free gradient are biased in theta (well above the
    # Monte Carlo tolerance used below); phi has only a pathwise term, so all agree there.
    assert abs(expectations["sqair_tf"][0] - exact[0]) > 0.2
    assert abs(expectations["no_score_term"][0] - exact[0]) > 0.2
    torch.testing.assert_close(expectations["sqair_tf"][1], exact[1])


def test_vimco_monte_carlo_unbiased_and_wrong_variants_detected() -> None:
    """20k sampled draws: VIMCO within 4 standard errors, wrong variants beyond 20."""
    _, _, exact = _exact()
    gen = torch.Generator().manual_seed(1234)
    q1 = torch.sigmoid(torch.tensor(THETA, dtype=torch.float64))
    z = (torch.rand(N_DRAWS, P, generator=gen, dtype=torch.float64) < q1).to(torch.float64)  # [N, P]
    stats = {}
    for name, est in ESTIMATORS.items():
        g_theta, g_phi = _per_draw_grads(z, est)
        grads = torch.stack([g_theta, g_phi], dim=-1)  # [N, 2]
        mean = grads.mean(0)
        stderr = grads.std(0) / math.sqrt(N_DRAWS)
        stats[name] = (mean, stderr, grads[:, 0].var())
    mean, stderr, _ = stats["vimco"]
    z_scores = (mean - exact).abs() / stderr
    assert torch.all(z_scores < 4.0), f"VIMCO gradient off by {z_scores.tolist()} standard errors"
    for wrong in ("sqair_tf", "no_score_term"):
        m, se, _ = stats[wrong]
        assert (m[0] - exact[0]).abs() / se[0] > 20.0, f"{wrong} not distinguishable from the exact gradient"
    # The leave-one-out baseline must actually reduce variance against plain REINFORCE.
    assert stats["vimco"][2] < 0.5 * stats["no_baseline"][2]


def test_single_particle_falls_back_to_reinforce() -> None:
    lw = torch.tensor([[1.5]], requires_grad=True)
    lq = torch.tensor([[-0.7]], requires_grad=True)
    vimco_surrogate(lw, lq).sum().backward()
    torch.testing.assert_close(lq.grad, torch.tensor([[1.5]]))
