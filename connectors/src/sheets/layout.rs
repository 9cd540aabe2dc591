//! Where each field lands in a row: header matching, Google's cell limit, formula prefixing, A1
//! notation. Pure functions, so every rule is tested without a network.

use std::collections::HashMap;

use super::ValueInput;

/// Google refuses a cell longer than this many characters.
pub const CELL_LIMIT: usize = 50_000;

/// A header cell or field name as matched: trimmed and case-insensitive.
pub fn normalize(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Each named header cell's column; a name that appears twice goes to its first column.
pub fn column_map(header: &[String]) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, cell) in header.iter().enumerate() {
        let key = normalize(cell);
        if !key.is_empty() {
            map.entry(key).or_insert(i);
        }
    }
    map
}

/// What to do with row 1 before rows can go under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPlan {
    /// Row 1 once the plan is carried out.
    pub header: Vec<String>,
    /// Cells to write into row 1 first: the first column's index and the names.
    pub write: Option<(usize, Vec<String>)>,
    /// Fields with no header cell that will not get one (`add_missing_columns = false`).
    pub missing: Vec<String>,
}

/// Plans row 1 for `fields` (in config order): an empty tab gets every field as its header; a
/// field with no header cell gets one at the end when `add_missing`, else it is `missing`.
pub fn plan_header(header: &[String], fields: &[&str], add_missing: bool) -> HeaderPlan {
    let mut absent: Vec<String> = Vec::new();
    let map = column_map(header);
    for f in fields {
        let key = normalize(f);
        if !map.contains_key(&key) && !absent.iter().any(|a| normalize(a) == key) {
            absent.push((*f).to_string());
        }
    }
    if map.is_empty() {
        // An empty tab (or one whose row 1 is blank): the fields become the header.
        return HeaderPlan {
            header: absent.clone(),
            write: (!absent.is_empty()).then_some((0, absent)),
            missing: Vec::new(),
        };
    }
    if absent.is_empty() {
        return HeaderPlan {
            header: header.to_vec(),
            write: None,
            missing: Vec::new(),
        };
    }
    if add_missing {
        let mut grown = header.to_vec();
        grown.extend(absent.iter().cloned());
        HeaderPlan {
            header: grown,
            write: Some((header.len(), absent)),
            missing: Vec::new(),
        }
    } else {
        HeaderPlan {
            header: header.to_vec(),
            write: None,
            missing: absent,
        }
    }
}

/// One row ready to send, and what was changed to make it fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cells: Vec<String>,
    pub warnings: Vec<String>,
}

/// The fields in config order (`columns = "order"`, and the offline preview).
pub fn row_in_order(fields: &[(String, String)], input: ValueInput) -> Row {
    let mut warnings = Vec::new();
    let cells = fields
        .iter()
        .map(|(name, value)| cell(name, value, input, &mut warnings))
        .collect();
    Row { cells, warnings }
}

/// Each field under its header cell, empty cells under headers with no field. A field with no
/// column is an error naming it (the caller added the columns it could).
pub fn row_by_header(
    fields: &[(String, String)],
    columns: &HashMap<String, usize>,
    input: ValueInput,
) -> Result<Row, Vec<String>> {
    let mut placed: Vec<(usize, &str, &str)> = Vec::with_capacity(fields.len());
    let mut missing = Vec::new();
    for (name, value) in fields {
        match columns.get(&normalize(name)) {
            Some(&col) => placed.push((col, name, value)),
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let width = placed.iter().map(|(c, _, _)| c + 1).max().unwrap_or(0);
    let mut cells = vec![String::new(); width];
    let mut warnings = Vec::new();
    for (col, name, value) in placed {
        cells[col] = cell(name, value, input, &mut warnings);
    }
    Ok(Row { cells, warnings })
}

/// One value as sent: cut to Google's limit, and kept as text in `user_entered` mode when it
/// would otherwise run as a formula (`=HYPERLINK(…)` from a participant).
pub fn cell(name: &str, value: &str, input: ValueInput, warnings: &mut Vec<String>) -> String {
    let prefix = input == ValueInput::UserEntered && value.starts_with(['=', '+', '-', '@']);
    // The apostrophe counts towards the limit only to be safe; Sheets does not store it.
    let limit = if prefix { CELL_LIMIT - 1 } else { CELL_LIMIT };
    let value = match value.char_indices().nth(limit) {
        Some((end, _)) => {
            warnings.push(format!(
                "field {name:?} was cut from {} to {limit} characters (Google's cell limit)",
                value.chars().count()
            ));
            &value[..end]
        }
        None => value,
    };
    if prefix {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

/// What `check --online` says about row 1: where each field goes, which columns stay empty.
/// True with it when a delivery would fail (a field with no column it may add).
pub fn header_report(header: &[String], fields: &[&str], add_missing: bool) -> (Vec<String>, bool) {
    let map = column_map(header);
    if map.is_empty() {
        return (
            vec![format!(
                "the tab has no header row: the first delivery writes it: {}",
                fields.join(", ")
            )],
            false,
        );
    }
    let mut lines = Vec::new();
    let mut fatal = false;
    let mut next = header.len();
    let mut used = vec![false; header.len()];
    for f in fields {
        match map.get(&normalize(f)) {
            Some(&c) => {
                used[c] = true;
                lines.push(format!("{f} → column {} {:?}", column_letter(c), header[c]));
            }
            None if add_missing => {
                lines.push(format!(
                    "{f} → no header cell yet: the first delivery adds it as column {}",
                    column_letter(next)
                ));
                next += 1;
            }
            None => {
                fatal = true;
                lines.push(format!(
                    "{f} → NO header cell, and add_missing_columns = false: deliveries will fail"
                ));
            }
        }
    }
    let empty: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|(i, h)| !used[*i] && !h.trim().is_empty())
        .map(|(i, h)| format!("{} {h:?}", column_letter(i)))
        .collect();
    if !empty.is_empty() {
        lines.push(format!("left empty: {}", empty.join(", ")));
    }
    (lines, fatal)
}

/// What `check --online` says in `order` mode.
pub fn order_report(fields: &[&str]) -> String {
    let cols: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{} {f}", column_letter(i)))
        .collect();
    format!(
        "columns = \"order\": {} (row 1 is not read)",
        cols.join(", ")
    )
}

/// `0` → `A`, `25` → `Z`, `26` → `AA`.
pub fn column_letter(index: usize) -> String {
    let mut n = index + 1;
    let mut out = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        out.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A range on `sheet` in A1 notation; the title is always quoted, quotes in it doubled.
pub fn a1(sheet: &str, cells: &str) -> String {
    format!("'{}'!{cells}", sheet.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn fields(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn matches_trimmed_case_insensitive_headers_in_the_sheets_order() {
        let header = strings(&[" Campaign", "Notes", "EMAIL ", "", "Name", "email"]);
        let map = column_map(&header);
        let row = row_by_header(
            &fields(&[("email", "a@b"), ("name", "Ann"), ("campaign", "Quiz")]),
            &map,
            ValueInput::Raw,
        )
        .unwrap();
        assert_eq!(row.cells, strings(&["Quiz", "", "a@b", "", "Ann"]));
        assert!(row.warnings.is_empty());
    }

    #[test]
    fn a_field_without_a_column_is_named() {
        let map = column_map(&strings(&["email"]));
        let err = row_by_header(
            &fields(&[("email", "a"), ("city", "b")]),
            &map,
            ValueInput::Raw,
        )
        .unwrap_err();
        assert_eq!(err, ["city"]);
    }

    #[test]
    fn plans_the_header_row() {
        // Empty tab: every field, in config order.
        let p = plan_header(&[], &["email", "name"], true);
        assert_eq!(p.header, strings(&["email", "name"]));
        assert_eq!(p.write, Some((0, strings(&["email", "name"]))));
        // A blank row 1 counts as empty, whatever add_missing says.
        let p = plan_header(&strings(&["", " "]), &["email"], false);
        assert_eq!(p.write, Some((0, strings(&["email"]))));
        // Missing columns go at the end.
        let p = plan_header(
            &strings(&["Email", "Notes"]),
            &["email", "city", "zip"],
            true,
        );
        assert_eq!(p.header, strings(&["Email", "Notes", "city", "zip"]));
        assert_eq!(p.write, Some((2, strings(&["city", "zip"]))));
        assert!(p.missing.is_empty());
        // …or are reported.
        let p = plan_header(&strings(&["Email"]), &["email", "city"], false);
        assert_eq!(p.write, None);
        assert_eq!(p.missing, ["city"]);
        // Nothing to do.
        let p = plan_header(&strings(&["EMAIL"]), &["email"], false);
        assert_eq!((p.write, p.missing.len()), (None, 0));
    }

    #[test]
    fn formulas_are_kept_as_text_only_when_sheets_would_parse_them() {
        let mut w = Vec::new();
        for v in ["=HYPERLINK(\"x\")", "+32 470", "-1", "@me"] {
            assert_eq!(
                cell("f", v, ValueInput::UserEntered, &mut w),
                format!("'{v}")
            );
            assert_eq!(cell("f", v, ValueInput::Raw, &mut w), v);
        }
        assert_eq!(cell("f", "a=b", ValueInput::UserEntered, &mut w), "a=b");
        assert!(w.is_empty());
    }

    #[test]
    fn long_values_are_cut_on_characters_with_a_warning() {
        let mut w = Vec::new();
        let long = "é".repeat(CELL_LIMIT + 10);
        let out = cell("comment", &long, ValueInput::Raw, &mut w);
        assert_eq!(out.chars().count(), CELL_LIMIT);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("\"comment\"") && w[0].contains("50000"),
            "{w:?}"
        );
        let out = cell("f", &format!("={long}"), ValueInput::UserEntered, &mut w);
        assert_eq!(out.chars().count(), CELL_LIMIT);
        assert!(out.starts_with("'="));
        let exact = "x".repeat(CELL_LIMIT);
        let mut w = Vec::new();
        assert_eq!(cell("f", &exact, ValueInput::Raw, &mut w), exact);
        assert!(w.is_empty());
    }

    #[test]
    fn reports_where_fields_go() {
        let header = strings(&["Email", "", "Notes", "email"]);
        let (lines, fatal) = header_report(&header, &["EMAIL", "city"], true);
        assert_eq!(
            lines,
            [
                "EMAIL → column A \"Email\"",
                "city → no header cell yet: the first delivery adds it as column E",
                "left empty: C \"Notes\", D \"email\"",
            ]
        );
        assert!(!fatal);
        let (lines, fatal) = header_report(&header, &["city"], false);
        assert!(fatal);
        assert!(lines[0].starts_with("city → NO header cell"), "{lines:?}");
        let (lines, fatal) = header_report(&[], &["a", "b"], false);
        assert_eq!(
            lines,
            ["the tab has no header row: the first delivery writes it: a, b"]
        );
        assert!(!fatal);
        assert_eq!(
            order_report(&["a", "b"]),
            "columns = \"order\": A a, B b (row 1 is not read)"
        );
    }

    #[test]
    fn a1_notation() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(column_letter(701), "ZZ");
        assert_eq!(column_letter(702), "AAA");
        assert_eq!(a1("It's here", "A1"), "'It''s here'!A1");
    }
}
