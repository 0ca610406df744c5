-- Several servers on one database: a callback being delivered is leased to one dispatcher, and
-- the jobs of one principal (user, account, permission set) run one at a time across servers.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT;
CREATE TABLE principal_locks (
    principal TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
