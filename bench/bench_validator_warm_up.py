"""The warm DicomSRValidator's first pass, with and without a warm-up SR.

A fresh warm JVM (daemon/report/warm_validator.py) validates its first measurement
report slower than the next ones: the XSLT runs before the JIT has compiled it. A node
that has made reports warms the JVM at start-up with its newest SR. For each repeat,
two fresh JVMs: one validates ``SR`` first (what the first report after a restart met
before), the other validates ``WARM_UP`` first, as the node does, then ``SR``. Prints
the medians and their ratio (the cold first pass is the reference). Any two of the
node's SRs serve, e.g. ``var/results/*/*/sr.dcm`` or those a test run leaves under
/tmp/pytest-of-$USER.

Usage: .venv/bin/python -m bench.bench_validator_warm_up SR WARM_UP [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from daemon.report.warm_validator import WarmSrValidator
from tests.support.peers import wait_until

TIMEOUT_S = 120.0


def first_pass_s(sr: Path, warm_up: Path | None) -> float:
    """Seconds the first validation of ``sr`` takes in a fresh JVM (after ``warm_up``)."""
    validator = WarmSrValidator()
    validator.start(warm_up_with=warm_up)
    try:
        if not validator.wait_until_ready(TIMEOUT_S):
            raise SystemExit("the warm SR validator did not start")
        if warm_up is not None:
            wait_until(lambda: validator.warm_ups > 0, timeout_s=TIMEOUT_S)
        started = time.perf_counter()
        validator.validate(sr, TIMEOUT_S)
        return time.perf_counter() - started
    finally:
        validator.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sr", type=Path)
    parser.add_argument("warm_up", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not WarmSrValidator().available:
        print("java and pixelmed are needed (deploy/install-system-packages.sh)", file=sys.stderr)
        return 2
    cold = [first_pass_s(args.sr, None) for _ in range(args.repeats)]
    warmed = [first_pass_s(args.sr, args.warm_up) for _ in range(args.repeats)]
    print(f"first validation of the SR in a fresh JVM, median of {args.repeats}:")
    print(f"  cold (no warm-up)        {statistics.median(cold):6.3f} s   runs {', '.join(f'{t:.3f}' for t in cold)}")
    print(f"  after warm-up on another {statistics.median(warmed):6.3f} s   runs {', '.join(f'{t:.3f}' for t in warmed)}")
    print(f"  ratio warmed / cold      {statistics.median(warmed) / statistics.median(cold):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
