-- Every change of a unit's or a lease's state is a new row version that enters each of
-- its table's indexes (state is in every partial index's predicate, so none is HOT): each
-- index is paid for at each lease, result and settlement. These five were read by
-- nothing the relay does often:
-- - `units_by_state`: the draw and every count by state have a partial index or the
--   unit's job to go by;
-- - `rowid`'s uniqueness, on units and on leases: the identity makes each row's own, and
--   the orders it keeps are read through the partial indexes (`units_queued_in_order`,
--   `units_done_in_order`) or among one unit's few leases;
-- - `leases_active_by_relay` and `leases_active_by_deadline`: the heartbeat (stopped
--   relays' leases) and the expiry sweep read all active leases, twice a second, which
--   `leases_active_by_peer` lists as well; a lease no longer enters three indexes of
--   active leases but one.
-- Without them the server's CPU a unit fell by about a tenth (quorum 1, billed, 1 024
-- volunteers; docs/performance.md).
DROP INDEX IF EXISTS units_by_state;
ALTER TABLE units DROP CONSTRAINT IF EXISTS units_rowid_key;
ALTER TABLE leases DROP CONSTRAINT IF EXISTS leases_rowid_key;
DROP INDEX IF EXISTS leases_active_by_relay;
DROP INDEX IF EXISTS leases_active_by_deadline;

-- The active leases' index, now also on the peer's presence: a statement can use it only
-- where it says so (a gone volunteer's leases by peer; expiry and the heartbeat say
-- `peer IS NOT NULL`, true of every lease), never to count one unit's active leases.
-- The writer's plans are generic and made from the statistics of the moment; made while
-- `leases` was nearly empty, the count of a result's unit's other active leases read
-- every active lease of the network through a partial index of active leases (45 ms for
-- a group of 512 results at 2 000 active leases, against 4 ms through `leases_by_unit`),
-- in about one bench run in three.
DROP INDEX IF EXISTS leases_active_by_peer;
CREATE INDEX leases_active_by_peer ON leases (peer)
    WHERE state = 'active' AND peer IS NOT NULL;
