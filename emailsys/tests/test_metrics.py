"""/metrics in Prometheus text format: HTTP requests, per-task counts/failures/latency, queue depths."""

import pytest
from celery.contrib.testing.worker import start_worker
from prometheus_client.parser import text_string_to_metric_families

from emailsys.celery import app as celery_app
from emailsys.metrics import TASK_METRICS_KEY
from emailsys.ops_clients import ops_redis
from emailsys.tasks import report_worker

pytestmark = pytest.mark.django_db


@celery_app.task(name="tests.always_fails")
def always_fails() -> None:
    raise RuntimeError("this task always fails")


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_task_counts_failures_and_latency_per_task(client) -> None:
    ops_redis().delete(TASK_METRICS_KEY)
    with start_worker(celery_app, pool="solo", perform_ping_check=False, queues=["default"]):
        report_worker.apply_async(queue="default").get(timeout=20)
        report_worker.apply_async(queue="default").get(timeout=20)
        with pytest.raises(RuntimeError):
            always_fails.delay().get(timeout=20)

    samples = scrape(client)
    succeeded = (("state", "succeeded"), ("task", "emailsys.report_worker"))
    assert samples[("emailsys_celery_tasks_total", succeeded)] == 2
    assert samples[("emailsys_celery_tasks_total", (("state", "failed"), ("task", "tests.always_fails")))] == 1
    runtime = "emailsys_celery_task_runtime_seconds"
    assert samples[(f"{runtime}_count", (("task", "emailsys.report_worker"),))] == 2
    assert samples[(f"{runtime}_bucket", (("le", "+Inf"), ("task", "emailsys.report_worker")))] == 2
    assert 0 < samples[(f"{runtime}_sum", (("task", "emailsys.report_worker"),))] < 10


def test_queue_depth_counts_messages_nobody_consumed(client) -> None:
    celery_app.control.purge()
    depth = lambda samples, queue: samples[("emailsys_celery_queue_depth", (("queue", queue),))]  # noqa: E731
    before = scrape(client)
    for _ in range(3):
        report_worker.apply_async(queue="inbound")

    after = scrape(client)

    depths = {queue: (depth(before, queue), depth(after, queue)) for queue in ("default", "sending", "inbound")}
    assert depths["inbound"][1] - depths["inbound"][0] == 3, depths
    assert depths["sending"][1] == depths["sending"][0], depths
    celery_app.control.purge()


def test_http_requests_are_counted_by_view(client) -> None:
    client.get("/healthz")
    samples = scrape(client)
    by_view = "django_http_requests_total_by_view_transport_method_total"
    assert samples[(by_view, (("method", "GET"), ("transport", "http"), ("view", "healthz")))] >= 1


METRICS_TOKEN = "metrics-token-for-this-test-0123456789"  # noqa: S105 - a test value


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer"],
)
def test_metrics_with_a_bearer_token_refuses_requests_without_it(client, settings, authorization) -> None:
    settings.METRICS_BEARER_TOKEN = METRICS_TOKEN
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"emailsys_celery" not in response.content and b"django_http" not in response.content


def test_metrics_with_a_bearer_token_answer_prometheus_with_it(client, settings) -> None:
    settings.METRICS_BEARER_TOKEN = METRICS_TOKEN
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert "emailsys_celery_queue_depth" in names
    # The probes stay open: /healthz answers (healthy or not) without the token.
    assert client.get("/healthz").status_code in (200, 503)


def test_metrics_are_open_by_default_for_local_use(client, settings) -> None:
    assert settings.METRICS_BEARER_TOKEN == ""
    assert client.get("/metrics").status_code == 200
