"""Built-in experiment loggers: TensorBoard, MLflow (file store) and Weights & Biases (offline).

A plugin like any other (entry point ``loggers`` in the ``ptl`` group); each tracker's package
is an optional extra (``ptl[tensorboard]``, ``ptl[mlflow]``, ``ptl[wandb]``) imported only when a
run asks for that logger.
"""
