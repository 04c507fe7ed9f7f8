"""The model at work: device and batching (runtime), the training loop on accelerate, checkpoints,
launching many processes and machines."""
