"""The credit center's tamper-evident audit log, and the append-only storage it shares.

Every governance event at the credit center (a scoring or training job admitted or refused, a
budget charge, consents imported) becomes one JSON line. Each line carries the SHA-256 hash of
the previous line and its own hash over its canonical form, so editing, deleting, inserting or
reordering any line breaks the chain and :meth:`AuditLog.verify` names the first bad line.

What a plain hash chain cannot show is a rewrite of the whole tail (edit line k and recompute
every hash after it) or a cut of the last lines. Two options close those gaps: an operator HMAC
key (without it nobody can recompute valid hashes), and an *anchor* — the ``(seq, hash)`` of
:meth:`AuditLog.head` written down elsewhere (a report sent to the bank, a ticket) and later
passed to :meth:`AuditLog.verify`.

The log records counts and digests, never feature values, scores or raw enterprise ids: the
center knows the ids it scores anyway (they are in its budget ledger), so a digest of the id
set is enough to tie a log line to a job without turning the log into a data file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from jointcredit.errors import AuditLogTamperedError, DataValidationError, KeyPolicyError

try:  # POSIX advisory locks keep two writer processes from interleaving lines.
    import fcntl
except ImportError:  # pragma: no cover - Windows: single writer assumed
    fcntl = None  # type: ignore[assignment]

#: Credit centers run on China Standard Time; naive datetimes and date-only strings in consent
#: files and API calls are read in this zone (China has no daylight saving time).
LOCAL_TZ = timezone(timedelta(hours=8), "UTC+08:00")

#: ``prev`` of the first line of a log.
GENESIS_HASH = "0" * 64

#: Lists longer than this are refused in audit details: log a count and :func:`id_digest`.
MAX_DETAIL_LIST = 64

_ENTRY_KEYS = frozenset({"v", "seq", "ts", "actor", "action", "details", "alg", "prev", "hash"})
_MIN_KEY_BYTES = 16


# --- time -------------------------------------------------------------------------------------


def to_utc(value: object, field: str, *, end_of_day: bool = False) -> datetime:
    """Read a timestamp given as ``datetime``, ``date`` or ISO-8601 text, as an aware UTC time.

    Naive values and bare dates are in :data:`LOCAL_TZ`. A bare date means the start of that day,
    or with ``end_of_day=True`` the start of the next one, so that "valid to 2025-12-31" includes
    the whole of 31 December. Anything else raises :class:`DataValidationError` naming ``field``.
    """
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, str):
        parsed = _parse_iso(value.strip())
        if parsed is None:
            raise DataValidationError(field, f"not an ISO-8601 date or timestamp: {value!r}")
        value = parsed
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=LOCAL_TZ)
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        day = value + timedelta(days=1) if end_of_day else value
        return datetime.combine(day, time(0), tzinfo=LOCAL_TZ).astimezone(timezone.utc)
    raise DataValidationError(field, f"expected a datetime, date or ISO-8601 text, got {value!r}")


@functools.lru_cache(maxsize=4096)
def _parse_iso(text: str) -> date | datetime | None:
    """Parse ISO-8601 text once (bulk consent files repeat the same few dates)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC text with a ``Z`` suffix and fixed width (sorts as text, too)."""
    text = moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text + "Z"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# --- append-only JSON-lines storage ------------------------------------------------------------


def _dump(record: Mapping[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


class _LockedAppender:
    """An exclusive append handle on a JSON-lines file (see :func:`locked_append`)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def last_line(self) -> bytes | None:
        """The last complete line of the file (without its newline), or None if empty."""
        f = self._handle
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        block = 8192
        pos = end - 1  # the final newline
        buf = b""
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            buf = f.read(pos - start) + buf
            pos = start
            nl = buf.rfind(b"\n")
            if nl >= 0:
                return buf[nl + 1 :]
        return buf

    def write(self, lines: Iterable[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        if not data:
            return
        f = self._handle
        f.seek(0, os.SEEK_END)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def locked_append(path: str | os.PathLike[str]) -> Iterator[_LockedAppender]:
    """Open ``path`` for appending under an exclusive lock, repairing a torn last line first.

    A writer that crashed mid-``write`` can leave a final line without its newline. That line was
    never acknowledged to anyone (the call that wrote it did not return), so it is moved to
    ``<path>.torn`` for forensics and cut off before new lines are appended; otherwise the next
    line would be glued onto garbage. Lines are written in one ``write`` and ``fsync``-ed before
    the context exits, so a returned append is durable.
    """
    path = Path(path)
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            _repair_torn_tail(path, f)
            if created:
                _fsync_dir(path.parent)
            yield _LockedAppender(f)
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _repair_torn_tail(path: Path, f: Any) -> None:
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    data = f.read()
    keep = data.rfind(b"\n") + 1
    with open(path.with_name(path.name + ".torn"), "ab") as torn:
        torn.write(data[keep:] + b"\n")
        torn.flush()
        os.fsync(torn.fileno())
    f.truncate(keep)
    f.flush()
    os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def append_json_lines(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Append records as canonical JSON lines, durably and all in one write."""
    lines = [_dump(r) for r in records]  # serialise (and fail) before touching the file
    with locked_append(path) as out:
        out.write(lines)


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every complete line of a JSON-lines store (a torn last line is ignored).

    A complete line that is not a JSON object means the store was damaged by something other
    than an interrupted append; that is refused with :class:`DataValidationError` naming the
    file and line rather than silently skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    out: list[dict[str, Any]] = []
    for number, raw in enumerate(complete, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataValidationError(f"{path}:{number}", f"not a JSON line ({exc})") from None
        if not isinstance(record, dict):
            raise DataValidationError(f"{path}:{number}", "not a JSON object")
        out.append(record)
    return out


# --- digests and details ---------------------------------------------------------------------


def id_digest(ids: Iterable[object]) -> str:
    """SHA-256 over the sorted, de-duplicated id set, domain-separated.

    Order-independent, so the center can recompute it from its own job records (the budget
    ledger keeps the ids) to show which set a log line refers to. A digest of a large set cannot
    be inverted; a digest of a single id can be found by trying every known id, which is fine
    because the log is the center's and the center knows its enterprises.
    """
    h = hashlib.sha256(b"jointcredit/id-set/v1\n")
    for text in sorted({str(i) for i in ids}):
        h.update(text.encode("utf-8") + b"\n")
    return h.hexdigest()


def _clean_details(value: Any, field: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            raise DataValidationError(field, "NaN or infinite numbers cannot be logged")
        return float(value)
    if isinstance(value, datetime):
        return format_utc(to_utc(value, field))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DataValidationError(field, f"detail keys must be text, got {k!r}")
            out[k] = _clean_details(v, f"{field}.{k}")
        return out
    if isinstance(value, list | tuple):
        if len(value) > MAX_DETAIL_LIST:
            raise DataValidationError(
                field,
                f"a list of {len(value)} items cannot be logged (limit {MAX_DETAIL_LIST}); "
                "log a count and id_digest(...) instead of ids, never scores or features",
            )
        return [_clean_details(v, f"{field}[{i}]") for i, v in enumerate(value)]
    raise DataValidationError(
        field,
        f"{type(value).__name__} cannot be logged; use counts, digests and short text",
    )


# --- the hash-chained log --------------------------------------------------------------------


@dataclass(frozen=True)
class AuditHead:
    """Where the log ends: line number and hash. Record it elsewhere to anchor the log."""

    seq: int
    hash: str


@dataclass(frozen=True)
class AuditEntry:
    """One verified or freshly written log line."""

    seq: int
    ts: str
    actor: str
    action: str
    details: dict[str, Any]
    alg: str
    prev: str
    hash: str


class AuditLog:
    """Append-only, hash-chained JSON lines at ``path``.

    Line format (canonical JSON: sorted keys, no spaces, UTF-8)::

        {"action":...,"actor":...,"alg":"sha256","details":{...},"hash":H,"prev":P,"seq":N,
         "ts":"2025-01-31T08:00:00.123456Z","v":1}

    ``hash`` is SHA-256 (or, with ``key``, HMAC-SHA256 under the operator key) of the canonical
    JSON of the line without its ``hash`` field; ``prev`` is the previous line's ``hash``
    (:data:`GENESIS_HASH` for line 1); ``seq`` is the 1-based line number.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) < _MIN_KEY_BYTES):
            raise KeyPolicyError(f"audit HMAC key must be at least {_MIN_KEY_BYTES} bytes")
        self.path = Path(path)
        self._key = key
        self._clock = clock or utc_now

    @property
    def alg(self) -> str:
        return "sha256" if self._key is None else "hmac-sha256"

    def _digest(self, body: Mapping[str, Any]) -> str:
        data = _dump(body).encode("utf-8")
        if self._key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def append(
        self, actor: str, action: str, details: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one event; returns it once it is durably on disk.

        ``details`` holds counts, identifiers of jobs/models/banks, digests and short text.
        Lists longer than :data:`MAX_DETAIL_LIST`, arrays and frames are refused with
        :class:`DataValidationError`, so per-enterprise data cannot end up here by accident.
        """
        for name, text in (("actor", actor), ("action", action)):
            if not isinstance(text, str) or not text.strip():
                raise DataValidationError(name, "must be non-empty text")
        clean = _clean_details(dict(details or {}), "details")
        ts = format_utc(to_utc(self._clock(), "ts"))
        with locked_append(self.path) as out:
            last = out.last_line()
            if last is None:
                seq, prev = 1, GENESIS_HASH
            else:
                try:
                    previous = json.loads(last.decode("utf-8"))
                    seq, prev = int(previous["seq"]) + 1, str(previous["hash"])
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    error = AuditLogTamperedError(
                        f"{self.path}: the last line is not a valid audit entry; "
                        "refusing to chain onto it (run verify)"
                    )
                    raise error from None
            body = {
                "v": 1,
                "seq": seq,
                "ts": ts,
                "actor": actor,
                "action": action,
                "details": clean,
                "alg": self.alg,
                "prev": prev,
            }
            digest = self._digest(body)
            out.write([_dump({**body, "hash": digest})])
        return AuditEntry(seq, ts, actor, action, clean, self.alg, prev, digest)

    def verify(self, anchor: AuditHead | None = None) -> bool:
        """Check the whole chain; return True or raise :class:`AuditLogTamperedError`.

        The error's message and its ``line`` attribute name the first bad line (1-based).
        ``anchor`` (an earlier :meth:`head`) additionally proves that no line up to it was cut
        off or rewritten together with everything after it.
        """
        prev = GENESIS_HASH
        seq = 0
        for seq, (raw, terminated) in enumerate(self._raw_lines(), start=1):
            if not terminated:
                self._tampered(seq, "incomplete last line (an interrupted write or a cut)")
            entry = self._check_line(seq, raw, prev)
            prev = entry.hash
            if anchor is not None and seq == anchor.seq and entry.hash != anchor.hash:
                self._tampered(seq, "hash differs from the anchored head")
        if anchor is not None and seq < anchor.seq:
            self._tampered(seq + 1, f"log ends at line {seq}, but line {anchor.seq} was anchored")
        return True

    def entries(self) -> list[AuditEntry]:
        """Every entry, verified on the way (raises like :meth:`verify`)."""
        out: list[AuditEntry] = []
        prev = GENESIS_HASH
        for seq, (raw, terminated) in enumerate(self._raw_lines(), start=1):
            if not terminated:
                self._tampered(seq, "incomplete last line (an interrupted write or a cut)")
            entry = self._check_line(seq, raw, prev)
            out.append(entry)
            prev = entry.hash
        return out

    def head(self) -> AuditHead | None:
        """The last verified line's ``(seq, hash)``; None for an empty log."""
        entries = self.entries()
        return AuditHead(entries[-1].seq, entries[-1].hash) if entries else None

    def _raw_lines(self) -> Iterator[tuple[bytes, bool]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for raw in f:
                if raw.endswith(b"\n"):
                    yield raw[:-1], True
                else:
                    yield raw, False

    def _tampered(self, line: int, reason: str) -> NoReturn:
        error = AuditLogTamperedError(f"{self.path}: line {line}: {reason}")
        error.line = line  # type: ignore[attr-defined]
        raise error

    def _check_line(self, seq: int, raw: bytes, prev: str) -> AuditEntry:
        try:
            text = raw.decode("utf-8")
            record = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._tampered(seq, "not a JSON line")
        if not isinstance(record, dict) or set(record) != _ENTRY_KEYS:
            self._tampered(seq, "fields differ from an audit entry's")
        if not isinstance(record["details"], dict) or record["v"] != 1:
            self._tampered(seq, "malformed entry")
        if record["alg"] != self.alg:
            if record["alg"] == "hmac-sha256" and self._key is None:
                raise DataValidationError(
                    "key", "this audit log is HMAC-protected; pass the operator key to verify it"
                )
            self._tampered(seq, f"hash algorithm {record['alg']!r}, expected {self.alg!r}")
        if record["seq"] != seq:
            self._tampered(seq, f"sequence number {record['seq']!r} (lines reordered or removed)")
        if record["prev"] != prev:
            self._tampered(seq, "previous-hash link broken (a line was edited, removed or moved)")
        body = {k: v for k, v in record.items() if k != "hash"}
        try:
            canonical = _dump(record)
        except ValueError:
            self._tampered(seq, "non-canonical numbers")
        if canonical != text:
            self._tampered(seq, "line is not in canonical form (edited)")
        if not hmac.compare_digest(str(record["hash"]), self._digest(body)):
            self._tampered(seq, "hash does not match the line's content (edited)")
        return AuditEntry(
            seq=seq,
            ts=record["ts"],
            actor=record["actor"],
            action=record["action"],
            details=record["details"],
            alg=record["alg"],
            prev=record["prev"],
            hash=record["hash"],
        )
