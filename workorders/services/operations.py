"""Only for `WorkOrder.clean`, whose import (workorders/models.py) names this module: the work-order actions are in
`workorders.services.lifecycle`, the sweeper in `workorders.services.sweep`. Remove once models.py imports
`workorder_validate` from lifecycle."""

from workorders.services.lifecycle import workorder_validate

__all__ = ["workorder_validate"]
