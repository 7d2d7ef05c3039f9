"""Paper B (operator analysis): SDEs, kernels, gEDMD, PC and FP samplers, experiments, report."""
