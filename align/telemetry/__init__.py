"""The telemetry layer: metrics logging (logger.py), plots, the evaluation report and sample logs."""
