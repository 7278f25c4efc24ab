"""HMamba's curvature-aware Mamba: the state matrix scaled by the Lorentz model's curvature.

The paper's discretisation ``A_bar = exp(delta A K(kappa))`` with
``K(kappa) = diag(sqrt|kappa|, 1, ..., 1)`` and kappa = -1/K: the first
state dimension's A is scaled by 1/sqrt(K) (the identity at K = 1).  A
learned K enters here too, as the same number the model's maps use.
"""

from __future__ import annotations

import torch

from recbole_hyper.layers.lorentz import Lorentz
from recbole_hyper.layers.mamba import Mamba

__all__ = ["CurvatureAwareMamba"]


class CurvatureAwareMamba(Mamba):
    """Mamba whose state matrix is A K(kappa): column 0 scaled by sqrt(|kappa|) = 1/sqrt(K)."""

    def __init__(self, *args, lorentz: Lorentz = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Held without registering it as a submodule: the model owns it.
        self._lorentz = [lorentz]

    def state_matrix(self) -> torch.Tensor:
        A = super().state_matrix()
        scale = torch.ones(A.shape[-1], dtype=A.dtype, device=A.device)
        scale = torch.cat([self._lorentz[0].k.to(A.dtype).rsqrt().reshape(1), scale[1:]])
        return A * scale
