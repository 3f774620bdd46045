"""Differential fuzzer of the rewrite passes (a development tool; not installed with fxlower).

    python -m tools.fuzz --cases 10000        # from the repository root; `make fuzz`

fuzz.py draws the models and runs the cases; oracle.py compares a lowered model with its
original (`evaluate`, also called by the regression tests in tests/regressions/).
"""
