"""`make bench`: placeholder until the benchmark suite (issue 7) lands.

Speed goals live in benchmarks, not in timed tests; until the suite exists this prints
what it will measure and exits 0 without claiming any number."""

from __future__ import annotations


def main() -> int:
    print("fxlower bench: not implemented yet (issue 7). `make demo` reports onnxruntime "
          "latency of each zoo model, original vs lowered, in build/report.md.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
