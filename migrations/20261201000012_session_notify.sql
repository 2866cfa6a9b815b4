-- Plinth keeps the sessions it read lately in memory (src/db/sessions.rs). Every change to a
-- session row (its state, its user, its expiry, its start) and every deletion tells every
-- running instance which session to forget, through NOTIFY with the key's hash.

create function plinth_notify_session() returns trigger language plpgsql as $$
begin
    perform pg_notify('plinth_session', old.key_hash);
    return null;
end
$$;

create trigger session_notify
    after update or delete on session
    for each row execute function plinth_notify_session();
