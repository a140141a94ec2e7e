"""Re-export of :mod:`ptl_cli.data.views`, where the views now live.

They moved to the core's data package so that every plugin (and the core's contract checks)
can build them without importing this plugin; this name keeps older imports working.
"""

from ptl_cli.data.views import VIEW_NAMES, crop_padding, make_views, view_keys, weak_view

__all__ = ["VIEW_NAMES", "crop_padding", "make_views", "view_keys", "weak_view"]
