CREATE TABLE IF NOT EXISTS "{table}" (
    id_hash        BLOB    NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
    version        INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    last_active_ms INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL,
    absolute_ms    INTEGER,
    owner          TEXT,
    data           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS "{table}_expires_idx" ON "{table}" (expires_ms);
CREATE INDEX IF NOT EXISTS "{table}_owner_idx" ON "{table}" (owner, expires_ms) WHERE owner IS NOT NULL;
