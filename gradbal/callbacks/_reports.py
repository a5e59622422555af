"""Reading a module's typed per-batch reports (``gradbal.contracts``), with how-to-fix errors."""

from __future__ import annotations

from lightning.pytorch import LightningModule

from gradbal.contracts import PreferenceReport, ReportsPreferences, ReportsRollout, RolloutReport
from gradbal.gradstats import GroupSummary, group_summary


def require_rollouts(pl_module: LightningModule, owner: str) -> None:
    """Raise unless the module implements :class:`gradbal.contracts.ReportsRollout`."""
    if not isinstance(pl_module, ReportsRollout):
        raise RuntimeError(
            f"{owner} reads each batch's rollout (rewards and advantages per completion), but "
            f"{type(pl_module).__name__} has no `last_rollout` "
            "(gradbal.contracts.ReportsRollout). Use gradbal.modules.GRPOModule, or set "
            "`self.last_rollout = gradbal.contracts.RolloutReport(...)` in your training_step."
        )


def require_preferences(pl_module: LightningModule, owner: str) -> None:
    """Raise unless the module implements :class:`gradbal.contracts.ReportsPreferences`."""
    if not isinstance(pl_module, ReportsPreferences):
        raise RuntimeError(
            f"{owner} reads each batch's preference pairs (implicit rewards of the chosen and "
            f"rejected completions), but {type(pl_module).__name__} has no `last_preferences` "
            "(gradbal.contracts.ReportsPreferences). Use gradbal.modules.DPOModule, or set "
            "`self.last_preferences = gradbal.contracts.PreferenceReport(...)` in your "
            "training_step."
        )


def _stale(owner: str, module: str, attribute: str, got: object, want: tuple[int, int]) -> str:
    return (
        f"{owner}: {module}.{attribute} does not belong to the batch that just ended (step "
        f"{want[0]}, batch_idx {want[1]}); got {got}. Set it in every training_step, with "
        "step=self.global_step and batch_idx=batch_idx, before the loss is returned."
    )


def batch_rollout(
    pl_module: LightningModule, owner: str, step: int, batch_idx: int
) -> RolloutReport:
    """The module's report of the batch ``(step, batch_idx)``; raise if it is stale or missing."""
    assert isinstance(pl_module, ReportsRollout)
    report = pl_module.last_rollout
    if report is None or (report.step, report.batch_idx) != (step, batch_idx):
        got = None if report is None else f"step {report.step}, batch_idx {report.batch_idx}"
        raise RuntimeError(
            _stale(owner, type(pl_module).__name__, "last_rollout", got, (step, batch_idx))
        )
    return report


def batch_preferences(
    pl_module: LightningModule, owner: str, step: int, batch_idx: int
) -> PreferenceReport:
    """The module's report of the batch ``(step, batch_idx)``; raise if it is stale or missing."""
    assert isinstance(pl_module, ReportsPreferences)
    report = pl_module.last_preferences
    if report is None or (report.step, report.batch_idx) != (step, batch_idx):
        got = None if report is None else f"step {report.step}, batch_idx {report.batch_idx}"
        raise RuntimeError(
            _stale(owner, type(pl_module).__name__, "last_preferences", got, (step, batch_idx))
        )
    return report


def new_groups(
    pl_module: LightningModule, owner: str, step: int, batch_idx: int
) -> GroupSummary | None:
    """The groups of the batch's rollout, or ``None`` if it was already counted (reused)."""
    report = batch_rollout(pl_module, owner, step, batch_idx)
    if not report.new:
        return None
    return group_summary(report.rewards, report.advantages, report.task_ids, report.group_ids)
