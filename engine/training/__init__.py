"""Training: shared Trainer setup, the KD trainer and its losses (exact and chunked), precision, callbacks, cached
teacher targets."""
