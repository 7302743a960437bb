-- Which relay handed out each lease, and when each relay was last alive: relays sharing
-- the database void the leases of a relay that stopped, and only those.
ALTER TABLE leases ADD COLUMN relay TEXT;
CREATE INDEX leases_active_by_relay ON leases (relay) WHERE state = 'active';
CREATE TABLE relays (
    id      TEXT PRIMARY KEY NOT NULL,
    seen_ms BIGINT NOT NULL
);
