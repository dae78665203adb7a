"""The pieces of scripts/bench.py: janua-backup against pgBackRest on the same data and S3.

tls (certificates), procmon (wall time and peak RSS of a process tree), stack
(S3, clusters, archiving control), datasets (pgbench and the mixed data,
WAL bursts), tools (the two tools' configs and commands), phases (the
measurements), report (medians, ratios, table, JSON). None imports janua_backup.
"""
