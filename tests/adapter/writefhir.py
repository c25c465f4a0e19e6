"""A scripted FHIR server for the write-back's respx tests: Tasks and Communications only.

It answers what `adapter.writeback` sends (conditional create with If-None-Exist on an
identifier, PUT with If-Match, read, search by identifier, batch Bundles of those), so tests can
take interactions out of its CapabilityStatement and inject faults on chosen requests. What
real servers do is asserted against HAPI and sekmet in tests/integration.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson

BASE = "http://ehr.test/fhir"
JSON = dict[str, Any]


class WriteServer:
    def __init__(self, interactions: tuple[str, ...] = ("create", "update", "read")) -> None:
        self.interactions = interactions
        self.resources: dict[str, JSON] = {}  # "Type/id" -> current version
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request but metadata
        self.ids = itertools.count(1)
        # Called with (method, path, resource or None) before each interaction (also inside a
        # batch); a (status, OperationOutcome text) returned is answered instead.
        self.fault: Callable[[str, str, JSON | None], tuple[int, str] | None] = (
            lambda method, path, resource: None
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir").strip("/")
        if path == "metadata":
            return httpx.Response(200, json=self.capability_statement())
        self.requests.append((request.method, path))
        body = orjson.loads(request.content) if request.content else None
        if request.method == "POST" and path == "":
            return httpx.Response(200, json=self._batch(body))
        status, answer, headers = self._one(
            request.method,
            path,
            body,
            if_none_exist=request.headers.get("If-None-Exist"),
            if_match=request.headers.get("If-Match"),
            query=request.url.query.decode(),
        )
        return httpx.Response(status, json=answer, headers=headers)

    def capability_statement(self) -> JSON:
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": rtype,
                            "interaction": [{"code": c} for c in self.interactions],
                            "searchParam": [{"name": "identifier", "type": "token"}],
                        }
                        for rtype in ("Task", "Communication")
                    ],
                }
            ],
        }

    def of_type(self, rtype: str) -> list[JSON]:
        return [r for k, r in self.resources.items() if k.startswith(f"{rtype}/")]

    def _matching(self, rtype: str, query: str) -> list[JSON]:
        wanted = dict(parse_qsl(query)).get("identifier", "")
        system, _, value = wanted.partition("|")
        value = value.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$")
        return [
            r
            for r in self.of_type(rtype)
            if any(i.get("system") == system and i.get("value") == value for i in r["identifier"])
        ]

    def _store(self, resource: JSON, rid: str, version: int) -> JSON:
        stored = {
            **resource,
            "id": rid,
            "meta": {**(resource.get("meta") or {}), "versionId": str(version)},
        }
        self.resources[f"{resource['resourceType']}/{rid}"] = stored
        return stored

    def _one(
        self,
        method: str,
        path: str,
        body: JSON | None,
        *,
        if_none_exist: str | None,
        if_match: str | None,
        query: str = "",
    ) -> tuple[int, JSON, dict[str, str]]:
        fault = self.fault(method, path, body)
        if fault is not None:
            return fault[0], _outcome(fault[1]), {}
        parts = path.split("/")
        if method == "GET" and len(parts) == 1:
            found = self._matching(parts[0], query)
            entries = [{"resource": r, "search": {"mode": "match"}} for r in found]
            return 200, {"resourceType": "Bundle", "type": "searchset", "entry": entries}, {}
        if method == "GET":
            current = self.resources.get(path)
            return (200, current, {}) if current else (404, _outcome("not found"), {})
        if method == "POST" and body is not None:
            if if_none_exist:
                found = self._matching(parts[0], if_none_exist)
                if found:
                    return 200, found[0], self._location(found[0])
            stored = self._store(body, f"s{next(self.ids)}", 1)
            return 201, stored, self._location(stored)
        if method == "PUT" and body is not None:
            current = self.resources.get(path)
            if current is None:
                return 404, _outcome("not found"), {}
            version = int(current["meta"]["versionId"])
            if if_match is not None and if_match != f'W/"{version}"':
                return 412, _outcome(f"version {version} is current"), {}
            stored = self._store(body, parts[1], version + 1)
            return 200, stored, self._location(stored)
        return 400, _outcome("not understood"), {}

    def _location(self, resource: JSON) -> dict[str, str]:
        rid, version = resource["id"], resource["meta"]["versionId"]
        return {
            "Location": f"{BASE}/{resource['resourceType']}/{rid}/_history/{version}",
            "ETag": f'W/"{version}"',
        }

    def _batch(self, bundle: JSON) -> JSON:
        answers = []
        for entry in bundle["entry"]:
            request = entry["request"]
            status, answer, headers = self._one(
                request["method"],
                request["url"],
                entry.get("resource"),
                if_none_exist=request.get("ifNoneExist"),
                if_match=request.get("ifMatch"),
            )
            response: JSON = {"status": f"{status} {'OK' if status < 300 else 'Error'}"}
            if "Location" in headers:
                response["location"] = headers["Location"].removeprefix(f"{BASE}/")
                response["etag"] = headers["ETag"]
            if status >= 400:
                response["outcome"] = answer
            answers.append({"response": response})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": answers}


def _outcome(text: str) -> JSON:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }
