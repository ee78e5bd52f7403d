-- Every statement ampd runs against the metadata database, by name.
-- Parameters: %(name)s. Callers: src/ampd/metadb/*.py and the services through them.

-- ==================== datasets and manifests ====================

-- insert_manifest --
INSERT INTO manifests (hash, kind, manifest)
VALUES (%(hash)s, %(kind)s, %(manifest)s)
ON CONFLICT (hash) DO NOTHING;

-- get_manifest --
-- By its hash, or by a hash it had before (manifest_aliases); `hash` is the current one.
SELECT hash, kind, manifest, created_at FROM manifests
WHERE hash = COALESCE(
    (SELECT a.hash FROM manifest_aliases a WHERE a.old_hash = %(hash)s), %(hash)s);

-- manifest_aliases --
SELECT old_hash, hash FROM manifest_aliases;

-- upsert_dataset --
INSERT INTO datasets (namespace, name) VALUES (%(namespace)s, %(name)s)
ON CONFLICT (namespace, name) DO NOTHING;

-- upsert_version --
INSERT INTO dataset_versions (namespace, name, version, manifest_hash)
VALUES (%(namespace)s, %(name)s, %(version)s, %(manifest_hash)s)
ON CONFLICT (namespace, name, version)
DO UPDATE SET manifest_hash = EXCLUDED.manifest_hash, updated_at = now();

-- set_tag --
INSERT INTO dataset_tags (namespace, name, tag, manifest_hash, version)
VALUES (%(namespace)s, %(name)s, %(tag)s, %(manifest_hash)s, %(version)s)
ON CONFLICT (namespace, name, tag)
DO UPDATE SET manifest_hash = EXCLUDED.manifest_hash, version = EXCLUDED.version, updated_at = now();

-- dataset_versions --
SELECT version, manifest_hash, created_at, updated_at
FROM dataset_versions WHERE namespace = %(namespace)s AND name = %(name)s;

-- dataset_tags --
SELECT tag, manifest_hash, version FROM dataset_tags
WHERE namespace = %(namespace)s AND name = %(name)s;

-- dataset_exists --
SELECT 1 AS found FROM datasets WHERE namespace = %(namespace)s AND name = %(name)s;

-- list_datasets --
SELECT d.namespace, d.name,
       (SELECT t.version FROM dataset_tags t
         WHERE t.namespace = d.namespace AND t.name = d.name AND t.tag = 'latest') AS latest_version,
       COALESCE((SELECT array_agg(v.version) FROM dataset_versions v
                  WHERE v.namespace = d.namespace AND v.name = d.name), '{}') AS versions
FROM datasets d ORDER BY d.namespace, d.name;

-- delete_dataset --
DELETE FROM datasets WHERE namespace = %(namespace)s AND name = %(name)s;

-- ==================== workers ====================

-- register_worker --
INSERT INTO workers (node_id, info, capacity, status, registered_at, heartbeat_at)
VALUES (%(node_id)s, %(info)s, %(capacity)s, 'active', now(), now())
ON CONFLICT (node_id) DO UPDATE
SET info = EXCLUDED.info, capacity = EXCLUDED.capacity, status = 'active',
    registered_at = now(), heartbeat_at = now();

-- heartbeat --
UPDATE workers SET heartbeat_at = now(), status = 'active' WHERE node_id = %(node_id)s;

-- mark_worker_stopped --
UPDATE workers SET status = 'stopped' WHERE node_id = %(node_id)s;

-- list_workers --
SELECT w.node_id, w.info, w.capacity, w.status, w.created_at, w.registered_at, w.heartbeat_at,
       now() - w.heartbeat_at > make_interval(secs => %(timeout)s) AS stale,
       (SELECT count(*) FROM segments s
         WHERE s.node_id = w.node_id AND s.status IN ('ASSIGNED', 'RUNNING')) AS active_segments
FROM workers w ORDER BY w.node_id;

-- get_worker --
SELECT node_id, info, capacity, status, created_at, registered_at, heartbeat_at
FROM workers WHERE node_id = %(node_id)s;

-- live_workers --
-- Workers that heartbeat recently, with how many segments each runs at most (capacity) and
-- is running (the load).
SELECT w.node_id, w.capacity,
       (SELECT count(*) FROM segments s
         WHERE s.node_id = w.node_id AND s.status IN ('ASSIGNED', 'RUNNING')) AS load
FROM workers w
WHERE w.status = 'active' AND now() - w.heartbeat_at <= make_interval(secs => %(timeout)s)
ORDER BY w.node_id;

-- dead_workers_with_segments --
SELECT DISTINCT s.node_id
FROM segments s JOIN workers w ON w.node_id = s.node_id
WHERE s.status IN ('ASSIGNED', 'RUNNING')
  AND (w.status = 'stopped' OR now() - w.heartbeat_at > make_interval(secs => %(timeout)s));

-- ==================== jobs ====================

-- insert_job --
INSERT INTO jobs (namespace, name, manifest_hash, descriptor, start_block, end_block,
                  parallelism, priority, depends_on, worker_pattern)
VALUES (%(namespace)s, %(name)s, %(manifest_hash)s, %(descriptor)s, %(start_block)s,
        %(end_block)s, %(parallelism)s, %(priority)s, %(depends_on)s, %(worker_pattern)s)
RETURNING *;

-- active_job_for_revision --
SELECT * FROM jobs
WHERE namespace = %(namespace)s AND name = %(name)s AND manifest_hash = %(manifest_hash)s
  AND status IN ('SCHEDULED', 'RUNNING', 'STOP_REQUESTED', 'STOPPING');

-- get_job --
SELECT * FROM jobs WHERE id = %(id)s;

-- list_jobs --
SELECT * FROM jobs
WHERE (%(last_job_id)s::bigint IS NULL OR id < %(last_job_id)s)
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))
ORDER BY id DESC LIMIT %(limit)s;

-- jobs_of_revision --
SELECT * FROM jobs
WHERE namespace = %(namespace)s AND name = %(name)s AND manifest_hash = %(manifest_hash)s
ORDER BY id DESC;

-- jobs_with_status --
SELECT * FROM jobs WHERE status = ANY(%(statuses)s) ORDER BY priority DESC, id;

-- set_job_status --
-- A conditional transition: only from one of the expected states.
UPDATE jobs SET status = %(status)s, detail = COALESCE(%(detail)s, detail), updated_at = now()
WHERE id = %(id)s AND status = ANY(%(from)s)
RETURNING id;

-- delete_job --
DELETE FROM jobs WHERE id = %(id)s AND status = ANY(%(terminal)s);

-- delete_jobs_with_status --
DELETE FROM jobs WHERE status = ANY(%(statuses)s);

-- insert_job_event --
INSERT INTO job_events (job_id, node_id, event_type, detail)
VALUES (%(job_id)s, %(node_id)s, %(event_type)s, %(detail)s);

-- list_job_events --
SELECT id, created_at, node_id, event_type, detail FROM job_events
WHERE job_id = %(job_id)s ORDER BY id;

-- ==================== segments ====================

-- insert_segment --
INSERT INTO segments (job_id, start_block, end_block, checkpoint_block)
VALUES (%(job_id)s, %(start_block)s, %(end_block)s, %(checkpoint_block)s)
RETURNING *;

-- job_segments --
SELECT * FROM segments WHERE job_id = %(job_id)s ORDER BY start_block;

-- assignable_segments --
-- Segments waiting for an owner, most urgent job first; jobs blocked by unfinished
-- dependencies are left out.
SELECT s.id, s.job_id, s.epoch, s.status, j.priority, j.worker_pattern
FROM segments s JOIN jobs j ON j.id = s.job_id
WHERE j.status IN ('SCHEDULED', 'RUNNING')
  AND (s.status = 'PENDING'
       OR (s.status = 'FAILED' AND s.retry_at <= now() AND s.attempts <= %(max_retries)s))
  AND NOT EXISTS (SELECT 1 FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.status <> 'COMPLETED')
ORDER BY j.priority DESC, j.id, s.start_block
FOR UPDATE OF s SKIP LOCKED;

-- splittable_segments --
-- Running bounded segments of running jobs whose unfinished remainder is at least
-- `min_blocks`, largest first: what an idle worker may be given part of. Assigned ones
-- too, which cannot be split until they run: an idle worker waits for those rather than
-- split a smaller remainder.
SELECT s.id, s.job_id, s.node_id, s.epoch, s.status, s.end_block, j.worker_pattern,
       s.end_block - COALESCE(s.checkpoint_block, s.start_block - 1) AS remaining
FROM segments s JOIN jobs j ON j.id = s.job_id
WHERE s.status IN ('ASSIGNED', 'RUNNING') AND s.end_block IS NOT NULL
  AND j.status = 'RUNNING'
  AND s.end_block - COALESCE(s.checkpoint_block, s.start_block - 1) >= %(min_blocks)s
ORDER BY remaining DESC, s.id;

-- assign_segment --
UPDATE segments SET status = 'ASSIGNED', node_id = %(node_id)s, epoch = epoch + 1,
                    retry_at = NULL, updated_at = now()
WHERE id = %(id)s AND epoch = %(epoch)s
RETURNING id, job_id, node_id, epoch;

-- release_segments_of --
-- Take unfinished segments away from a worker (dead, or leaving): they become PENDING.
UPDATE segments SET status = 'PENDING', node_id = NULL, updated_at = now()
WHERE node_id = %(node_id)s AND status IN ('ASSIGNED', 'RUNNING')
RETURNING id, job_id, epoch;

-- owned_segments --
-- What the database says this worker owns: the truth reconciliation compares against.
SELECT s.id, s.job_id, s.epoch, s.start_block, s.end_block, s.checkpoint_block, s.attempts,
       j.manifest_hash, j.namespace, j.name, j.status AS job_status
FROM segments s JOIN jobs j ON j.id = s.job_id
WHERE s.node_id = %(node_id)s AND s.status IN ('ASSIGNED', 'RUNNING')
ORDER BY s.id;

-- fence_mark_running --
UPDATE segments SET status = 'RUNNING', updated_at = now()
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s AND status IN ('ASSIGNED', 'RUNNING')
RETURNING id;

-- fence_advance_checkpoint --
-- The commit fence: the checkpoint moves only for the current owner and epoch, only from
-- exactly the block before the committed range (no gap, no overlap), and never past the
-- segment's end (a split may have moved it).
UPDATE segments SET checkpoint_block = %(end_block)s, status = 'RUNNING', updated_at = now()
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s
  AND status IN ('ASSIGNED', 'RUNNING')
  AND COALESCE(checkpoint_block, start_block - 1) = %(start_block)s - 1
  AND (end_block IS NULL OR %(end_block)s <= end_block)
RETURNING id;

-- fence_rewind_checkpoint --
-- After a reorg: move the checkpoint back to the common ancestor.
UPDATE segments SET checkpoint_block = %(checkpoint_block)s, updated_at = now()
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s
  AND status IN ('ASSIGNED', 'RUNNING')
RETURNING id;

-- fence_finish_segment --
-- COMPLETED, STOPPED, FAILED or FATAL, by the current owner only; COMPLETED only once the
-- checkpoint is at the end block (a run that ended early, its split not recorded, cannot).
UPDATE segments
SET status = %(status)s, error = %(error)s, updated_at = now(),
    attempts = attempts + CASE WHEN %(status)s IN ('FAILED', 'FATAL') THEN 1 ELSE 0 END,
    retry_at = CASE WHEN %(status)s = 'FAILED'
                    THEN now() + make_interval(secs => %(retry_in)s) ELSE NULL END,
    node_id = CASE WHEN %(status)s IN ('FAILED', 'STOPPED') THEN NULL ELSE node_id END
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s
  AND status IN ('ASSIGNED', 'RUNNING')
  AND (%(status)s <> 'COMPLETED' OR checkpoint_block = end_block)
RETURNING id, job_id, attempts;

-- fence_owned_segment --
-- The segment as its current owner sees it (nothing if it is not the owner's any more).
SELECT id, start_block, end_block, checkpoint_block FROM segments
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s
  AND status IN ('ASSIGNED', 'RUNNING');

-- fence_split_segment --
-- The owner ends its segment before the split block, if the end is still the one it split.
UPDATE segments SET end_block = %(new_end)s, updated_at = now()
WHERE id = %(id)s AND node_id = %(node_id)s AND epoch = %(epoch)s
  AND status IN ('ASSIGNED', 'RUNNING')
  AND end_block = %(old_end)s
  AND COALESCE(checkpoint_block, start_block - 1) <= %(new_end)s
RETURNING id, job_id;

-- stop_idle_segments --
-- Segments of a stopping job that nobody runs stop at once.
UPDATE segments SET status = 'STOPPED', updated_at = now()
WHERE job_id = %(job_id)s AND status IN ('PENDING', 'FAILED')
RETURNING id;

-- running_segments_of_job --
SELECT id, node_id, epoch FROM segments
WHERE job_id = %(job_id)s AND status IN ('ASSIGNED', 'RUNNING');

-- exhausted_segment --
SELECT id, error, attempts FROM segments
WHERE job_id = %(job_id)s AND status = 'FAILED' AND attempts > %(max_retries)s
ORDER BY id LIMIT 1;

-- segment_error --
SELECT id, error FROM segments WHERE job_id = %(job_id)s AND status = %(status)s ORDER BY id LIMIT 1;

-- segment_counts --
SELECT status, count(*) AS n FROM segments WHERE job_id = %(job_id)s GROUP BY status;

-- ==================== table revisions and files ====================

-- active_table_revisions --
SELECT * FROM table_revisions WHERE manifest_hash = %(manifest_hash)s AND active ORDER BY table_name;

-- insert_table_revision --
INSERT INTO table_revisions (namespace, name, manifest_hash, table_name, revision, path)
VALUES (%(namespace)s, %(name)s, %(manifest_hash)s, %(table_name)s, %(revision)s, %(path)s)
ON CONFLICT (manifest_hash, table_name) WHERE active DO NOTHING;

-- insert_file --
INSERT INTO files (table_revision_id, segment_id, file_name, path, object_size, row_count,
                   start_block, end_block, prev_hash, hash, metadata)
VALUES (%(table_revision_id)s, %(segment_id)s, %(file_name)s, %(path)s, %(object_size)s,
        %(row_count)s, %(start_block)s, %(end_block)s, %(prev_hash)s, %(hash)s, %(metadata)s)
RETURNING id;

-- insert_footer --
INSERT INTO footer_cache (file_id, footer) VALUES (%(file_id)s, %(footer)s);

-- footers_of_files --
-- The stored footers of these files (files committed without one are missing).
SELECT file_id, footer FROM footer_cache WHERE file_id = ANY(%(ids)s);

-- get_file --
SELECT f.*, r.path AS revision_path FROM files f
JOIN table_revisions r ON r.id = f.table_revision_id WHERE f.id = %(id)s;

-- live_files_of_revision --
SELECT id, file_name, path, object_size, row_count, start_block, end_block, prev_hash, hash
FROM files WHERE table_revision_id = %(table_revision_id)s AND retired_at IS NULL
ORDER BY start_block;

-- live_files_from --
-- Committed files of a segment's revisions that end at or after a block: reorg candidates.
SELECT f.id, f.table_revision_id, f.start_block, f.end_block, f.prev_hash, f.hash, f.path
FROM files f JOIN table_revisions r ON r.id = f.table_revision_id
WHERE r.manifest_hash = %(manifest_hash)s AND r.active AND f.retired_at IS NULL
  AND f.end_block >= %(from_block)s
ORDER BY f.end_block DESC;

-- file_paths_from --
-- Every object key ever committed (live or retired) for these revisions from a block on.
SELECT path FROM files
WHERE table_revision_id = ANY(%(revision_ids)s) AND end_block >= %(from_block)s;

-- committed_paths_of_segment --
-- Which of these object keys a segment committed (its files with the keys given).
SELECT path FROM files
WHERE segment_id = %(segment_id)s AND table_revision_id = ANY(%(revision_ids)s)
  AND path = ANY(%(paths)s);

-- lock_segment --
-- Waits until no transaction holds the segment's row (a commit in flight ends first).
SELECT id FROM segments WHERE id = %(id)s FOR UPDATE;

-- retire_files_after --
UPDATE files SET retired_at = now()
WHERE table_revision_id = ANY(%(revision_ids)s) AND retired_at IS NULL AND end_block > %(block)s
RETURNING id, path;

-- table_progress --
-- Per table of a dataset revision: its live files' ranges and sizes (summed up in Python).
SELECT r.table_name, f.start_block, f.end_block, f.object_size
FROM table_revisions r LEFT JOIN files f ON f.table_revision_id = r.id AND f.retired_at IS NULL
WHERE r.manifest_hash = %(manifest_hash)s AND r.active
ORDER BY r.table_name, f.start_block;

-- ==================== query serving ====================

-- catalog_files --
-- Every active table revision with its live files (a table without files still appears).
SELECT r.manifest_hash, r.table_name, f.id, f.path, f.start_block, f.end_block, f.row_count,
       f.object_size, f.hash, f.prev_hash
FROM table_revisions r
LEFT JOIN files f ON f.table_revision_id = r.id AND f.retired_at IS NULL
WHERE r.active
ORDER BY r.manifest_hash, r.table_name, f.start_block;

-- revision_file_ranges --
-- The block ranges of the live files of a dataset revision's active tables.
SELECT r.table_name, f.start_block, f.end_block
FROM table_revisions r JOIN files f ON f.table_revision_id = r.id AND f.retired_at IS NULL
WHERE r.manifest_hash = %(manifest_hash)s AND r.active
ORDER BY r.table_name, f.start_block;

-- catalog_references --
-- Every name a dataset revision can be queried by: its tags and its versions.
-- With each manifest's kind and network (what eth_call needs to find its providers), and a
-- derived manifest itself (its tables' schemas).
SELECT r.namespace, r.name, r.ref, r.manifest_hash, m.kind, m.manifest->>'network' AS network,
       CASE WHEN m.kind = 'manifest' THEN m.manifest END AS derived
FROM (
    SELECT namespace, name, tag AS ref, manifest_hash FROM dataset_tags
    UNION ALL
    SELECT namespace, name, version AS ref, manifest_hash FROM dataset_versions
) r JOIN manifests m ON m.hash = r.manifest_hash;
