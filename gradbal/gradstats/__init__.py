"""Per-task statistics (torch only): gradient shares captured in the training backward, norm
estimators, learning gains."""

from gradbal.gradstats.capture import TaskGradCapture
from gradbal.gradstats.cross_product import TaskGradStats, task_grad_stats
from gradbal.gradstats.learning_gain import learning_gain, spearman
from gradbal.gradstats.param_selectors import (
    NAMED_SELECTIONS,
    last_attention_block,
    last_decoder_layer,
    layer_kind,
    select_modules,
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
    "PreferenceGradParts",
    "RowAlignment",
    "TaskGradCapture",
    "TaskGradStats",
    "check_row_alignment",
    "count_groups_per_segment",
    "group_segments",
    "half_split_segments",
    "last_attention_block",
    "last_decoder_layer",
    "layer_kind",
    "learning_gain",
    "preference_grad_parts",
    "preference_segments",
    "select_modules",
    "spearman",
    "task_grad_stats",
]
