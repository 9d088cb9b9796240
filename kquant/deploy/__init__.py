"""What the deployed integer model computes, computed in Keras before export, per runtime."""
from kquant.deploy.bias import SnapBiases, snap_biases
from kquant.deploy.integer_model import integer_model, integer_outputs
from kquant.deploy.runtimes import RUNTIMES
from kquant.deploy.storage import WEIGHT_STORAGES

__all__ = ["RUNTIMES", "SnapBiases", "WEIGHT_STORAGES", "integer_model", "integer_outputs",
           "snap_biases"]
