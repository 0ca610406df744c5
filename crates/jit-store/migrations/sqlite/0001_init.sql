CREATE TABLE bindings (
    channel_id TEXT PRIMARY KEY,
    accounts TEXT NOT NULL,
    policy TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    permission_set_arn TEXT,
    requester_id TEXT NOT NULL,
    requester_email TEXT NOT NULL,
    ticket TEXT,
    reason TEXT,
    duration_minutes BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING','APPROVED','GRANTED','EXPIRED','REVOKED','DENIED','CANCELLED','TIMED_OUT','ERROR')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    pending_deadline BIGINT NOT NULL,
    required_approvals BIGINT NOT NULL,
    approvals TEXT NOT NULL,
    break_glass BIGINT NOT NULL,
    review_pending BIGINT NOT NULL,
    approved_at BIGINT,
    granted_at BIGINT,
    ends_at BIGINT,
    closed_at BIGINT,
    closed_by TEXT,
    close_reason TEXT,
    error_message TEXT,
    post_id TEXT,
    version BIGINT NOT NULL
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_channel ON requests (channel_id, created_at);
CREATE INDEX requests_status ON requests (status, ends_at);
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    type TEXT NOT NULL,
    actor_id TEXT,
    actor_email TEXT,
    request_id TEXT,
    channel_id TEXT,
    account_id TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_request ON audit_events (request_id);
CREATE INDEX audit_at ON audit_events (at_ms);
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE nonces (
    nonce TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at)
