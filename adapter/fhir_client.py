"""A small synchronous FHIR R4 client over a passed-in `httpx.Client`.

One method per FHIR interaction; every request goes through `_request`, which applies the
`RetryPolicy`, re-authenticates once on a 401 (without spending an attempt), and turns failures
into the errors of `adapter.errors`, named by what the caller should do next.

Timeouts: the `httpx.Client` passed in must carry timeouts (`make_http_client` builds one). A
client whose timeout has any phase set to None is refused unless `timeout=` is given here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from adapter.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    FatalServerError,
    FhirServerError,
    InvalidResponse,
    RepeatedNextLink,
    ResourceNotFound,
    TemporaryServerError,
    UnsafeNextLink,
    VersionConflict,
)
from adapter.fhir_capabilities import Capabilities
from adapter.http_policy import NOT_PROCESSED_STATUSES, RetryPolicy
from adapter.smart_auth import Auth

__all__ = ["FhirClient", "SearchParams", "WriteResult", "outcome_text"]

FHIR_JSON = "application/fhir+json"

# Search parameters as a mapping (a list value repeats the parameter) or as ordered pairs.
SearchParams = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]

JsonObject = dict[str, Any]

# How much OperationOutcome text an error message carries at most.
_MAX_ISSUES = 5
_MAX_ISSUE_CHARS = 500

# Transport failures after which the request certainly never reached the server, so even a
# non-idempotent request may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class WriteResult:
    """What a create, update or conditional create did."""

    __slots__ = ("created", "id", "resource", "resource_type", "status", "version_id")

    def __init__(
        self,
        status: int,
        resource_type: str,
        id: str | None,
        version_id: str | None,
        resource: JsonObject | None,
    ) -> None:
        self.status = status
        self.created = status == 201  # 200 on a conditional create means it already existed
        self.resource_type = resource_type
        self.id = id
        self.version_id = version_id
        self.resource = resource

    def __repr__(self) -> str:
        return (
            f"WriteResult({self.status}, {self.resource_type}/{self.id}, "
            f"version={self.version_id!r})"
        )


class FhirClient:
    """FHIR R4 interactions against one server base URL."""

    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        auth: Auth | None = None,
        policy: RetryPolicy | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError("the FHIR base URL must be an absolute http(s) URL")
        if base.query:
            raise ConfigError("the FHIR base URL must not carry a query string")
        effective = timeout or http.timeout
        if None in (effective.connect, effective.read, effective.write, effective.pool):
            raise ConfigError(
                "the httpx.Client has no timeout for every phase; build it with "
                "make_http_client() or pass timeout="
            )
        self.base_url = str(base)
        self._base = base
        self._http = http
        self._auth = auth
        self.policy = policy or RetryPolicy()
        self._timeout = timeout
        self._headers = {"Accept": FHIR_JSON, **(extra_headers or {})}
        self._capabilities: Capabilities | None = None

    # -- reads --------------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> JsonObject:
        """The current version of `resource_type/id`; ResourceNotFound on 404/410."""
        resource = self._json("GET", self._url(resource_type, id))
        _expect_type(resource, resource_type, f"GET {self._path(resource_type, id)}")
        return resource

    def search(self, resource_type: str, params: SearchParams = ()) -> Iterator[JsonObject]:
        """Each searchset Bundle page, following next links on this server only, never twice."""
        return self._pages(self._url(resource_type), params)

    def history(self, resource_type: str, params: SearchParams = ()) -> Iterator[JsonObject]:
        """Each page of the type's history Bundle (`Type/_history`, e.g. with `_since`): every
        version written, deletions included, newest first on most servers."""
        return self._pages(self._url(resource_type, "_history"), params)

    def _pages(self, url: str, params: SearchParams) -> Iterator[JsonObject]:
        query = _query_pairs(params)
        if query:
            url = f"{url}?{urlencode(query)}"
        seen: set[str] = set()
        while True:
            seen.add(url)
            page = self._json("GET", url)
            _expect_type(page, "Bundle", f"GET {httpx.URL(url).path}")
            yield page
            next_url = _next_link(page)
            if next_url is None:
                return
            self._check_next(next_url, seen)
            url = next_url

    def capabilities(self) -> Capabilities:
        """The server's CapabilityStatement, read once and then cached."""
        if self._capabilities is None:
            statement = self._json("GET", self._url("metadata"))
            _expect_type(statement, "CapabilityStatement", f"GET {self._path('metadata')}")
            self._capabilities = Capabilities.from_statement(statement)
        return self._capabilities

    # -- writes -------------------------------------------------------------------------------

    def create(self, resource: JsonObject) -> WriteResult:
        """POST a new resource; not retried after it may have reached the server."""
        rtype = _resource_type(resource)
        response, _ = self._request("POST", self._url(rtype), body=resource, idempotent=False)
        return self._write_result(response, rtype)

    def conditional_create(
        self, resource: JsonObject, if_none_exist: str | SearchParams
    ) -> WriteResult:
        """POST with If-None-Exist: creates (201) unless a match exists (200); safe to repeat."""
        rtype = _resource_type(resource)
        query = (
            if_none_exist
            if isinstance(if_none_exist, str)
            else urlencode(_query_pairs(if_none_exist))
        )
        response, _ = self._request(
            "POST", self._url(rtype), body=resource, headers={"If-None-Exist": query}
        )
        return self._write_result(response, rtype)

    def update(self, resource: JsonObject, if_match: str | None = None) -> WriteResult:
        """PUT `resource` at its id; with `if_match` (a versionId), VersionConflict if stale."""
        rtype = _resource_type(resource)
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            raise ConfigError(f"cannot update a {rtype} without an id")
        headers = {"If-Match": f'W/"{if_match}"'} if if_match is not None else None
        response, _ = self._request("PUT", self._url(rtype, rid), body=resource, headers=headers)
        return self._write_result(response, rtype)

    def transaction(self, bundle: JsonObject) -> JsonObject:
        """POST a transaction Bundle; retried only if every entry is idempotent (PUT, ...)."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in (
            "transaction",
            "batch",
        ):
            raise ConfigError("transaction() takes a Bundle of type transaction or batch")
        response, result = self._request(
            "POST",
            self.base_url,
            body=bundle,
            idempotent=_idempotent_bundle(bundle),
            parse_json=True,
        )
        if result is None:
            result = self._parse(response, "POST")
        _expect_type(result, "Bundle", f"POST {self._base.path}")
        return result

    # -- the machinery ------------------------------------------------------------------------

    def _url(self, *parts: str) -> str:
        return "/".join([self.base_url, *parts])

    def _path(self, *parts: str) -> str:
        return "/".join([self._base.path.rstrip("/"), *parts])

    def _json(self, method: str, url: str) -> JsonObject:
        response, parsed = self._request(method, url, parse_json=True)
        return parsed if parsed is not None else self._parse(response, method)

    def _parse(self, response: httpx.Response, method: str) -> JsonObject:
        parsed = _json_object(response.content)
        if parsed is None:
            raise InvalidResponse(
                f"{method} {response.request.url.path}: HTTP {response.status_code} "
                "with a body that is not a JSON object (truncated?)",
                status=response.status_code,
            )
        return parsed

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        parse_json: bool = False,
    ) -> tuple[httpx.Response, JsonObject | None]:
        """Send with retries; a 2xx response (and its JSON object if `parse_json`), or raise."""
        policy = self.policy
        content = orjson.dumps(body) if body is not None else None
        where = f"{method} {httpx.URL(url).path}"  # never the query: it may hold search values
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            last_attempt = attempt >= policy.max_attempts
            request_headers = dict(self._headers)
            if content is not None:
                request_headers["Content-Type"] = FHIR_JSON
            if headers:
                request_headers.update(headers)
            if self._auth is not None:
                request_headers.update(self._auth.headers(self._http))
            try:
                response = self._http.request(
                    method,
                    url,
                    content=content,
                    headers=request_headers,
                    timeout=self._timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                # Timeouts, refused or reset connections, bodies cut off mid-stream.
                may_resend = idempotent or isinstance(exc, _NOT_SENT)
                if last_attempt or not may_resend:
                    raise TemporaryServerError(
                        f"{where}: no usable answer after {attempt} attempt(s) "
                        f"({type(exc).__name__})"
                    ) from exc
                policy.sleep(policy.backoff(attempt))
                continue

            status = response.status_code
            if status == 401:
                if (
                    not reauthenticated
                    and self._auth is not None
                    and self._auth.refresh(self._http)
                ):
                    reauthenticated = True
                    attempt -= 1  # an expired token is not a server fault
                    continue
                raise _error(AuthenticationFailed, where, response)
            if status in policy.retryable_statuses:
                may_resend = idempotent or status in NOT_PROCESSED_STATUSES
                if last_attempt or not may_resend:
                    raise _error(
                        TemporaryServerError, where, response, f" after {attempt} attempt(s)"
                    )
                policy.sleep(policy.delay(attempt, response.headers.get("Retry-After")))
                continue
            if status >= 400 or status < 200:
                raise _error(_fatal_class(status), where, response)
            parsed = _json_object(response.content) if parse_json else None
            if parse_json and parsed is None and idempotent:
                # A body cut short by a proxy or a dropped connection: ask again.
                if last_attempt:
                    raise InvalidResponse(
                        f"{where}: HTTP {status} with a body that is not a JSON object "
                        f"(truncated?) after {attempt} attempt(s)",
                        status=status,
                    )
                policy.sleep(policy.backoff(attempt))
                continue
            return response, parsed

    def _check_next(self, next_url: str, seen: set[str]) -> None:
        link = httpx.URL(next_url)
        base_path = self._base.path.rstrip("/")
        same_origin = (
            link.scheme == self._base.scheme
            and link.host == self._base.host
            and _port(link) == _port(self._base)
        )
        under_base = link.path == base_path or link.path.startswith(base_path + "/")
        if not (same_origin and under_base):
            # Name only the origin: the link's query may hold search values.
            raise UnsafeNextLink(
                f"search next link points to {link.scheme}://{link.host}{link.path}, outside "
                f"the server base {self.base_url}; not followed"
            )
        if next_url in seen:
            raise RepeatedNextLink(
                f"search next link to {link.path} repeats an earlier page; paging stopped"
            )

    def _write_result(self, response: httpx.Response, resource_type: str) -> WriteResult:
        resource = _json_object(response.content)
        if resource is not None and resource.get("resourceType") != resource_type:
            resource = None  # e.g. an OperationOutcome under Prefer: return=OperationOutcome
        rid: str | None = None
        version: str | None = None
        if resource is not None:
            meta = resource.get("meta")
            rid = resource.get("id") if isinstance(resource.get("id"), str) else None
            if isinstance(meta, dict) and isinstance(meta.get("versionId"), str):
                version = meta["versionId"]
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if location and (rid is None or version is None):
            # [base]/Type/id/_history/vid
            parts = httpx.URL(location).path.strip("/").split("/")
            if resource_type in parts:
                tail = parts[parts.index(resource_type) + 1 :]
                rid = rid or (tail[0] if tail else None)
                if len(tail) >= 3 and tail[1] == "_history":
                    version = version or tail[2]
        if version is None:
            etag = response.headers.get("ETag", "")
            version = etag.removeprefix("W/").strip('"') or None
        return WriteResult(response.status_code, resource_type, rid, version, resource)


# -- helpers ----------------------------------------------------------------------------------


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)


def _query_pairs(params: SearchParams) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for name, value in params.items():
            values = [value] if isinstance(value, str) else list(value)
            pairs.extend((name, v) for v in values)
        return pairs
    return list(params)


def _next_link(bundle: JsonObject) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def _resource_type(resource: JsonObject) -> str:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype.isalpha():
        raise ConfigError("the resource has no valid resourceType")
    return rtype


def _expect_type(resource: JsonObject, expected: str, where: str) -> None:
    found = resource.get("resourceType")
    if found != expected:
        shown = found if isinstance(found, str) and found.isalpha() else "no resourceType"
        raise InvalidResponse(f"{where}: expected a {expected}, got {shown}")


def _idempotent_bundle(bundle: JsonObject) -> bool:
    """True if sending the Bundle twice has the effect of sending it once."""
    for entry in bundle.get("entry") or []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            return False
        method = request.get("method")
        if method == "POST" and not request.get("ifNoneExist"):
            return False
        if method not in ("GET", "HEAD", "PUT", "DELETE", "POST"):
            return False
    return True


def _json_object(content: bytes) -> JsonObject | None:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _fatal_class(status: int) -> type[FatalServerError]:
    if status in (404, 410):
        return ResourceNotFound
    if status in (409, 412):
        return VersionConflict
    if 400 <= status < 500:
        return BadRequest
    return FatalServerError


def outcome_text(outcome: Mapping[str, Any]) -> str:
    """The issues of an OperationOutcome as one line: `severity code: text` per issue."""
    texts: list[str] = []
    issues = outcome.get("issue")
    for issue in issues if isinstance(issues, list) else []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = details.get("text") if isinstance(details, dict) else None
        diagnostics = issue.get("diagnostics")
        said = " / ".join(s for s in (text, diagnostics) if isinstance(s, str) and s) or "(no text)"
        head = " ".join(
            str(issue[k]) for k in ("severity", "code") if isinstance(issue.get(k), str)
        )
        texts.append(f"{head}: {said[:_MAX_ISSUE_CHARS]}" if head else said[:_MAX_ISSUE_CHARS])
        if len(texts) == _MAX_ISSUES:
            break
    return "; ".join(texts)


def _error(
    cls: type[FhirServerError], where: str, response: httpx.Response, suffix: str = ""
) -> FhirServerError:
    """An error for a failed response: the OperationOutcome's text if the body is one, else none."""
    body = _json_object(response.content)
    outcome = body if body is not None and body.get("resourceType") == "OperationOutcome" else None
    text = outcome_text(outcome) if outcome is not None else None
    message = f"{where}: HTTP {response.status_code}{suffix}"
    if text:
        message += f": {text}"
    return cls(message, status=response.status_code, outcome_text=text, outcome=outcome)
