"""Benchmarks of kl-repro (``make bench``): ratios measured side by side on the machine at hand."""
