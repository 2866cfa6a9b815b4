//! The `prediction` table: the log of every prediction made.

use sqlx::types::Json;
use sqlx::PgPool;
use time::{Date, OffsetDateTime};

mod write;

pub use write::{copy_in, copy_in_on, reserve_id_blocks, ID_BLOCK};

/// A request's inputs as stored: rows of the card's features when they are all numbers,
/// otherwise one JSON object per row.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredInputs {
    /// `n` rows of `width` numbers, row after row.
    Numbers(Vec<f64>),
    /// One object (feature name → value) per row.
    Json(Vec<serde_json::Value>),
}

/// A request's outputs as stored: typed arrays when every row has the same shape, otherwise
/// one JSON object per row (`json`, with the typed fields empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredOutputs {
    pub label: Option<Vec<String>>,
    pub value: Option<Vec<f64>>,
    /// `n` rows of class probabilities, in the order of the card's labels.
    pub proba: Option<Vec<f64>>,
    pub json: Option<Vec<serde_json::Value>>,
}

/// The predictions of one request, about to be stored as one row.
#[derive(Clone, Debug)]
pub struct NewPredictions {
    pub model_id: i64,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub source: &'static str,
    /// Per prediction.
    pub latency_us: i32,
    pub n: usize,
    pub inputs: StoredInputs,
    pub outputs: StoredOutputs,
    /// For a shadow's answers: the first id of the live predictions they shadow.
    pub shadow_of: Option<i64>,
}

/// A stored prediction with the names the pages show.
#[derive(Clone, Debug)]
pub struct PredictionRow {
    pub id: i64,
    pub model: String,
    pub version: i32,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub source: String,
    pub inputs: Json<serde_json::Value>,
    pub outputs: Json<serde_json::Value>,
    pub latency_us: i32,
    pub created_at: OffsetDateTime,
}

/// One prediction as read: the slices of its request's row that are its own.
#[derive(sqlx::FromRow)]
struct RawRow {
    id: i64,
    model: String,
    version: i32,
    version_id: i64,
    user_id: Option<i64>,
    username: Option<String>,
    source: String,
    x: Option<Vec<f64>>,
    inputs: Option<Json<serde_json::Value>>,
    label: Option<String>,
    value: Option<f64>,
    proba: Option<Vec<f64>>,
    outputs: Option<Json<serde_json::Value>>,
    latency_us: i32,
    created_at: OffsetDateTime,
}

/// What turns a version's typed arrays back into named values: its card's feature names and
/// labels.
struct Names {
    features: Vec<String>,
    labels: Vec<String>,
}

impl Names {
    fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| i.to_string())
    }
}

/// Versions' names by (database, version id). A version's card never changes once published,
/// so entries need no invalidation; the map is bounded all the same.
static NAMES: std::sync::LazyLock<std::sync::RwLock<NamesByVersion>> =
    std::sync::LazyLock::new(Default::default);

type NamesByVersion = std::collections::HashMap<(String, i64), std::sync::Arc<Names>>;

async fn names(
    pool: &PgPool,
    rows: &[RawRow],
) -> sqlx::Result<std::collections::HashMap<i64, std::sync::Arc<Names>>> {
    let db = super::database_of(pool);
    let mut known = std::collections::HashMap::new();
    let mut ids: Vec<i64> = Vec::new();
    if let Ok(cache) = NAMES.read() {
        for r in rows.iter().filter(|r| r.x.is_some() || r.proba.is_some()) {
            match cache.get(&(db.clone(), r.version_id)) {
                Some(n) => {
                    known.insert(r.version_id, n.clone());
                }
                None => ids.push(r.version_id),
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(known);
    }
    let found: Vec<(i64, Vec<String>, Vec<String>)> = sqlx::query_as(
        "select id,
                array(select f->>'name' from jsonb_array_elements(coalesce(card->'features', '[]')) f),
                array(select jsonb_array_elements_text(coalesce(card->'labels', '[]')))
         from model_version where id = any($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut cache = NAMES.write().ok();
    for (id, features, labels) in found {
        let names = std::sync::Arc::new(Names { features, labels });
        if let Some(cache) = cache.as_mut() {
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert((db.clone(), id), names.clone());
        }
        known.insert(id, names);
    }
    Ok(known)
}

fn number(x: f64) -> serde_json::Value {
    serde_json::json!(x)
}

impl RawRow {
    fn into_row(self, names: Option<&Names>) -> PredictionRow {
        let inputs = match (self.x, self.inputs) {
            (Some(x), _) => {
                let mut row = serde_json::Map::new();
                for (i, v) in x.into_iter().enumerate() {
                    let name = names
                        .and_then(|n| n.features.get(i).cloned())
                        .unwrap_or_else(|| format!("x{i}"));
                    row.insert(name, number(v));
                }
                row.into()
            }
            (None, Some(json)) => json.0,
            (None, None) => serde_json::Value::Null,
        };
        let outputs = match self.outputs {
            Some(json) => json.0,
            None => {
                let mut out = serde_json::Map::new();
                if let Some(label) = self.label {
                    out.insert("label".into(), label.into());
                }
                if let Some(value) = self.value {
                    out.insert("value".into(), number(value));
                }
                if let Some(proba) = self.proba {
                    let probs: serde_json::Map<String, serde_json::Value> = proba
                        .into_iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let name = names.map_or_else(|| i.to_string(), |n| n.label(i));
                            (name, number(p))
                        })
                        .collect();
                    out.insert("probabilities".into(), probs.into());
                }
                out.into()
            }
        };
        PredictionRow {
            id: self.id,
            model: self.model,
            version: self.version,
            version_id: self.version_id,
            user_id: self.user_id,
            username: self.username,
            source: self.source,
            inputs: Json(inputs),
            outputs: Json(outputs),
            latency_us: self.latency_us,
            created_at: self.created_at,
        }
    }
}

async fn rows(pool: &PgPool, raw: Vec<RawRow>) -> sqlx::Result<Vec<PredictionRow>> {
    let names = names(pool, &raw).await?;
    Ok(raw
        .into_iter()
        .map(|r| {
            let n = names.get(&r.version_id).map(|n| &**n);
            r.into_row(n)
        })
        .collect())
}

/// Each prediction of a row: `k` counts from 0, its id is `p.id + k`, and its values are the
/// k-th slices of the row's arrays.
const COLUMNS: &str = "p.id + k as id, m.name as model, v.version, p.version_id, p.user_id,
     u.username, p.source,
     p.x[k * (cardinality(p.x) / p.n) + 1 : (k + 1) * (cardinality(p.x) / p.n)] as x,
     p.inputs -> k as inputs, p.label[k + 1] as label, p.value[k + 1] as value,
     p.proba[k * (cardinality(p.proba) / p.n) + 1 : (k + 1) * (cardinality(p.proba) / p.n)] as proba,
     p.outputs -> k as outputs, p.latency_us, p.created_at";
const FROM: &str = "from prediction p
     cross join lateral generate_series(0, p.n - 1) as k
     join model m on m.id = p.model_id
     join model_version v on v.id = p.version_id
     left join app_user u on u.id = p.user_id";

/// The row holding prediction `$1`: its first id is at most `$1` and within one id block.
const HOLDS: &str = "p.id <= $1 and p.id > $1 - 1024 and $1 < p.id + p.n";

pub async fn find(pool: &PgPool, id: i64) -> sqlx::Result<Option<PredictionRow>> {
    // Ids start at 1; below that `$1 - 1024` could leave bigint's range.
    if id < 1 {
        return Ok(None);
    }
    let sql = format!("select {COLUMNS} {FROM} where {HOLDS} and p.id + k = $1");
    let raw: Vec<RawRow> = sqlx::query_as(&sql).bind(id).fetch_all(pool).await?;
    Ok(rows(pool, raw).await?.into_iter().next())
}

/// The inputs of a version's most recent predictions: at most `limit`, made since `since`.
pub async fn recent_inputs(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<Vec<serde_json::Value>> {
    let sql = format!(
        "select {COLUMNS} {FROM} where p.version_id = $1 and p.created_at >= $2
         order by p.created_at desc, p.id desc, k desc limit $3"
    );
    let raw = sqlx::query_as(&sql)
        .bind(version_id)
        .bind(since)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows(pool, raw)
        .await?
        .into_iter()
        .map(|r| r.inputs.0)
        .collect())
}

/// What feedback needs of a prediction: (version, made at, predicted label, predicted value).
pub async fn predicted(
    pool: &PgPool,
    id: i64,
) -> sqlx::Result<Option<(i64, OffsetDateTime, Option<String>, Option<f64>)>> {
    if id < 1 {
        return Ok(None);
    }
    let sql = format!(
        "select p.version_id, p.created_at,
                coalesce(p.label[($1 - p.id + 1)::int], p.outputs -> ($1 - p.id)::int ->> 'label'),
                coalesce(p.value[($1 - p.id + 1)::int], (p.outputs -> ($1 - p.id)::int ->> 'value')::float8)
         from prediction p where {HOLDS}"
    );
    sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
}

/// Which predictions a listing shows. Dates are inclusive, in UTC.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub model: Option<String>,
    pub from: Option<Date>,
    pub to: Option<Date>,
}

const WHERE: &str = "where ($1::bigint is null or p.user_id = $1)
       and ($2::text is null or p.version_id in
            (select mv.id from model_version mv join model mm on mm.id = mv.model_id where mm.name = $2))
       and ($3::date is null or p.created_at >= $3::date::timestamptz)
       and ($4::date is null or p.created_at < ($4::date + 1)::timestamptz)
       and ($5::text is null or lower(u.username) = lower($5))";

/// One page, newest first; fetches one extra row to tell whether there is a next page.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<PredictionRow>> {
    let sql = format!(
        "select {COLUMNS} {FROM} {WHERE} order by p.created_at desc, p.id desc, k desc offset $6 limit $7"
    );
    let raw = sqlx::query_as(&sql)
        .bind(filter.user_id)
        .bind(filter.model.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.username.as_deref())
        .bind(offset)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows(pool, raw).await
}

/// Where an export's previous page ended: the last row's time and id.
pub type Cursor = (OffsetDateTime, i64);

/// The next page of an export, newest first, after `cursor`. Each page is its own short query
/// with a statement timeout, so an export never holds a connection between pages (while the
/// client reads) and a slow query cannot hold one for long.
pub async fn export_page(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<PredictionRow>> {
    let sql = format!(
        "select {COLUMNS} {FROM} {WHERE}
           and ($6::timestamptz is null or (p.created_at, p.id + k) < ($6, $7))
         order by p.created_at desc, p.id desc, k desc limit $8"
    );
    let raw = sqlx::query_as(&sql)
        .bind(filter.user_id)
        .bind(filter.model.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.username.as_deref())
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map_or(0, |c| c.1))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows(pool, raw).await
}

/// Value columns an export has at most: models with more features (pictures aside) than this
/// between them keep their values in the `inputs` column only.
pub const MAX_EXPORT_FEATURES: usize = 256;

/// The features of the models an export covers (the one it names, else every model), in their
/// cards' order, newest version first, pixels of image models left out: one column each in the
/// CSV, where a missing value is an empty cell. Empty when there are more than
/// [`MAX_EXPORT_FEATURES`].
pub async fn export_features(pool: &PgPool, model: Option<&str>) -> sqlx::Result<Vec<String>> {
    let names: Vec<Option<String>> = sqlx::query_scalar(
        "select f.value->>'name'
         from model m
         join model_version v on v.model_id = m.id
         cross join lateral jsonb_array_elements(coalesce(v.card->'features', '[]'))
              with ordinality as f(value, n)
         where ($1::text is null or m.name = $1)
           and coalesce(f.value->>'type', 'number') <> 'image'
         order by m.name, v.version desc, f.n",
    )
    .bind(model)
    .fetch_all(pool)
    .await?;
    let mut seen = std::collections::HashSet::new();
    let features: Vec<String> = names
        .into_iter()
        .flatten()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    Ok(if features.len() > MAX_EXPORT_FEATURES {
        Vec::new()
    } else {
        features
    })
}

/// Distinct model names in a user's history (all users when `None`), for the filter's select.
pub async fn models_used(pool: &PgPool, user_id: Option<i64>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select m.name from model m
         where exists (select 1 from model_version v join prediction p on p.version_id = v.id
                      where v.model_id = m.id and ($1::bigint is null or p.user_id = $1))
         order by m.name",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}
