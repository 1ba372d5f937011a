"""The federated foundation-model recommender (FedPA-style).

- ``backbone`` (frozen on clients, pretrained on public users): item embeddings and biases,
  and a history encoder (recency-weighted pooling of the last ``L`` items, then a linear map)
  that turns a user's own interaction history into a representation.
- ``shared`` (the global adapter, aggregated across clients): residual bottleneck adapters
  on the item and the user representation; zero-initialised, so round 0 is the backbone.
- ``personal`` (never leaves the device): a user embedding and a gate that mixes the global
  and personal views of each item. The personal view is the frozen backbone's
  (``personal_rank = 0``, the default: the gate chooses, per user, how far to follow the
  global adapter) or, with ``personal_rank > 0``, a personal residual item adapter's.

score(u, i) = <q_u, a_u e^p_i + (1 - a_u) e^g_i> + b_i, where e^g = global view,
e^p = personal view, q_u = h_u + A_g(h_u) + p_u and h_u the encoded history.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ffm_private.models.base import Recommender
from ffm_private.registry import register_model


class _Backbone(nn.Module):
    def __init__(self, n_items: int, dim: int, history_length: int) -> None:
        super().__init__()
        self.item_emb = nn.Parameter(torch.randn(n_items + 1, dim) * 0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.recency = nn.Parameter(torch.zeros(history_length))
        self.hist_proj = nn.Parameter(torch.eye(dim))
        with torch.no_grad():
            self.item_emb[n_items].zero_()

    def encode_history(self, history: torch.Tensor, pad: int) -> torch.Tensor:
        """Recency-weighted mean of the history's item embeddings, then a linear map."""
        mask = (history != pad).to(self.item_emb.dtype)
        # position j of the (right-aligned) window gets weight exp(recency[j])
        weights = torch.exp(self.recency - self.recency.max())[None, :] * mask
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        pooled = torch.einsum("nl,nld->nd", weights, self.item_emb[history])
        return pooled @ self.hist_proj


class BottleneckAdapter(nn.Module):
    """``x + up(relu(down(x)))``: a residual bottleneck of width ``rank``.

    Built from ``nn.Linear`` layers so that per-example gradients (Opacus) are available;
    ``up`` starts at zero, so a fresh adapter is the identity.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        with torch.no_grad():
            self.down.weight.normal_(0.0, dim**-0.5)
            self.up.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.down(x)))


class _GlobalAdapter(nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.item = BottleneckAdapter(dim, rank)
        self.user = BottleneckAdapter(dim, rank)


class _Personal(nn.Module):
    def __init__(self, num_personal: int, dim: int, rank: int, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        if enabled:
            self.user_emb = nn.Parameter(torch.zeros(num_personal, dim))
            if rank > 0:
                self.item_down = nn.Parameter(torch.zeros(num_personal, dim, rank))
                self.item_up = nn.Parameter(torch.zeros(num_personal, rank, dim))
            self.gate = nn.Parameter(torch.zeros(num_personal))


@register_model("ffm-pool", aliases=("ffm",))
class FFMRecommender(Recommender):
    """Frozen backbone + shared global adapter + local user embedding, gate (+ item adapter)."""

    item_embedding = "backbone.item_emb"

    @classmethod
    def from_config(cls, cfg, n_items: int, num_personal: int = 1) -> FFMRecommender:
        return cls(n_items, num_personal, dim=cfg.dim, history_length=cfg.history_length,
                   global_rank=cfg.global_rank, personal_rank=cfg.personal_rank,
                   personalization=cfg.personalization)

    def __init__(self, n_items: int, num_personal: int = 1, *, dim: int = 64,
                 history_length: int = 20, global_rank: int = 16, personal_rank: int = 0,
                 personalization: bool = True) -> None:
        super().__init__(n_items, num_personal)
        self.dim, self.history_length, self.personal_rank = dim, history_length, personal_rank
        self.backbone = _Backbone(n_items, dim, history_length)
        self.shared = _GlobalAdapter(dim, global_rank)
        self.personal = _Personal(num_personal, dim, personal_rank, personalization)
        self.finalize()

    def personal_init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        if not self.personal.enabled or self.personal_rank == 0:
            return {}
        down = torch.randn(self.dim, self.personal_rank, generator=gen) / self.dim**0.5
        return {"personal.item_down": down}

    def forward(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        bb, g = self.backbone, self.shared
        e = bb.item_emb[items]                                   # (N, B, d)
        e_global = g.item(e)
        h = bb.encode_history(history, self.pad)                 # (N, d)
        q = g.user(h)
        if self.personal.enabled:
            p = self.personal
            e_personal = e
            if self.personal_rank > 0:
                hidden = F.relu(torch.einsum("nbd,ndr->nbr", e, p.item_down[owner]))
                e_personal = e + torch.einsum("nbr,nrd->nbd", hidden, p.item_up[owner])
            a = torch.sigmoid(p.gate[owner])[:, None, None]
            e_mix = a * e_personal + (1 - a) * e_global
            q = q + p.user_emb[owner]
        else:
            e_mix = e_global
        return torch.einsum("nbd,nd->nb", e_mix, q) + bb.item_bias[items]
