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

Chat tasks, for instruct models: prompts are questions, formatted with the tokenizer's chat
template by the modules, each ending "Reply with just the final number, nothing else."; the
reply's final answer is checked with ``math-verify`` (:class:`~gradbal.tasks.MathAnswerMatch`).
:class:`ChatPreference` turns any of them into preference pairs for DPO (the answer over a near
miss).

================== ============================================================ ======
task               question                                                     answer
================== ============================================================ ======
ChatComparison     ``Which number is larger, 37 or 52?``                        ``52``
ChatAddition       ``What is 23 + 58?``                                         ``81``
ChatMultiplication ``What is 7 times 8?``                                       ``56``
ChatWordProblem    ``Tom has 12 marbles. He buys 5 more. How ...?``             ``17``
ChatSequence       ``What number comes after 9 in the sequence 1, 3, 5, 7, 9?`` ``11``
================== ============================================================ ======
"""

from gradbal.tasks.builtin.addition import Addition
from gradbal.tasks.builtin.chat_addition import ChatAddition
from gradbal.tasks.builtin.chat_comparison import ChatComparison
from gradbal.tasks.builtin.chat_multiplication import ChatMultiplication
from gradbal.tasks.builtin.chat_preference import ChatPreference
from gradbal.tasks.builtin.chat_sequence import ChatSequence
from gradbal.tasks.builtin.chat_word_problem import ChatWordProblem
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
    "ChatAddition",
    "ChatComparison",
    "ChatMultiplication",
    "ChatPreference",
    "ChatSequence",
    "ChatWordProblem",
    "CountChar",
    "Countdown",
    "PreferenceArithmetic",
    "PreferenceFormat",
    "PreferenceSort",
    "PythonFunction",
    "Reverse",
    "Sort",
]
