"""What a trained model is used for: recommendations and plots.

* :mod:`~recbole_hyper.serving.recommender`: :class:`Recommender`, top-k by
  user or item tokens and O(1) streaming updates;
* :mod:`~recbole_hyper.serving.plot`: HMamba's item embeddings on the
  Poincaré disk.
"""

from recbole_hyper.serving.recommender import Recommender, ServingData, ServingError, UnknownTokenError, serving_path

__all__ = ["Recommender", "ServingData", "ServingError", "UnknownTokenError", "serving_path"]
