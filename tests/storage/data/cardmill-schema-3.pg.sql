-- A cardmill schema-3 PostgreSQL schema, written by cardmill at 638d004 (see
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

CREATE SCHEMA cardmill_v3;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE cardmill_v3.cardmill_meta (
    key text NOT NULL,
    value text NOT NULL
);

CREATE TABLE cardmill_v3.cards (
    upload_id text NOT NULL,
    ordinal integer NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    tags text NOT NULL,
    quote text,
    created_at double precision NOT NULL,
    fields_json text
);

CREATE TABLE cardmill_v3.documents (
    upload_id text NOT NULL,
    data bytea NOT NULL
);

CREATE TABLE cardmill_v3.rate_limits (
    name text NOT NULL,
    state text,
    updated double precision NOT NULL
);

CREATE TABLE cardmill_v3.runs (
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
    CONSTRAINT runs_check CHECK (((completed_items + failed_items) <= total_items))
);

CREATE TABLE cardmill_v3.uploads (
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
    finished_at double precision
);

INSERT INTO cardmill_v3.cardmill_meta VALUES ('schema_version', '3');

INSERT INTO cardmill_v3.cards VALUES ('up-619a73dae31d', 0, 'Alpha', 'one', '[]', NULL, 1700000000, NULL);
INSERT INTO cardmill_v3.cards VALUES ('up-619a73dae31d', 1, 'Beta', 'two', '[]', NULL, 1700000000, NULL);
INSERT INTO cardmill_v3.cards VALUES ('up-b7cb7d96c298', 0, 'Alpha', 'one', '[]', NULL, 1700000000, NULL);
INSERT INTO cardmill_v3.cards VALUES ('up-b7cb7d96c298', 1, 'Beta', 'two', '[]', NULL, 1700000000, NULL);
INSERT INTO cardmill_v3.cards VALUES ('up-1d734177f182', 0, 'q', 'a', '["x"]', NULL, 1700000000, '{"question":"q","answer":"a","tags":["x"]}');

INSERT INTO cardmill_v3.documents VALUES ('up-619a73dae31d', '\x2320410a0a616c706861');
INSERT INTO cardmill_v3.documents VALUES ('up-b7cb7d96c298', '\x627261766f');
INSERT INTO cardmill_v3.documents VALUES ('up-1d734177f182', '\x63');
INSERT INTO cardmill_v3.documents VALUES ('up-45a46ae7865a', '\x64');
INSERT INTO cardmill_v3.documents VALUES ('up-25f6c521662b', '\x65');
INSERT INTO cardmill_v3.documents VALUES ('up-56939916409b', '\x66');

INSERT INTO cardmill_v3.runs VALUES ('run-2b064a848543', 'half', 'running', 4, 1, 1, 1, 1700000000, 1700000000, NULL, 0, 'name = "flashcards"
instructions = """
You turn one document into flashcards for spaced-repetition study.

A flashcard asks one question the document answers and gives the answer in one to three
short sentences, plus up to five lowercase tags.

Rules:
- Use only what the document says; never invent facts.
- One fact per card; the question must make sense on its own."""
max_cards = 30
fields = [
    { name = "question", type = "string", description = "One clear question.", max_chars = 300 },
    { name = "answer", type = "string", description = "Its short answer.", max_chars = 1000 },
    { name = "tags", type = "list", max_chars = 48, max_items = 5 },
]
', '9f6fb7993a407b4c96e0a31e3cc787b7ff8ecd0b1cf468b6f3579e712e130c15');
INSERT INTO cardmill_v3.runs VALUES ('run-2fbe71a99bd3', 'finished', 'succeeded', 2, 2, 0, 4, 1700000000, NULL, 1700000000, 0, 'name = "study-cards"
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
', 'b6e99139b478da9f72bacf6ada24a1df7150a34f38a9bacb992236026a02808c');

INSERT INTO cardmill_v3.uploads VALUES ('up-619a73dae31d', 'run-2fbe71a99bd3', 0, 'a.md', 'text/markdown', 10, '82087a91172bfc7bfdf4a451b26a8f9ac3587d4b34caf2892359f799fd6994c2', 'completed', 0, NULL, 2, NULL, NULL, 1700000000, 1700000000);
INSERT INTO cardmill_v3.uploads VALUES ('up-b7cb7d96c298', 'run-2fbe71a99bd3', 1, 'b.txt', 'text/plain', 5, 'f144a6907dc4284d1f9fe6a7d9b9ff53c02c1d07ba68f24d413d7ff7f757a782', 'completed', 0, NULL, 2, NULL, NULL, 1700000000, 1700000000);
INSERT INTO cardmill_v3.uploads VALUES ('up-56939916409b', 'run-2b064a848543', 3, 'f.txt', 'text/plain', 1, '252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111', 'pending', 0, NULL, 0, NULL, NULL, NULL, NULL);
INSERT INTO cardmill_v3.uploads VALUES ('up-1d734177f182', 'run-2b064a848543', 0, 'c.txt', 'text/plain', 1, '2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6', 'completed', 0, NULL, 1, NULL, NULL, 1700000000, 1700000000);
INSERT INTO cardmill_v3.uploads VALUES ('up-45a46ae7865a', 'run-2b064a848543', 1, 'd.txt', 'text/plain', 1, '18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4', 'failed', 0, 'too large', 0, NULL, NULL, 1700000000, 1700000000);
INSERT INTO cardmill_v3.uploads VALUES ('up-25f6c521662b', 'run-2b064a848543', 2, 'e.txt', 'text/plain', 1, '3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea', 'loading', 1, NULL, 0, 'gone', 1700000060, 1700000000, NULL);

ALTER TABLE ONLY cardmill_v3.cardmill_meta
    ADD CONSTRAINT cardmill_meta_pkey PRIMARY KEY (key);

ALTER TABLE ONLY cardmill_v3.cards
    ADD CONSTRAINT cards_upload_id_ordinal_key UNIQUE (upload_id, ordinal);

ALTER TABLE ONLY cardmill_v3.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (upload_id);

ALTER TABLE ONLY cardmill_v3.rate_limits
    ADD CONSTRAINT rate_limits_pkey PRIMARY KEY (name);

ALTER TABLE ONLY cardmill_v3.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY cardmill_v3.uploads
    ADD CONSTRAINT uploads_pkey PRIMARY KEY (id);

ALTER TABLE ONLY cardmill_v3.uploads
    ADD CONSTRAINT uploads_run_id_position_key UNIQUE (run_id, "position");

CREATE INDEX uploads_by_status ON cardmill_v3.uploads USING btree (run_id, status, "position");

ALTER TABLE ONLY cardmill_v3.cards
    ADD CONSTRAINT cards_upload_id_fkey FOREIGN KEY (upload_id) REFERENCES cardmill_v3.uploads(id);

ALTER TABLE ONLY cardmill_v3.documents
    ADD CONSTRAINT documents_upload_id_fkey FOREIGN KEY (upload_id) REFERENCES cardmill_v3.uploads(id);

ALTER TABLE ONLY cardmill_v3.uploads
    ADD CONSTRAINT uploads_run_id_fkey FOREIGN KEY (run_id) REFERENCES cardmill_v3.runs(id);

