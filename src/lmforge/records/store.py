"""The records store: the request / feedback / review log that serving writes and improvement reads.

One `Store` per process, over a SQLAlchemy engine: a SQLite file by default (nothing to run), or
PostgreSQL by URL when several servers share the log. Opening it brings the schema to the newest
migration shipped in this package (Alembic, in one transaction under a PostgreSQL advisory lock, so
replicas starting together do not race), and refuses a database whose schema is newer than this
lmforge knows rather than writing rows that a newer schema would misread.

Every method is one transaction: a write that fails validation (feedback for an unknown request, a
correction whose spans do not fit its text) raises before anything is stored, and a correction is
stored together with its item being marked done, or not at all. A database that cannot be reached
raises `RecordsError` with one line instead of a driver traceback.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, and_, create_engine, delete, event, func, insert, or_, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from lmforge.records.schema import VERSION_TABLE, CorrectionRow, FeedbackRow, RequestRow, ReviewItemRow
from lmforge.records.types import (
    Correction,
    Feedback,
    InvalidCorrection,
    RecordsError,
    RequestLog,
    ReviewItem,
    Span,
    UnknownRequest,
)

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_SQLITE_FILE = "records.db"
CONNECT_TIMEOUT_SECONDS = 5
"""How long connecting to PostgreSQL may take before `open_store` gives up (unless the URL sets
`connect_timeout`): a firewalled host otherwise hangs for the kernel's TCP timeout, minutes."""
UPGRADE_LOCK_KEY = 0x6C6D666F726765  # "lmforge": the advisory lock replicas take to upgrade one at a time
IN_CHUNK = 500
"""Ids per `IN (...)` list: SQLite and PostgreSQL cap the bound parameters of one statement."""
WRITES = "lmforge_records_writes"
"""Execution option marking a store's writing transactions (`_begin_sqlite` locks at once for them)."""
UNAVAILABLE = (OperationalError, InterfaceError)
"""What SQLAlchemy raises when the database is down, unreachable, locked or refuses the login."""

T = TypeVar("T")


def open_store(url: str | Path | None = None) -> Store:
    """The store at `url`, its schema upgraded to the newest migration.

    None: the SQLite file `records.db` in the working directory; a Path, or a string without "://":
    a SQLite file there; any other string: a SQLAlchemy URL (`sqlite:///path`,
    `postgresql+psycopg://user@host:5432/db`; a bare `postgresql://` means psycopg 3)."""
    parsed = _parse_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed, connect_args=_connect_args(parsed), pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as err:
        raise RecordsError(f"{shown}: cannot use this database URL ({_first_line(err)})") from err
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    try:
        _upgrade(engine, shown)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def _parse_url(url: str | Path | None) -> URL:
    if url is None:
        url = Path(DEFAULT_SQLITE_FILE)
    if isinstance(url, Path) or "://" not in url:
        return URL.create("sqlite", database=str(Path(url).absolute()))
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        masked = re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)
        raise RecordsError(f"{masked}: not a database URL (expected e.g. sqlite:///records.db or "
                           "postgresql+psycopg://user@host:5432/db)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise RecordsError(f"{parsed.render_as_string(hide_password=True)}: unsupported database "
                           "(expected sqlite:// or postgresql+psycopg://)")
    return parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed


def _connect_args(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return {}


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: foreign keys on (SQLite ignores them unless asked, and purge relies on their
    ON DELETE); write-ahead logging, so that readers (the review page, `lmforge improve`) never wait
    for the server's log writer and a commit costs one fsync; and the driver's own transaction
    handling off: it begins a transaction only before INSERT/UPDATE/DELETE, so a migration's DDL and
    a method's reads would run outside it."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    """Begin SQLite's transaction where SQLAlchemy begins one (the driver no longer does). A writing
    transaction takes the write lock at once (IMMEDIATE), so that concurrent writers queue: one that
    read first would hold a snapshot that another writer's commit makes stale, and SQLite refuses
    its write at once with "database is locked" instead of waiting."""
    immediate = connection.get_execution_options().get(WRITES)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _first_line(err: BaseException) -> str:
    message = str(getattr(err, "orig", None) or err).strip()
    return message.splitlines()[0] if message else type(err).__name__


def _upgrade(engine: Engine, shown: str) -> None:
    """`alembic upgrade head` in one transaction, after checking the database is not ahead of us."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    known = {revision.revision for revision in script.walk_revisions()}
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            current = context.get_current_revision()
            if current is not None and current not in known:
                raise RecordsError(f"{shown}: the records schema is at revision {current!r}, newer than this "
                                   f"lmforge knows (up to {script.get_current_head()!r}); upgrade lmforge")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except DBAPIError as err:
        raise RecordsError(f"{shown}: cannot open the records database ({_first_line(err)})") from err


def _sha256(text_: str) -> str:
    return hashlib.sha256(text_.encode("utf-8")).hexdigest()


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _span_dicts(spans: list[Span] | None) -> list[dict] | None:
    return None if spans is None else [asdict(span) for span in spans]


def _spans(data: list[dict] | None) -> list[Span] | None:
    return None if data is None else [Span(**span) for span in data]


def _to(cls: type[T], row: Any, **overrides: Any) -> T:
    """The dataclass `cls` from the row's attributes of the same names (and `overrides`)."""
    values = {field.name: getattr(row, field.name) for field in fields(cls) if field.name not in overrides}
    return cls(**values, **overrides)


def _request(row: RequestRow) -> RequestLog:
    return _to(RequestLog, row)


def _feedback(row: FeedbackRow) -> Feedback:
    return _to(Feedback, row, spans=_spans(row.spans))


def _item(row: ReviewItemRow) -> ReviewItem:
    return _to(ReviewItem, row)


def _correction(row: CorrectionRow) -> Correction:
    return _to(Correction, row, spans=_spans(row.spans))


def check_spans(spans: Iterable[Span], text_: str, labels: Sequence[str] | None, where: str) -> None:
    """Raise InvalidCorrection unless every span lies inside `text_` (0 <= start < end <= len, integer
    offsets), has a label from `labels` (when given), and no two spans overlap."""
    previous: Span | None = None
    for span in sorted(spans, key=lambda span: (span.start, span.end)):
        shown = f"span {span.start}-{span.end} {span.label!r}"
        if not (isinstance(span.start, int) and isinstance(span.end, int)):
            raise InvalidCorrection(f"{where}: {shown} has offsets that are not integers")
        if span.start >= span.end:
            raise InvalidCorrection(f"{where}: {shown} is empty or reversed (expected start < end)")
        if span.start < 0 or span.end > len(text_):
            raise InvalidCorrection(f"{where}: {shown} is outside the text (expected 0 <= start < end "
                                    f"<= {len(text_)})")
        if labels is not None and span.label not in labels:
            raise InvalidCorrection(f"{where}: {shown} has an unknown label (expected one of {list(labels)})")
        if previous is not None and span.start < previous.end:
            raise InvalidCorrection(f"{where}: {shown} overlaps span {previous.start}-{previous.end} "
                                    f"{previous.label!r}")
        previous = span


def _check_correction(correction: Correction, item: ReviewItemRow) -> None:
    where = f"correction of review item {item.id}"
    if correction.label is not None and correction.label not in item.labels:
        raise InvalidCorrection(f"{where}: unknown label {correction.label!r} "
                                f"(expected one of {item.labels})")
    if correction.spans is not None:
        check_spans(correction.spans, item.text, item.labels, where)


class Store:
    """The records of one database; every method is one transaction. Close it (or use `with`)."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._writer = engine.execution_options(**{WRITES: True})
        self.url = engine.url.render_as_string(hide_password=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _transaction(self, writes: bool = False) -> Iterator[Session]:
        """A session whose work commits on leaving the block and rolls back on any exception."""
        try:
            with Session(self._writer if writes else self._engine, expire_on_commit=False) as session, \
                    session.begin():
                yield session
        except UNAVAILABLE as err:
            raise RecordsError(f"{self.url}: {_first_line(err)}") from err

    # --- requests and feedback ----------------------------------------------------------------

    def log_requests(self, records: Iterable[RequestLog]) -> None:
        rows = [asdict(record) for record in records]
        if rows:
            with self._transaction(writes=True) as session:
                session.execute(insert(RequestRow), rows)

    def request(self, request_id: str) -> RequestLog | None:
        with self._transaction() as session:
            row = session.get(RequestRow, request_id)
            return None if row is None else _request(row)

    def requests(self, *, since: datetime | None = None, model: str | None = None,
                 experiment: str | None = None, task: str | None = None) -> list[RequestLog]:
        """Requests created at or after `since` (and of that model, experiment, task), oldest first."""
        query = select(RequestRow).order_by(RequestRow.created_at, RequestRow.id)
        if since is not None:
            query = query.where(RequestRow.created_at >= since)
        for column, value in ((RequestRow.model, model), (RequestRow.experiment, experiment),
                              (RequestRow.task, task)):
            if value is not None:
                query = query.where(column == value)
        with self._transaction() as session:
            return [_request(row) for row in session.scalars(query)]

    def add_feedback(self, feedback: Feedback) -> int:
        """Store it and return its id; UnknownRequest if the request was never logged (or purged),
        InvalidCorrection if its spans do not fit the logged text."""
        with self._transaction(writes=True) as session:
            request = session.get(RequestRow, feedback.request_id)
            if request is None:
                raise UnknownRequest(f"request {feedback.request_id!r} was never logged or has been purged")
            if feedback.spans is not None:
                check_spans(feedback.spans, request.input_text, None, f"feedback on request {request.id!r}")
            row = FeedbackRow(**{**asdict(feedback), "spans": _span_dicts(feedback.spans), "id": None})
            session.add(row)
            session.flush()
            return row.id

    def feedback(self, request_ids: Iterable[str] | None = None) -> list[Feedback]:
        """All feedback, or that on `request_ids`, in the order it arrived."""
        query = select(FeedbackRow).order_by(FeedbackRow.id)
        with self._transaction() as session:
            if request_ids is None:
                return [_feedback(row) for row in session.scalars(query)]
            rows = [row for chunk in _chunks(list(dict.fromkeys(request_ids)))
                    for row in session.scalars(query.where(FeedbackRow.request_id.in_(chunk)))]
            return [_feedback(row) for row in sorted(rows, key=lambda row: row.id)]

    def purge(self, older_than: datetime) -> int:
        """Delete the requests created before `older_than` (their feedback goes with them, by the
        foreign key's ON DELETE CASCADE; review items keep their text and lose the link) and return
        how many requests were deleted."""
        with self._transaction(writes=True) as session:
            deleted = session.execute(delete(RequestRow).where(RequestRow.created_at < older_than),
                                      execution_options={"synchronize_session": False})
            return deleted.rowcount

    # --- review ---------------------------------------------------------------------------------

    def add_review_items(self, items: Iterable[ReviewItem]) -> list[int]:
        """Queue the items and return the ids of those added: an item whose (queue, task, text) is
        already in the store, whatever its status, or earlier in `items`, is skipped."""
        items = list(items)
        digests = [_sha256(item.text) for item in items]
        with self._transaction(writes=True) as session:
            taken = set()
            for chunk in _chunks(list(set(digests))):
                found = select(ReviewItemRow.queue, ReviewItemRow.task, ReviewItemRow.text_sha256)
                taken.update(tuple(key) for key in session.execute(
                    found.where(ReviewItemRow.text_sha256.in_(chunk))))
            rows = []
            for item, digest in zip(items, digests, strict=True):
                if (item.queue, item.task, digest) not in taken:
                    taken.add((item.queue, item.task, digest))
                    rows.append(ReviewItemRow(**{**asdict(item), "id": None, "text_sha256": digest}))
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    def review_items(self, *, queue: str | None = None, status: str | None = None,
                     limit: int | None = None) -> list[ReviewItem]:
        """The items (of `queue`, with `status`), in review order: priority, then id."""
        query = select(ReviewItemRow).order_by(ReviewItemRow.priority, ReviewItemRow.id).limit(limit)
        if queue is not None:
            query = query.where(ReviewItemRow.queue == queue)
        if status is not None:
            query = query.where(ReviewItemRow.status == status)
        with self._transaction() as session:
            return [_item(row) for row in session.scalars(query)]

    def review_item(self, item_id: int) -> ReviewItem:
        with self._transaction() as session:
            row = session.get(ReviewItemRow, item_id)
            if row is None:
                raise InvalidCorrection(f"review item {item_id} not found")
            return _item(row)

    def next_review_item(self, queue: str = "default", after: int | None = None) -> ReviewItem | None:
        """The first pending item of `queue` in (priority, id) order; with `after` (the item the
        reviewer skipped), the first pending one after it in that order, else the first pending one
        before it, so that skipping walks the queue and comes round again. None when none is left."""
        pending = select(ReviewItemRow).where(ReviewItemRow.queue == queue, ReviewItemRow.status == "pending")
        pending = pending.order_by(ReviewItemRow.priority, ReviewItemRow.id).limit(1)
        with self._transaction() as session:
            skipped = None if after is None else session.get(ReviewItemRow, after)
            if skipped is not None:
                pending = pending.where(ReviewItemRow.id != skipped.id)
                later = or_(ReviewItemRow.priority > skipped.priority,
                            and_(ReviewItemRow.priority == skipped.priority, ReviewItemRow.id > skipped.id))
                row = session.scalars(pending.where(later)).first()
                if row is not None:
                    return _item(row)
            row = session.scalars(pending).first()
            return None if row is None else _item(row)

    def save_correction(self, correction: Correction) -> int:
        """Store it and mark its item done, atomically, replacing an earlier correction of the item;
        InvalidCorrection (nothing stored) if the item does not exist or the label or spans do not
        fit the item's text and label set."""
        with self._transaction(writes=True) as session:
            item = session.get(ReviewItemRow, correction.item_id, with_for_update=True)
            if item is None:
                raise InvalidCorrection(f"review item {correction.item_id} not found")
            _check_correction(correction, item)
            session.execute(delete(CorrectionRow).where(CorrectionRow.item_id == item.id),
                            execution_options={"synchronize_session": False})
            row = CorrectionRow(**{**asdict(correction), "spans": _span_dicts(correction.spans), "id": None})
            session.add(row)
            item.status = "done"
            session.flush()
            return row.id

    def corrections(self, *, queue: str | None = None,
                    task: str | None = None) -> list[tuple[ReviewItem, Correction]]:
        """Each corrected item with its correction, in the order the corrections were saved."""
        query = select(ReviewItemRow, CorrectionRow).join(CorrectionRow,
                                                          CorrectionRow.item_id == ReviewItemRow.id)
        if queue is not None:
            query = query.where(ReviewItemRow.queue == queue)
        if task is not None:
            query = query.where(ReviewItemRow.task == task)
        with self._transaction() as session:
            return [(_item(item), _correction(correction))
                    for item, correction in session.execute(query.order_by(CorrectionRow.id))]

    def queues(self) -> dict[str, dict[str, int]]:
        """queue -> {status: number of items}."""
        query = select(ReviewItemRow.queue, ReviewItemRow.status, func.count()).group_by(
            ReviewItemRow.queue, ReviewItemRow.status)
        counts: dict[str, dict[str, int]] = {}
        with self._transaction() as session:
            for queue, status, count in session.execute(query):
                counts.setdefault(queue, {})[status] = count
        return counts
