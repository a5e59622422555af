"""Per-token estimators of KL(pi || pi_ref) from log-probabilities of tokens sampled from pi."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_same_shape(pi_logprobs: Tensor, ref_logprobs: Tensor) -> None:
    if pi_logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            "`pi_logprobs` and `ref_logprobs` must have the same shape. Got "
            f"{tuple(pi_logprobs.shape)} and {tuple(ref_logprobs.shape)}. Compute both on the "
            "same completion tokens."
        )


def k1_kl(pi_logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Schulman's k1 estimator ``log pi - log pi_ref``: unbiased, high variance, can be negative.

    J. Schulman, "Approximating KL Divergence" (2020, joschu.net/blog/kl-approx.html), ``k1``.
    Its expectation under tokens sampled from ``pi`` is ``KL(pi || pi_ref)``.

    Args:
        pi_logprobs: ``[N, L]`` log-probs of the sampled tokens under the policy.
        ref_logprobs: ``[N, L]`` log-probs of the same tokens under the reference model.

    Returns:
        ``[N, L]`` per-token estimates (in the graph of both inputs).

    Raises:
        ValueError: If the shapes differ.

    Example::

        >>> k1_kl(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]]))
        tensor([[ 1., -1.]])
    """
    _check_same_shape(pi_logprobs, ref_logprobs)
    return pi_logprobs - ref_logprobs  # [N, L]


def k3_kl(pi_logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Schulman's k3 estimator ``exp(d) - d - 1`` with ``d = log pi_ref - log pi``; always >= 0.

    DeepSeekMath (Shao et al., 2024, arXiv:2402.03300) eq. 4, the KL penalty of GRPO; Schulman,
    "Approximating KL Divergence" (2020), ``k3``. Unbiased for ``KL(pi || pi_ref)`` under tokens
    sampled from ``pi`` and lower-variance than ``k1``. Computed as ``expm1(d) - d``, which is
    accurate near ``d = 0`` and never rounds below 0 (``exp(d) - d - 1`` can). Matches TRL's
    ``per_token_kl`` in ``GRPOTrainer._compute_loss``.

    Args:
        pi_logprobs: ``[N, L]`` log-probs of the sampled tokens under the policy.
        ref_logprobs: ``[N, L]`` log-probs of the same tokens under the reference model.

    Returns:
        ``[N, L]`` non-negative per-token estimates (in the graph of both inputs), 0 where the
        two log-probs are equal.

    Raises:
        ValueError: If the shapes differ.

    Example::

        >>> pi = torch.log(torch.tensor([[0.25, 0.25]]))
        >>> ref = torch.log(torch.tensor([[0.25, 0.5]]))  # pi_ref / pi = 1 and 2
        >>> k3_kl(pi, ref)  # 2 - log 2 - 1 = 0.3069
        tensor([[0.0000, 0.3069]])
    """
    _check_same_shape(pi_logprobs, ref_logprobs)
    log_ratio = ref_logprobs - pi_logprobs  # [N, L]
    return torch.expm1(log_ratio) - log_ratio  # [N, L]
