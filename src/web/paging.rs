//! Paging a listing by page number, as the history, the audit log, the users page and the API's
//! prediction list do: fetch one row more than a page to know whether there is a next page.

/// The highest page number anyone may ask for (a guard on the `OFFSET` it becomes).
const MAX_PAGE: i64 = 1_000_000;

/// One page of a listing.
#[derive(Clone, Copy, Debug)]
pub struct Pager {
    /// The page shown, from 1.
    pub page: i64,
    pub per_page: i64,
}

impl Pager {
    /// The page asked for, clamped to `1..=MAX_PAGE`.
    pub fn new(requested: Option<i64>, per_page: i64) -> Self {
        Pager {
            page: requested.unwrap_or(1).clamp(1, MAX_PAGE),
            per_page,
        }
    }

    /// The rows to skip.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }

    /// The rows to fetch: one more than a page, which says whether there is a next page.
    pub fn fetch(&self) -> i64 {
        self.per_page + 1
    }

    /// Cuts the fetched rows to one page; true when there is a next page.
    pub fn cut<T>(&self, rows: &mut Vec<T>) -> bool {
        let more = rows.len() as i64 > self.per_page;
        rows.truncate(self.per_page as usize);
        more
    }

    /// The links to the previous and the next page, made by `link` from a page number.
    pub fn links(
        &self,
        more: bool,
        link: impl Fn(i64) -> String,
    ) -> (Option<String>, Option<String>) {
        (
            (self.page > 1).then(|| link(self.page - 1)),
            more.then(|| link(self.page + 1)),
        )
    }
}

/// `base?k=v&…` with the pairs whose value is not blank, URL-encoded.
pub fn link(base: &str, pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (*k, v.trim()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let query = serde_urlencoded::to_string(kept).unwrap_or_default();
    if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{query}")
    }
}

/// A date filter field: blank is no filter; anything else must be `YYYY-MM-DD`. The error names
/// the field by `label`.
pub fn date_field(label: &str, value: &str) -> Result<Option<time::Date>, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match value.trim() {
        "" => Ok(None),
        s => time::Date::parse(s, &format)
            .map(Some)
            .map_err(|_| format!("{label}: enter a date as YYYY-MM-DD.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_clamped_and_cut() {
        let pager = Pager::new(Some(0), 2);
        assert_eq!((pager.page, pager.offset(), pager.fetch()), (1, 0, 3));
        assert_eq!(Pager::new(Some(i64::MAX), 2).page, MAX_PAGE);
        let mut rows = vec![1, 2, 3];
        assert!(pager.cut(&mut rows));
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert!(!pager.cut(&mut rows));
        let pager = Pager::new(Some(3), 2);
        assert_eq!(pager.offset(), 4);
        assert_eq!(
            pager.links(true, |p| p.to_string()),
            (Some("2".into()), Some("4".into()))
        );
        assert_eq!(
            Pager::new(None, 2).links(false, |p| p.to_string()),
            (None, None)
        );
    }

    #[test]
    fn links_keep_what_is_filled_in() {
        assert_eq!(
            link(
                "/admin/audit",
                &[("actor", "ann & bob"), ("action", " "), ("page", "2")]
            ),
            "/admin/audit?actor=ann+%26+bob&page=2"
        );
        assert_eq!(link("/history", &[("model", "")]), "/history");
    }

    #[test]
    fn dates_are_blank_or_iso() {
        assert_eq!(date_field("From", " "), Ok(None));
        assert!(date_field("From", "2026-12-01").unwrap().is_some());
        assert_eq!(
            date_field("To", "01/12/2026"),
            Err("To: enter a date as YYYY-MM-DD.".into())
        );
    }
}
