"""Built-in generated tasks: seeded, deterministic, with disjoint train/validation splits.

Prompts are compact plain text for byte-level tokenizers and tiny models, each starting with its
own keyword; answers are short and a completion ends at its first newline.

============== ============================== ============================ ==================
task           prompt                         answer                       reward
============== ============================== ============================ ==================
Addition       ``add 12+34=``                 ``46``                       ExactMatch
Countdown      ``cd 3 5 7>22=``               ``3*5+7``                    CountdownReward
Reverse        ``rev abcde=``                 ``edcba``                    CharSimilarity
Sort           ``sort dbca=``                 ``abcd``                     CharSimilarity
CountChar      ``count a in abaca=``          ``3``                        ExactMatch
PythonFunction ``py f(2)=15 f(3)=20 f(6)=35:`` ``def f(x): return x*5+5``  UnitTestReward
============== ============================== ============================ ==================

PythonFunction's reward runs the completion and the row's ``tests`` (asserts) in a sandboxed
subprocess (:func:`~gradbal.tasks.run_untrusted`; see ``docs/security.md``).

Preference tasks (``chosen`` over ``rejected``; ``answer`` is ``chosen``), easiest first:

==================== ================ ============ ============== ==========================
task                 prompt           chosen       rejected       decided by
==================== ================ ============ ============== ==========================
PreferenceFormat     ``rec ab 42=``   ``{ab:42}``  ``{ab:42``     the completion's structure
PreferenceSort       ``sort dbca=``   ``abcd``     ``abdc``       one descent in the completion
PreferenceArithmetic ``add 12+34=``   ``46``       ``36``         the prompt (a sum)
==================== ================ ============ ============== ==========================
"""

from gradbal.tasks.builtin.addition import Addition
from gradbal.tasks.builtin.count_char import CountChar
from gradbal.tasks.builtin.countdown import Countdown
from gradbal.tasks.builtin.preference_arithmetic import PreferenceArithmetic
from gradbal.tasks.builtin.preference_format import PreferenceFormat
from gradbal.tasks.builtin.preference_sort import PreferenceSort
from gradbal.tasks.builtin.python_function import PythonFunction
from gradbal.tasks.builtin.reverse import Reverse
from gradbal.tasks.builtin.sort import Sort

__all__ = [
    "Addition",
    "CountChar",
    "Countdown",
    "PreferenceArithmetic",
    "PreferenceFormat",
    "PreferenceSort",
    "PythonFunction",
    "Reverse",
    "Sort",
]
