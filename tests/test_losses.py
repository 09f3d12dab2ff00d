"""The loss functions of grpo.py and sft.py and the sampler's draw, against hand-computed values."""

import math

import torch
import torch.nn.functional as F

from generate import sample_tokens
from grpo import clipped_surrogate, kl_k3, masked_mean, policy_term, token_logprobs
from models.common import conditional_gumbels, restrict_to_answer_vocab, straight_through_onehot
from sft import select_best, sft_step_loss, token_nll


def test_clipped_surrogate_values_and_clip_fraction():
    logp = torch.log(torch.tensor([[1.5, 1.0, 0.5]], dtype=torch.float64))  # ratios 1.5, 1, 0.5 (old = 0)
    old = torch.zeros_like(logp)
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([2.0], dtype=torch.float64), 0.2)
    # A > 0: min(r A, clip(r) A) = 1.2*2, 1*2, 0.5*2
    assert torch.allclose(loss, -torch.tensor([[2.4, 2.0, 1.0]], dtype=torch.float64))
    assert clipped.tolist() == [[True, False, False]]
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([-1.0], dtype=torch.float64), 0.2)
    # A < 0: min(-r, -clip(r)) = -1.5, -1, -0.8
    assert torch.allclose(loss, torch.tensor([[1.5, 1.0, 0.8]], dtype=torch.float64))
    assert clipped.tolist() == [[False, False, True]]


def test_clip_removes_the_gradient_on_the_clipped_side():
    logp = torch.log(torch.tensor([[1.5, 1.1]], dtype=torch.float64)).requires_grad_()
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), 0.2)
    loss.sum().backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0


def test_k3_is_zero_at_equality_and_positive_elsewhere():
    a = torch.randn(4, 5, dtype=torch.float64)
    assert torch.equal(kl_k3(a, a), torch.zeros_like(a))
    b = a + torch.randn_like(a)
    assert (kl_k3(a, b) > 0).all()
    d = 0.3  # hand value: exp(0.3) - 0.3 - 1
    assert math.isclose(kl_k3(torch.tensor(0.0, dtype=torch.float64), torch.tensor(d, dtype=torch.float64)).item(), math.exp(d) - d - 1, rel_tol=1e-12)


def test_k3_as_a_loss_has_the_gradient_of_kl_ref_to_pi():
    """kl_k3's docstring, exactly over a small categorical: on tokens sampled from pi (held fixed), k3's mean is
    KL(pi || ref), but the gradient of that mean is the gradient of KL(ref || pi), not of KL(pi || ref)."""
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ref = torch.log_softmax(torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 0)
    logp = torch.log_softmax(theta, 0)
    pi = logp.exp().detach()  # the sampling weights: pi_old = pi at the first update, no gradient through them
    expected_k3 = (pi * kl_k3(logp, ref)).sum()
    kl_pi_ref, kl_ref_pi = (logp.exp() * (logp - ref)).sum(), (ref.exp() * (ref - logp)).sum()
    assert math.isclose(expected_k3.item(), kl_pi_ref.item(), rel_tol=1e-12)  # the value: unbiased
    grad_k3, grad_pi_ref, grad_ref_pi = (torch.autograd.grad(x, theta, retain_graph=True)[0]
                                         for x in (expected_k3, kl_pi_ref, kl_ref_pi))
    assert torch.allclose(grad_k3, grad_ref_pi, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grad_k3, grad_pi_ref, rtol=1e-3)


def test_masked_mean_ignores_padding_and_empty_rows():
    x = torch.tensor([[1.0, 2.0, 100.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, mask).item() == 1.5
    assert masked_mean(x, mask, dim=1).tolist() == [1.5, 0.0]


def test_policy_gradient_raises_the_logprob_of_a_positive_advantage_token():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    ids = torch.tensor([[2]])
    logp = token_logprobs(logits, ids)
    loss, _ = policy_term(logp, logp.detach(), None, torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.0)
    loss.sum().backward()
    with torch.no_grad():
        after = token_logprobs(logits - 0.5 * logits.grad, ids)
    assert after.item() > logp.item()


def test_step_zero_ratio_is_one_and_kl_zero():
    logp = torch.randn(3, 7)
    _, stats = policy_term(logp, logp.clone(), logp.clone(), torch.randn(3), torch.ones(3, 7), 0.2, 0.2)
    assert stats["ratio"] == 1.0 and stats["kl"] == 0.0 and stats["clip_frac"] == 0.0


def test_token_nll_equals_cross_entropy_on_kept_tokens():
    logits = torch.randn(2, 5, 11, dtype=torch.float64)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    want = torch.stack([F.cross_entropy(logits[0, :3], ids[0, :3]), F.cross_entropy(logits[1], ids[1])])
    assert torch.allclose(token_nll(logits, ids, mask), want)


def test_select_best_keeps_the_group_best_above_the_threshold():
    rewards = torch.tensor([[1.0, 0.5, 1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert select_best(rewards, 1.0).tolist() == [[True, False, True], [False, False, False], [False, False, False]]
    assert select_best(rewards, 0.5).tolist()[1] == [True, True, False]


def test_generation_sft_scores_only_the_remasked_tokens_of_a_masked_family():
    logits = torch.randn(2, 4, 7, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 7, (2, 4))
    token_mask = torch.tensor([[True, False, True, False], [False, False, False, True]])  # hidden in the input
    keep = torch.tensor([1.0, 1.0], dtype=torch.float64)
    loss, stats = sft_step_loss({"gen_logits": logits}, {"gen": {"image_ids": ids, "token_mask": token_mask}}, keep)
    want = torch.stack([F.cross_entropy(logits[0, [0, 2]], ids[0, [0, 2]]),
                        F.cross_entropy(logits[1, [3]], ids[1, [3]])])
    assert torch.allclose(loss, want) and math.isclose(stats["gen_nll"], want.mean().item(), rel_tol=1e-12)
    loss.sum().backward()
    assert (logits.grad[~token_mask] == 0).all()  # a visible token (the model sees it) gets no gradient
    # an autoregressive family has no token_mask: every position is a target
    loss, _ = sft_step_loss({"gen_logits": logits}, {"gen": {"image_ids": ids}}, keep)
    assert torch.allclose(loss, torch.stack([F.cross_entropy(logits[i], ids[i]) for i in range(2)]))


def test_straight_through_value_is_the_token_and_gradient_is_the_softmax():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    tokens = torch.randint(0, 6, (2, 3))
    st = straight_through_onehot(logits, tokens, tau=1.0)
    assert torch.equal(st.detach(), F.one_hot(tokens, 6).float())
    w = torch.randn(6)
    (st * w).sum().backward()
    soft = torch.softmax(logits.detach(), -1)
    want = soft * (w - (soft * w).sum(-1, keepdim=True))  # d/dz of sum(softmax(z) * w)
    assert torch.allclose(logits.grad, want, atol=1e-6)


def test_conditional_gumbels_respect_the_token_and_the_gumbel_law():
    torch.manual_seed(0)
    z = torch.randn(1, 1, 5, dtype=torch.float64).expand(20000, 1, 5).contiguous()
    tokens = torch.full((20000, 1), 3)
    g = conditional_gumbels(z, tokens, torch.rand(20000, 1, 5, dtype=torch.float64))
    assert (g.argmax(-1) == tokens).all()
    # the winner's perturbed value is Gumbel(logsumexp z): mean logsumexp + Euler's gamma
    mean = g[:, 0, 3].mean().item()
    assert abs(mean - (torch.logsumexp(z[0, 0], -1).item() + 0.5772156649)) < 0.03


def test_inverse_cdf_sampling_follows_the_softmax():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = sample_tokens(logits.expand(40000, 4), u, temperature=1.0)
    freq = torch.bincount(ids, minlength=4).double() / 40000
    assert (freq - torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)).abs().max() < 0.01
    assert torch.equal(sample_tokens(logits[None], torch.tensor([0.5]), 0.0), torch.tensor([3]))
    # temperature sharpens: at T = 0.25 the top token dominates
    hot = sample_tokens(logits.expand(40000, 4), u, temperature=0.25)
    assert (hot == 3).double().mean() > 0.6


def test_padded_answer_positions_stay_finite_below_temperature_one():
    """An answer's padded tail holds PAD, which the answer vocabulary excludes. At an answer temperature below 1
    its restricted logit over T overflows to -inf; the loss, its statistics and its gradient must stay finite."""
    vocab, pad = 7, 6
    allowed = torch.ones(vocab, dtype=torch.bool).index_fill(0, torch.tensor([pad]), False)
    logits = torch.randn(2, 4, vocab, requires_grad=True)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, pad, pad]])  # the second answer ended early
    mask = (ids != pad).long()
    logp = token_logprobs(restrict_to_answer_vocab(logits, allowed), ids, 0.5)
    assert torch.isinf(logp[1, 2:]).all()  # the overflow this guards against
    old = logp.detach()
    loss, stats = policy_term(logp, old, old, torch.tensor([1.0, -1.0]), mask, 0.2, 0.1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and all(math.isfinite(v) for v in stats.values())
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 2:].abs().sum() == 0
