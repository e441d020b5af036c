-- History of `import --apply-changes`: a user whose phone changed is deleted at Verigator and created
-- again with a new UserID. The row is written before the delete (new_user_id NULL) and completed after
-- the create, so an interrupted replacement is visible and the old UserID is never lost.
CREATE TABLE replacements (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER,
    service_id    TEXT NOT NULL,
    id_in_service TEXT NOT NULL,
    old_user_id   TEXT NOT NULL,
    old_phone     TEXT NOT NULL,
    new_phone     TEXT NOT NULL,
    new_user_id   TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);

CREATE INDEX replacements_by_user ON replacements (service_id, id_in_service);

-- Rows held back by `import --limit`, and replacements made, per run.
ALTER TABLE runs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0;
