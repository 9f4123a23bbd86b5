"""What ``make bench`` runs: the discrete-flow speed benchmark with its default settings.

Other benchmark scripts in this folder are run by hand (see ``benchmarks/README.md``). Extra
command-line arguments are passed on to ``benchmarks/flows.py``, e.g.
``python benchmarks/run.py --quick``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import flows


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``benchmarks/flows.py`` with ``argv`` (default: this process's arguments)."""
    flows.main(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()
