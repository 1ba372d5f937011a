"""The common shape of every recommender in the toolkit.

A recommender scores candidate items for rows of (history, owner): ``history`` holds the
most recent item ids of a user (padded with ``n_items``), ``owner`` indexes the row of the
personal parameters to use. Personal parameters have a leading dimension of
``num_personal`` users, so the same module trains one client (``num_personal = 1``) or
scores every user at once for evaluation, from one code path.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from ffm_private.models.partition import FROZEN, PERSONAL, check_partition, params_of

if TYPE_CHECKING:
    from ffm_private.config import ModelConfig


class Recommender(nn.Module):
    """Base class: subclasses define ``backbone``, ``shared`` and ``personal`` submodules.

    A subclass also declares where its item rows are, so that the audits ask the model
    instead of guessing from parameter names: :attr:`item_embedding` and :attr:`item_rows`.
    """

    #: Full name of the item-embedding table the model scores items with (one row per item,
    #: then the padding row), or ``None`` when it has none.
    item_embedding: ClassVar[str | None] = None
    #: Shared parameters with one row per item (then the padding row): a client's update
    #: changes the rows of the items it trained on.
    item_rows: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`stacked_scores` reads the :attr:`item_rows` parameters only at the
    #: candidate items (never through the history), so that the batched engine may train
    #: each client's copy of them restricted to the rows of its own candidates.
    stacked_item_rows: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_items: int, num_personal: int = 1) -> Recommender:
        """The model ``cfg`` describes (each registered model reads its own fields)."""
        raise NotImplementedError(f"{cls.__name__} does not build from a ModelConfig")

    def __init__(self, n_items: int, num_personal: int) -> None:
        super().__init__()
        if n_items < 1 or num_personal < 1:
            raise ValueError("n_items and num_personal must be >= 1")
        self.n_items = n_items
        self.num_personal = num_personal

    @property
    def pad(self) -> int:
        """The item id used to pad histories."""
        return self.n_items

    @abstractmethod
    def forward(self, history: torch.Tensor, items: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Scores of shape ``items.shape`` for rows ``(history[n], owner[n])``."""

    # -- many clients at once (the batched engine, :mod:`ffm_private.engine.batched`) --------
    # A block of ``A`` clients is scored with each client's own shared and personal
    # parameters, stacked on a leading client axis: ``params[name]`` has the shape
    # ``(A, *p.shape)`` of the workspace parameter ``p`` (``num_personal = 1``), so a personal
    # tensor is ``(A, 1, ...)``. A model may override both methods with a hand-batched
    # formulation; the defaults map :meth:`forward` over the clients with ``torch.func``,
    # so any model whose forward is a pure function of its parameters can be batched.

    def frozen_rows(self, history: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row inputs computed once per round from the frozen backbone.

        ``history`` is ``(..., L)``, ``items`` the rows' candidates ``(..., K)``; each
        returned tensor has the same leading dimensions. The backbone is frozen during local
        training, so what it computes from a row's history and candidates does not change
        from step to step or from phase to phase. The default keeps the history itself
        (the forward encodes it).
        """
        return {"history": history}

    def stacked_scores(self, rows: Mapping[str, torch.Tensor], items: torch.Tensor,
                       params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``(A, R, K)`` of ``A`` clients' rows, each client with its own parameters.

        ``rows`` holds :meth:`frozen_rows` for the selected rows (``(A, R, ...)``),
        ``items`` the candidates ``(A, R, K)``, ``params`` every shared and personal
        parameter stacked per client (``(A, *p.shape)``); frozen ones are the module's own.
        Equal, client by client, to ``forward`` with that client's parameters loaded. The
        parameters the current phase trains require gradients and the others do not, so an
        override may compute what depends on the fixed ones alone without gradients.
        """
        from torch.func import functional_call, vmap

        frozen = {k: v.detach() for k, v in self.named_parameters() if k.startswith(FROZEN)}
        frozen.update({k: v.detach() for k, v in self.named_buffers()})
        owner = torch.zeros(items.shape[1], dtype=torch.long)
        names = list(params)

        def one(values: tuple[torch.Tensor, ...], history: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
            return functional_call(self, {**frozen, **dict(zip(names, values, strict=True))},
                                   (history, candidates, owner))

        return vmap(one)(tuple(params[k] for k in names), rows["history"], items)

    def finalize(self) -> Recommender:
        """Check the partition once the subclass has built its submodules."""
        check_partition(self)
        return self

    def init_personal_states(self, n_users: int, seed: int) -> dict[str, np.ndarray]:
        """Initial personal parameters for ``n_users`` users, stacked on the first axis.

        Each user's initial state depends only on ``(seed, user)``, so it is the same
        however many users are initialised together.
        """
        out: dict[str, np.ndarray] = {}
        for name, p in params_of(self, PERSONAL).items():
            out[name] = np.zeros((n_users, *p.shape[1:]), dtype=np.float32)
        for user in range(n_users):
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, user]).generate_state(1)[0]))
            for name, value in self.personal_init(gen).items():
                out[name][user] = value.numpy()
        return out

    def personal_init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One user's initial personal parameters (without the leading user axis)."""
        return {}

    def after_local_training(self, received: Mapping[str, np.ndarray]) -> None:
        """Called on the client after local training, before its personal state is kept.

        ``received`` is the round's global shared state. A model whose personal state is
        derived from its own local update of shared parameters (PFedRec's post-tuned item
        embeddings) records it here; by default nothing happens.
        """
