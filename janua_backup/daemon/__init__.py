"""The scheduler daemon: the policy's jobs on schedule, Prometheus metrics, a graceful stop.

``scheduler`` runs the jobs and owns signals; ``jobs`` says what each job does
(the same ``commands`` functions as the CLI) and reads the figures no job
reports. Only ``janua-backup daemon`` imports this package, so no other
command pays for APScheduler's scheduler or prometheus_client.
"""
