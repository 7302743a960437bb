-- The credit ledger (issue 5). `ledger` is append-only: one row per movement of credit,
-- each hashing the one before it and signed by the relay key (src/ledger). `balances`
-- is a cache of what the ledger sums to, updated in the same transaction as each append
-- and checked against it by `relay-server audit`.

CREATE TABLE ledger (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    time_ms   INTEGER NOT NULL,
    debit     TEXT NOT NULL,
    credit    TEXT NOT NULL,
    amount    INTEGER NOT NULL CHECK (amount > 0),
    reason    TEXT NOT NULL,
    reference TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE INDEX ledger_by_debit ON ledger (debit, seq);
CREATE INDEX ledger_by_credit ON ledger (credit, seq);

-- Every account's balance in micro-credits (only 'issuance' is ever negative).
CREATE TABLE balances (
    account TEXT PRIMARY KEY,
    micro   INTEGER NOT NULL
);

-- Submitter accounts: one API key each, stored only as its SHA-256.
CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    api_key_hash BLOB NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    label        TEXT
);

-- Transfer nonces already used, per sending wallet, so a signed transfer runs once.
-- The nonce is a u64 stored as the i64 with the same bits.
CREATE TABLE transfer_nonces (
    wallet TEXT NOT NULL,
    nonce  INTEGER NOT NULL,
    PRIMARY KEY (wallet, nonce)
);
