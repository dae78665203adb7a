"""The one exception tree of janua-backup, and the exit code of each leaf.

Drivers translate foreign exceptions (botocore, psycopg, OSError) into these at
the boundary with ``raise ... from exc``; only the CLI turns them into a
one-line message and an exit code. Messages are written for the person who
reads them at 3 a.m.: what is wrong and what to do, in one sentence.

Exit codes are stable (scripts and cron jobs depend on them):

====  ==========================  ==============================================
code  class                       meaning
====  ==========================  ==============================================
1     (wal-fetch only)            the archive does not have this file
2     (click)                     command-line usage error
3     ConfigError                 the configuration is missing or invalid
4     InputError                  bad input: a target, a directory, an id
5     TargetOutOfRange            the target lies outside the recoverable window
10    StorageError                storage failed (network, 5xx, disk)
11    StorageUnreachable          storage could not be reached
12    AccessDenied                credentials are wrong or lack permission
13    BucketNotFound              the bucket or directory does not exist
14    ObjectNotFound              an object the repository needs is missing
15    ObjectExists                a conditional create found the object there
20    IntegrityError              stored data failed its size or checksum check
21    DecryptionError             the object is encrypted with another key
22    WalConflict                 a different WAL file is already archived
23    RepositoryMismatch          the repository belongs to another cluster
24    FormatError                 the repository or an object has an unknown format
30    PostgresError               PostgreSQL refused or could not be reached
31    BackupError                 a backup could not be completed
32    RestoreError                a restore could not be completed
40    VerifyFailed                a drill or repository check found a problem
41    CheckFailed                 `check` found the setup broken (names the setting)
42    LockHeld                    another backup or expire of this cluster is running
128   (wal-fetch during recovery) storage failed: stop recovery, do not promote
====  ==========================  ==============================================
"""

from __future__ import annotations


class JanuaError(Exception):
    """Base of every error janua-backup reports to a person."""

    exit_code: int = 10

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(JanuaError):
    exit_code = 3


class InputError(JanuaError):
    exit_code = 4


class TargetOutOfRange(InputError):
    exit_code = 5


class StorageError(JanuaError):
    """Storage failed in a way that retrying later may fix."""

    exit_code = 10


class StorageUnreachable(StorageError):
    exit_code = 11


class AccessDenied(StorageError):
    exit_code = 12


class BucketNotFound(StorageError):
    exit_code = 13


class ObjectNotFound(StorageError):
    """The store confirmed the object is absent (not a network failure)."""

    exit_code = 14


class ObjectExists(StorageError):
    exit_code = 15


class IntegrityError(JanuaError):
    exit_code = 20


class DecryptionError(IntegrityError):
    exit_code = 21


class WalConflict(JanuaError):
    exit_code = 22


class RepositoryMismatch(JanuaError):
    exit_code = 23


class FormatError(JanuaError):
    exit_code = 24


class PostgresError(JanuaError):
    exit_code = 30


class BackupError(JanuaError):
    exit_code = 31


class RestoreError(JanuaError):
    exit_code = 32


class VerifyFailed(JanuaError):
    """The drill or repository check ran and found the backups wanting; its report says why."""

    exit_code = 40


class CheckFailed(JanuaError):
    exit_code = 41


class LockHeld(JanuaError):
    exit_code = 42


WAL_FETCH_NOT_FOUND_EXIT = 1
"""PostgreSQL reads exits 1-125 of restore_command as "not in the archive"."""

WAL_FETCH_FATAL_EXIT = 128
"""Above 125: PostgreSQL treats it like a crash of the command and stops recovery."""
