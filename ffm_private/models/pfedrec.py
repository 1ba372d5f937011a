"""PFedRec (Zhang et al., IJCAI 2023) as its official code runs it: the published anchor.

- ``shared``: the item embedding table, aggregated by FedAvg (the mean of the clients'
  locally trained tables is the received table plus the mean update).
- ``personal``: the score function (a linear map of the item embedding to a logit, with its
  bias), which never leaves the device, and the client's **post-tuned** item embeddings:
  what its own local training did to the received table this round (``item_delta``).
- Local training alternates, per mini-batch, one SGD step on the score function (learning
  rate ``personal_lr``) and then one on the item embeddings (learning rate
  ``lr * n_items * lr_eta``: the official code's scaling, which undoes the loss being averaged
  over a batch whose rows each touch a few of the many item rows).
- Training always starts from the received table (the official code reloads it every
  round); inference uses the current global table plus the client's own last update. There
  is no backbone and no history: the score depends on the item and the user's own score
  function.

Deviations from the paper and its code are listed in docs/models.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ffm_private.models.base import Recommender
from ffm_private.models.partition import PERSONAL, SHARED, params_of
from ffm_private.registry import register_model
from ffm_private.training_data import Examples

#: The official defaults (train.py of the PFedRec code): latent_dim 32, lr 0.1, lr_eta 80,
#: batch 256, one local epoch, 4 negatives, SGD, no weight decay.
OFFICIAL_DIM, OFFICIAL_LR, OFFICIAL_LR_ETA = 32, 0.1, 80.0


class _SharedItems(nn.Module):
    """Item embeddings (``nn.Embedding``: per-example gradients); N(0, 1) as torch's default."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.item_emb = nn.Embedding(n_items + 1, dim)
        with torch.no_grad():
            self.item_emb.weight.copy_(torch.randn(n_items + 1, dim, generator=gen))
            self.item_emb.weight[n_items].zero_()


class _PersonalScore(nn.Module):
    def __init__(self, num_personal: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.score_w = nn.Parameter(torch.zeros(num_personal, dim))
        self.score_b = nn.Parameter(torch.zeros(num_personal))
        self.item_delta = nn.Parameter(torch.zeros(num_personal, n_items + 1, dim))


@register_model("pfedrec")
class PFedRecRecommender(Recommender):
    """score(u, i) = w_u . e^u_i + b_u, with e shared and (w_u, b_u, post-tuning) personal."""

    item_embedding = "shared.item_emb.weight"
    item_rows = ("shared.item_emb.weight",)

    @classmethod
    def from_config(cls, cfg, n_items: int, num_personal: int = 1) -> PFedRecRecommender:
        return cls(n_items, num_personal, dim=cfg.dim, lr_eta=cfg.lr_eta)

    def __init__(self, n_items: int, num_personal: int = 1, *, dim: int = OFFICIAL_DIM,
                 lr_eta: float = OFFICIAL_LR_ETA) -> None:
        super().__init__(n_items, num_personal)
        self.dim, self.lr_eta = dim, lr_eta
        self.backbone = nn.Module()
        self.shared = _SharedItems(n_items, dim)
        self.personal = _PersonalScore(num_personal, n_items, dim)
        self.finalize()

    def personal_init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Every user starts from the same score function, as in the official code.

        ``nn.Linear``'s default initialisation, drawn once from a fixed seed (not ``gen``).
        """
        fixed = torch.Generator().manual_seed(1)
        bound = self.dim ** -0.5
        w = (torch.rand(self.dim, generator=fixed) * 2 - 1) * bound
        b = (torch.rand(1, generator=fixed) * 2 - 1) * bound
        return {"personal.score_w": w, "personal.score_b": b[0]}

    def forward(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        e = self.shared.item_emb(items)                                 # (N, B, d)
        if not self.training:  # inference: the client's post-tuned view of the table
            e = e + self.personal.item_delta[owner[:, None], items]
        p = self.personal
        return torch.einsum("nbd,nd->nb", e, p.score_w[owner]) + p.score_b[owner][:, None]

    def local_train(self, examples: Examples, *, epochs: int, lr: float, personal_lr: float,
                    batch_size: int, seed: int) -> tuple[float, float]:
        """The official client step: per batch, an SGD step on the score, then on the items.

        As the official code, a batch holds ``batch_size`` (item, label) pairs (a positive
        and each of its negatives are separate pairs), shuffled together, and the loss is
        the mean over pairs. Returns the mean losses of the score and the item steps.
        """
        score = [self.personal.score_w, self.personal.score_b]
        items_p = list(params_of(self, SHARED).values())
        for p in score + items_p:
            p.requires_grad_(True)
        opt_score = torch.optim.SGD(score, lr=personal_lr)
        opt_items = torch.optim.SGD(items_p, lr=lr * self.n_items * self.lr_eta)
        items = torch.from_numpy(examples.items).reshape(-1, 1)
        labels = torch.from_numpy(examples.labels).reshape(-1, 1)
        history = torch.full((len(items), 1), self.pad, dtype=torch.long)  # not read
        owner = torch.zeros(len(items), dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)
        totals, count = [0.0, 0.0], 0
        try:
            for _ in range(epochs):
                order = torch.randperm(len(items), generator=gen)
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    for k, opt in enumerate((opt_score, opt_items)):
                        opt_score.zero_grad(set_to_none=True)
                        opt_items.zero_grad(set_to_none=True)
                        logits = self(history[idx], items[idx], owner[idx])
                        loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
                        loss.backward()
                        opt.step()
                        totals[k] += float(loss.detach()) * len(idx)
                    count += len(idx)
        finally:
            for p in score + items_p:
                p.requires_grad_(False)
        if count == 0:
            return float("nan"), float("nan")
        return totals[0] / count, totals[1] / count

    def after_local_training(self, received: Mapping[str, np.ndarray]) -> None:
        """Keep this round's own update of the table as the personal post-tuning."""
        name = "shared.item_emb.weight"
        with torch.no_grad():
            delta = self.shared.item_emb.weight - torch.as_tensor(np.asarray(received[name]))
            params_of(self, PERSONAL)["personal.item_delta"][0].copy_(delta)
