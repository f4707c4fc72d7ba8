"""Training: configuration and presets, the Accelerate loop, EMA, atomic checkpoints."""
