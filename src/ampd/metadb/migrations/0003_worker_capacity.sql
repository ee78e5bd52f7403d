-- How many segments each worker runs at once (its `worker_max_segments`), set at every
-- registration: the scheduler gives a worker no more than its capacity.
ALTER TABLE workers ADD COLUMN capacity integer NOT NULL DEFAULT 4 CHECK (capacity >= 1);
