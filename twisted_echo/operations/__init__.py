"""
Running sockecho in production: systemd activation and notification,
Prometheus metrics, the ports file, malloc tuning.
"""
