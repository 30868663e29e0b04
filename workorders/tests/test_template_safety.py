"""Event mailings render through the same budgeted sandbox: any fault of the template is the Prepare step's error
with the reason, never a crashed run, and a loop without end stops at the render budget."""

import pytest

from workorders.models import WorkOrderStep
from workorders.services.steps import workorder_run
from workorders.tests.test_steps import make_work_order, steps

pytestmark = pytest.mark.django_db

Status = WorkOrderStep.Status


@pytest.mark.parametrize(
    ("body_text", "reason"),
    [
        ("Doors open at {{ 24 // 0 }}", "text: ZeroDivisionError: integer division or modulo by zero"),
        ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
         "text: the template took longer than 0.5 s to render"),
        ("{{ ''|attr('format') }}", "text: it would write a function into the email"),
    ],
    ids=["zero-division", "endless-loop", "object"],
)  # fmt: skip
def test_a_template_fault_is_an_error_on_prepare_with_the_reason(smtp, settings, body_text: str, reason: str):
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.5
    work_order = make_work_order(smtp, template__body_text=body_text, template__subject="{{ event_name }}")

    assert workorder_run(work_order_id=work_order.id) == "error"

    prepare = steps(work_order)["prepare"]
    assert prepare.status == Status.ERROR and "the template does not render" in prepare.message
    assert reason in prepare.message
    assert steps(work_order)["send"].status == Status.READY and smtp.snapshot() == []
