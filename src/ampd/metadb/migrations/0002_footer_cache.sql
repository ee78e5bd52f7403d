-- The footer bytes of each committed Parquet file, written in the commit's transaction: the
-- query server plans over them without reading footers from the data store.
CREATE TABLE footer_cache (
    file_id  bigint PRIMARY KEY REFERENCES files ON DELETE CASCADE,
    footer   bytea NOT NULL
);
