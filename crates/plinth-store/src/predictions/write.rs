//! Writing predictions: ids reserved in blocks, rows streamed in with COPY.

use sqlx::PgPool;

use super::{NewPredictions, StoredInputs};

/// Most predictions one `prediction` row holds; ids are handed out in blocks of this size (the
/// step of the `prediction_id_block` sequence), and a row's ids never straddle two blocks.
pub const ID_BLOCK: i64 = 1024;

/// Reserves `blocks` blocks of [`ID_BLOCK`] ids; returns the first id of each.
pub async fn reserve_id_blocks(pool: &PgPool, blocks: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select nextval('prediction_id_block') from generate_series(1, $1)")
        .bind(blocks)
        .fetch_all(pool)
        .await
}

/// Stores requests' predictions, one row each, with one binary `COPY` (and one commit). `first`
/// gives each request's first id (its ids are consecutive).
pub async fn copy_in(pool: &PgPool, rows: &[(i64, &NewPredictions)]) -> sqlx::Result<u64> {
    let mut conn = pool.acquire().await?;
    copy_in_on(&mut conn, rows).await
}

/// [`copy_in`] on a connection (inside a transaction: a batch job's chunk).
pub async fn copy_in_on(
    conn: &mut sqlx::PgConnection,
    rows: &[(i64, &NewPredictions)],
) -> sqlx::Result<u64> {
    let data = copy_data(rows);
    let mut copy = conn
        .copy_in_raw(
            "copy prediction (id, n, model_id, version_id, user_id, token_id, latency_us, source,
                              x, inputs, label, value, proba, outputs, shadow_of)
             from stdin (format binary)",
        )
        .await?;
    copy.send(data).await?;
    copy.finish().await
}

/// The rows in Postgres' binary `COPY` format.
pub(super) fn copy_data(rows: &[(i64, &NewPredictions)]) -> Vec<u8> {
    use copy::*;
    let mut buf = Vec::with_capacity(64 + rows.len() * 160);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for (id, r) in rows {
        buf.extend_from_slice(&15i16.to_be_bytes());
        int8(&mut buf, Some(*id));
        int4(&mut buf, r.n as i32);
        int8(&mut buf, Some(r.model_id));
        int8(&mut buf, Some(r.version_id));
        int8(&mut buf, r.user_id);
        int8(&mut buf, r.token_id);
        int4(&mut buf, r.latency_us);
        text(&mut buf, r.source);
        match &r.inputs {
            StoredInputs::Numbers(x) => {
                float8_array(&mut buf, Some(x));
                null(&mut buf);
            }
            StoredInputs::Json(rows) => {
                null(&mut buf);
                jsonb_array(&mut buf, Some(rows));
            }
        }
        text_array(&mut buf, r.outputs.label.as_deref());
        float8_array(&mut buf, r.outputs.value.as_deref());
        float8_array(&mut buf, r.outputs.proba.as_deref());
        jsonb_array(&mut buf, r.outputs.json.as_deref());
        int8(&mut buf, r.shadow_of);
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// Field encoders for the binary `COPY` format.
mod copy {
    const FLOAT8: u32 = 701;
    const TEXT: u32 = 25;

    pub fn null(buf: &mut Vec<u8>) {
        buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn int8(buf: &mut Vec<u8>, v: Option<i64>) {
        match v {
            Some(v) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&v.to_be_bytes());
            }
            None => null(buf),
        }
    }

    pub fn int4(buf: &mut Vec<u8>, v: i32) {
        buf.extend_from_slice(&4i32.to_be_bytes());
        buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn text(buf: &mut Vec<u8>, v: &str) {
        buf.extend_from_slice(&(v.len() as i32).to_be_bytes());
        buf.extend_from_slice(v.as_bytes());
    }

    /// Writes a field whose length is only known once written.
    pub(super) fn sized(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        let at = buf.len();
        buf.extend_from_slice(&0i32.to_be_bytes());
        body(buf);
        let len = (buf.len() - at - 4) as i32;
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub(super) fn array_header(buf: &mut Vec<u8>, oid: u32, len: usize) {
        buf.extend_from_slice(&1i32.to_be_bytes()); // dimensions
        buf.extend_from_slice(&0i32.to_be_bytes()); // no nulls
        buf.extend_from_slice(&oid.to_be_bytes());
        buf.extend_from_slice(&(len as i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    }

    pub fn float8_array(buf: &mut Vec<u8>, v: Option<&[f64]>) {
        let Some(v) = v else { return null(buf) };
        sized(buf, |buf| {
            array_header(buf, FLOAT8, v.len());
            for x in v {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&x.to_be_bytes());
            }
        });
    }

    pub fn text_array(buf: &mut Vec<u8>, v: Option<&[String]>) {
        let Some(v) = v else { return null(buf) };
        sized(buf, |buf| {
            array_header(buf, TEXT, v.len());
            for s in v {
                text(buf, s);
            }
        });
    }

    pub fn jsonb_array(buf: &mut Vec<u8>, v: Option<&[serde_json::Value]>) {
        let Some(v) = v else { return null(buf) };
        sized(buf, |buf| {
            buf.push(1); // jsonb format version
                         // A Vec<Value> always serialises.
            let _ = serde_json::to_writer(&mut *buf, v);
        });
    }
}
