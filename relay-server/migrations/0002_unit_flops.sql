-- Each unit's cost, so a lease's deadline can be sized from it and the volunteer's speed.
ALTER TABLE units ADD COLUMN flops INTEGER NOT NULL DEFAULT 0 CHECK (flops >= 0);
