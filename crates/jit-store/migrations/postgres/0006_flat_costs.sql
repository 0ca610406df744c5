-- Flat costs as the store grows (issue 15): every paged read and periodic task is served by an
-- index that matches both its filter and its order, gauges come from counters kept in the same
-- transaction as the change, and verified audit checkpoints let a routine check start where the
-- last one ended.
DROP INDEX audit_request;
CREATE INDEX audit_request ON audit_events (request_id, seq);
CREATE INDEX audit_type ON audit_events (type, seq);
CREATE INDEX audit_actor_id ON audit_events (actor_id, seq);
CREATE INDEX audit_actor_email ON audit_events (actor_email, seq);
CREATE INDEX audit_channel ON audit_events (channel_id, seq);
CREATE INDEX audit_account ON audit_events (account_id, seq);
-- Requests: one index per list filter, each ending in the list's order (created_at, id).
DROP INDEX requests_channel;
DROP INDEX requests_status;
CREATE INDEX requests_status ON requests (status, created_at, id);
CREATE INDEX requests_channel ON requests (channel_id, created_at, id);
CREATE INDEX requests_account ON requests (account_id, created_at, id);
CREATE INDEX requests_requester_id ON requests (requester_id, created_at, id);
CREATE INDEX requests_requester_email ON requests (requester_email, created_at, id);
-- The revoke path's "other grants of this principal", and drift's per-user history.
CREATE INDEX requests_principal ON requests (requester_email, account_id, status);
-- Callbacks by status in the list's order; failed jobs for the overdue list and the late gauge.
CREATE INDEX outbox_status ON outbox (status, created_at, seq);
CREATE INDEX jobs_kind_due ON jobs (kind, due_at);
CREATE INDEX jobs_failed ON jobs (kind, due_at) WHERE last_error IS NOT NULL;
-- Row counts by status, kept by triggers in the writing transaction: /metrics reads these
-- instead of grouping the tables.
CREATE TABLE status_counts (
    tbl TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (tbl, status)
);
INSERT INTO status_counts (tbl, status, n) SELECT 'requests', status, COUNT(*) FROM requests GROUP BY status;
INSERT INTO status_counts (tbl, status, n) SELECT 'outbox', status, COUNT(*) FROM outbox GROUP BY status;
CREATE FUNCTION status_count() RETURNS trigger AS $$ BEGIN IF TG_OP IN ('UPDATE', 'DELETE') THEN UPDATE status_counts SET n = n - 1 WHERE tbl = TG_TABLE_NAME AND status = OLD.status; END IF; IF TG_OP IN ('INSERT', 'UPDATE') THEN INSERT INTO status_counts (tbl, status, n) VALUES (TG_TABLE_NAME, NEW.status, 1) ON CONFLICT (tbl, status) DO UPDATE SET n = status_counts.n + 1; END IF; RETURN NULL; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER requests_count_insert AFTER INSERT OR DELETE ON requests FOR EACH ROW EXECUTE FUNCTION status_count();
CREATE TRIGGER requests_count_update AFTER UPDATE OF status ON requests FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION status_count();
CREATE TRIGGER outbox_count_insert AFTER INSERT OR DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION status_count();
CREATE TRIGGER outbox_count_update AFTER UPDATE OF status ON outbox FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION status_count();
-- Verified prefixes of the audit chain: a routine verification starts after the newest one.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    verified_at BIGINT NOT NULL
);
