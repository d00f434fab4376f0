#!/usr/bin/env python
"""Model-zoo style report of train_net.py runs (the command line of :mod:`detkit.report`; its
docstring says what is read, written and how each column is measured).

    python tools/report.py OUTPUT_DIR... [--out DIR] [--baseline NAME] [--title T] [--smooth N]
"""
import argparse
import sys

from detkit.report import __doc__ as REPORT_DOC
from detkit.report import build_report
from detkit.runs import ReportError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=REPORT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR",
                        help="train.output_dir folders of train_net.py runs")
    parser.add_argument("--out", default="report", help="folder for report.md and the PNGs (default: %(default)s)")
    parser.add_argument("--baseline", help="name (or folder) of the run to compare the others of its group with")
    parser.add_argument("--title", default="Model-zoo report")
    parser.add_argument("--smooth", type=int, default=None,
                        help="running-median window of the curves, in logged points "
                             "(default: 1 per 25 points, at most 51)")
    args = parser.parse_args(argv)
    try:
        _, text = build_report(args.output_dirs, args.out, args.baseline, args.title, args.smooth)
    except ReportError as e:
        print(f"tools/report.py: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
