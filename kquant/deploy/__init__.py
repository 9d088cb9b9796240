"""What the deployed integer model computes, computed in Keras before export, per runtime."""
from kquant.deploy.integer_model import integer_model, integer_outputs
from kquant.deploy.runtimes import RUNTIMES

__all__ = ["RUNTIMES", "integer_model", "integer_outputs"]
