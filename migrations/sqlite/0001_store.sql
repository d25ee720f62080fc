-- The store's schema (SQLite). The two dialects differ only in how an id column
-- counts; every other line is the same in migrations/sqlite and migrations/postgres.
-- Money is BIGINT pico-yuan (10^-12 yuan); times are unix seconds unless named *_ms.

-- Access codes. The code itself is shown once; only its SHA-256 is kept.
CREATE TABLE access_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    code_hash TEXT NOT NULL UNIQUE,
    code_prefix TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0,
    daily_limit_pico BIGINT,
    monthly_limit_pico BIGINT,
    rpm BIGINT,
    concurrent BIGINT,
    models TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);

-- Spent and reserved money per code and period. code_id 0 is the whole deployment;
-- period is a Shanghai day 'YYYY-MM-DD' or month 'YYYY-MM'.
CREATE TABLE budget_counters (
    code_id BIGINT NOT NULL,
    period TEXT NOT NULL,
    spent_pico BIGINT NOT NULL DEFAULT 0,
    reserved_pico BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (code_id, period)
);

-- Running server processes, so a restart can refund what a dead one had reserved.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Open reservations: one per request between `reserve` and `settle`. They are also the
-- streams counted by a code's concurrency limit.
CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_id BIGINT REFERENCES access_codes (id),
    amount_pico BIGINT NOT NULL,
    day TEXT NOT NULL,
    month TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX reservations_by_code ON reservations (code_id);
CREATE INDEX reservations_by_instance ON reservations (instance_id);

-- Admissions of the last minute, per code with an RPM limit.
CREATE TABLE rate_events (
    code_id BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX rate_events_by_code ON rate_events (code_id, at);

-- The usage ledger: one row per request that reached the provider or was refused.
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY, -- a plain rowid (faster to append); ids only order rows within a millisecond
    at_ms BIGINT NOT NULL,
    code_id BIGINT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    usage_source TEXT NOT NULL,
    cost_pico BIGINT NOT NULL,
    first_token_ms BIGINT,
    duration_ms BIGINT NOT NULL,
    retries BIGINT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX ledger_by_time ON ledger (at_ms, id);
CREATE INDEX ledger_by_code ON ledger (code_id, at_ms, id);

-- The daily rollup per Shanghai day x code x model, written with the ledger rows in the
-- same transaction. code_id 0: requests without a code. ttft_hNN count first-token times
-- per fixed bucket (bounds in src/store/ledger.rs), so percentiles need no ledger scan.
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    code_id BIGINT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    stopped BIGINT NOT NULL DEFAULT 0,
    refused BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    cost_pico BIGINT NOT NULL DEFAULT 0,
    duration_ms_sum BIGINT NOT NULL DEFAULT 0,
    ttft_count BIGINT NOT NULL DEFAULT 0,
    ttft_ms_sum BIGINT NOT NULL DEFAULT 0,
    ttft_ms_max BIGINT NOT NULL DEFAULT 0,
    ttft_h00 BIGINT NOT NULL DEFAULT 0,
    ttft_h01 BIGINT NOT NULL DEFAULT 0,
    ttft_h02 BIGINT NOT NULL DEFAULT 0,
    ttft_h03 BIGINT NOT NULL DEFAULT 0,
    ttft_h04 BIGINT NOT NULL DEFAULT 0,
    ttft_h05 BIGINT NOT NULL DEFAULT 0,
    ttft_h06 BIGINT NOT NULL DEFAULT 0,
    ttft_h07 BIGINT NOT NULL DEFAULT 0,
    ttft_h08 BIGINT NOT NULL DEFAULT 0,
    ttft_h09 BIGINT NOT NULL DEFAULT 0,
    ttft_h10 BIGINT NOT NULL DEFAULT 0,
    ttft_h11 BIGINT NOT NULL DEFAULT 0,
    ttft_h12 BIGINT NOT NULL DEFAULT 0,
    ttft_h13 BIGINT NOT NULL DEFAULT 0,
    ttft_h14 BIGINT NOT NULL DEFAULT 0,
    ttft_h15 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, code_id, provider, model)
);
CREATE INDEX usage_daily_by_code ON usage_daily (code_id, day);
