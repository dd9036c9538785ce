"""fastsoftmax: softmax regression trained near the hardware limit, on CPU and GPU."""

from .backends import BackendUnavailableError, available_backends, get_backend
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .estimator import SoftmaxClassifier
from .objective import SoftmaxObjective, loss_and_grad
from .persistence import ModelFileError, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Checkpoint",
    "CheckpointError",
    "ModelFileError",
    "SoftmaxClassifier",
    "SoftmaxObjective",
    "available_backends",
    "get_backend",
    "load_checkpoint",
    "load_model",
    "loss_and_grad",
    "save_model",
    "__version__",
]
