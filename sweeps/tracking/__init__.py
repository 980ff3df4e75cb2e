"""Experiment tracking from the sweep's driver: MLflow, TensorBoard and W&B runs made from the records trials write."""
