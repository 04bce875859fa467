-- A cardmill schema-5 PostgreSQL schema, written by cardmill at 6d95c82 (see
-- tests/storage/test_migration.py for how) and dumped with pg_dump --inserts.

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE SCHEMA cardmill_v5;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE cardmill_v5.batch_items (
    batch_id text NOT NULL,
    upload_id text NOT NULL,
    ordinal integer NOT NULL,
    custom_id text NOT NULL,
    attempt integer NOT NULL
);

CREATE TABLE cardmill_v5.batches (
    seq bigint NOT NULL,
    id text NOT NULL,
    run_id text NOT NULL,
    state text NOT NULL,
    provider_batch_id text,
    size integer NOT NULL,
    processing integer DEFAULT 0 NOT NULL,
    succeeded integer DEFAULT 0 NOT NULL,
    errored integer DEFAULT 0 NOT NULL,
    canceled integer DEFAULT 0 NOT NULL,
    expired integer DEFAULT 0 NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    creator text
);

CREATE SEQUENCE cardmill_v5.batches_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE cardmill_v5.batches_seq_seq OWNED BY cardmill_v5.batches.seq;

CREATE TABLE cardmill_v5.cardmill_meta (
    key text NOT NULL,
    value text NOT NULL
);

CREATE TABLE cardmill_v5.cards (
    upload_id text NOT NULL,
    ordinal integer NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    tags text NOT NULL,
    quote text,
    created_at double precision NOT NULL,
    fields_json text,
    search_words text DEFAULT ''::text NOT NULL,
    search_tags text DEFAULT ''::text NOT NULL,
    search tsvector GENERATED ALWAYS AS (array_to_tsvector(string_to_array(btrim(((search_words || ' '::text) || search_tags)), ' '::text))) STORED
);

CREATE TABLE cardmill_v5.documents (
    upload_id text NOT NULL,
    data bytea NOT NULL
);

CREATE TABLE cardmill_v5.rate_limits (
    name text NOT NULL,
    state text,
    updated double precision NOT NULL
);

CREATE TABLE cardmill_v5.runs (
    id text NOT NULL,
    name text NOT NULL,
    status text NOT NULL,
    total_items integer NOT NULL,
    completed_items integer DEFAULT 0 NOT NULL,
    failed_items integer DEFAULT 0 NOT NULL,
    total_cards integer DEFAULT 0 NOT NULL,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    creating integer DEFAULT 0 NOT NULL,
    recipe_toml text,
    recipe_digest text,
    input_tokens bigint DEFAULT 0 NOT NULL,
    output_tokens bigint DEFAULT 0 NOT NULL,
    cache_read_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    cost_nanos bigint DEFAULT 0 NOT NULL,
    requests bigint DEFAULT 0 NOT NULL,
    rate_limited bigint DEFAULT 0 NOT NULL,
    CONSTRAINT runs_check CHECK (((completed_items + failed_items) <= total_items))
);

CREATE TABLE cardmill_v5.uploads (
    id text NOT NULL,
    run_id text NOT NULL,
    "position" integer NOT NULL,
    name text NOT NULL,
    media_type text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    status text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    error text,
    card_count integer DEFAULT 0 NOT NULL,
    worker text,
    lease_expires double precision,
    started_at double precision,
    finished_at double precision,
    input_tokens bigint DEFAULT 0 NOT NULL,
    output_tokens bigint DEFAULT 0 NOT NULL,
    cache_read_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    cost_nanos bigint DEFAULT 0 NOT NULL,
    requests bigint DEFAULT 0 NOT NULL,
    rate_limited bigint DEFAULT 0 NOT NULL
);

ALTER TABLE ONLY cardmill_v5.batches ALTER COLUMN seq SET DEFAULT nextval('cardmill_v5.batches_seq_seq'::regclass);

INSERT INTO cardmill_v5.cardmill_meta VALUES ('schema_version', '5');

INSERT INTO cardmill_v5.cards VALUES ('up-843158c2041a', 0, 'Alpha', 'one', '[]', NULL, 1700000000, NULL, 'alpha one', '', DEFAULT);

INSERT INTO cardmill_v5.documents VALUES ('up-843158c2041a', '\x61');
INSERT INTO cardmill_v5.documents VALUES ('up-38ec379d94fd', '\x62');
INSERT INTO cardmill_v5.documents VALUES ('up-479d16f1a412', '\x63');

INSERT INTO cardmill_v5.runs VALUES ('run-9a38e2bef8cd', 'half', 'cancelled', 3, 1, 0, 1, 1700000000, 1700000000, NULL, 0, 'name = "study-cards"
instructions = """
You turn one document into study cards.

A card captures one idea of the document: a short title, a body of two to four sentences
that explains the idea in plain words, up to five lowercase tags, and a quote: a short
sentence copied exactly from the document that supports the card.

Rules:
- Use only what the document says; never invent facts.
- Cover the document''s main ideas in order, one card per idea, without duplicates."""
max_cards = 20
fields = [
    { name = "title", type = "string", max_chars = 200 },
    { name = "body", type = "string", max_chars = 4000 },
    { name = "tags", type = "list", max_chars = 48, max_items = 12 },
    { name = "quote", type = "string", max_chars = 1000 },
]
', 'b6e99139b478da9f72bacf6ada24a1df7150a34f38a9bacb992236026a02808c', 1000, 100, 0, 0, 500000000, 1, 0);

INSERT INTO cardmill_v5.uploads VALUES ('up-38ec379d94fd', 'run-9a38e2bef8cd', 1, 'b.txt', 'text/plain', 1, '3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d', 'pending', 0, NULL, 0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO cardmill_v5.uploads VALUES ('up-479d16f1a412', 'run-9a38e2bef8cd', 2, 'c.txt', 'text/plain', 1, '2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6', 'pending', 0, NULL, 0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO cardmill_v5.uploads VALUES ('up-843158c2041a', 'run-9a38e2bef8cd', 0, 'a.txt', 'text/plain', 1, 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb', 'completed', 1, NULL, 1, NULL, NULL, 1700000000, 1700000000, 1000, 100, 0, 0, 500000000, 1, 0);

SELECT pg_catalog.setval('cardmill_v5.batches_seq_seq', 1, false);

ALTER TABLE ONLY cardmill_v5.batch_items
    ADD CONSTRAINT batch_items_pkey PRIMARY KEY (batch_id, upload_id);

ALTER TABLE ONLY cardmill_v5.batches
    ADD CONSTRAINT batches_id_key UNIQUE (id);

ALTER TABLE ONLY cardmill_v5.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY cardmill_v5.batches
    ADD CONSTRAINT batches_provider_batch_id_key UNIQUE (provider_batch_id);

ALTER TABLE ONLY cardmill_v5.cardmill_meta
    ADD CONSTRAINT cardmill_meta_pkey PRIMARY KEY (key);

ALTER TABLE ONLY cardmill_v5.cards
    ADD CONSTRAINT cards_upload_id_ordinal_key UNIQUE (upload_id, ordinal);

ALTER TABLE ONLY cardmill_v5.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (upload_id);

ALTER TABLE ONLY cardmill_v5.rate_limits
    ADD CONSTRAINT rate_limits_pkey PRIMARY KEY (name);

ALTER TABLE ONLY cardmill_v5.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY cardmill_v5.uploads
    ADD CONSTRAINT uploads_pkey PRIMARY KEY (id);

ALTER TABLE ONLY cardmill_v5.uploads
    ADD CONSTRAINT uploads_run_id_position_key UNIQUE (run_id, "position");

CREATE INDEX batches_by_run ON cardmill_v5.batches USING btree (run_id, state);

CREATE INDEX cards_search ON cardmill_v5.cards USING gin (search);

CREATE INDEX uploads_by_status ON cardmill_v5.uploads USING btree (run_id, status, "position");

ALTER TABLE ONLY cardmill_v5.batch_items
    ADD CONSTRAINT batch_items_batch_id_fkey FOREIGN KEY (batch_id) REFERENCES cardmill_v5.batches(id);

ALTER TABLE ONLY cardmill_v5.batch_items
    ADD CONSTRAINT batch_items_upload_id_fkey FOREIGN KEY (upload_id) REFERENCES cardmill_v5.uploads(id);

ALTER TABLE ONLY cardmill_v5.batches
    ADD CONSTRAINT batches_run_id_fkey FOREIGN KEY (run_id) REFERENCES cardmill_v5.runs(id);

ALTER TABLE ONLY cardmill_v5.cards
    ADD CONSTRAINT cards_upload_id_fkey FOREIGN KEY (upload_id) REFERENCES cardmill_v5.uploads(id);

ALTER TABLE ONLY cardmill_v5.documents
    ADD CONSTRAINT documents_upload_id_fkey FOREIGN KEY (upload_id) REFERENCES cardmill_v5.uploads(id);

ALTER TABLE ONLY cardmill_v5.uploads
    ADD CONSTRAINT uploads_run_id_fkey FOREIGN KEY (run_id) REFERENCES cardmill_v5.runs(id);

