"""Who may call which API operation (REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]; README "Roles and permissions").

Every operation needs an active staff user. An operation of a model viewset also needs Django model permissions,
checked before the object is looked up (so a 404 never tells someone without permission that a row exists):

- the model's `view_<model>` for every request (reading included: GET, HEAD, OPTIONS),
- plus `add_`, `change_` or `delete_<model>` for create, update / partial update, destroy,
- plus, for an `@action`, what it declares next to it: `@action(..., permission_classes=[requires("app.codename")])`.
  An `@action` that declares nothing is refused (403), so a new one cannot be forgotten.

A view that is not about a model (health, schema, docs) says so with `permission_classes = [IsActiveStaff]`;
any other view without a model is refused.
"""

from typing import TYPE_CHECKING

from django.db.models import Model
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings: no import at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView

# Django's own default permissions by viewset action and, for views or requests without one, by HTTP method.
ACTION_PERMISSIONS = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "destroy": "delete",
}
METHOD_PERMISSIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def user_is_active_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class IsActiveStaff(BasePermission):
    """Any active staff user, whatever their model permissions: for views that show no rows (health, schema)."""

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        return user_is_active_staff(request.user)


class ModelPermissions(BasePermission):
    """Active staff holding the model permissions of the operation (module docstring); `requires()` adds an
    action's own."""

    action_permissions: tuple[str, ...] | None = None  # set by `requires`; None on an @action: refused

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        if not user_is_active_staff(request.user):
            return False
        if getattr(view, "action_map", None) is not None and view.action is None:
            return True  # a method the viewset does not route: DRF answers 405, which tells more than a 403
        needed = self.required_permissions(request, view)
        return needed is not None and request.user.has_perms(needed)

    def required_permissions(self, request: "Request", view: "APIView") -> list[str] | None:
        """The permissions the request needs, or None when it may not be made at all."""
        model = _view_model(view)
        if model is None:
            return None
        opts = model._meta
        needed = [f"{opts.app_label}.view_{opts.model_name}"]
        action = getattr(view, "action", None)
        if action is not None and _is_extra_action(view, action):
            if self.action_permissions is None:
                return None
            return [*needed, *self.action_permissions]
        kind = ACTION_PERMISSIONS.get(action) if action else METHOD_PERMISSIONS.get(request.method or "")
        if kind is None:
            return None
        if kind != "view":
            needed.append(f"{opts.app_label}.{kind}_{opts.model_name}")
        return needed


def requires(*permissions: str) -> type[ModelPermissions]:
    """The permission class of an `@action` with effects: the model's view permission plus these
    ("app_label.codename"), e.g. `@action(detail=True, methods=["post"], permission_classes=[requires(
    "campaigns.run_campaign")])`. A read-only action declares `requires()`: the view permission alone."""
    for permission in permissions:
        if permission.count(".") != 1:
            raise ValueError(f"{permission!r}: name a permission as 'app_label.codename'.")
    name = "Requires_" + "_".join(permission.replace(".", "_") for permission in permissions)
    return type(name, (ModelPermissions,), {"action_permissions": tuple(permissions)})


def _is_extra_action(view: "APIView", action: str) -> bool:
    return getattr(getattr(view, action, None), "mapping", None) is not None


def _view_model(view: "APIView") -> type[Model] | None:
    if getattr(view, "get_queryset", None) is not None:
        try:
            return view.get_queryset().model
        except AssertionError:  # a generic view without `queryset` nor its own get_queryset
            return None
    queryset = getattr(view, "queryset", None)
    return None if queryset is None else queryset.model
