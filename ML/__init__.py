"""fastml's machine-learning library: datasets, training, model store and jobs (no web code)."""
