//! One batch of records → the `values.append` calls that carry it, and what Google's answer says
//! about where the rows went.

use super::{MAX_BODY, MAX_ROWS, api, layout};
use crate::Record;

/// The field names of a batch, in config order (every record of a destination has the same).
pub(super) fn field_names(records: &[Record]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in records {
        for (name, _) in &r.fields {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    names
}

/// Splits rows into calls of at most [`MAX_ROWS`] rows and [`MAX_BODY`] bytes of JSON (a single
/// larger row goes alone).
pub(super) fn chunks(rows: &[(usize, layout::Row)]) -> Vec<&[(usize, layout::Row)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, row)) in rows.iter().enumerate() {
        let bytes = serde_json::to_string(&row.cells).map_or(0, |s| s.len()) + 1;
        if i > start && (i - start >= MAX_ROWS || size + bytes > MAX_BODY) {
            out.push(&rows[start..i]);
            start = i;
            size = 0;
        }
        size += bytes;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Warnings about where Google put the rows: anywhere but from column A (its table detection
/// starts at the first non-blank cell, so a blank A1 shifts every row), or not all of them.
pub(super) fn placement_warnings(body: &str, sent: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Some(updates) = serde_json::from_str::<api::AppendResponse>(body)
        .ok()
        .and_then(|r| r.updates)
    else {
        return out;
    };
    if let Some(range) = updates.updated_range {
        let cells = range.rsplit_once('!').map_or(range.as_str(), |(_, c)| c);
        let from_a = cells.starts_with('A') && cells[1..].starts_with(|c: char| c.is_ascii_digit());
        if !from_a {
            out.push(format!(
                "Google placed the rows at {range}, not from column A: give cell A1 a header so columns line up"
            ));
        }
    }
    if let Some(rows) = updates.updated_rows
        && rows != sent as u64
    {
        out.push(format!(
            "Google reports {rows} rows appended for the {sent} sent together"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> (usize, layout::Row) {
        (
            0,
            layout::Row {
                cells: cells.iter().map(|c| c.to_string()).collect(),
                warnings: Vec::new(),
            },
        )
    }

    #[test]
    fn batches_split_by_rows_and_by_size() {
        let rows: Vec<_> = (0..1200).map(|_| row(&["a", "b"])).collect();
        let sizes: Vec<usize> = chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [500, 500, 200]);

        let big = "x".repeat(700_000);
        let rows: Vec<_> = (0..5).map(|_| row(&[&big])).collect();
        let sizes: Vec<usize> = chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);

        let huge = "x".repeat(3_000_000);
        let rows = vec![row(&[&huge]), row(&["a"])];
        let sizes: Vec<usize> = chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [1, 1]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn rows_placed_off_column_a_are_flagged() {
        let at = |r: &str| {
            placement_warnings(
                &serde_json::json!({"updates": {"updatedRange": r, "updatedRows": 3}}).to_string(),
                3,
            )
        };
        assert!(at("'Participations'!A5:D7").is_empty());
        assert!(at("Sheet1!A10").is_empty());
        assert_eq!(at("'Participations'!B5:E7").len(), 1);
        assert_eq!(at("Sheet1!AB5:AC5").len(), 1);
        assert!(placement_warnings("not json", 1).is_empty());
        let short = serde_json::json!({"updates": {"updatedRange": "T!A2:B3", "updatedRows": 2}});
        assert_eq!(placement_warnings(&short.to_string(), 3).len(), 1);
    }
}
