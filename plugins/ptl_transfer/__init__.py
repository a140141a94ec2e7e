"""``ptl transfer``: transfer without source data (pseudo pre-training, PCS and P-SSL).

Packaged exactly like a third-party plugin: ``ptl_transfer.hooks`` registers the ``transfer``
workflow and command without importing torch. ``workflow.py`` is what the CLI calls; the run,
its one training loop and each phase's step are in ``loops.py``, the pieces every phase shares in
``job.py``, the pseudo-sample pools in ``pool.py`` (pseudo conditional sampling in ``pcs.py``),
and the measurements in ``evaluate.py``.
"""
