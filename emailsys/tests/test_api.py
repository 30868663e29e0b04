"""The JSON API: OpenAPI schema, token or session auth, staff only."""

import pytest

from emailsys.testing import api_authorization

pytestmark = pytest.mark.django_db


def test_openapi_schema_lists_the_operations_endpoints(admin_client) -> None:
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/health/" in schema["paths"]


def test_token_auth_works_and_anonymous_is_refused(client, admin_user) -> None:
    assert client.get("/api/v1/health/").status_code == 401
    response = client.get("/api/v1/health/", HTTP_AUTHORIZATION=api_authorization(admin_user))
    assert response.status_code in (200, 503)
    assert "components" in response.json()


def test_api_docs_page_is_served_without_a_cdn(admin_client) -> None:
    page = admin_client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "cdn." not in page
