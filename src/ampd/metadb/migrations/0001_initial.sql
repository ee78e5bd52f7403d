-- The metadata database of ampd: workers, the dataset registry, jobs split into segments,
-- job events, and the committed Parquet files of each table revision.
-- docs/metadata-db.md describes every table and the state machines.

-- Workers register once per start and heartbeat every second.
CREATE TABLE workers (
    node_id        text PRIMARY KEY CHECK (node_id ~ '^[a-zA-Z][a-zA-Z0-9_.-]*$'),
    info           jsonb NOT NULL DEFAULT '{}'::jsonb,   -- version, commit_sha, commit_timestamp, build_date
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'stopped')),
    created_at     timestamptz NOT NULL DEFAULT now(),  -- first registration ever
    registered_at  timestamptz NOT NULL DEFAULT now(),  -- latest start
    heartbeat_at   timestamptz NOT NULL DEFAULT now()
);

-- Manifests are content-addressed: hash = sha256 of the canonical JSON.
CREATE TABLE manifests (
    hash        text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    kind        text NOT NULL,
    manifest    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE datasets (
    namespace   text NOT NULL CHECK (namespace ~ '^[a-z0-9_]+$'),
    name        text NOT NULL CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

-- Semver versions of a dataset, each pointing at one manifest.
CREATE TABLE dataset_versions (
    namespace      text NOT NULL,
    name           text NOT NULL,
    version        text NOT NULL,
    manifest_hash  text NOT NULL REFERENCES manifests (hash),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name, version),
    FOREIGN KEY (namespace, name) REFERENCES datasets ON DELETE CASCADE
);

-- The special tags: `dev` (the last registered manifest) and `latest` (the highest version).
CREATE TABLE dataset_tags (
    namespace      text NOT NULL,
    name           text NOT NULL,
    tag            text NOT NULL CHECK (tag IN ('latest', 'dev')),
    manifest_hash  text NOT NULL REFERENCES manifests (hash),
    version        text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name, tag),
    FOREIGN KEY (namespace, name) REFERENCES datasets ON DELETE CASCADE
);

-- A job materializes one dataset revision from start_block to end_block (NULL: follow the head).
CREATE TABLE jobs (
    id             bigserial PRIMARY KEY,
    namespace      text NOT NULL,
    name           text NOT NULL,
    manifest_hash  text NOT NULL REFERENCES manifests (hash),
    status         text NOT NULL DEFAULT 'SCHEDULED' CHECK (status IN (
                       'SCHEDULED', 'RUNNING', 'STOP_REQUESTED', 'STOPPING',
                       'COMPLETED', 'STOPPED', 'ERROR', 'FATAL')),
    descriptor     jsonb NOT NULL,            -- the deploy request as Amp describes it
    start_block    bigint NOT NULL CHECK (start_block >= 0),
    end_block      bigint CHECK (end_block IS NULL OR end_block >= start_block - 1),
    parallelism    integer NOT NULL DEFAULT 1 CHECK (parallelism >= 1),
    priority       integer NOT NULL DEFAULT 0,
    depends_on     bigint[] NOT NULL DEFAULT '{}',
    worker_pattern text,                      -- exact node id or `prefix*`
    retries        integer NOT NULL DEFAULT 0,
    detail         jsonb,                     -- error_code / error_message for ERROR and FATAL
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- At most one active job per dataset revision.
CREATE UNIQUE INDEX jobs_one_active_per_revision ON jobs (namespace, name, manifest_hash)
    WHERE status IN ('SCHEDULED', 'RUNNING', 'STOP_REQUESTED', 'STOPPING');
CREATE INDEX jobs_status ON jobs (status);

-- A segment is the unit of assignment: a contiguous block range of a job with one owner.
-- The commit fence is (id, node_id, epoch): only the current owner may move the checkpoint.
CREATE TABLE segments (
    id                bigserial PRIMARY KEY,
    job_id            bigint NOT NULL REFERENCES jobs ON DELETE CASCADE,
    start_block       bigint NOT NULL CHECK (start_block >= 0),
    end_block         bigint CHECK (end_block IS NULL OR end_block >= start_block),  -- NULL: open tail
    checkpoint_block  bigint CHECK (checkpoint_block IS NULL OR checkpoint_block >= start_block - 1),
    status            text NOT NULL DEFAULT 'PENDING' CHECK (status IN (
                          'PENDING', 'ASSIGNED', 'RUNNING', 'COMPLETED', 'STOPPED',
                          'FAILED', 'FATAL')),
    node_id           text REFERENCES workers (node_id),
    epoch             bigint NOT NULL DEFAULT 0,
    attempts          integer NOT NULL DEFAULT 0,
    retry_at          timestamptz,
    error             text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, start_block)
);
CREATE INDEX segments_owner ON segments (node_id) WHERE status IN ('ASSIGNED', 'RUNNING');
CREATE INDEX segments_pending ON segments (job_id) WHERE status IN ('PENDING', 'FAILED');

CREATE TABLE job_events (
    id          bigserial PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES jobs ON DELETE CASCADE,
    node_id     text,
    event_type  text NOT NULL,
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- A table revision is one physical copy of a table of a dataset revision in the data store:
-- `<data_dir>/<namespace>/<name>/<table>/<revision>/`.
CREATE TABLE table_revisions (
    id             bigserial PRIMARY KEY,
    namespace      text NOT NULL,
    name           text NOT NULL,
    manifest_hash  text NOT NULL REFERENCES manifests (hash),
    table_name     text NOT NULL,
    revision       uuid NOT NULL UNIQUE,
    path           text NOT NULL,             -- object-store prefix of the revision's files
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX table_revisions_one_active ON table_revisions (manifest_hash, table_name)
    WHERE active;

-- A committed Parquet file. Only rows here are ever read; objects without a row are orphans.
CREATE TABLE files (
    id                 bigserial PRIMARY KEY,
    table_revision_id  bigint NOT NULL REFERENCES table_revisions ON DELETE CASCADE,
    segment_id         bigint REFERENCES segments ON DELETE SET NULL,
    file_name          text NOT NULL,
    path               text NOT NULL,          -- object key relative to data_dir
    object_size        bigint NOT NULL CHECK (object_size >= 0),
    row_count          bigint NOT NULL CHECK (row_count >= 0),
    start_block        bigint NOT NULL,
    end_block          bigint NOT NULL CHECK (end_block >= start_block),
    prev_hash          bytea NOT NULL,         -- parent hash of start_block
    hash               bytea NOT NULL,         -- hash of end_block
    metadata           jsonb NOT NULL,         -- the footer's nozzle_metadata
    retired_at         timestamptz,            -- set when a reorg replaced the range
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (table_revision_id, file_name)
);
CREATE INDEX files_live ON files (table_revision_id, start_block) WHERE retired_at IS NULL;
