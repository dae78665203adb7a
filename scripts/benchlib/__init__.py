"""The pieces of scripts/bench.py: janua-backup against pgBackRest and barman-cloud.

tls (certificates), procmon (wall time and peak RSS of a process tree), stack
(S3, clusters, archiving control), datasets (pgbench and the mixed data,
WAL bursts), tools (janua's and pgBackRest's configs and commands, the Tool
protocol), barman (barman-cloud's commands), phases (the measurements),
report (medians, ratios, table, JSON). None imports janua_backup.
"""
