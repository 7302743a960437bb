-- Issue 19: sites whose owners proved the wallet (a signature) and the origin (a file it
-- serves). Only a hello naming a registered (wallet, origin) pair earns a site share. One
-- wallet per origin: registering again, with a fresh proof, replaces it.
CREATE TABLE sites (
    origin TEXT PRIMARY KEY NOT NULL,
    wallet TEXT NOT NULL,
    registered_ms INTEGER NOT NULL
);
