"""The four learning-rate schedules against their closed-form formulas (written out again here,
independently of gradbal.schedules), their shape properties, YAML building and resume state."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LRSchedulerCallable
from torch.optim.lr_scheduler import LambdaLR

from gradbal.schedules import (
    REX,
    InfiniteSchedule,
    LinearWithWarmup,
    WarmupStableDecay,
    infinite_multiplier,
    linear_multiplier,
    rex_multiplier,
    wsd_multiplier,
)
from tests.integration._errors_doc import check_doc_rows

PEAK = 0.5


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=PEAK)


def _lrs(make: Callable[[torch.optim.Optimizer], LambdaLR], steps: int) -> list[float]:
    """The lr each of the first ``steps`` optimizer steps runs with."""
    opt = _optimizer()
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


# --- the formulas, by hand ----------------------------------------------------------------------


def test_wsd_numbers() -> None:
    # W=2, T=10, D=4 (decay from step 6), m=0.2, linear: 0, .5, 1, 1, 1, 1, then 1 - .8 p.
    lrs = _lrs(lambda o: WarmupStableDecay(o, 2, 10, 0.4, 0.2, "linear"), 12)
    want = [0, 0.5, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.2]
    assert lrs == pytest.approx([PEAK * w for w in want])


@pytest.mark.parametrize(
    ("decay", "shape"),
    [
        ("linear", lambda p: 1 - p),
        ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
        ("sqrt", lambda p: 1 - math.sqrt(p)),
    ],
)
def test_wsd_formula(decay: str, shape: Callable[[float], float]) -> None:
    w, t, m = 5, 40, 0.1
    d = round(0.25 * t)
    lrs = _lrs(lambda o: WarmupStableDecay(o, w, t, 0.25, m, decay), 50)  # type: ignore[arg-type]
    for s, lr in enumerate(lrs):
        if s < w:
            want = s / w
        elif s < t - d:
            want = 1.0
        elif s < t:
            want = m + (1 - m) * shape((s - (t - d)) / d)
        else:
            want = m
        assert lr == pytest.approx(PEAK * want, abs=1e-12), s


def test_rex_formula() -> None:
    t, m = 30, 0.05
    lrs = _lrs(lambda o: REX(o, t, min_lr_ratio=m), 35)
    for s, lr in enumerate(lrs):
        p = min(s / t, 1.0)
        # Chen et al. 2022: eta_min + (eta_max - eta_min) (1 - p) / (1/2 + (1 - p)/2)
        want = m + (1 - m) * (1 - p) / (0.5 + 0.5 * (1 - p))
        assert lr == pytest.approx(PEAK * want, abs=1e-12), s
    assert _lrs(lambda o: REX(o, 4), 5) == pytest.approx(
        [PEAK * v for v in [1, 6 / 7, 2 / 3, 2 / 5, 0]]
    )
    warm = _lrs(lambda o: REX(o, 12, warmup_steps=4), 6)
    assert warm == pytest.approx([PEAK * v for v in [0, 0.25, 0.5, 0.75, 1, 14 / 15]])


def test_linear_formula() -> None:
    w, t, m = 4, 24, 0.1
    lrs = _lrs(lambda o: LinearWithWarmup(o, w, t, m), 30)
    for s, lr in enumerate(lrs):
        want = s / w if s < w else m + (1 - m) * max(0.0, 1 - (s - w) / (t - w))
        assert lr == pytest.approx(PEAK * want, abs=1e-12), s


def test_infinite_formula() -> None:
    w, c, k, a, ta, m = 3, 10, 0.4, 30, 8, 0.01
    lrs = _lrs(
        lambda o: InfiniteSchedule(o, w, c, k, anneal_start=a, anneal_steps=ta, min_lr_ratio=m), 45
    )
    for s, lr in enumerate(lrs):
        if s < w:
            want = s / w
        elif s < w + c:
            want = k + (1 - k) / 2 * (1 + math.cos(math.pi * (s - w) / c))
        elif s < a:
            want = k
        else:
            want = k * (m / k) ** (min(s - a, ta) / ta)
        assert lr == pytest.approx(PEAK * want, rel=1e-12, abs=1e-15), s
    assert lrs[a + ta] == pytest.approx(PEAK * m)
    # Without anneal_start it stays at the constant for good.
    assert _lrs(lambda o: InfiniteSchedule(o, 0, 2, 0.3), 1000)[-1] == pytest.approx(PEAK * 0.3)


# --- shape properties over random arguments -----------------------------------------------------

WSD_ARGS = st.builds(
    lambda w, t, f, m, decay: {"warmup_steps": min(w, t - round(f * t)), "total_steps": t,
                               "decay_steps": round(f * t), "min_lr_ratio": m, "decay": decay},
    st.integers(0, 50), st.integers(1, 300), st.floats(0.0, 1.0), st.floats(0.0, 1.0),
    st.sampled_from(["linear", "cosine", "sqrt"]),
)  # fmt: skip
REX_ARGS = st.builds(
    lambda w, extra, m: {"warmup_steps": w, "total_steps": w + extra, "min_lr_ratio": m},
    st.integers(0, 50), st.integers(1, 300), st.floats(0.0, 1.0),
)  # fmt: skip
# cooldown_steps >= 1: with 0 the lr drops to the constant at once, a jump by design.
INF_ARGS = st.builds(
    lambda w, c, k, gap, ta, mfrac: {"warmup_steps": w, "cooldown_steps": c, "constant_ratio": k,
                                     "anneal_start": w + c + gap, "anneal_steps": ta,
                                     "min_lr_ratio": k * mfrac},
    st.integers(0, 50), st.integers(1, 100), st.floats(0.01, 1.0), st.integers(0, 100),
    st.integers(1, 100), st.floats(0.001, 1.0),
)  # fmt: skip


def _check_shape(f: Callable[[float], float], peak_at: int, end: int, floor: float) -> None:
    """Rises from 0 to 1 until ``peak_at``, falls after it, stays in [floor, 1] from then on,
    and has no jump at the integer steps (the limit from the left equals the value)."""
    values = [f(s) for s in range(end + 5)]
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in values)
    assert all(v >= floor - 1e-12 for v in values[peak_at:])
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values[: peak_at + 1]))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values[peak_at:]))
    if peak_at > 0:
        assert values[0] == 0.0
    assert values[peak_at] == pytest.approx(1.0)
    for s in range(1, end + 5):
        assert f(s - 1e-9) == pytest.approx(f(s), abs=1e-4), s


@settings(max_examples=60, deadline=None)
@given(WSD_ARGS)
def test_wsd_shape(args: dict) -> None:
    floor = 1.0 if args["decay_steps"] == 0 else args["min_lr_ratio"]
    _check_shape(lambda s: wsd_multiplier(s, **args), args["warmup_steps"], args["total_steps"],
                 floor)  # fmt: skip
    end = 1.0 if args["decay_steps"] == 0 else args["min_lr_ratio"]  # no decay: stays at the peak
    assert wsd_multiplier(args["total_steps"], **args) == end


@settings(max_examples=60, deadline=None)
@given(REX_ARGS)
def test_rex_and_linear_shape(args: dict) -> None:
    for fn in (rex_multiplier, linear_multiplier):
        _check_shape(lambda s, fn=fn: fn(s, **args), args["warmup_steps"], args["total_steps"],
                     args["min_lr_ratio"])  # fmt: skip
        assert fn(args["total_steps"], **args) == pytest.approx(args["min_lr_ratio"])
    # REX never falls below linear decay (it decays late): the profile the paper proposes.
    for s in range(args["warmup_steps"], args["total_steps"] + 1):
        assert rex_multiplier(s, **args) >= linear_multiplier(s, **args) - 1e-12


@settings(max_examples=60, deadline=None)
@given(INF_ARGS)
def test_infinite_shape(args: dict) -> None:
    end = args["anneal_start"] + args["anneal_steps"]
    _check_shape(lambda s: infinite_multiplier(s, **args), args["warmup_steps"], end,
                 args["min_lr_ratio"])  # fmt: skip
    assert infinite_multiplier(end, **args) == pytest.approx(args["min_lr_ratio"])
    for s in range(args["warmup_steps"] + args["cooldown_steps"], args["anneal_start"] + 1):
        assert infinite_multiplier(s, **args) == pytest.approx(args["constant_ratio"])


# --- YAML, resume, errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_path", "init_args", "cls"),
    [
        ("gradbal.schedules.WarmupStableDecay", {"warmup_steps": 2, "total_steps": 20, "decay": "sqrt"}, WarmupStableDecay),
        ("gradbal.schedules.REX", {"total_steps": 20}, REX),
        ("gradbal.schedules.LinearWithWarmup", {"warmup_steps": 2, "total_steps": 20}, LinearWithWarmup),
        ("gradbal.schedules.InfiniteSchedule", {"warmup_steps": 2, "cooldown_steps": 5, "constant_ratio": 0.3}, InfiniteSchedule),
    ],
)  # fmt: skip
def test_builds_from_yaml_class_path(class_path: str, init_args: dict, cls: type) -> None:
    parser = ArgumentParser()
    parser.add_argument("--lr_scheduler", type=LRSchedulerCallable)
    cfg = parser.parse_object({"lr_scheduler": {"class_path": class_path, "init_args": init_args}})
    factory = parser.instantiate_classes(cfg).lr_scheduler
    sched = factory(_optimizer())
    assert type(sched) is cls


def test_resume_restores_the_position_and_keeps_the_configs_arguments() -> None:
    opt = _optimizer()
    sched = InfiniteSchedule(opt, 2, 4, 0.5)
    for _ in range(10):
        opt.step()
        sched.step()
    state = sched.state_dict()
    # Resumed with an anneal that starts now: the position comes from the checkpoint, the
    # arguments from the (new) config.
    opt2 = _optimizer()
    resumed = InfiniteSchedule(opt2, 2, 4, 0.5, anneal_start=10, anneal_steps=4, min_lr_ratio=0.05)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 10 and resumed.anneal_start == 10
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(PEAK * 0.5 * (0.05 / 0.5) ** 0.25)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda o: WarmupStableDecay(o, 5, 10, 0.6), r"warmup_steps=5 \+ round\(decay_fraction \* total_steps\)=6 > total_steps=10"),
        (lambda o: WarmupStableDecay(o, 1, 10, decay="exp"), r"decay must be one of \['linear', 'cosine', 'sqrt'\]. Got 'exp'"),
        (lambda o: WarmupStableDecay(o, -1, 10), r"warmup_steps must be an integer >= 0 .* Got -1"),
        (lambda o: WarmupStableDecay(o, 1, 10, 1.5), r"decay_fraction must be in \[0, 1\] \(a fraction of total_steps\). Got 1.5"),
        (lambda o: REX(o, 0), r"total_steps must be an integer >= 1 .* Got 0"),
        (lambda o: REX(o, 10, warmup_steps=10), r"warmup_steps=10, total_steps=10. Lower warmup_steps"),
        (lambda o: LinearWithWarmup(o, 2, 10, min_lr_ratio=float("nan")), r"min_lr_ratio must be in \[0, 1\] .* Got nan"),
        (lambda o: InfiniteSchedule(o, 2, 10, 0.0), r"constant_ratio must be in \(0, 1\] .* Got 0.0"),
        (lambda o: InfiniteSchedule(o, 2, 10, 0.5, anneal_start=5), r"anneal_start must be at or after .* = 12\). Got anneal_start=5"),
        (lambda o: InfiniteSchedule(o, 2, 10, 0.5, anneal_start=20, min_lr_ratio=0.0), r"min_lr_ratio must be in \(0, constant_ratio=0.5\] .* Got 0.0"),
    ],
)  # fmt: skip
def test_bad_arguments_say_what_and_how_to_fix(
    make: Callable[[torch.optim.Optimizer], LambdaLR], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(_optimizer())


def test_errors_doc_h_rows() -> None:
    """docs/errors.md H01..H05: each triggered in test_bad_arguments_say_what_and_how_to_fix."""
    check_doc_rows("H", {f"H0{i}": ValueError for i in range(1, 6)})
