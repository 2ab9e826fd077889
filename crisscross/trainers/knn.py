"""kNN accuracy of frozen features: the online monitor that sweeps select on.

Weighted k-nearest-neighbour voting on cosine similarity, as in DINO's kNN evaluation: each of the
k most similar training features votes for its label with weight exp(similarity / temperature).
Legend: N train, M test, D feature size, C classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(
    train_ND: torch.Tensor,
    train_labels: torch.Tensor,
    test_MD: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """(M,) predicted labels of the test features."""
    if train_ND.shape[0] == 0:
        raise ValueError("kNN needs at least one training feature")
    classes = classes or int(train_labels.max()) + 1
    k = min(k, train_ND.shape[0])
    train = F.normalize(train_ND.float(), dim=1)
    predictions = []
    for start in range(0, test_MD.shape[0], chunk):
        sims = F.normalize(test_MD[start : start + chunk].float(), dim=1) @ train.T
        top, index = sims.topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], classes).scatter_add_(
            1, train_labels[index], (top / temperature).exp()
        )
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_ND: torch.Tensor,
    train_labels: torch.Tensor,
    test_MD: torch.Tensor,
    test_labels: torch.Tensor,
    **kwargs: float,
) -> float:
    """Top-1 accuracy in [0, 1] of `knn_predict` on labelled test features."""
    predicted = knn_predict(train_ND, train_labels, test_MD, **kwargs)
    return float((predicted == test_labels).float().mean())
