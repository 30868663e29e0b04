"""`{% dashboard %}`: the operations dashboard for the page's user (emailsys.dashboard), on the admin index."""

from django import template

from emailsys.dashboard import dashboard_page

register = template.Library()


@register.inclusion_tag("live/dashboard.html", takes_context=True)
def dashboard(context: template.Context) -> dict:
    return dashboard_page(user=context["request"].user)
