"""The project's FHIR conformance resources (CodeSystems, ValueSets) and the codes read from them.

The JSON files beside this module are the one source of truth for the codes the adapter uses:
segments and their precedence, missing-detail items and whom to ask, aging bands and their day
limits, referral states. Code reads them here instead of repeating the lists.
"""

from fhir_profiles.terminology import (
    CANONICAL_BASE,
    AgingBand,
    MissingItem,
    Terminology,
    terminology,
)

__all__ = ["CANONICAL_BASE", "AgingBand", "MissingItem", "Terminology", "terminology"]
