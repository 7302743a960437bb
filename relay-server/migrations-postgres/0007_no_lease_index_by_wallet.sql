-- The draw checks each passed unit's own leases (`leases_by_unit`). With this index also
-- there, a plan made while `leases` was nearly empty (a new network's first minute; a
-- prepared statement keeps its plan) found the two equally cheap and took this one,
-- whose leading column is the wallet: every check then read the whole index, 2.8 ms a
-- draw at 20 000 leases. Nothing else reads leases by wallet alone.
DROP INDEX IF EXISTS leases_by_wallet;
