-- Accounts, server-side sessions, login throttling and instance secrets.

create table app_user (
    id bigint generated always as identity primary key,
    username text not null,
    password_hash text not null,
    is_staff boolean not null default false,
    is_active boolean not null default true,
    must_change_password boolean not null default false,
    created_at timestamptz not null default now(),
    last_login_at timestamptz
);

-- Usernames are unique regardless of case: "Alice" and "alice" are the same person.
create unique index app_user_username_key on app_user (lower(username));

-- Server-side session state. The cookie carries a random key; only its SHA-256 is stored, so a
-- leaked table does not hand out live sessions.
create table session (
    key_hash text primary key,
    user_id bigint references app_user (id) on delete cascade,
    state jsonb not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);

create index session_user_id_idx on session (user_id);
create index session_expires_at_idx on session (expires_at);

-- Failed login attempts, the memory of the throttle. Rows older than an hour carry no weight
-- and are swept periodically.
create table login_failure (
    id bigint generated always as identity primary key,
    username text not null,
    client_ip text not null,
    created_at timestamptz not null default now()
);

create index login_failure_username_idx on login_failure (username, created_at);
create index login_failure_client_ip_idx on login_failure (client_ip, created_at);

-- Secrets generated on first start and shared by every instance (the cookie signing key).
create table instance_secret (
    name text primary key,
    value bytea not null,
    created_at timestamptz not null default now()
);
