"""The training engine: devices, precision, seeding, checkpoints, interrupts, progress, reports,
and the one SSL training step (``ssl_step``) that the transfer workflow, its benchmark and the
SSL contract check share.

Workflows write their own explicit loops and use these pieces; nothing here knows an algorithm.
"""
