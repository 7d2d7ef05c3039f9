"""Layer 0: configs, RNG, results store, profiles, artefact registry, plotting."""
