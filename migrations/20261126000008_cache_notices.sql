-- Plinth keeps API tokens and alias resolutions in memory (src/cache.rs). These triggers tell
-- every running instance, through NOTIFY, when something those caches hold has changed: a token
-- revoked or deleted; a user disabled, deleted, given or refused staff rights, or given a new
-- password; an alias moved. Routine writes (last_used_at, last_login_at) notify nobody.

create function plinth_notify_auth() returns trigger language plpgsql as $$
begin
    perform pg_notify('plinth_auth', '');
    return null;
end
$$;

create function plinth_notify_registry() returns trigger language plpgsql as $$
begin
    perform pg_notify('plinth_registry', '');
    return null;
end
$$;

create trigger api_token_notify
    after update of revoked_at, user_id, token_hash or delete on api_token
    for each statement execute function plinth_notify_auth();

create trigger app_user_notify
    after update of is_active, is_staff, password_hash, username or delete on app_user
    for each statement execute function plinth_notify_auth();

create trigger model_alias_notify
    after insert or update or delete on model_alias
    for each statement execute function plinth_notify_registry();

create trigger model_version_notify
    after update or delete on model_version
    for each statement execute function plinth_notify_registry();
