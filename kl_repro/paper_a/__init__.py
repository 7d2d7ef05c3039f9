"""Paper A (Ren et al. 2025): KL expansion, losses, DDIM, training, run matrices, report."""
