//! A statement as typed, with the value of every secret option
//! (`'aws.secret_access_key' '...'`) replaced: what may be kept of SQL text — a table's
//! definition, the CLI's history — without keeping credentials.

use crate::storage::config::is_secret_option;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

/// The replacement of a secret value.
pub const REDACTED: &str = "<redacted>";

/// `sql` with the string literal following each secret option key replaced by
/// [`REDACTED`]; everything else is kept as typed. Text that does not tokenise is kept
/// only up to its first quote.
pub fn redact_secrets(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // Unbalanced quotes: keep nothing that could be a value.
        return sql.split('\'').next().unwrap_or_default().to_string();
    };
    let mut secret_next = false;
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for t in &tokens {
        match &t.token {
            Token::SingleQuotedString(_) if secret_next => {
                cut.push((offset(sql, t.span.start), offset(sql, t.span.end)));
                secret_next = false;
            }
            Token::SingleQuotedString(key) => secret_next = is_secret_option(key),
            Token::Whitespace(_) | Token::Comma => {}
            _ => secret_next = false,
        }
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (start, end) in cut {
        out.push_str(&sql[at..start]);
        out.push_str(&format!("'{REDACTED}'"));
        at = end;
    }
    out.push_str(&sql[at..]);
    out
}

/// Byte offset of a tokenizer location (1-based line and character column).
fn offset(sql: &str, loc: Location) -> usize {
    let line_start: usize = sql
        .split_inclusive('\n')
        .take(loc.line.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    let line = &sql[line_start..];
    line.char_indices()
        .nth(loc.column.saturating_sub(1) as usize)
        .map_or(sql.len(), |(i, _)| line_start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_option_values_are_replaced_and_the_rest_is_kept() {
        let sql = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://b/t.parquet' \
                   OPTIONS ('aws.access_key_id' 'AKIAEXAMPLE', 'aws.secret_access_key' 'S3cr3t/Value', \
                   'aws.region' 'eu-west-1', 'AZURE.SAS_TOKEN' 'sv=2020&sig=abc')";
        let r = redact_secrets(sql);
        assert!(!r.contains("S3cr3t") && !r.contains("sig=abc"), "{r}");
        assert!(r.contains("'aws.secret_access_key' '<redacted>'"), "{r}");
        assert!(
            r.contains("'AKIAEXAMPLE'") && r.contains("'eu-west-1'"),
            "{r}"
        );
        assert!(
            r.starts_with("CREATE EXTERNAL TABLE t STORED AS PARQUET"),
            "{r}"
        );
    }

    #[test]
    fn statements_without_secrets_are_unchanged() {
        let sql = "SELECT 'aws.region', 'x' FROM t WHERE a = 'it''s'";
        assert_eq!(redact_secrets(sql), sql);
    }

    #[test]
    fn values_over_several_lines_and_after_unicode_are_found() {
        let sql = "-- ключ\nCREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'azure://c/t.csv'\nOPTIONS (\n  'azure.account_key'\n  'a2V5==' )";
        let r = redact_secrets(sql);
        assert_eq!(
            r,
            "-- ключ\nCREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'azure://c/t.csv'\nOPTIONS (\n  'azure.account_key'\n  '<redacted>' )"
        );
    }

    #[test]
    fn unbalanced_quotes_keep_nothing_after_the_first_quote() {
        assert_eq!(
            redact_secrets("OPTIONS ('aws.secret_access_key' 'abc"),
            "OPTIONS ("
        );
    }
}
