"""Training data, training loop and evaluation of the custom extreme-point model."""
