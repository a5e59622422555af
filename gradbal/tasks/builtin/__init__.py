"""Built-in generated tasks: seeded, deterministic, with disjoint train/validation splits.

Prompts are compact plain text for byte-level tokenizers and tiny models, each starting with its
own keyword; answers are short and a completion ends at its first newline.

========== ===================== ============ ==================
task       prompt                answer       reward
========== ===================== ============ ==================
Addition   ``add 12+34=``        ``46``       ExactMatch
Countdown  ``cd 3 5 7>22=``      ``3*5+7``    CountdownReward
Reverse    ``rev abcde=``        ``edcba``    CharSimilarity
Sort       ``sort dbca=``        ``abcd``     CharSimilarity
CountChar  ``count a in abaca=`` ``3``        ExactMatch
========== ===================== ============ ==================
"""

from gradbal.tasks.builtin.addition import Addition
from gradbal.tasks.builtin.count_char import CountChar
from gradbal.tasks.builtin.countdown import Countdown
from gradbal.tasks.builtin.reverse import Reverse
from gradbal.tasks.builtin.sort import Sort

__all__ = ["Addition", "CountChar", "Countdown", "Reverse", "Sort"]
