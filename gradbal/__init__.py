"""gradbal: multi-task LLM post-training on Lightning, with per-task gradient balancing."""

from gradbal.task_losses import report_task_losses, set_task_loss_weights, task_loss_weights

__all__ = ["report_task_losses", "set_task_loss_weights", "task_loss_weights"]
