-- What `reconcile --fix` overwrote: no fix destroys a UserID, the old one is kept here (as `replacements`
-- keeps those of `import --apply-changes`). `kind` is missing_at_verigator (UserID cleared, the row goes back
-- to `retry`) or user_id_differs / user_id_unknown (Verigator's UserID taken).
CREATE TABLE fixes (
    id            INTEGER PRIMARY KEY,
    service_id    TEXT NOT NULL,
    id_in_service TEXT NOT NULL,
    kind          TEXT NOT NULL,
    old_status    TEXT NOT NULL,
    old_user_id   TEXT,
    new_user_id   TEXT,
    fixed_at      TEXT NOT NULL
);

CREATE INDEX fixes_by_user ON fixes (service_id, id_in_service);

-- Rows of a run's input that ended `present` without a UserID.
ALTER TABLE runs ADD COLUMN unresolved INTEGER NOT NULL DEFAULT 0;
