-- Manifest hashes become Amp's: the SHA-256 of Amp's canonical serialization of a manifest
-- (keys in the order Amp's types declare them, defaults filled in), where they were the
-- SHA-256 of its JSON with sorted keys. Right after this SQL, metadb/rehash.py moves every
-- stored manifest, and everything that names it, to its new hash; the old hash stays
-- resolvable through this table.
CREATE TABLE manifest_aliases (
    old_hash    text PRIMARY KEY CHECK (old_hash ~ '^[0-9a-f]{64}$'),
    hash        text NOT NULL REFERENCES manifests (hash) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX manifest_aliases_hash ON manifest_aliases (hash);
