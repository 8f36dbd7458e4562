"""A real S3-protocol server over HTTP for tests: moto's standalone server on a free port.

moto serves the S3 API (buckets, objects, Range) but does not check pre-signed URLs at all: it
would serve an expired or tampered one. In front of it sits a small WSGI layer that applies
AWS's rules for pre-signed GETs (SigV4 query authentication, written here from the AWS
documentation, independent of the minio client that signs): a bad signature gets 403
SignatureDoesNotMatch, an expired URL 403 AccessDenied "Request has expired", as AWS S3 answers.

Since that refusal is our own code, the authoritative check that an S3-protocol server refuses
expired and tampered URLs is tests/otaplanner/test_s3_real.py, against s3rver, which verifies
SigV4 itself. These moto tests stay for the rest of the S3 path (fleetctl end to end).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from calendar import timegm
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from tests.support import free_port

ACCESS_KEY, SECRET_KEY, REGION = "fleet-test-ak", "fleet-test-secret", "us-east-1"


def _error(start_response: Callable[..., Any], code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _signing_key(date: str, region: str, service: str) -> bytes:
    k = hmac.new(f"AWS4{SECRET_KEY}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def presign_check(environ: dict[str, Any]) -> tuple[str, str] | None:
    """None when the request is a valid, unexpired SigV4 pre-signed request; else (code, message)."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    q = dict(query)
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return ("AccessDenied", "Unsupported or missing X-Amz-Algorithm")
    try:
        amz_date, expires = q["X-Amz-Date"], int(q["X-Amz-Expires"])
        signed = time.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        _key_id, date, region, service, _term = q["X-Amz-Credential"].split("/")
    except (KeyError, ValueError):
        return ("AuthorizationQueryParametersError", "Malformed pre-signed query")
    if time.time() > timegm(signed) + expires:
        return ("AccessDenied", "Request has expired")
    headers = q.get("X-Amz-SignedHeaders", "").split(";")
    canon_headers = ""
    for h in headers:
        value = environ.get("HTTP_" + h.upper().replace("-", "_"), "")
        canon_headers += f"{h}:{value.strip()}\n"
    canon_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                           for k, v in sorted(query) if k != "X-Amz-Signature")
    path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/-_.~")
    canonical = "\n".join([environ["REQUEST_METHOD"], path, canon_query, canon_headers,
                           ";".join(headers), "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, f"{date}/{region}/{service}/aws4_request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(_signing_key(date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, q.get("X-Amz-Signature", "")):
        return ("SignatureDoesNotMatch", "The request signature we calculated does not match")
    return None


class PresignEnforcingMoto(ThreadedMotoServer):
    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if "X-Amz-Signature=" in environ.get("QUERY_STRING", ""):
                refused = presign_check(environ)
                if refused is not None:
                    return _error(start_response, *refused)
            return moto_app(environ, start_response)  # type: ignore[no-any-return]

        self._server = make_server(self._ip_address, self._port, app, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class S3:
    endpoint: str  # http://127.0.0.1:port
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3]:
    port = free_port()
    server = PresignEnforcingMoto(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3(f"http://127.0.0.1:{port}")
    server.stop()
