"""Paper B (operator analysis of SDE-based diffusion models) and its Fokker-Planck eigenfunction sampler.

* SDEs and score models: :mod:`.sde`, :mod:`.scores`, :mod:`.dsm`; the PC baseline: :mod:`.pc` (Methods B.1).
* Kernel gEDMD: :mod:`.kernels`, :mod:`.gedmd` (Methods B.2).
* The FP sampler: :mod:`.fp_config`, :mod:`.fp_operator`, :mod:`.fp_density`, :mod:`.langevin`, :mod:`.inits`,
  :mod:`.groups`, :mod:`.memorisation` (Methods B.3-B.4).
* Experiments: :mod:`.spectra`, :mod:`.toy_experiments`, :mod:`.image_data`, :mod:`.image_runs`,
  :mod:`.image_experiments`; their presentation: :mod:`.verdicts`, :mod:`.report`, :mod:`.figures`, :mod:`.tables`.
"""
