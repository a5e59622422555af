"""Why a measured layer's inputs cannot be split by batch row: the cause, named (private).

The capture splits a layer's weight gradient by the leading dimension of its input, which must
be the batch's ``N`` rows in one call (or several calls of ``N`` rows each). The calls of a layer
in one training step tell what the model did instead.
"""

from __future__ import annotations

_FIX = (
    "measure a layer that sees the whole batch (e.g. params='last_attention_block'), or apply "
    "this layer to the whole batch at once"
)


def row_mismatch_reason(calls: list[int | None], shape: tuple[int, ...], num_rows: int) -> str:
    """Describe why the rows of a layer's calls are not the batch's ``num_rows`` rows.

    Args:
        calls: Leading dimension of each call of the layer in the step (``None``: a dense layer
            fed one row without a batch dimension).
        shape: Shape of the input of the call whose backward found the mismatch.
        num_rows: ``N``, the batch rows (``set_segments``).

    Example::

        >>> print(row_mismatch_reason([1, 1, 1], (1, 4), 3))  # doctest: +ELLIPSIS
        it was called 3 times in the step with 1 row(s) each, but the batch has 3 rows: the layer is applied to each row separately (e.g. `head(h[i])`)...
    """
    n = len(calls)
    sizes = [1 if r is None else r for r in calls]
    seen = f"inputs of shape {shape} (leading dimension {shape[0] if shape else 0})"
    if n > 1 and all(r == 1 for r in sizes):
        return (
            f"it was called {n} times in the step with 1 row(s) each, but the batch has "
            f"{num_rows} rows: the layer is applied to each row separately (e.g. `head(h[i])`), "
            "so its gradient cannot be attributed to batch rows; " + _FIX
        )
    if n > 1 and sum(sizes) == num_rows:
        return (
            f"it was called {n} times in the step on {sizes} rows (together the batch's "
            f"{num_rows} rows): the layer is applied to parts of the batch separately (e.g. a "
            "per-task head on `h[task_ids == k]`), so the rows of its inputs are not the batch "
            "rows; " + _FIX + " and select rows afterwards"
        )
    if calls[0] is None and n == 1:
        return (
            f"it saw {seen} without a batch dimension, but the batch has {num_rows} rows: the "
            "layer is applied to a single row (e.g. `head(h[i])`); " + _FIX
        )
    if n > 1:
        return (
            f"it was called {n} times in the step on {sizes} rows, but the batch has {num_rows} "
            "rows, so the rows of its inputs are not the batch rows; " + _FIX
        )
    rows = sizes[0]
    if rows == 1:
        why = "its input is shared by all rows (e.g. position ids [1, T] broadcast over the batch)"
    elif rows > num_rows and rows % num_rows == 0:
        why = (
            f"its input has {rows // num_rows} rows per batch row (e.g. tokens flattened to "
            "[N*T, D], or several samples per row)"
        )
    elif rows < num_rows:
        why = "it sees only some of the batch rows (e.g. a subset selected by a mask)"
    else:
        why = "its input's rows are not the batch rows"
    return (
        f"it saw {seen} but the batch has {num_rows} rows: {why}, so its gradient cannot be "
        "split by batch row; " + _FIX
    )
