"""The training engine: devices, precision, seeding, checkpoints, interrupts, progress, reports.

Workflows write their own explicit loops and use these pieces; nothing here knows an algorithm.
"""
