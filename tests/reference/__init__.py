"""Plain-Python reference implementations of the compiled algorithms (test oracles, bench baselines)."""
