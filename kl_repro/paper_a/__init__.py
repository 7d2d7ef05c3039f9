"""Paper A (Ren et al. 2025): diffusion training with the truncated Karhunen-Loeve expansion.

* The KL expansion and the forward paths: :mod:`.kl` (Methods A.3), :mod:`.forward_paths` (A.8).
* Losses and sampling: :mod:`.losses` (A.2, A.5), :mod:`.ddim` (A.6).
* Training runs: :mod:`.training` (config, run folder, checkpoints, loop), :mod:`.evaluate`, :mod:`.run_hooks`.
* The run matrix and the results: :mod:`.matrix`, :mod:`.results`, :mod:`.tables`, :mod:`.figures`,
  :mod:`.verdicts`; the gradient-conflict diagnostic: :mod:`.gradient_conflict`.
"""
