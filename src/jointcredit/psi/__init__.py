"""Private set intersection: align enterprise IDs without revealing the rest.

``JointSession.align()`` is the usual entry point; the halves and helpers are public for
deployments, audits and benchmarks. See :mod:`jointcredit.psi.ecdh` and docs/protocols/psi.md.
"""

from jointcredit.psi.ecdh import (
    PROTOCOL,
    REVEAL_MODES,
    PsiBankSide,
    PsiCenterSide,
    blind_ids,
    find_matches,
    hash_to_curve,
    prepare_ids,
    reblind,
    shutdown_pool,
)

__all__ = [
    "PROTOCOL",
    "REVEAL_MODES",
    "PsiBankSide",
    "PsiCenterSide",
    "blind_ids",
    "find_matches",
    "hash_to_curve",
    "prepare_ids",
    "reblind",
    "shutdown_pool",
]
