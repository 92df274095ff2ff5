"""The AKS lister over a fake Azure Resource Manager and token endpoint (HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from gpufleet.clouds import azure
from gpufleet.errors import UserError
from gpufleet.spec import Fleet
from pipelines.previews.inventory import list_previews
from tests.conftest import REPO

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
TOKEN = "token-for-tests"
CLUSTERS = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/managedClusters"


def aks(name: str, tags: dict[str, str] | None) -> dict[str, Any]:
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg"
    rid = f"{group}/providers/Microsoft.ContainerService/managedClusters/{name}"
    return {"id": rid, "name": name, "location": "eastus", "tags": tags}


PREVIEW_TAGS = {
    "gpufleet-preview": "true",
    "gpufleet-environment": "pv-feature-x-123456",
    "gpufleet-fleet": "demo",
    "gpufleet-expires-at": "1800000000",
    "gpufleet-ttl-hours": "72",
    "gpufleet-base-environment": "staging",
    "gpufleet-owner": "erin",
}


class FakeAzure(BaseHTTPRequestHandler):
    """ARM's managedClusters list in two pages (nextLink), and the Entra ID client-credentials endpoint."""

    seen_auth: list[str] = []
    status = 200

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen_auth.append(self.headers.get("Authorization", ""))
        if self.status != 200:
            self._send(self.status, {"error": {"code": "AuthorizationFailed", "message": "no"}})
        elif url.path == CLUSTERS and "page=2" not in url.query:
            base = f"http://{self.headers['Host']}"
            first = [aks("aks-eus-prod", {"gpufleet-fleet": "demo"}), aks("untagged", None)]
            self._send(200, {"value": first, "nextLink": f"{base}{CLUSTERS}?api-version=x&page=2"})
        elif url.path == CLUSTERS:
            self._send(200, {"value": [aks("aks-eus-pv-feature-x-123456", PREVIEW_TAGS)]})  # page 2
        else:
            self._send(404, {"error": {"code": "NotFound"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        right = form.get("client_secret") == ["s3cret"] and form.get("scope") == [azure.ARM_SCOPE]
        if self.path == "/tenant-1/oauth2/v2.0/token" and right:
            self._send(200, {"access_token": TOKEN, "token_type": "Bearer"})
        else:
            self._send(401, {"error": "invalid_client"})


@pytest.fixture
def fake_azure() -> Iterator[str]:
    FakeAzure.seen_auth = []
    FakeAzure.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAzure)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.model_validate(yaml.safe_load((REPO / "fleet.yaml").read_text()))


@pytest.fixture
def subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARM_USE_MSI", "ARM_USE_OIDC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARM_SUBSCRIPTION_ID", SUBSCRIPTION)


def test_aks_previews_are_found_by_their_tags_across_pages(
    fake_azure: str, fleet: Fleet, subscription: None
) -> None:
    found = list_previews(fleet, {"azure": lambda: azure.ArmClient(TOKEN, fake_azure)}, clouds=["azure"])
    [record] = found.records
    assert (record.cloud, record.region, record.cluster_name) == (
        "azure",
        "eastus",
        "aks-eus-pv-feature-x-123456",
    )
    assert (record.environment, record.base_environment, record.owner) == (
        "pv-feature-x-123456",
        "staging",
        "erin",
    )
    assert record.resource_id.endswith("/managedClusters/aks-eus-pv-feature-x-123456")
    assert found.notes == ()
    assert FakeAzure.seen_auth == [f"Bearer {TOKEN}"] * 2  # both pages, with the token


def test_refused_listing_is_a_user_error(fake_azure: str, fleet: Fleet, subscription: None) -> None:
    FakeAzure.status = 403
    with pytest.raises(UserError, match="AuthorizationFailed") as raised:
        list_previews(fleet, {"azure": lambda: azure.ArmClient(TOKEN, fake_azure)}, clouds=["azure"])
    assert "managedClusters/read" in str(raised.value)


def test_a_service_principal_gets_a_token(fake_azure: str) -> None:
    environ = {
        "ARM_CLIENT_ID": "app",
        "ARM_CLIENT_SECRET": "s3cret",
        "ARM_TENANT_ID": "tenant-1",
        "AZURE_AUTHORITY_HOST": fake_azure,
    }
    assert azure.arm_token(environ, which=lambda name: None) == TOKEN
    with pytest.raises(UserError, match="ARM_CLIENT_ID=app was refused a token"):
        azure.arm_token(environ | {"ARM_CLIENT_SECRET": "wrong"}, which=lambda name: None)


def test_no_credentials_name_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(UserError) as raised:
        azure.arm_token({}, which=lambda name: None)
    assert str(raised.value) == azure.AZURE_NO_CREDENTIALS


def test_a_managed_identity_is_not_listed_and_says_so(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_USE_MSI", "true")
    found = list_previews(fleet, clouds=["azure"])
    assert found.records == () and len(found.notes) == 1
    assert "not listed" in found.notes[0] and "managed identity" in found.notes[0]


def test_listing_without_a_subscription_is_a_user_error(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ARM_SUBSCRIPTION_ID", "ARM_USE_MSI", "ARM_USE_OIDC"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError) as raised:
        list_previews(
            fleet, {"azure": lambda: pytest.fail("no client without a subscription")}, clouds=["azure"]
        )
    assert str(raised.value) == azure.AZURE_NO_SUBSCRIPTION
