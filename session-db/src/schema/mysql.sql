CREATE TABLE IF NOT EXISTS `{table}` (
    id_hash        BINARY(32)      NOT NULL,
    version        BIGINT          NOT NULL,
    created_ms     BIGINT          NOT NULL,
    last_active_ms BIGINT          NOT NULL,
    expires_ms     BIGINT          NOT NULL,
    absolute_ms    BIGINT          NULL,
    owner          VARBINARY(1024) NULL,
    data           LONGBLOB        NOT NULL,
    PRIMARY KEY (id_hash),
    KEY `{table}_expires_idx` (expires_ms),
    KEY `{table}_owner_idx` (owner, expires_ms)
) ENGINE = InnoDB;
