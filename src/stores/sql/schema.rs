//! What every lock table must have, whichever dialect made it: Verrou's three columns, so
//! that a Verrou process inserting only those shares the locks, plus nullable columns of
//! ours that a table Verrou created gets added.
//!
//! Each dialect's `schema.rs` reads the catalog, checks it here, and creates the table or adds
//! the missing columns under a lock of its own (a transaction-scoped advisory lock, `GET_LOCK`,
//! `BEGIN IMMEDIATE`), looking again under that lock: two processes starting at once never
//! both create, and a table that is already complete needs no lock and no DDL privilege.

use super::errors::SchemaError;

/// Columns the lock layer cannot work without (Verrou's three).
pub(crate) const REQUIRED: [&str; 3] = ["key", "owner", "expiration"];

/// A column of an existing table, as `(name, data type)`; names in lower case where the
/// dialect ignores their case.
pub(crate) type Column = (String, String);

/// Whether `columns` has one named `name`.
pub(crate) fn has(columns: &[Column], name: &str) -> bool {
    columns.iter().any(|(c, _)| c == name)
}

/// Our nullable columns, `(name, type)`, that the table lacks.
pub(crate) fn missing<'a>(
    columns: &[Column],
    ours: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    ours.iter()
        .filter(|(c, _)| !has(columns, c))
        .copied()
        .collect()
}

/// Checks that the existing table `display` has Verrou's columns, with an `expiration` whose
/// type `expiration_ok` accepts; `quote` is how the dialect quotes a column name. The error
/// names the problem and what to do.
pub(crate) fn check_columns(
    display: &str,
    columns: &[Column],
    quote: char,
    expiration_ok: fn(&str) -> bool,
) -> Result<(), SchemaError> {
    let q = |c: &str| format!("{quote}{c}{quote}");
    for want in REQUIRED {
        match columns.iter().find(|(c, _)| c == want) {
            None => {
                let have: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
                return Err(SchemaError::Rejected(format!(
                    "table {display} exists but has no column {} (it has: {}); it needs {} varchar(255) primary key, {} varchar(255) not null, {} bigint null (epoch ms) — use another table with ?table=NAME",
                    q(want),
                    have.join(", "),
                    q("key"),
                    q("owner"),
                    q("expiration"),
                )));
            }
            Some((_, ty)) if want == "expiration" && !expiration_ok(ty) => {
                return Err(SchemaError::Rejected(format!(
                    "column {} of table {display} has type {ty}; it must be bigint (epoch milliseconds)",
                    q("expiration")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| (n.to_string(), "bigint".to_owned()))
            .collect()
    }

    #[test]
    fn columns_are_checked() {
        let any = |_: &str| true;
        assert!(check_columns("t", &cols(&["key", "owner", "expiration"]), '"', any).is_ok());
        let Err(SchemaError::Rejected(m)) =
            check_columns("s.t", &cols(&["key", "expiration"]), '`', any)
        else {
            panic!("accepted a table without owner");
        };
        assert!(
            m.contains("s.t") && m.contains("`owner`") && m.contains("it has: key, expiration"),
            "{m}"
        );
        assert!(m.contains("?table=NAME"), "{m}");
        let text = vec![
            ("key".into(), "text".into()),
            ("owner".into(), "text".into()),
            ("expiration".into(), "text".into()),
        ];
        let Err(SchemaError::Rejected(m)) = check_columns("t", &text, '"', |ty| ty == "bigint")
        else {
            panic!("accepted a text expiration");
        };
        assert!(m.contains("has type text"), "{m}");
        let ours = [("fence", "bigint"), ("metadata", "text")];
        assert_eq!(
            missing(&cols(&["key", "fence"]), &ours),
            vec![("metadata", "text")]
        );
    }
}
