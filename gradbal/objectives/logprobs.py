"""Per-token log-probabilities and entropies from logits, without a full log-softmax tensor."""

from __future__ import annotations

import torch
from torch import Tensor

_HALF_DTYPES = (torch.bfloat16, torch.float16)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(
            f"`chunk_size` must be a positive number of rows. Got {chunk_size}. "
            "Use 1 for the lowest peak memory, or a larger value for fewer kernel launches."
        )


def _compute_dtype(logits: Tensor) -> torch.dtype:
    # bf16 logsumexp is unstable (TRL `selective_log_softmax` comment), so half inputs are
    # upcast chunk by chunk; the fp32 copy only ever covers one chunk of rows at a time.
    return torch.float32 if logits.dtype in _HALF_DTYPES else logits.dtype


def token_logprobs(
    logits: Tensor,
    labels: Tensor,
    *,
    chunk_size: int = 1,
    ignore_index: int | None = -100,
) -> Tensor:
    """Log-probability of each label token: ``log_softmax(logits).gather(-1, labels)``.

    Computed as ``logits[label] - logsumexp(logits)`` over ``chunk_size`` rows at a time, so the
    ``[N, L, V]`` log-softmax is never materialised; bf16/fp16 logits are upcast to fp32 one chunk
    at a time and the result is fp32. Same approach as TRL's ``selective_log_softmax``
    (``trl/trainer/utils.py``), checked against ``torch.log_softmax(...).gather(...)``.

    Memory note: in the forward pass (and under ``torch.no_grad()``, e.g. for reference or
    old-policy log-probs) the extra memory is one chunk. With autograd on half-precision logits,
    each chunk's fp32 copy is kept for the backward pass, i.e. about 2x the bf16 logits in total.

    Args:
        logits: ``[N, L, V]`` logits, already aligned with ``labels`` (shifted by one for a causal
            LM: ``logits[:, t]`` predicts ``labels[:, t]``).
        labels: ``[N, L]`` token ids.
        chunk_size: Rows of ``N`` processed at once (peak memory vs. kernel launches).
        ignore_index: Label value marking positions to skip (e.g. padding); they get log-prob
            ``0.0`` and no gradient. ``None`` disables the check.

    Returns:
        ``[N, L]`` log-probabilities, fp32 for half-precision ``logits``, else ``logits.dtype``.

    Raises:
        ValueError: If the shapes do not line up or ``chunk_size < 1``.

    Example::

        >>> logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # [N=1, L=2, V=2]
        >>> labels = torch.tensor([[1, -100]])
        >>> token_logprobs(logits, labels)  # log(1/2) at t=0; t=1 is ignored
        tensor([[-0.6931,  0.0000]])
    """
    _check_chunk_size(chunk_size)
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            "`logits` must be [N, L, V] and `labels` [N, L]. Got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}. Shift the logits by one "
            "position (drop the last) so that logits[:, t] predicts labels[:, t]."
        )
    ignored = labels == ignore_index if ignore_index is not None else None  # [N, L]
    safe_labels = labels if ignored is None else labels.masked_fill(ignored, 0)  # [N, L]
    dtype = _compute_dtype(logits)
    rows = []
    for chunk, chunk_labels in zip(
        logits.split(chunk_size), safe_labels.split(chunk_size), strict=True
    ):
        chunk = chunk.to(dtype)  # [c, L, V]
        picked = chunk.gather(-1, chunk_labels.unsqueeze(-1)).squeeze(-1)  # [c, L]
        rows.append(picked - torch.logsumexp(chunk, dim=-1))  # [c, L]
    if not rows:
        return logits.new_zeros(labels.shape, dtype=dtype)  # [0, L]
    logps = torch.cat(rows)  # [N, L]
    if ignored is not None:
        logps = logps.masked_fill(ignored, 0.0)  # [N, L]
    return logps


def token_entropy(logits: Tensor, *, chunk_size: int = 1) -> Tensor:
    """Entropy of each position's next-token distribution, ``-sum_v p_v log p_v``, in nats.

    Computed ``chunk_size`` rows at a time in fp32 (for half inputs), like
    :func:`token_logprobs`. Zero-probability tokens (``-inf`` logits) contribute 0, not ``nan``.
    Wrap the call in ``torch.no_grad()`` when the entropy is only logged.

    Args:
        logits: ``[N, L, V]`` logits.
        chunk_size: Rows of ``N`` processed at once.

    Returns:
        ``[N, L]`` entropies, fp32 for half-precision ``logits``, else ``logits.dtype``.

    Raises:
        ValueError: If ``logits`` is not 3-D or ``chunk_size < 1``.

    Example::

        >>> logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, float("-inf"), 0.0, 0.0]]])
        >>> token_entropy(logits)  # log 4 and log 3
        tensor([[1.3863, 1.0986]])
    """
    _check_chunk_size(chunk_size)
    if logits.dim() != 3:
        raise ValueError(
            f"`logits` must be [N, L, V]. Got shape {tuple(logits.shape)}. Add the missing "
            "batch or sequence dimension with `unsqueeze`."
        )
    dtype = _compute_dtype(logits)
    rows = []
    for chunk in logits.split(chunk_size):
        logp = torch.log_softmax(chunk.to(dtype), dim=-1)  # [c, L, V]
        # masked_fill rather than torch.where: where's unused 0 * -inf branch would put nan
        # into the gradient.
        finite_logp = logp.masked_fill(logp == -torch.inf, 0.0)  # [c, L, V]
        rows.append(-(logp.exp() * finite_logp).sum(dim=-1))  # [c, L]
    if not rows:
        return logits.new_zeros(logits.shape[:2], dtype=dtype)  # [0, L]
    return torch.cat(rows)  # [N, L]
