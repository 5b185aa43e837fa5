"""Neural-network building blocks: layers, activations, losses, optimizers and models."""
