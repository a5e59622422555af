"""Learning-rate schedules, selectable from YAML through a module's ``lr_scheduler`` argument.

Each is a ``torch.optim.lr_scheduler.LambdaLR`` whose multiplier of the optimizer's ``lr`` is a
plain function of the optimizer step (``wsd_multiplier``, ``rex_multiplier``, ...), one file per
schedule, with its formula and paper. Their state (the step count) is in every checkpoint, so a
resumed run continues the schedule.
"""

from gradbal.schedules.infinite import InfiniteSchedule, infinite_multiplier
from gradbal.schedules.linear_with_warmup import LinearWithWarmup, linear_multiplier
from gradbal.schedules.rex import REX, rex_multiplier
from gradbal.schedules.warmup_stable_decay import WarmupStableDecay, wsd_multiplier

__all__ = [
    "REX",
    "InfiniteSchedule",
    "LinearWithWarmup",
    "WarmupStableDecay",
    "infinite_multiplier",
    "linear_multiplier",
    "rex_multiplier",
    "wsd_multiplier",
]
