-- What stops a stream (the broker refused the credentials, its certificate was not trusted, no
-- broker answered), as the instance that met it last said; cleared when records flow again.
alter table stream add column last_error text, add column last_error_at timestamptz;
