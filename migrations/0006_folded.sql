-- Each id's folded key: a hash of its Unicode NFC case folding (`user::fold_key`), so that a new
-- id is checked against the other spellings the service holds (`Alice@x.com` / `alice@x.com`).
-- Written by verigator-sync with each row; the rows before this schema are filled by the
-- migration's hook (`ledger::fill_folded`), which then builds the index `users_folded` on
-- (service_id, folded, status = 'retry') over the users who hold or may hold an account (faster
-- after than during). A row without it (written by hand) is never matched.
ALTER TABLE users ADD COLUMN folded INTEGER;
