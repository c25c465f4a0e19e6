"""The facts of one input, indexed once so each rule is a lookup, not a scan."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mappings.facts import (
    AppointmentFacts,
    CoverageFacts,
    Facts,
    FormFacts,
    MessageFacts,
    PartyFacts,
    PatientFacts,
    RecordFacts,
    ReferralFacts,
)

__all__ = ["ReferralIndex", "identifier_aliases"]

T = TypeVar("T")


class ReferralIndex:
    """Referrals and their context, looked up by resolved key.

    Add facts in input order (a later copy of a key replaces an earlier one), and the aliases a
    Bundle gives (fullUrl -> key); `build()` then resolves every reference and indexes
    coverages by beneficiary, messages by sender, records, forms and appointments by the
    referral they point at.
    """

    def __init__(self) -> None:
        self.referrals: dict[str, ReferralFacts] = {}
        self.patients: dict[str, PatientFacts] = {}
        self.parties: dict[str, PartyFacts] = {}
        self._coverages: dict[str, CoverageFacts] = {}
        self._messages: dict[str, MessageFacts] = {}
        self._forms: dict[str, FormFacts] = {}
        self._records: dict[str, RecordFacts] = {}
        self._appointments: dict[str, AppointmentFacts] = {}
        self._aliases: dict[str, str] = {}
        # Each kind of facts goes to its own table; one dict lookup instead of isinstance tests.
        self._tables: dict[type, dict[str, Any]] = {
            ReferralFacts: self.referrals,
            PatientFacts: self.patients,
            PartyFacts: self.parties,
            CoverageFacts: self._coverages,
            MessageFacts: self._messages,
            FormFacts: self._forms,
            RecordFacts: self._records,
            AppointmentFacts: self._appointments,
        }
        self.coverages_by_patient: dict[str, list[CoverageFacts]] = {}
        self.coverages: dict[str, CoverageFacts] = {}
        self.messages_by_sender: dict[str, list[MessageFacts]] = {}
        self.records_by_referral: dict[str, list[RecordFacts]] = {}
        self.forms_by_referral: dict[str, list[FormFacts]] = {}
        self.appointments_by_referral: dict[str, list[AppointmentFacts]] = {}

    def add(self, facts: Facts) -> None:
        self._tables[type(facts)][facts.key] = facts

    def add_alias(self, name: str, key: str) -> None:
        """Another name for a resource: a Bundle entry's fullUrl."""
        if name != key:
            self._aliases[name] = key

    def share_aliases(self, aliases: dict[str, str]) -> None:
        """Resolve through `aliases` (identifier -> key, of a larger whole than this index),
        shared, not copied: the caller keeps it up to date and does not change it while this
        index is in use."""
        self._aliases = aliases

    def resolve(self, reference: str | None) -> str | None:
        """The key a reduced reference stands for (through fullUrl and identifier aliases)."""
        if reference is None:
            return None
        return self._aliases.get(reference, reference)

    def build(self, *, identify: bool = True) -> ReferralIndex:
        """Resolve references and build the lookups; call once after the last `add`.
        `identify=False`: the identifier aliases were given (`add_alias`) for a larger whole
        than this index holds, and are not worked out from its patients and parties."""
        if identify:
            self._alias_identifiers()
        resolve = self.resolve
        coverages: defaultdict[str, list[CoverageFacts]] = defaultdict(list)
        for coverage in self._coverages.values():
            beneficiary = resolve(coverage.beneficiary)
            if beneficiary:
                coverages[beneficiary].append(coverage)
        self.coverages_by_patient = dict(coverages)
        self.coverages = self._coverages
        messages: defaultdict[str, list[MessageFacts]] = defaultdict(list)
        for message in self._messages.values():
            sender = resolve(message.sender)
            if sender:
                messages[sender].append(message)
        self.messages_by_sender = dict(messages)
        self.records_by_referral = _by_target(self._records.values(), lambda r: r.related, resolve)
        self.forms_by_referral = _by_target(self._forms.values(), lambda f: f.based_on, resolve)
        self.appointments_by_referral = _by_target(
            self._appointments.values(), lambda a: a.based_on, resolve
        )
        return self

    def _alias_identifiers(self) -> None:
        holders: list[PatientFacts | PartyFacts] = [*self.patients.values(), *self.parties.values()]
        for identifier, key in identifier_aliases(holders).items():
            self._aliases.setdefault(identifier, key)

    def is_referral_key(self, key: str | None) -> bool:
        """Whether a resolved key names a ServiceRequest (in the input or not)."""
        return key is not None and (key in self.referrals or key.startswith("ServiceRequest/"))


def identifier_aliases(holders: Iterable[PatientFacts | PartyFacts]) -> dict[str, str]:
    """identifier -> key of the one patient or party carrying it: a reference by identifier
    resolves only when exactly one resource carries it."""
    owners: defaultdict[str, set[str]] = defaultdict(set)
    for holder in holders:
        for identifier in holder.identifiers:
            owners[identifier].add(holder.key)
    return {identifier: next(iter(keys)) for identifier, keys in owners.items() if len(keys) == 1}


def _by_target(
    items: Iterable[T],
    targets: Callable[[T], tuple[str, ...]],
    resolve: Callable[[str | None], str | None],
) -> dict[str, list[T]]:
    found: defaultdict[str, list[T]] = defaultdict(list)
    for item in items:
        for target in targets(item):
            key = resolve(target)
            if key:
                found[key].append(item)
    return dict(found)
