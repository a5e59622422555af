"""``gradbal report RUN_DIR [RUN_DIR ...]``: figures and a Markdown summary of finished runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gradbal.report.events import read_scalars

INSTALL_HINT = "pip install 'gradbal[report]'"


def report_main(argv: list[str] | None = None) -> int:
    """Run ``gradbal report`` with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Reads every run's TensorBoard scalars (:func:`~gradbal.report.events.read_scalars`), writes
    the figures of :mod:`gradbal.report.figures` that the logged tags allow and
    ``summary.md``, and prints where they went. Exit codes: 0 on success (also when some or
    all figures were skipped for missing tags: the summary says which), 1 when a run directory
    has no event file or matplotlib is missing, 2 on bad arguments.

    Example::

        >>> report_main(["--help"])  # doctest: +ELLIPSIS
        usage: gradbal report [-h] ...
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own message for bad arguments
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.smooth < 1:
        parser.print_usage(sys.stderr)
        print(f"gradbal report: --smooth must be >= 1. Got {args.smooth}.", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        print(
            f"gradbal report draws its figures with matplotlib, which is not importable here "
            f"({error}). Install it with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 1
    from gradbal.report import figures
    from gradbal.report.summary import write_summary

    run_dirs: list[Path] = args.run_dirs
    try:
        labels = run_labels(run_dirs, args.labels)
    except ValueError as error:
        parser.print_usage(sys.stderr)
        print(f"gradbal report: {error}", file=sys.stderr)
        return 2
    try:
        runs = {label: read_scalars(path) for label, path in zip(labels, run_dirs, strict=True)}
    except FileNotFoundError as error:
        print(f"gradbal report: {error}", file=sys.stderr)
        return 1
    out: Path = args.out or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("report"))
    written = {
        "grad_norm_sq": figures.plot_grad_norms(runs, out),
        "sampling_probs": figures.plot_sampling_probs(runs, out),
        "reward": figures.plot_rewards(runs, out, smooth=args.smooth),
        "val_accuracy": figures.plot_val_accuracy(runs, out),
        "grad_norm_vs_gain": figures.plot_grad_vs_gain(runs, out),
    }
    summary = write_summary(
        runs, dict(zip(labels, run_dirs, strict=True)), written, out, smooth=args.smooth
    )
    drawn = sum(path is not None for path in written.values())
    print(f"gradbal report: wrote {summary} with {drawn} of {len(written)} figures.")
    if drawn < len(written):
        print(f"  Skipped figures and their missing tags are listed in {summary}.")
    return 0


def run_labels(run_dirs: Sequence[Path], labels: str | None = None) -> list[str]:
    """One readable label per run: ``labels`` split on commas, else each directory's name.

    Names of different directories that collide (``version_0`` of two runs) get their parent's
    name in front; a label that still repeats (the same run twice) gets a ``(2)``, ``(3)``...
    suffix.

    Raises:
        ValueError: If ``labels`` does not give one non-empty, distinct label per run.

    Example::

        >>> run_labels([Path("study/uniform"), Path("study/inverse")])
        ['uniform', 'inverse']
        >>> run_labels([Path("a/version_0"), Path("b/version_0"), Path("b/version_0")])
        ['a/version_0', 'b/version_0', 'b/version_0 (2)']
        >>> run_labels([Path("runs/uniform"), Path("runs/uniform")], labels="before,after")
        ['before', 'after']
    """
    if labels is not None:
        given = [label.strip() for label in labels.split(",")]
        if len(given) != len(run_dirs) or not all(given) or len(set(given)) != len(given):
            raise ValueError(
                f"--labels must give one distinct, non-empty label per run directory "
                f"({len(run_dirs)}). Got {labels!r}."
            )
        return given
    resolved = [p.resolve() for p in run_dirs]
    names = [r.name or str(r) for r in resolved]
    names = [
        "/".join(r.parts[-2:]) if len({q for q in resolved if q.name == r.name}) > 1 else name
        for name, r in zip(names, resolved, strict=True)
    ]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradbal report",
        description=(
            "Figures (per-task squared gradient norms, sampling probabilities, rewards, "
            "validation accuracy, gradient norm vs learning gain) and a Markdown summary from "
            "the TensorBoard event files of one run, or a comparison of several."
        ),
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="A default_root_dir, a lightning_logs/version_* directory, or any directory "
        "with event files (searched recursively; versions are merged in order).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Output directory. Default: RUN_DIR/report for one run, ./report for several.",
    )
    parser.add_argument(
        "--labels", default=None, help="Comma-separated run labels. Default: directory names."
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=1,
        help="Moving-average window (logged points) for the reward curves. Default: 1 (raw).",
    )
    return parser
