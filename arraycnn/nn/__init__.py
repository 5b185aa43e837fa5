"""Neural-network building blocks: layers, activations, losses, optimizers and models.

Layers hold parameters and keep what their backward needs; ``Sequential`` trains them
with a loss and an optimizer on any backend.
"""

from . import init
from .activations import (
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    identity,
    leaky_relu,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from .base import LAYERS, Layer
from .layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from .losses import (
    LOSSES,
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    Loss,
    MeanSquaredError,
    get_loss,
)
from .model import History, Sequential, load_model
from .optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    AdagradMomentum,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    RMSprop,
    get_optimizer,
)
from .serialization import ModelFileError

__all__ = [
    "LAYERS",
    "LOSSES",
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "AdagradMomentum",
    "Adam",
    "AdamW",
    "AvgPool2D",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "History",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MaxPool2D",
    "MeanSquaredError",
    "ModelFileError",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "get_loss",
    "get_optimizer",
    "identity",
    "init",
    "leaky_relu",
    "load_model",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]
