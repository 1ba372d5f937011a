"""The classic baseline that shares item embeddings (FedMF / PFedRec style).

``shared`` holds the whole item embedding table and item biases, so each client's update
reveals which items it touched: the published quality anchor, and the case the attack
module must show leaking. ``personal`` is the user embedding. There is no backbone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ffm_private.models.base import Recommender
from ffm_private.registry import register_model


class _SharedItems(nn.Module):
    """Item embeddings and biases as ``nn.Embedding`` tables (per-example gradients)."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.item_emb = nn.Embedding(n_items + 1, dim)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        with torch.no_grad():
            self.item_emb.weight.copy_(torch.randn(n_items + 1, dim, generator=gen) * 0.1)
            self.item_bias.weight.zero_()


class _PersonalUser(nn.Module):
    def __init__(self, num_personal: int, dim: int) -> None:
        super().__init__()
        self.user_emb = nn.Parameter(torch.zeros(num_personal, dim))


@register_model("fedmf")
class FedMFRecommender(Recommender):
    """score(u, i) = <p_u, e_i> + b_i with e, b shared and p_u personal."""

    item_embedding = "shared.item_emb.weight"
    item_rows = ("shared.item_emb.weight", "shared.item_bias.weight")
    stacked_item_rows = True

    @classmethod
    def from_config(cls, cfg, n_items: int, num_personal: int = 1) -> FedMFRecommender:
        return cls(n_items, num_personal, dim=cfg.dim)

    def __init__(self, n_items: int, num_personal: int = 1, *, dim: int = 64) -> None:
        super().__init__(n_items, num_personal)
        self.dim = dim
        self.backbone = nn.Module()
        self.shared = _SharedItems(n_items, dim)
        self.personal = _PersonalUser(num_personal, dim)
        self.finalize()

    def personal_init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"personal.user_emb": torch.randn(self.dim, generator=gen) * 0.1}

    def forward(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        e = self.shared.item_emb(items)
        bias = self.shared.item_bias(items).squeeze(-1)
        return torch.einsum("nbd,nd->nb", e, self.personal.user_emb[owner]) + bias

    def frozen_rows(self, history: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}  # no backbone: the score reads no history

    def stacked_scores(self, rows, items, params):
        """``forward`` for ``A`` clients at once, each with its own (stacked) item tables."""
        n_clients, n_rows, n_cand = items.shape
        table, bias = params["shared.item_emb.weight"], params["shared.item_bias.weight"]
        # client a's item i is row a * T + i of the clients' tables laid end to end
        flat = (items.reshape(n_clients, -1)
                + table.shape[1] * torch.arange(n_clients)[:, None]).reshape(-1)
        e = F.embedding(flat, table.reshape(-1, table.shape[-1]))          # (A RK, d)
        user = params["personal.user_emb"][:, 0, :, None]                  # (A, d, 1)
        score = torch.bmm(e.view(n_clients, n_rows * n_cand, -1), user).view(items.shape)
        return score + F.embedding(flat, bias.reshape(-1, 1)).view(items.shape)
