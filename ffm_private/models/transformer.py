"""The transformer foundation-model recommender (SASRec-style backbone, LoRA adapters).

- ``backbone`` (pretrained on public users, frozen on clients): item and position
  embeddings, item biases, and ``layers`` pre-norm blocks of causal self-attention and a
  position-wise feed-forward net over the user's most recent ``history_length`` items
  (SASRec, Kang & McAuley 2018). The user representation is the output at the most recent
  position; items are scored against it with the same (tied) item embeddings.
- ``shared`` (the global adapter, aggregated): LoRA factors on every attention projection
  (q, k, v, o) and both feed-forward projections of every block, and on the item embeddings
  the scores read (an identity projection of the frozen table), rank ``global_rank``. With
  ``ffa_lora`` the ``A`` factors are frozen at their seeded initialisation and live in the
  backbone: only the ``B`` factors are trained and sent (:mod:`ffm_private.models.lora`).
- ``personal`` (never leaves the device): a user embedding ``p_u``, a gate ``g_u`` and, with
  ``personal_rank > 0``, a personal LoRA ``(D_u, U_u)`` on the user representation:

  score(u, i) = <h + sigmoid(g_u) (U_u D_u h + p_u), e_i + B A e_i> + b_i,
  h = encoder(history), (A, B) the item LoRA.

A query position attends to itself and to earlier non-padding positions, so an empty
history still has a defined representation (the position embedding's).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ffm_private.models.base import Recommender
from ffm_private.models.lora import lora_down, lora_up
from ffm_private.registry import register_model

#: The adapted projections of each block, with their (input, output) widths in units of dim.
PROJECTIONS = ("q", "k", "v", "o", "ff1", "ff2")


class _Block(nn.Module):
    """One pre-norm transformer block's frozen weights."""

    def __init__(self, dim: int, ffn: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)
        # Start as attention pooling: keys at zero give uniform attention over the history,
        # values and output are the identity and the feed-forward branch adds nothing, so the
        # untrained encoder is the last item plus the mean of the history (the pooled
        # backbone's inductive bias); small random queries let the keys learn (were both
        # zero, neither would ever receive a gradient).
        with torch.no_grad():
            self.q.weight.normal_(0.0, 0.02)
            for lin in (self.k, self.ff2):
                lin.weight.zero_()
            for lin in (self.v, self.o):
                lin.weight.copy_(torch.eye(dim))
            for lin in (self.q, self.k, self.v, self.o, self.ff2):
                lin.bias.zero_()


#: The item-side LoRA: how the global adapter moves what every user's scores read.
ITEM_KEY = "item"


def _widths(name: str, dim: int, ffn: int) -> tuple[int, int]:
    return {"ff1": (dim, ffn), "ff2": (ffn, dim)}.get(name, (dim, dim))


def _keys(layers: int) -> list[tuple[str, str]]:
    """(key, projection name) of every LoRA pair."""
    return [(f"l{i}_{n}", n) for i in range(layers) for n in PROJECTIONS] + [(ITEM_KEY, ITEM_KEY)]


class _Backbone(nn.Module):
    def __init__(self, n_items: int, dim: int, length: int, layers: int, ffn: int,
                 rank: int, ffa_lora: bool) -> None:
        super().__init__()
        self.item_emb = nn.Parameter(torch.randn(n_items + 1, dim) * 0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.pos_emb = nn.Parameter(torch.randn(length, dim) * 0.1)
        self.blocks = nn.ModuleList(_Block(dim, ffn) for _ in range(layers))
        self.ln_out = nn.LayerNorm(dim)
        with torch.no_grad():
            self.item_emb[n_items].zero_()
        if ffa_lora:  # frozen A factors, fixed by the seed the backbone was built with
            self.lora_a = nn.ModuleDict({k: lora_down(_widths(n, dim, ffn)[0], rank)
                                         for k, n in _keys(layers)})


class _GlobalAdapter(nn.Module):
    def __init__(self, dim: int, layers: int, ffn: int, rank: int, ffa_lora: bool) -> None:
        super().__init__()
        keys = [(k, *_widths(n, dim, ffn)) for k, n in _keys(layers)]
        if not ffa_lora:
            self.lora_a = nn.ModuleDict({k: lora_down(d_in, rank) for k, d_in, _ in keys})
        self.lora_b = nn.ModuleDict({k: lora_up(rank, d_out) for k, _, d_out in keys})


class _Personal(nn.Module):
    def __init__(self, num_personal: int, dim: int, rank: int, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        if enabled:
            self.user_emb = nn.Parameter(torch.zeros(num_personal, dim))
            self.gate = nn.Parameter(torch.zeros(num_personal))
            if rank > 0:
                self.down = nn.Parameter(torch.zeros(num_personal, rank, dim))
                self.up = nn.Parameter(torch.zeros(num_personal, dim, rank))


@register_model("ffm-transformer")
class TransformerFFM(Recommender):
    """Frozen SASRec-style backbone + shared LoRA (or FFA-LoRA) + personal adapter."""

    item_embedding = "backbone.item_emb"

    @classmethod
    def from_config(cls, cfg, n_items: int, num_personal: int = 1) -> TransformerFFM:
        return cls(n_items, num_personal, dim=cfg.dim, history_length=cfg.history_length,
                   layers=cfg.layers, heads=cfg.heads, global_rank=cfg.global_rank,
                   personal_rank=cfg.personal_rank, ffa_lora=cfg.ffa_lora,
                   personalization=cfg.personalization)

    def __init__(self, n_items: int, num_personal: int = 1, *, dim: int = 64,
                 history_length: int = 20, layers: int = 1, heads: int = 1,
                 global_rank: int = 8, personal_rank: int = 0, ffa_lora: bool = False,
                 personalization: bool = True) -> None:
        super().__init__(n_items, num_personal)
        if dim % heads:
            raise ValueError(f"dim = {dim} is not a multiple of heads = {heads}")
        self.dim, self.history_length, self.heads = dim, history_length, heads
        self.layers, self.personal_rank, self.ffa_lora = layers, personal_rank, ffa_lora
        ffn = dim
        self.backbone = _Backbone(n_items, dim, history_length, layers, ffn, global_rank,
                                  ffa_lora)
        self.shared = _GlobalAdapter(dim, layers, ffn, global_rank, ffa_lora)
        self.personal = _Personal(num_personal, dim, personal_rank, personalization)
        causal = torch.tril(torch.ones(history_length, history_length, dtype=torch.bool))
        self._causal = causal  # a constant, not a buffer: every tensor is in a group
        self.finalize()

    def personal_init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        if not self.personal.enabled or self.personal_rank == 0:
            return {}
        down = torch.randn(self.personal_rank, self.dim, generator=gen) / self.dim ** 0.5
        return {"personal.down": down}

    def _lora_a(self) -> nn.ModuleDict:
        return self.backbone.lora_a if self.ffa_lora else self.shared.lora_a

    def _proj(self, block: _Block, key: str, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(block, name)(x) + self.shared.lora_b[key](self._lora_a()[key](x))

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """The user representation: the adapted encoder's output at the latest position."""
        bb = self.backbone
        n, length = history.shape
        real = history != self.pad                                          # (N, L)
        x = bb.item_emb[history] * math.sqrt(self.dim) + bb.pos_emb[None, -length:]
        allowed = (self._causal[:length, :length][None] & real[:, None, :]) | torch.eye(
            length, dtype=torch.bool)[None]                                 # (N, Lq, Lk)
        bias = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, float("-inf"))
        hd = self.dim // self.heads
        for i, block in enumerate(bb.blocks):
            # the last block is only read at the latest position: its queries, output and
            # feed-forward projections run there alone (the same result, fewer products)
            queries = 1 if i == len(bb.blocks) - 1 else length
            h = block.ln1(x)
            k, v = (self._proj(block, f"l{i}_{p}", p, h).view(n, length, self.heads, hd)
                    .transpose(1, 2) for p in ("k", "v"))
            q = (self._proj(block, f"l{i}_q", "q", h[:, -queries:])
                 .view(n, queries, self.heads, hd).transpose(1, 2))
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + bias[:, None, -queries:]
            ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, queries, -1)
            x = x[:, -queries:] + self._proj(block, f"l{i}_o", "o", ctx)
            h = F.relu(self._proj(block, f"l{i}_ff1", "ff1", block.ln2(x)))
            x = x + self._proj(block, f"l{i}_ff2", "ff2", h)
        return bb.ln_out(x[:, -1])

    def forward(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        h = self.encode(history)                                            # (N, d)
        q = h
        if self.personal.enabled:
            p = self.personal
            extra = p.user_emb[owner]
            if self.personal_rank > 0:
                low = torch.einsum("nrd,nd->nr", p.down[owner], h)
                extra = extra + torch.einsum("ndr,nr->nd", p.up[owner], low)
            q = h + torch.sigmoid(p.gate[owner])[:, None] * extra
        e = self.backbone.item_emb[items]                                   # (N, B, d)
        e = e + self.shared.lora_b[ITEM_KEY](self._lora_a()[ITEM_KEY](e))
        return torch.einsum("nbd,nd->nb", e, q) + self.backbone.item_bias[items]
