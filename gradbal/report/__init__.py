"""``gradbal report``: figures and a Markdown summary from a run's TensorBoard event files.

Only the matplotlib-free entry points are re-exported here, so that importing the package (for
:func:`read_scalars` in a script) never needs the ``report`` extra;
:mod:`gradbal.report.figures` and :mod:`gradbal.report.summary` import matplotlib.
"""

from gradbal.report.command import report_main
from gradbal.report.events import read_scalars

__all__ = ["read_scalars", "report_main"]
