"""Redirect URIs a client may register (RFC 6749 3.1.2, RFC 8252 7.3)."""

from __future__ import annotations

import pytest

from fhir_server.auth.users import IdentityError, _check_redirect_uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/callback",
        "https://app.example:8443/cb?x=1",
        "http://127.0.0.1:51004/cb",
        "http://localhost/cb",
        "http://[::1]:8080/cb",
    ],
)
def test_accepted(uri: str) -> None:
    _check_redirect_uri(uri)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://app.example/cb", "loopback"),
        ("http://localhost.attacker.example/cb", "loopback"),
        ("http://127.0.0.1.nip.io/cb", "loopback"),
        ("http://127.0.0.1@attacker.example/cb", "user or password"),
        ("https://user:pw@app.example/cb", "user or password"),
        ("https://app.example/cb#frag", "fragment"),
        ("https:///cb", "no host"),
        ("javascript:alert(1)", "no host"),
        ("ftp://app.example/cb", "loopback"),
        ("https://app.example:99999/cb", "not a URL"),
    ],
)
def test_refused(uri: str, reason: str) -> None:
    with pytest.raises(IdentityError, match=reason):
        _check_redirect_uri(uri)
