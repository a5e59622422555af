"""Per-task statistics (torch only): gradient shares captured in the training backward, norm
estimators, learning gains."""

from gradbal.gradstats.capture import TaskGradCapture
from gradbal.gradstats.cross_product import TaskGradStats, task_grad_stats
from gradbal.gradstats.group_stats import GroupSummary, group_summary, group_totals
from gradbal.gradstats.learning_gain import learning_gain, spearman
from gradbal.gradstats.param_selectors import (
    NAMED_SELECTIONS,
    last_attention_block,
    last_decoder_layer,
    layer_kind,
    select_modules,
)
from gradbal.gradstats.pooled import (
    RATIO_SUMS,
    SLOPE_SUMS,
    PooledEstimate,
    pooled_ratio,
    pooled_slope,
    ratio_sums,
    slope_sums,
)
from gradbal.gradstats.preference_parts import (
    PreferenceGradParts,
    preference_grad_parts,
    preference_segments,
)
from gradbal.gradstats.row_alignment import RowAlignment, check_row_alignment
from gradbal.gradstats.segments import (
    count_groups_per_segment,
    group_segments,
    half_split_segments,
)

__all__ = [
    "NAMED_SELECTIONS",
    "RATIO_SUMS",
    "SLOPE_SUMS",
    "GroupSummary",
    "PooledEstimate",
    "PreferenceGradParts",
    "RowAlignment",
    "TaskGradCapture",
    "TaskGradStats",
    "check_row_alignment",
    "count_groups_per_segment",
    "group_segments",
    "group_summary",
    "group_totals",
    "half_split_segments",
    "last_attention_block",
    "last_decoder_layer",
    "layer_kind",
    "learning_gain",
    "pooled_ratio",
    "pooled_slope",
    "preference_grad_parts",
    "preference_segments",
    "ratio_sums",
    "select_modules",
    "slope_sums",
    "spearman",
    "task_grad_stats",
]
