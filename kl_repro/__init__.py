"""kl_repro: a reproducible companion to two diffusion-model papers.

Paper A: Ren et al. (2025), *Efficient Diffusion Training through Parallelization with Truncated
Karhunen-Loeve Expansion* (arXiv:2503.17657).  Paper B: *An Operator Analysis Approach on
SDE-Based Diffusion Generative Models* (anonymous submission).

Modules map one-to-one onto paper concepts; see ``CONTRIBUTING.md`` for the layering.
"""

__version__ = "0.1.0"
