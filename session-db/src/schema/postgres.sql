CREATE TABLE IF NOT EXISTS "{table}" (
    id_hash        BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    version        BIGINT NOT NULL,
    created_ms     BIGINT NOT NULL,
    last_active_ms BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    absolute_ms    BIGINT,
    owner          TEXT,
    data           BYTEA  NOT NULL
);
CREATE INDEX IF NOT EXISTS "{table}_expires_idx" ON "{table}" (expires_ms);
CREATE INDEX IF NOT EXISTS "{table}_owner_idx" ON "{table}" (owner, expires_ms) WHERE owner IS NOT NULL;
