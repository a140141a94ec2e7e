"""ptl: transfer without source data and pruning of random networks, as a plugin-based CLI.

This package is the *core*: contracts (hookspecs, component specs, recipe schemas), the run
machinery (run directories, checkpoints, resume) and the command line. It knows no algorithm;
every generator, SSL method, pruner, model and dataset is a plugin.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("ptl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: Marker for plugin hook implementations: ``@hookimpl def ptl_register_models(register): ...``
hookimpl = pluggy.HookimplMarker("ptl")

__all__ = ["__version__", "hookimpl"]
