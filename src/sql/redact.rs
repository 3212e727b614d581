//! A statement as typed, with the value of every secret option
//! (`'aws.secret_access_key' '...'`) replaced: what may be kept of SQL text — a table's
//! definition, the CLI's history — without keeping credentials.

use crate::storage::config::is_secret_option;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The replacement of a secret value.
pub const REDACTED: &str = "<redacted>";

/// `sql` with the value following each secret option key replaced by [`REDACTED`];
/// everything else is kept as typed. Keys are read from the tokens in every quoting
/// DataFusion accepts (`'aws.secret_access_key'`, `aws.secret_access_key`,
/// `"aws"."secret_access_key"`, any cloud's aliases), and so are values: a quoted string of
/// any kind is replaced whole, an unquoted value up to the `,` or `)` that ends it; `=`
/// between key and value (`SET`-like forms) is allowed. Text that does not tokenise is
/// kept only up to its first quote.
pub fn redact_secrets(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // Unbalanced quotes: keep nothing that could be a value.
        return sql
            .split(['\'', '"'])
            .next()
            .unwrap_or_default()
            .to_string();
    };
    let toks: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some((key, next)) = read_key(&toks, i) else {
            i += 1;
            continue;
        };
        i = next;
        if !is_secret_option(&key) {
            continue;
        }
        if matches!(toks.get(i).map(|t| &t.token), Some(Token::Eq)) {
            i += 1;
        }
        let Some(first) = toks.get(i) else { break };
        let last = if is_quoted(&first.token) {
            i
        } else {
            // Unquoted: everything up to the end of the option.
            let mut j = i;
            while toks.get(j + 1).is_some_and(|t| !ends_value(&t.token)) {
                j += 1;
            }
            j
        };
        if ends_value(&first.token) {
            continue;
        }
        cut.push((
            offset(sql, first.span.start),
            offset(sql, toks[last].span.end),
        ));
        i = last + 1;
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

/// The option key starting at token `i` — words and strings joined by `.` — and the index
/// of the token after it.
fn read_key(toks: &[&TokenWithSpan], i: usize) -> Option<(String, usize)> {
    let part = |t: &Token| match t {
        Token::Word(w) => Some(w.value.clone()),
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(s.clone()),
        _ => None,
    };
    let mut key = part(&toks.get(i)?.token)?;
    let mut j = i + 1;
    while let (Some(Token::Period), Some(p)) = (
        toks.get(j).map(|t| &t.token),
        toks.get(j + 1).and_then(|t| part(&t.token)),
    ) {
        key.push('.');
        key.push_str(&p);
        j += 2;
    }
    Some((key, j))
}

/// A value that is one quoted token.
fn is_quoted(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.quote_style.is_some(),
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => true,
        _ => false,
    }
}

/// A token that ends an option's value.
fn ends_value(t: &Token) -> bool {
    matches!(
        t,
        Token::Comma | Token::RParen | Token::SemiColon | Token::EOF
    )
}

/// Byte offset of a tokenizer location (1-based line and character column).
pub(crate) fn offset(sql: &str, loc: Location) -> usize {
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

    #[test]
    fn every_quoting_of_keys_and_values_is_redacted() {
        let secret = "Sup3rS3cret";
        for sql in [
            format!("OPTIONS (aws.secret_access_key '{secret}')"),
            format!("OPTIONS ('aws.secret_access_key' {secret})"),
            format!("OPTIONS ('aws.secret_access_key' \"{secret}\")"),
            format!("OPTIONS (\"aws\".\"secret_access_key\" '{secret}')"),
            format!("OPTIONS ('aws_secret_access_key' E'{secret}')"),
            format!("OPTIONS ('azure.account_key' {secret}/x+y=z, 'aws.region' 'r')"),
            format!("OPTIONS ('gcp.service_account_key' $${secret}$$)"),
            format!("SET aws.secret_access_key = '{secret}'"),
            format!("OPTIONS (AWS.SECRET_ACCESS_KEY {secret}.part)"),
        ] {
            let r = redact_secrets(&sql);
            assert!(!r.contains(secret) && r.contains(REDACTED), "{sql} -> {r}");
        }
        let kept =
            redact_secrets("OPTIONS ('aws.secret_access_key' 'x', 'aws.region' 'eu-west-1')");
        assert!(kept.ends_with("'aws.region' 'eu-west-1')"), "{kept}");
    }
}
