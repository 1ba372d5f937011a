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

from collections.abc import Callable

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

    def encode_history_bags(self, history: torch.Tensor, pad: int) -> torch.Tensor:
        """:meth:`encode_history` for histories of any leading shape ``(..., L)``.

        The same weights and map, pooled with ``F.embedding_bag`` (a weighted sum per row)
        instead of gathering an ``(N, L, d)`` tensor first; equal to float tolerance.
        """
        flat = history.reshape(-1, history.shape[-1])
        mask = (flat != pad).to(self.item_emb.dtype)
        weights = torch.exp(self.recency - self.recency.max())[None, :] * mask
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        pooled = F.embedding_bag(flat, self.item_emb, per_sample_weights=weights, mode="sum")
        return (pooled @ self.hist_proj).reshape(*history.shape[:-1], -1)


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
        e = self.backbone.item_emb[items]                        # (N, B, d)
        return self._scores(history, items, owner, e, self.shared.item(e))

    def eval_scorer(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``forward`` with the global item view computed once for every item.

        The global adapter acts on each item's frozen embedding alone, so scoring every
        user against every item needs it once per item, not once per (user, item): the
        returned function gathers it from a table and does the rest as ``forward`` does.
        """
        table = self.shared.item(self.backbone.item_emb)

        def score(history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor
                  ) -> torch.Tensor:
            return self._scores(history, items, owner, F.embedding(items, self.backbone.item_emb),
                                F.embedding(items, table))

        return score

    def _scores(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor,
                e: torch.Tensor, e_global: torch.Tensor) -> torch.Tensor:
        """The score from the candidates' frozen embeddings ``e`` and global views."""
        bb, g = self.backbone, self.shared
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

    # -- the batched engine's formulation (same scores as forward, client by client) ---------
    def frozen_rows(self, history: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each row's encoded history ``h`` (the candidates are looked up at each step)."""
        with torch.no_grad():
            return {"h": self.backbone.encode_history_bags(history, self.pad)}

    def stacked_scores(self, rows, items, params):
        """``forward`` for ``A`` clients at once, each with its own stacked parameters.

        The same score, regrouped so that no ``(A, R, K, d)`` tensor is built but the frozen
        candidate embeddings ``e``: with ``e_g = e + up(relu(down(e)))``,
        ``<q, e_g> = <q, e> + <relu(down(e)), up^T q>`` (likewise for the personal item
        adapter), so the up projections act on the ``R`` user vectors rather than on the
        ``R K`` item vectors.
        """
        n_clients, n_rows, n_cand = items.shape
        bb, h = self.backbone, rows["h"]                                   # h: (A, R, d)
        e = F.embedding(items, bb.item_emb.detach())                       # (A, R, K, d)
        flat = e.view(n_clients, n_rows * n_cand, -1)                      # (A, RK, d)
        bias = bb.item_bias.detach().index_select(0, items.reshape(-1)).view(items.shape)
        down_u, up_u = params["shared.user.down.weight"], params["shared.user.up.weight"]
        down_i, up_i = params["shared.item.down.weight"], params["shared.item.up.weight"]
        if self.personal.enabled and not any(
                v.requires_grad for k, v in params.items() if k.startswith("shared.")):
            return self._personal_phase_scores(h, e, flat, bias, params)
        q = h + _linear(F.relu(_linear(h, down_u)), up_u)
        if self.personal.enabled:
            q = q + params["personal.user_emb"]                            # (A, 1, d)
        score = torch.einsum("arkd,ard->ark", e, q)                        # <q, e>
        hidden = F.relu(_linear(flat, down_i)).view(n_clients, n_rows, n_cand, -1)
        adapt = (hidden @ _matmul(q, up_i).unsqueeze(-1)).squeeze(-1)     # <q, e_g - e>
        if self.personal.enabled:
            a = torch.sigmoid(params["personal.gate"])[:, :, None]          # (A, 1, 1)
            score = score + (1 - a) * adapt
            if self.personal_rank > 0:
                score = score + a * self._personal_adapter(flat, q, params, e.shape)
        else:
            score = score + adapt
        return score + bias

    def _personal_adapter(self, flat: torch.Tensor, q: torch.Tensor, params, shape
                          ) -> torch.Tensor:
        """``<q, e_p - e> = <relu(e down_p), up_p q>`` per candidate."""
        down_p = params["personal.item_down"][:, 0]                        # (A, d, r)
        up_p = params["personal.item_up"][:, 0]                            # (A, r, d)
        hidden_p = F.relu(torch.bmm(flat, down_p)).view(*shape[:3], -1)
        return (hidden_p @ torch.bmm(q, up_p.transpose(1, 2)).unsqueeze(-1)).squeeze(-1)

    def _personal_phase_scores(self, h, e, flat, bias, params) -> torch.Tensor:
        """The scores while only personal parameters train (the shared ones are fixed).

        What depends on the fixed shared adapters alone is computed without gradients
        (``q0 = h + up_u relu(down_u h)``, ``relu(down_i e)``, and their products with
        ``e``); the user embedding ``p`` then enters through one matrix-vector product per
        client: ``<q0 + p, e_g> = <q0, e_g> + <e, p> + <relu(down_i e), up_i^T p>``.
        """
        n_clients, n_rows, n_cand, _ = e.shape
        up_i = params["shared.item.up.weight"]
        with torch.no_grad():
            q0 = h + _linear(F.relu(_linear(h, params["shared.user.down.weight"])),
                             params["shared.user.up.weight"])
            hidden = F.relu(_linear(flat, params["shared.item.down.weight"]))   # (A, RK, r)
            fixed_e = torch.einsum("arkd,ard->ark", e, q0)                     # <q0, e>
            fixed_g = (hidden.view(n_clients, n_rows, n_cand, -1)
                       @ _matmul(q0, up_i).unsqueeze(-1)).squeeze(-1)          # <q0, e_g - e>
        user = params["personal.user_emb"]                                     # (A, 1, d)
        shape = (n_clients, n_rows, n_cand)
        user_e = torch.bmm(flat, user.transpose(1, 2)).view(shape)             # <p, e>
        user_g = torch.bmm(hidden, _matmul(user, up_i).transpose(1, 2)).view(shape)
        a = torch.sigmoid(params["personal.gate"])[:, :, None]                  # (A, 1, 1)
        score = fixed_e + user_e + (1 - a) * (fixed_g + user_g)
        if self.personal_rank > 0:
            score = score + a * self._personal_adapter(flat, q0 + user, params, e.shape)
        return score + bias


def _matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` per client: ``x`` is ``(A, N, i)``, ``w`` the clients' ``(A, i, o)``.

    A weight broadcast to every client (a stride-0 client axis: the received shared state
    during the personal phase) is applied as one matrix product over all the rows.
    """
    if w.stride(0) == 0 or w.shape[0] == 1:
        return x @ w[0]
    return torch.bmm(x, w)


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``nn.Linear`` without bias per client: ``x @ w^T`` with ``w`` the ``(A, o, i)`` weights."""
    return _matmul(x, w.transpose(1, 2))
