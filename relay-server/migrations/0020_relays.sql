-- Which relay handed out each lease, and when each relay was last alive: relays sharing
-- a database void the leases of a relay that stopped, and only those.
ALTER TABLE leases ADD COLUMN relay TEXT;
CREATE TABLE relays (
    id      TEXT PRIMARY KEY NOT NULL,
    seen_ms INTEGER NOT NULL
);
