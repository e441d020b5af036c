-- The ledger: one row per user this tool has sent (or tried to send) to a Verigator service.
-- Append-only: a released migration is never edited; changes go into a new numbered file.
PRAGMA application_id = 1448300099; -- 'VSNC': lets open() tell a ledger from any other SQLite file

CREATE TABLE users (
    service_id    TEXT    NOT NULL,
    id_in_service TEXT    NOT NULL,
    phone_number  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('synced', 'present', 'failed', 'retry')),
    user_id       TEXT,
    ctime         TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (service_id, id_in_service)
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    service_id  TEXT    NOT NULL,
    input       TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    rows        INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    synced      INTEGER NOT NULL DEFAULT 0,
    present     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    invalid     INTEGER NOT NULL DEFAULT 0,
    retry       INTEGER NOT NULL DEFAULT 0,
    duplicate   INTEGER NOT NULL DEFAULT 0,
    changed     INTEGER NOT NULL DEFAULT 0,
    resolved    INTEGER NOT NULL DEFAULT 0,
    exit_code   INTEGER
);
