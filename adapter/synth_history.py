"""A synthetic referral history: `synth`'s month, replayed day by day through the real pipeline.

`synth` writes the month as it stands at its end. `build_history` turns it into what an EHR
would have shown along the way: each resource becomes known at its meta.lastUpdated, a referral
that ends closed is first known open (version 1 at authoredOn) and closes at its lastUpdated
(version 2), and two kinds of events are added with their own seeded generator: staff attempts
to reach the patient, and referring offices asking about a referral's status (a Communication
from the requester, based on the referral). `replay` puts each day's resources into the store
and evaluates every referral at that day's midnight, as `sync`/`import` do (segment history,
outbox), then records the day's contact attempts as the `contact` command does. So the weekly
report reads a store built by the same code as a real one, from data whose outcomes are known.
"""

from __future__ import annotations

import copy
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapter import store
from adapter.actions import Actor, record_contact
from adapter.personas import PRACTICE, communication
from adapter.sync import evaluate_store
from adapter.synth import iter_resources
from mappings.fhirtime import parse_instant
from mappings.rules import PracticeRules

__all__ = ["Contact", "History", "build_history", "replay"]

JSON = dict[str, Any]
DAY = timedelta(days=1)
CLOSED = ("completed", "revoked", "entered-in-error")
COORDINATOR = Actor("synth-coordinator", "Practitioner/prac-coord-sam-park")
_OUTCOMES = ("no-answer", "left-message", "reached", "busy")


@dataclass(frozen=True, slots=True)
class Contact:
    """A staff attempt to reach the patient about a referral."""

    referral: str
    at: datetime
    channel: str
    outcome: str


@dataclass(frozen=True, slots=True)
class History:
    """Resource versions by the instant they became known, evaluation days, contact attempts."""

    days: tuple[datetime, ...]
    arrivals: tuple[tuple[datetime, JSON], ...]  # sorted by instant; versions in order
    contacts: tuple[Contact, ...]  # sorted by instant

    def known_at(self, at: datetime) -> list[JSON]:
        """The newest version of each resource known at `at` (inclusive)."""
        latest: dict[tuple[str, str], JSON] = {}
        for moment, resource in self.arrivals:
            if moment > at:
                break
            latest[(resource["resourceType"], resource["id"])] = resource
        return list(latest.values())

    def arriving(self, after: datetime | None, until: datetime) -> list[JSON]:
        """Versions that became known in (after, until]."""
        times = [moment for moment, _ in self.arrivals]
        lo = 0 if after is None else bisect_right(times, after)
        hi = bisect_right(times, until)
        return [resource for _, resource in self.arrivals[lo:hi]]

    def contacts_in(self, after: datetime | None, until: datetime) -> list[Contact]:
        return [c for c in self.contacts if (after is None or c.at > after) and c.at <= until]


def _updated(resource: JSON) -> datetime:
    found = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
    if found is None:
        raise ValueError(f"{resource['resourceType']}/{resource['id']} has no lastUpdated")
    return found


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_history(referrals: int, seed: int, end: datetime, days: int = 35) -> History:
    """`synth`'s month ending at `end` (a midnight UTC), as a history of `days` daily
    evaluations ending at `end`, with contact attempts and offices asking for status."""
    if end.tzinfo is None or end != end.replace(hour=0, minute=0, second=0, microsecond=0):
        raise ValueError("end must be an aware midnight")
    end = end.astimezone(UTC)
    rng = Random(f"history-{seed}")
    arrivals: list[tuple[datetime, JSON]] = []
    contacts: list[Contact] = []
    patients: set[str] = set()
    requests: list[tuple[JSON, datetime]] = []
    for resource in iter_resources(referrals, seed, end):
        updated = _updated(resource)
        if resource["resourceType"] == "Patient":
            patients.add(resource["id"])
        if resource["resourceType"] != "ServiceRequest":
            arrivals.append((updated, resource))
            continue
        authored = parse_instant(resource.get("authoredOn")) or updated
        first = updated
        if resource.get("status") in CLOSED:
            opened = copy.deepcopy(resource)
            opened["status"] = "active"
            opened["meta"] = {"versionId": "1", "lastUpdated": _iso(authored)}
            arrivals.append((authored, opened))
            first = authored
            final = {**resource, "meta": {"versionId": "2", "lastUpdated": _iso(updated)}}
        else:
            final = {**resource, "meta": {"versionId": "1", "lastUpdated": _iso(updated)}}
        arrivals.append((updated, final))
        requests.append((final, first))
    for resource, first in requests:
        key = f"ServiceRequest/{resource['id']}"
        subject = resource["subject"]["reference"].removeprefix("Patient/")
        span = int((end - first).total_seconds()) - 3600
        if resource["status"] == "entered-in-error" or span <= 0:
            continue
        # Staff try to reach about half of the patients the EHR holds, one to three times.
        if subject in patients and rng.random() < 0.5:
            for _ in range(rng.choice((1, 1, 2, 3))):
                at = first + timedelta(seconds=3600 + rng.randrange(span))
                contacts.append(Contact(key, at, "phone", rng.choice(_OUTCOMES)))
        requester = (resource.get("requester") or {}).get("reference")
        if requester and rng.random() < 0.2:
            at = first + timedelta(seconds=3600 + rng.randrange(span))
            asked = communication(
                f"msg-{resource['id']}-office",
                subject,
                sender=requester,
                recipient=PRACTICE,
                sent=_iso(at),
                updated=_iso(at),
                text="Checking on the status of this referral.",
                based_on=resource["id"],
                medium="PHONE",
            )
            arrivals.append((at, asked))
    arrivals.sort(key=lambda pair: pair[0])  # stable: a referral's versions stay in order
    contacts.sort(key=lambda c: (c.at, c.referral))
    first_day = end - (days - 1) * DAY
    return History(
        tuple(first_day + n * DAY for n in range(days)), tuple(arrivals), tuple(contacts)
    )


def replay(
    history: History,
    engine: Engine,
    rules_at: Callable[[datetime], PracticeRules],
    on_problem: Callable[[str, str], None],
) -> Iterator[datetime]:
    """Store and evaluate the history day by day (yields each day once it is done)."""
    previous: datetime | None = None
    for day in history.days:
        rules = rules_at(day)
        arriving = history.arriving(previous, day)
        if arriving:
            with Session(engine) as session, session.begin():
                store.put_resources(session, arriving, "synth-history")
        evaluate_store(engine, rules, day, on_problem)
        contacts = history.contacts_in(previous, day)
        if contacts:
            with Session(engine) as session, session.begin():
                for contact in contacts:
                    record_contact(
                        session,
                        contact.referral,
                        channel=contact.channel,
                        outcome=contact.outcome,
                        actor=COORDINATOR,
                        rules=rules,
                        at=contact.at,
                        now=day,
                    )
        previous = day
        yield day
