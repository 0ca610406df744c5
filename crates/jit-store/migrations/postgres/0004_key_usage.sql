CREATE TABLE key_usage (
    ring TEXT NOT NULL,
    verifier TEXT NOT NULL,
    key_id TEXT NOT NULL,
    last_used_at BIGINT NOT NULL,
    PRIMARY KEY (ring, verifier, key_id)
);
