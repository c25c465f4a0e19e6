"""A scripted FHIR server for respx: a handful of resources, searched the way the sync searches.

Not a FHIR server: it answers exactly the queries `adapter.sync` sends (`_id`, `_lastUpdated`,
the reference parameters of `adapter.sync.TIES`, `_include` / `_revinclude`, `_count` paging,
`Type/_history?_since`), so that tests can switch capabilities off, inject faults on a chosen
request and count requests. What real servers do is asserted against HAPI and sekmet in
tests/integration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from adapter.sync import SYNC_TYPES, TIES
from mappings.fhirtime import parse_instant
from mappings.references import references_at

BASE = "http://ehr.test/fhir"
JSON = dict[str, Any]
# search parameter -> element, per type (the ties, plus what _include follows)
PARAMS = {(t.type, t.param): t.element for t in TIES} | {
    ("ServiceRequest", "subject"): "subject",
    ("ServiceRequest", "requester"): "requester",
}


def outcome(status: int, text: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "transient", "diagnostics": text}],
        },
    )


class MiniServer:
    def __init__(
        self, *, includes: bool = True, revincludes: bool = True, history: bool = True
    ) -> None:
        self.includes = includes
        self.revincludes = revincludes
        self.history_offered = history
        self.warn = False  # each searchset also carries an OperationOutcome (mode "outcome")
        self.clock = datetime.fromisoformat("2026-12-01T09:00:00+00:00")
        self.current: dict[str, JSON] = {}  # key -> resource
        self.versions: dict[str, int] = {}  # key -> last version, deletions included
        # (key, version, when, resource or None for a deletion), oldest first
        self.log: list[tuple[str, str, str, JSON | None]] = []
        self.requests: list[httpx.URL] = []
        # Called with each request before it is answered; a response returned is sent instead.
        self.fault: Callable[[httpx.Request], httpx.Response | None] = lambda request: None

    # -- the data ------------------------------------------------------------------------------

    def tick(self) -> str:
        self.clock += timedelta(minutes=1)
        return self.clock.isoformat().replace("+00:00", "Z")

    def put(self, resource: JSON, when: str | None = None) -> JSON:
        key = f"{resource['resourceType']}/{resource['id']}"
        version = str(self.versions.get(key, 0) + 1)  # a re-created resource counts on
        self.versions[key] = int(version)
        when = when or self.tick()
        stamped = {**resource, "meta": {"versionId": version, "lastUpdated": when}}
        self.current[key] = stamped
        self.log.append((key, version, when, stamped))
        return stamped

    def delete(self, key: str) -> None:
        del self.current[key]
        self.versions[key] += 1
        version = str(self.versions[key])
        self.log.append((key, version, self.tick(), None))

    # -- answering -----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=self.capability_statement())
        self.requests.append(request.url)
        faulty = self.fault(request)
        if faulty is not None:
            return faulty
        parts = request.url.path.removeprefix("/fhir/").split("/")
        params = list(request.url.params.multi_items())
        if len(parts) == 2 and parts[1] == "_history":
            return httpx.Response(200, json=self._history(parts[0], params, request.url))
        return httpx.Response(200, json=self._search(parts[0], params, request.url))

    def capability_statement(self) -> JSON:
        interactions = [{"code": "read"}, {"code": "search-type"}]
        if self.history_offered:
            interactions.append({"code": "history-type"})
        resources = []
        for rtype in SYNC_TYPES:
            names = ["_id", "_lastUpdated"] + [p for (t, p) in PARAMS if t == rtype]
            entry: JSON = {
                "type": rtype,
                "interaction": interactions,
                "searchParam": [{"name": n, "type": "token"} for n in names],
            }
            if rtype == "ServiceRequest" and self.includes:
                entry["searchInclude"] = ["ServiceRequest:subject", "ServiceRequest:requester"]
            if rtype == "ServiceRequest" and self.revincludes:
                entry["searchRevInclude"] = [
                    f"{t.type}:{t.param}" for t in TIES if t.target == "ServiceRequest"
                ]
            resources.append(entry)
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "software": {"name": "Scripted test server"},
            "rest": [{"mode": "server", "resource": resources}],
        }

    def _page(
        self, url: httpx.URL, entries: list[JSON], params: list[tuple[str, str]], kind: str
    ) -> JSON:
        count = int(dict(params).get("_count", "100"))
        page = int(dict(params).get("page", "1"))
        body: JSON = {
            "resourceType": "Bundle",
            "meta": {"lastUpdated": self.clock.isoformat()},
            "type": kind,
            "total": len(entries),
            "entry": entries[(page - 1) * count : page * count],
        }
        if page * count < len(entries):
            rest = [(k, v) for k, v in params if k != "page"] + [("page", str(page + 1))]
            body["link"] = [{"relation": "next", "url": f"{BASE}{url.path[5:]}?{urlencode(rest)}"}]
        return body

    def _search(self, rtype: str, params: list[tuple[str, str]], url: httpx.URL) -> JSON:
        found = [r for k, r in self.current.items() if k.startswith(f"{rtype}/")]
        for name, value in params:
            if name == "_id":
                found = [r for r in found if r["id"] in value.split(",")]
            elif name == "_lastUpdated":
                since = parse_instant(value.removeprefix("ge"))
                found = [r for r in found if parse_instant(r["meta"]["lastUpdated"]) >= since]
            elif (rtype, name) in PARAMS:
                wanted = set(value.split(","))
                element = PARAMS[rtype, name]
                found = [r for r in found if wanted & set(references_at(r, element))]
        found.sort(key=lambda r: (r["meta"]["lastUpdated"], r["id"]))
        body = self._page(
            url, [{"resource": r, "search": {"mode": "match"}} for r in found], params, "searchset"
        )
        matches = [e["resource"] for e in body["entry"]]
        keys = {f"{r['resourceType']}/{r['id']}" for r in matches}
        included: dict[str, JSON] = {}
        for name, value in params:
            source, _, param = value.partition(":")
            if name == "_include" and self.includes:
                for resource in matches:
                    for key in references_at(resource, PARAMS[source, param]):
                        if key in self.current:
                            included[key] = self.current[key]
            elif name == "_revinclude" and self.revincludes:
                for key, resource in self.current.items():
                    if key.startswith(f"{source}/") and keys & set(
                        references_at(resource, PARAMS[source, param])
                    ):
                        included[key] = resource
        body["entry"] += [
            {"resource": r, "search": {"mode": "include"}}
            for k, r in included.items()
            if k not in keys
        ]
        if self.warn:
            warning = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "code": "informational", "diagnostics": "!"}],
            }
            body["entry"].append({"resource": warning, "search": {"mode": "outcome"}})
        return body

    def _history(self, rtype: str, params: list[tuple[str, str]], url: httpx.URL) -> JSON:
        since = parse_instant(dict(params)["_since"])
        entries = []
        for key, version, when, resource in reversed(self.log):
            if not key.startswith(f"{rtype}/") or parse_instant(when) < since:
                continue
            if resource is None:
                entries.append(
                    {"request": {"method": "DELETE", "url": f"{key}/_history/{version}"}}
                )
            else:
                entries.append({"resource": resource, "request": {"method": "PUT", "url": key}})
        return self._page(url, entries, params, "history")
