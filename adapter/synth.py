"""Deterministic synthetic referral data: a specialty practice's month of incoming referrals.

The data exercises every part of the referral model in DESIGN.md: each lifecycle state, each
kind of missing detail (and the look-alikes that are fine: self-pay, member id as identifier,
an expired policy next to a current one), patients who call or fill in forms, appointments,
requested windows, a few busy referring offices and many small ones. About a third of the
packets are incomplete. Everything comes from one ``random.Random(seed)`` and ``as_of``: the
same inputs give byte-identical output. All names, phone numbers and identifiers are synthetic:
phones are 555-555-01xx and NPIs start with 99, which no real NPI does.

Resources are made by the builders in ``adapter.personas`` (the same ones the test personas
come from); this module decides the mix and writes the Bulk Data directory. Generation streams:
``synth_to_dir`` holds one resource at a time, so 100k referrals need little memory.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from datetime import date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from random import Random
from typing import Any, BinaryIO, Generic, TypeVar

import orjson

from adapter.personas import (
    JSON,
    MEMBER_ID,
    OFFICES,
    PAYERS,
    PRACTICE,
    REASONS,
    SERVICES,
    V2_0203,
    appointment,
    communication,
    concept,
    coverage,
    document_reference,
    dr_omar_lind,
    iso,
    office_resources,
    organization,
    patient,
    phone,
    practice_resources,
    practitioner,
    practitioner_role,
    questionnaire_response,
    reference,
    service_request,
)

Progress = Callable[[int, int], None]
T = TypeVar("T")
DAY = 86_400

# Synthetic name parts (combined at random, so no real person is described).
GIVEN = ("Ada", "Bram", "Cora", "Dov", "Elin", "Finn", "Gia", "Hugo", "Iris", "Jude", "Kai", "Lena")
FAMILY = ("Quill", "Marrow", "Thistle", "Bramble", "Larkspur", "Fennick", "Pebbleton", "Sorrel")
PLACES = ("Maple", "Birch", "Willow", "Granite", "Meadow", "Orchard", "Hillcrest", "Brookside")
KINDS = ("Family Practice", "Medical Group", "Health Center", "Primary Care", "Clinic")


def _lone(n: int, updated: str) -> JSON:
    """The n-th practitioner working alone; the first is Dr Omar Lind."""
    if n == 1:
        return dr_omar_lind(updated)
    given, family = GIVEN[n % len(GIVEN)], FAMILY[(n * 7) % len(FAMILY)]
    return practitioner(f"prac-lone-{n:04d}", given, family, npi=f"994{n:07d}", updated=updated)


# --- the month's mix: weights are percentages of referrals (or of patients) -----------------


class _Table(Generic[T]):
    """Weighted choices drawn with one ``rng.random()`` each."""

    def __init__(self, *weighted: tuple[T, float]) -> None:
        self._items = [item for item, _ in weighted]
        self._cum = list(accumulate(weight for _, weight in weighted))

    def pick(self, rng: Random) -> T:
        return self._items[bisect_right(self._cum, rng.random() * self._cum[-1])]


_REFERRALS_PER_PATIENT = _Table((1, 78), (2, 16), (3, 6))
_OFFICE = _Table((0, 30), (1, 24), (2, 18), (3, 16), (4, 12))
_GENDER = _Table(("female", 50), ("male", 47), ("other", 1), ("unknown", 2))
# Per patient; "absent" means the referral names a Patient the data does not hold.
_DEMOGRAPHICS = _Table(
    ("complete", 86.5), ("sms-only", 3), ("absent", 1.5), ("no-birthdate", 3),
    ("email-only", 1.5), ("no-telecom", 1), ("phone-without-number", 0.5),
    ("name-text-only", 2.5), ("no-name", 0.5),
)  # fmt: skip
# Per patient; the first four are fine, the rest leave insurance missing.
_INSURANCE = _Table(
    ("member-id", 67), ("member-identifier", 5), ("self-pay", 9), ("renewed", 5),
    ("none", 4), ("no-member-id", 3), ("expired", 3), ("cancelled", 2), ("future", 2),
)  # fmt: skip
_STATUS = _Table(
    ("active", 80), ("on-hold", 4), ("draft", 3),
    ("completed", 7), ("revoked", 4), ("entered-in-error", 2),
)  # fmt: skip
_PRIORITY = _Table(("routine", 82), ("urgent", 10), ("asap", 4), ("stat", 1.5), (None, 2.5))
_WINDOW = _Table((None, 45), ("date", 6), ("datetime", 24), ("period", 25))
# Per referral; the last three leave records missing ("replaced" keeps a current version).
_RECORDS = _Table(
    ("related", 44), ("supporting", 30), ("both", 10), ("replaced", 6),
    ("none", 6), ("superseded", 2.5), ("entered-in-error", 1.5),
)  # fmt: skip
_CLARIFICATION = _Table(
    ("clear", 93), ("code-text-only", 2),
    ("no-code", 1.7), ("no-reason", 1.7), ("no-requester", 1.6),
)  # fmt: skip
_PATIENT_MESSAGE = _Table(
    (None, 72), ("based-on", 16), ("about", 3), ("in-progress", 2), ("old", 5),
    ("entered-in-error", 2),
)  # fmt: skip
_UNLINKED_MESSAGE = _Table((None, 92), ("recent", 6), ("old", 2))
_MESSAGE_TIME = _Table(("sent", 90), ("received", 8), ("meta-only", 2))
_FORM = _Table((None, 95), ("completed", 4), ("in-progress", 1))
_OPEN_APPOINTMENT = _Table(
    (None, 62), ("booked", 22), ("fulfilled", 3), ("arrived", 1), ("checked-in", 1),
    ("cancelled", 4), ("noshow", 3), ("rebooked", 4),
)  # fmt: skip
# Requested within this many days of authoring; with a month of ages some windows fall inside
# the 14-day horizon and some beyond it.
_WINDOW_DAYS = (14, 30, 45, 60, 90)
_PATIENT_TEXTS = (
    "Calling to ask when I can be seen.",
    "Replying to your voicemail about my referral.",
    "Is there any update on my appointment?",
    "I uploaded my insurance card through the portal.",
)
_PRACTICE_TEXTS = (
    "Left a voicemail with scheduling instructions.",
    "Sent a portal message asking for an updated insurance card.",
)
_COORDINATORS = ("Practitioner/prac-coord-sam-park", "Practitioner/prac-coord-lee-vance")


def _day(epoch: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


class _Generator:
    """One pass over patients and their referrals; resources are yielded as they are made."""

    def __init__(
        self, referrals: int, seed: int, as_of: datetime, progress: Progress | None
    ) -> None:
        self.rng = Random(seed)
        self.now = math.floor(as_of.timestamp())  # whole seconds, never after as_of
        self.total = referrals
        self.progress = progress
        self.static = iso(self.now - 400 * DAY)
        # Scattered sources get ~2.2 referrals each on average, so some reach the
        # high-relationship threshold of 3 and most do not.
        self.pool = max(4, round(referrals * 0.25 / 2.2))
        self.small: dict[int, tuple[str, int]] = {}
        self.counts = {"office": 0, "lone": 0}
        self.emitted: set[str] = set()  # membership only; never iterated

    def _between(self, lo: int, hi: int) -> int:
        return lo + self.rng.randrange(max(hi - lo, 0) + 1)

    def _recent(self, since: int) -> int:
        """An instant after ``since`` in the 14 days up to as_of (a minute clear of the edge)."""
        return self._between(max(since, self.now - 14 * DAY + 60), self.now)

    def _days(self, lo: int, hi: int) -> int:
        return self._between(lo, hi) * DAY

    def _any(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def run(self) -> Iterator[JSON]:
        yield from practice_resources(self.static)
        for office in OFFICES:
            yield from office_resources(office, self.static)
        done, patient_no = 0, 0
        while done < self.total:
            patient_no += 1
            k = min(self.total - done, _REFERRALS_PER_PATIENT.pick(self.rng))
            yield from self._patient_group(patient_no, range(done + 1, done + k + 1))
            done += k
            if self.progress is not None and (done % 1000 < k or done == self.total):
                self.progress(done, self.total)

    def _patient_group(self, no: int, referral_nos: range) -> Iterator[JSON]:
        pid = f"pat-{no:06d}"
        demographics = _DEMOGRAPHICS.pick(self.rng)
        present = demographics != "absent"
        coverage_id = None
        if present:
            yield self._patient(pid, no, demographics)
            coverages = self._coverages(pid, no)
            yield from coverages
            coverage_id = coverages[-1]["id"] if coverages else None
            unlinked = _UNLINKED_MESSAGE.pick(self.rng)
            if unlinked == "recent":
                yield self._patient_message(f"msg-pat-{no:06d}", pid, self._recent(0))
            elif unlinked == "old":
                at = self.now - self._between(15 * DAY, 35 * DAY)
                yield self._patient_message(f"msg-pat-{no:06d}", pid, at)
        for n in referral_nos:
            yield from self._referral(n, pid, present, coverage_id)

    def _patient(self, pid: str, no: int, demographics: str) -> JSON:
        given, family = self._any(GIVEN), self._any(FAMILY)
        born = date(1935, 1, 1) + timedelta(days=self.rng.randrange(29_000))
        number = phone(self.rng.randrange(100))
        res = patient(
            pid,
            given,
            family,
            birth_date=born.isoformat(),
            gender=_GENDER.pick(self.rng),
            phone_number=number,
            mrn=f"SYN{no:07d}",
            updated=iso(self.now - self.rng.randrange(60 * DAY)),
        )
        if demographics == "sms-only":
            res["telecom"] = [{"system": "sms", "value": number}]
        elif demographics == "no-birthdate":
            del res["birthDate"]
        elif demographics == "email-only":
            res["telecom"] = [{"system": "email", "value": f"{pid}@example.org"}]
        elif demographics == "no-telecom":
            del res["telecom"]
        elif demographics == "phone-without-number":
            res["telecom"] = [{"system": "phone", "use": "home"}]
        elif demographics == "name-text-only":
            res["name"] = [{"text": f"{given[0]}. {family}"}]
        elif demographics == "no-name":
            del res["name"]
        return res

    def _coverages(self, pid: str, no: int) -> list[JSON]:
        now, days = self.now, self._days
        kind = _INSURANCE.pick(self.rng)
        cid, member, updated = f"cov-{no:06d}", f"SYN-M{no:07d}", iso(now - days(0, 90))
        payor = f"Organization/{self._any(PAYERS)[0]}"
        # Period edges stay days away from as_of: a date-only edge means midnight UTC.
        began = _day(now - days(30, 900))
        ends = _day(now + days(30, 400)) if self.rng.random() < 0.5 else None
        if kind == "none":
            return []
        if kind == "self-pay":
            return [
                coverage(
                    cid, pid, payor=f"Patient/{pid}", member_id=None, self_pay=True, updated=updated
                )
            ]
        if kind == "renewed":
            old_end = _day(now - days(2, 60))
            return [
                coverage(
                    f"{cid}-old",
                    pid,
                    payor=payor,
                    member_id=f"{member}-0",
                    updated=updated,
                    start=_day(now - 700 * DAY),
                    end=old_end,
                ),
                coverage(
                    cid,
                    pid,
                    payor=payor,
                    member_id=member,
                    updated=updated,
                    start=_day(now - days(1, 30)),
                ),
            ]
        cov = coverage(
            cid, pid, payor=payor, member_id=member, updated=updated, start=began, end=ends
        )
        if kind == "member-identifier":
            member_type = concept(V2_0203, "MB", "Member Number")
            cov["identifier"] = [{"type": member_type, "system": MEMBER_ID, "value": member}]
            del cov["subscriberId"]
        elif kind == "no-member-id":
            del cov["subscriberId"]
        elif kind == "expired":
            cov["period"] = {"start": began, "end": _day(now - days(2, 200))}
        elif kind == "cancelled":
            cov["status"] = "cancelled"
        elif kind == "future":
            cov["period"] = {"start": _day(now + days(2, 60))}
        return [cov]

    def _requester(self) -> tuple[str, list[JSON]]:
        """The referral's requester reference, and the resources it introduces."""
        rng = self.rng
        if rng.random() < 0.75:
            office = OFFICES[_OFFICE.pick(rng)]
            if rng.random() < 0.01:
                return f"Organization/org-{office.key}", []
            return f"PractitionerRole/role-{self._any(office.doctors)[0]}", []
        slot = rng.randrange(self.pool)
        new: list[JSON] = []
        if slot not in self.small:
            kind = "office" if rng.random() < 0.55 else "lone"
            self.counts[kind] += 1
            self.small[slot] = (kind, self.counts[kind])
            k = self.counts[kind]
            new = self._small_office(k) if kind == "office" else [_lone(k, self.static)]
        kind, k = self.small[slot]
        if kind == "office":
            if rng.random() < 0.15:
                return f"Organization/org-small-{k:04d}", new
            return f"PractitionerRole/role-small-{k:04d}", new
        prac_id = "prac-omar-lind" if k == 1 else f"prac-lone-{k:04d}"
        if rng.random() < 0.6:
            return f"Practitioner/{prac_id}", new
        role_id = prac_id.replace("prac-", "role-", 1)
        if role_id not in self.emitted:
            self.emitted.add(role_id)
            new.append(practitioner_role(role_id, prac_id, None, updated=self.static))
        return f"PractitionerRole/{role_id}", new

    def _small_office(self, k: int) -> list[JSON]:
        name = f"{PLACES[k % len(PLACES)]} {KINDS[(k // len(PLACES)) % len(KINDS)]}"
        org_id, prac_id, at = f"org-small-{k:04d}", f"prac-small-{k:04d}", self.static
        return [
            organization(org_id, name, npi=f"9915{k:06d}", updated=at),
            practitioner(
                prac_id, self._any(GIVEN), self._any(FAMILY), npi=f"993{k:07d}", updated=at
            ),
            practitioner_role(f"role-small-{k:04d}", prac_id, org_id, updated=at),
        ]

    def _referral(self, n: int, pid: str, present: bool, coverage_id: str | None) -> Iterator[JSON]:
        rng, now = self.rng, self.now
        sid, doc_id = f"sr-{n:06d}", f"doc-{n:06d}"
        authored = now - rng.randrange(30 * DAY)
        status = _STATUS.pick(rng)
        if status == "completed" and authored > now - 3 * DAY:
            status = "active"  # a consult takes days to book and hold
        requester, introduced = self._requester()
        yield from introduced
        service = rng.randrange(len(SERVICES))
        records = _RECORDS.pick(rng)
        closed = status in ("completed", "revoked", "entered-in-error")
        # Open referrals were last touched soon after arrival; closed ones when they closed.
        updated = self._between(authored, now if closed else min(now, authored + DAY))
        supporting = [f"DocumentReference/{doc_id}"] if records in ("supporting", "both") else []
        insurance = [f"Coverage/{coverage_id}"] if coverage_id and rng.random() < 0.3 else []
        sr = service_request(
            sid,
            pid,
            requester=requester,
            service=service,
            reason=rng.randrange(len(REASONS[service])),
            authored=iso(authored),
            updated=iso(updated),
            status=status,
            priority=_PRIORITY.pick(rng),
            supporting_info=supporting,
            insurance=insurance,
        )
        window = _WINDOW.pick(rng)
        due = authored + self._any(_WINDOW_DAYS) * DAY
        if window == "date":
            sr["occurrenceDateTime"] = _day(due)
        elif window == "datetime":
            sr["occurrenceDateTime"] = iso(due - due % 3600)
        elif window == "period":
            sr["occurrencePeriod"] = {"start": _day(authored), "end": _day(due)}
        clarification = _CLARIFICATION.pick(rng)
        if clarification == "code-text-only":
            del sr["code"]["coding"]
        elif clarification == "no-code":
            del sr["code"]
        elif clarification == "no-reason":
            del sr["reasonCode"]
        elif clarification == "no-requester":
            del sr["requester"]
        yield sr
        yield from self._records(records, n, pid, requester, authored)
        if present:  # a patient the EHR does not hold neither writes nor gets booked
            yield from self._messages(n, pid, authored)
            yield from self._appointments(n, pid, status, authored)

    def _records(self, kind: str, n: int, pid: str, author: str, at: int) -> Iterator[JSON]:
        if kind == "none":
            return
        sid, doc_id, created = f"sr-{n:06d}", f"doc-{n:06d}", iso(at)
        updated = iso(self._between(at, min(self.now, at + DAY)))
        if kind == "replaced":
            yield document_reference(
                f"{doc_id}-v1",
                pid,
                referral_id=sid,
                author=author,
                created=created,
                updated=updated,
                status="superseded",
            )
        status = kind if kind in ("superseded", "entered-in-error") else "current"
        related = None if kind == "supporting" else sid
        doc = document_reference(
            doc_id,
            pid,
            referral_id=related,
            author=author,
            created=created,
            updated=updated,
            status=status,
        )
        if kind == "replaced":
            doc["relatesTo"] = [
                {"code": "replaces", "target": reference(f"DocumentReference/{doc_id}-v1")}
            ]
        yield doc

    def _patient_message(
        self,
        mid: str,
        pid: str,
        at: int,
        *,
        status: str = "completed",
        based_on: str | None = None,
        about: str | None = None,
    ) -> JSON:
        msg = communication(
            mid,
            pid,
            sender=f"Patient/{pid}",
            recipient=PRACTICE,
            sent=iso(at),
            updated=iso(at),
            text=self._any(_PATIENT_TEXTS),
            status=status,
            based_on=based_on,
            about=about,
            medium="PHONE" if self.rng.random() < 0.6 else "ONLINEWRIT",
        )
        # EHRs fill sent, received or neither; the model falls back in that order.
        timing = _MESSAGE_TIME.pick(self.rng)
        if timing != "sent":
            del msg["sent"]
        if timing == "received":
            msg["received"] = iso(at)
        return msg

    def _messages(self, n: int, pid: str, authored: int) -> Iterator[JSON]:
        rng, now, sid = self.rng, self.now, f"sr-{n:06d}"
        kind = _PATIENT_MESSAGE.pick(rng)
        if kind == "old" and authored < now - 15 * DAY:
            at = self._between(authored, now - 15 * DAY)
            yield self._patient_message(f"msg-{n:06d}-patient", pid, at, based_on=sid)
        elif kind is not None and kind != "old":
            status = kind if kind in ("in-progress", "entered-in-error") else "completed"
            about = kind == "about"
            yield self._patient_message(
                f"msg-{n:06d}-patient",
                pid,
                self._recent(authored),
                status=status,
                based_on=None if about else sid,
                about=sid if about else None,
            )
        if rng.random() < 0.12:
            sent = iso(self._between(authored, now))
            yield communication(
                f"msg-{n:06d}-practice",
                pid,
                sender=self._any(_COORDINATORS),
                recipient=f"Patient/{pid}",
                sent=sent,
                updated=sent,
                based_on=sid,
                text=self._any(_PRACTICE_TEXTS),
            )
        form = _FORM.pick(rng)
        if form is not None:
            filled = iso(self._recent(authored))
            yield questionnaire_response(
                f"qr-{n:06d}", pid, sid, authored=filled, updated=filled, status=form
            )

    def _appointments(self, n: int, pid: str, status: str, authored: int) -> Iterator[JSON]:
        rng, now, sid, aid = self.rng, self.now, f"sr-{n:06d}", f"appt-{n:06d}"
        kind: str | None = None
        if status == "active":
            kind = _OPEN_APPOINTMENT.pick(rng)
        elif status == "completed":
            kind = "fulfilled" if rng.random() < 0.9 else None
        elif status in ("revoked", "on-hold"):
            kind = "cancelled" if rng.random() < 0.3 else None
        if kind is None:
            return
        booked = self._between(authored, now)
        future = now + 3600 + rng.randrange(30 * DAY)
        if kind == "rebooked":
            yield appointment(
                f"{aid}-1",
                pid,
                sid,
                status="cancelled",
                start=future - future % 900,
                updated=iso(booked),
            )
            kind, future = "booked", future + DAY
        if kind in ("booked", "cancelled"):
            start = future
        elif kind in ("arrived", "checked-in"):
            start = now - rng.randrange(1800)
        else:  # fulfilled, noshow
            start = self._between(booked, now)
        start -= start % 900  # slots on the quarter hour
        yield appointment(
            aid, pid, sid, status=kind, start=start, updated=iso(min(now, max(booked, start)))
        )


# --- public entry points -------------------------------------------------------------------


class OutDirNotEmptyError(FileExistsError):
    """The output directory holds something other than Bulk Data NDJSON; pick another one."""


def _check(referrals: int, as_of: datetime) -> None:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware, e.g. 2025-01-15T12:00:00+00:00")
    if referrals < 0:
        raise ValueError(f"referrals must be 0 or more, not {referrals}")


def iter_resources(
    referrals: int, seed: int, as_of: datetime, progress: Progress | None = None
) -> Iterator[JSON]:
    """Stream the resources in a fixed order; ``progress(done, total)`` every 1000 referrals."""
    _check(referrals, as_of)
    return _Generator(referrals, seed, as_of, progress).run()


def generate(
    referrals: int, seed: int, as_of: datetime, progress: Progress | None = None
) -> dict[str, list[JSON]]:
    """All resources grouped by resourceType (in memory: prefer synth_to_dir for 100k)."""
    grouped: dict[str, list[JSON]] = {}
    for resource in iter_resources(referrals, seed, as_of, progress):
        grouped.setdefault(resource["resourceType"], []).append(resource)
    return grouped


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = sorted(out_dir.iterdir())
    foreign = [e.name for e in entries if not (e.is_file() and e.suffix == ".ndjson")]
    if foreign:
        raise OutDirNotEmptyError(
            f"refusing to write into {out_dir}: it holds {len(foreign)} entries that are not "
            f".ndjson files (first: {foreign[0]}); choose an empty or new directory"
        )
    # Earlier NDJSON output is replaced whole, so no stale resource type survives a re-run.
    for entry in entries:
        entry.unlink()


def _write(items: Iterable[tuple[str, JSON]], out_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    files: dict[str, BinaryIO] = {}
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with ExitStack() as stack:
        for resource_type, resource in items:
            out = files.get(resource_type)
            if out is None:
                if not (
                    resource_type.isascii()
                    and resource_type.isalpha()
                    and resource_type[0].isupper()
                ):
                    raise ValueError(f"not a FHIR resource type: {resource_type!r}")
                out = stack.enter_context(open(out_dir / f"{resource_type}.ndjson", "wb"))
                files[resource_type] = out
                counts[resource_type] = 0
            out.write(dumps(resource, option=newline))
            counts[resource_type] += 1
    return counts


def write_bulk(resources: dict[str, list[JSON]], out_dir: Path) -> dict[str, int]:
    """Write a Bulk Data directory (``<Type>.ndjson``, one resource per line); counts per type."""
    for resource_type, items in resources.items():
        for resource in items:
            if resource.get("resourceType") != resource_type:
                raise ValueError(f"{resource.get('id')!r} is listed under {resource_type}")
    _prepare_out_dir(out_dir)
    return _write(((t, r) for t, items in resources.items() for r in items), out_dir)


def with_id_prefix(resource: JSON, prefix: str) -> JSON:
    """The resource with `prefix` before its id and before the id of every relative reference
    it makes (`Patient/x` -> `Patient/{prefix}x`), so that data sets of several seeds can share
    one server without overwriting each other."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {key: walk(item) for key, item in value.items()}
            reference = out.get("reference")
            if isinstance(reference, str) and reference.count("/") == 1:
                rtype, rid = reference.split("/")
                if rtype[:1].isupper() and rtype.isalpha():
                    out["reference"] = f"{rtype}/{prefix}{rid}"
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    prefixed: JSON = walk(resource)
    prefixed["id"] = f"{prefix}{resource['id']}"
    return prefixed


def synth_to_dir(
    referrals: int,
    seed: int,
    as_of: datetime,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    id_prefix: str = "",
) -> dict[str, int]:
    """Generate straight into a Bulk Data directory, holding one resource at a time; with
    `id_prefix`, every id (and reference) starts with it."""
    if id_prefix and not all(c.isalnum() or c in "-." for c in id_prefix):
        raise ValueError("the id prefix may hold letters, digits, '-' and '.' only")
    stream = iter_resources(referrals, seed, as_of, progress)
    if id_prefix:
        stream = (with_id_prefix(r, id_prefix) for r in stream)
    _prepare_out_dir(out_dir)
    return _write(((r["resourceType"], r) for r in stream), out_dir)
