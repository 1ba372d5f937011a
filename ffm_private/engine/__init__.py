"""How the clients of a round are trained: one after another (``loop``) or in blocks (``batched``).

The per-client loop (:func:`ffm_private.client.train_client`) is the reference; the batched
engine (:mod:`ffm_private.engine.batched`) must produce the same per-client results. This
module stays light (no torch import) so that the configuration can check an engine choice.
"""

from __future__ import annotations

ENGINES = ("loop", "batched")

#: Model kinds the batched engine trains (their forward is a pure function of the parameters
#: and the standard two-phase Adam procedure applies; no model-specific local procedure).
BATCHED_MODELS = ("ffm-pool", "ffm", "fedmf")


def batched_refusal(model_kind: str, privacy_mode: str) -> str | None:
    """Why the batched engine cannot run this configuration (``None`` if it can)."""
    if model_kind not in BATCHED_MODELS:
        return (f"federated.engine = 'batched' does not train model.kind = {model_kind!r} "
                f"(it trains {list(BATCHED_MODELS)}); use federated.engine = 'loop'")
    if privacy_mode == "example":
        return ("federated.engine = 'batched' does not run example-level DP-SGD "
                "(privacy.mode = 'example'); use federated.engine = 'loop'")
    return None
