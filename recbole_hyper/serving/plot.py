"""Item embeddings of a trained hyperbolic model on the Poincare disk.

    recbole-hyper plot saved/HMamba-<date>.pth --out items.png

Each item v is the point exp_o([0; E_v]) of the model's Lorentz model.  The
2-D picture keeps each item's true hyperbolic distance r from the origin
(disk radius tanh(r / (2 sqrt K)), the Poincare-disk image of that distance)
and takes its direction from the first two principal components of the
tangent vectors at the origin.  Colour: the item's number of training
interactions (log scale).  Needs matplotlib (``pip install recbole-hyper[plot]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

__all__ = ["poincare_disk_coordinates", "plot_poincare", "item_popularity"]


def poincare_disk_coordinates(model) -> np.ndarray:
    """(n_items - 1, 2) disk coordinates of every item but the padding id 0."""
    lorentz = getattr(model, "lorentz", None)
    if lorentz is None:
        raise TypeError(f"{type(model).__name__} has no Lorentz model; use a hyperbolic model (HMamba).")
    with torch.no_grad():
        v = lorentz.clip_tangent(model.item_embedding.weight[1:].double().cpu())
        K = float(lorentz.k)
        centred = v - v.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        plane = v @ vh[:2].T
        radius = torch.tanh(v.norm(dim=1) / (2 * K**0.5))
        direction = plane / plane.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (direction * radius.unsqueeze(1)).numpy()


def plot_poincare(model, popularity: np.ndarray, out: Path, title: Optional[str] = None) -> Path:
    """Draw the disk and save it as PNG; ``popularity`` has one count per item id >= 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = poincare_disk_coordinates(model)
    colour = np.log10(1.0 + np.asarray(popularity, dtype=float))
    order = np.argsort(colour)  # popular items drawn last, on top
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=120)
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="black", linewidth=1.0))
    points = ax.scatter(xy[order, 0], xy[order, 1], c=colour[order], s=6, cmap="viridis", linewidths=0)
    fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04, label="log10(1 + training interactions)")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or "Item embeddings on the Poincare disk")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def item_popularity(train_dataset, n_items: int) -> np.ndarray:
    """Training interactions per item id 1..n_items-1 (the train split's user-item matrix)."""
    matrix = train_dataset.inter_matrix(form="csr")
    counts = np.asarray((matrix > 0).sum(axis=0)).ravel()
    counts = np.pad(counts, (0, max(0, n_items - counts.shape[0])))
    return counts[1:n_items]
