"""Typed errors of the privacy layer.

Input errors are ``ValueError`` subclasses so that callers validating configuration can
catch them with the rest; budget and ledger errors are distinct so the federated loop can
tell "this user must decline" apart from "the ledger is inconsistent".
"""

from __future__ import annotations

from ffm_private.errors import FFMPrivateError


class PrivacyError(FFMPrivateError):
    """Base class of every error raised by :mod:`ffm_private.privacy`."""


class AccountingError(PrivacyError, ValueError):
    """Invalid accountant input, or an accountant that cannot produce a bound."""


class UnsupportedClaimError(PrivacyError, ValueError):
    """The configuration cannot honestly support the requested DP claim."""


class BudgetExceededError(PrivacyError):
    """Recording this spend would take a user past their epsilon cap."""

    def __init__(self, user: str, epsilon_after: float, cap: float) -> None:
        super().__init__(f"user {user!r}: epsilon after this participation would be "
                         f"{epsilon_after:.6g} > cap {cap:.6g}; the user must decline")
        self.user, self.epsilon_after, self.cap = user, epsilon_after, cap


class LedgerError(PrivacyError):
    """The budget ledger is unusable or inconsistent (wrong file, mismatched settings)."""


class LedgerConflictError(LedgerError):
    """A (user, round) spend is already recorded with different content."""


class InsufficientNoiseError(PrivacyError):
    """Fewer clients survived than distributed noise was planned for: do not release."""


__all__ = [
    "AccountingError",
    "BudgetExceededError",
    "InsufficientNoiseError",
    "LedgerConflictError",
    "LedgerError",
    "PrivacyError",
    "UnsupportedClaimError",
]
