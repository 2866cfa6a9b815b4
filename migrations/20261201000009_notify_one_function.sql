-- One NOTIFY trigger function with the channel as its argument, in place of one function per
-- channel. Written so that it also runs on a database where an edited copy of migration 0008
-- had already made this change (see `db::migrate`): every step tolerates either starting point.

create or replace function plinth_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify(tg_argv[0], '');
    return null;
end
$$;

drop trigger if exists api_token_notify on api_token;
create trigger api_token_notify
    after update of revoked_at, user_id, token_hash or delete on api_token
    for each statement execute function plinth_notify('plinth_auth');

drop trigger if exists app_user_notify on app_user;
create trigger app_user_notify
    after update of is_active, is_staff, password_hash, username or delete on app_user
    for each statement execute function plinth_notify('plinth_auth');

drop trigger if exists model_alias_notify on model_alias;
create trigger model_alias_notify
    after insert or update or delete on model_alias
    for each statement execute function plinth_notify('plinth_registry');

drop trigger if exists model_version_notify on model_version;
create trigger model_version_notify
    after update or delete on model_version
    for each statement execute function plinth_notify('plinth_registry');

drop function if exists plinth_notify_auth();
drop function if exists plinth_notify_registry();
