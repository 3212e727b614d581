//! The query vector of `vector_search(...)` planned straight to a constant.
//!
//! DataFusion plans `[0.1, 0.2, ...]` as `make_array(...)`, then plans, type-coerces and
//! const-folds it element by element; for a 384-number query vector that is most of a
//! `vector_search` query's planning time. [`sql_numeric_array`] reads the query vector of
//! `vector_search(...)` from the SQL syntax tree into the constant `make_array` folds to
//! (`List<Int64>` when every element is an integer, else `List<Float64>`); every other array
//! literal is DataFusion's.
//!
//! Parsing costs more still: for every number sqlparser first tries to read a type name
//! (for typed strings like `DATE '...'`) and formats the failure. [`fold_query_vectors`]
//! spares `JammiSession::sql` that: before parsing, it rewrites the tokens of a
//! `vector_search` query vector to the equivalent string form `'[0.1,0.2,...]'`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::Field;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{Array, Expr as SqlExpr, UnaryOperator, Value};
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan};

/// The table function whose query argument is folded.
const VECTOR_SEARCH: &str = "vector_search";

/// One element of a numeric array literal, as DataFusion's SQL planner types it.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// The constant `make_array(nums...)` folds to.
fn numeric_list(nums: &[Num]) -> ScalarValue {
    let ints: Option<Vec<i64>> = nums
        .iter()
        .map(|n| match n {
            Num::Int(v) => Some(*v),
            Num::Float(_) => None,
        })
        .collect();
    let values: ArrayRef = match ints {
        Some(ints) => Arc::new(Int64Array::from(ints)),
        None => Arc::new(Float64Array::from_iter_values(nums.iter().map(
            |n| match n {
                Num::Int(v) => *v as f64,
                Num::Float(v) => *v,
            },
        ))),
    };
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    let list = ListArray::new(
        field,
        OffsetBuffer::from_lengths([values.len()]),
        values,
        None,
    );
    ScalarValue::List(Arc::new(list))
}

/// The number DataFusion plans a SQL numeric literal (`0.5`, `-3`, `1e-4`) to, when it is
/// an `Int64` or a `Float64` (its `parse_sql_number` without `parse_float_as_decimal`);
/// `None` for anything else (`UInt64`, underscores, suffixes, non-numbers).
fn sql_number(e: &SqlExpr) -> Option<Num> {
    let (digits, negative) = match e {
        SqlExpr::Value(v) => (plain_number(&v.value)?, false),
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            SqlExpr::Value(v) => (plain_number(&v.value)?, true),
            _ => return None,
        },
        _ => return None,
    };
    if let Ok(u) = digits.parse::<u64>() {
        // DataFusion parses "-<digits>" as an i64 first, and "<digits>" as i64 then u64.
        return if negative {
            0i64.checked_sub_unsigned(u).map(Num::Int)
        } else {
            i64::try_from(u).ok().map(Num::Int)
        };
    }
    let v: f64 = digits.parse().ok()?;
    // Negation is exact, so this is the parse of "-<digits>".
    Some(Num::Float(if negative { -v } else { v }))
}

fn plain_number(v: &Value) -> Option<&str> {
    match v {
        Value::Number(s, false) if !s.contains('_') => Some(s),
        _ => None,
    }
}

/// The folded constant of an array literal of plain numbers, if it is one.
pub(crate) fn sql_numeric_array(a: &Array) -> Option<ScalarValue> {
    if a.elem.is_empty() {
        return None;
    }
    let nums: Option<Vec<Num>> = a.elem.iter().map(sql_number).collect();
    nums.map(|n| numeric_list(&n))
}

/// Integer tokens with more digits are not folded: above 2^53 the string form would round
/// them to `f32` once where the array form rounds through `f64`.
const MAX_INT_DIGITS: usize = 15;

/// `tokens` with the query vector of each `vector_search('<table>', [n, ...]` call — an
/// array of plain numbers — replaced by one string token holding the same numbers as a
/// JSON array, which `vector_search` reads to the same `f32` values (correctly rounded
/// through `f64`, as DataFusion plans a numeric literal). Anything else (other
/// arguments, non-numbers, long integers, numbers that are not JSON) is left as it is.
pub fn fold_query_vectors(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut folds = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match query_vector_at(&tokens, i) {
            Some(fold) => {
                i = fold.end + 1;
                folds.push(fold);
            }
            None => i += 1,
        }
    }
    if folds.is_empty() {
        return tokens;
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut folds = folds.into_iter().peekable();
    let mut skip_to = None;
    for (i, t) in tokens.into_iter().enumerate() {
        if let Some(end) = skip_to {
            if i == end {
                skip_to = None;
            }
            continue;
        }
        match folds.next_if(|f| f.start == i) {
            Some(f) => {
                out.push(TokenWithSpan::new(
                    Token::SingleQuotedString(f.text),
                    Span::new(t.span.start, f.end_location),
                ));
                skip_to = Some(f.end);
            }
            None => out.push(t),
        }
    }
    out
}

/// A query vector found at tokens `start..=end` (`[` to `]`).
struct Fold {
    start: usize,
    end: usize,
    end_location: Location,
    text: String,
}

/// The query vector of a `vector_search(` call whose name is at token `i`.
fn query_vector_at(tokens: &[TokenWithSpan], i: usize) -> Option<Fold> {
    let next =
        |j: usize| (j..tokens.len()).find(|&k| !matches!(tokens[k].token, Token::Whitespace(_)));
    match &tokens[i].token {
        Token::Word(w) if w.quote_style.is_none() && w.value == VECTOR_SEARCH => {}
        _ => return None,
    }
    let j = next(i + 1).filter(|&j| tokens[j].token == Token::LParen)?;
    let j = next(j + 1).filter(|&j| matches!(tokens[j].token, Token::SingleQuotedString(_)))?;
    let j = next(j + 1).filter(|&j| tokens[j].token == Token::Comma)?;
    let start = next(j + 1).filter(|&j| tokens[j].token == Token::LBracket)?;
    let mut text = String::from("[");
    let mut j = start;
    loop {
        j = next(j + 1)?;
        let negative = tokens[j].token == Token::Minus;
        if negative {
            j = next(j + 1)?;
        }
        match &tokens[j].token {
            Token::Number(n, false) if foldable_number(n) => {
                if text.len() > 1 {
                    text.push(',');
                }
                if negative {
                    text.push('-');
                }
                text.push_str(n);
            }
            _ => return None,
        }
        j = next(j + 1)?;
        match tokens[j].token {
            Token::Comma => {}
            Token::RBracket => break,
            _ => return None,
        }
    }
    text.push(']');
    Some(Fold {
        start,
        end: j,
        end_location: tokens[j].span.end,
        text,
    })
}

/// A JSON number that parses to a finite `f64`, and an integer of at most
/// [`MAX_INT_DIGITS`] digits.
fn foldable_number(n: &str) -> bool {
    let b = n.as_bytes();
    let digits = |mut k: usize| {
        let s = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        (k, k - s)
    };
    let (mut k, int_digits) = digits(0);
    if int_digits == 0 || (int_digits > 1 && b[0] == b'0') {
        return false;
    }
    let mut integer = true;
    if k < b.len() && b[k] == b'.' {
        let (e, d) = digits(k + 1);
        if d == 0 {
            return false;
        }
        (k, integer) = (e, false);
    }
    if k < b.len() && (b[k] == b'e' || b[k] == b'E') {
        k += 1;
        if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        let (e, d) = digits(k);
        if d == 0 {
            return false;
        }
        (k, integer) = (e, false);
    }
    k == b.len()
        && if integer {
            int_digits <= MAX_INT_DIGITS
        } else {
            n.parse::<f64>().is_ok_and(f64::is_finite)
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::prelude::SessionContext;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn fold(sql: &str) -> String {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        fold_query_vectors(tokens)
            .iter()
            .map(|t| t.token.to_string())
            .collect()
    }

    #[test]
    fn the_query_vector_of_a_vector_search_call_becomes_its_string_form() {
        assert_eq!(
            fold("SELECT * FROM vector_search('t', [0.5, -1e-3,\n 2 ,-0.25], 3)"),
            "SELECT * FROM vector_search('t', '[0.5,-1e-3,2,-0.25]', 3)"
        );
        // Every call of a statement, and nothing else.
        assert_eq!(
            fold(
                "SELECT a.id FROM vector_search('t', [1.5], 3) a \
                 JOIN vector_search('u', [2.5, 3], 3, 'exact=true') b ON a.id = b.id \
                 WHERE cosine_distance(a.e, [1.5]) < 1"
            ),
            "SELECT a.id FROM vector_search('t', '[1.5]', 3) a \
             JOIN vector_search('u', '[2.5,3]', 3, 'exact=true') b ON a.id = b.id \
             WHERE cosine_distance(a.e, [1.5]) < 1"
        );
    }

    #[test]
    fn anything_but_an_array_of_plain_numbers_is_left_to_the_parser() {
        for sql in [
            "SELECT * FROM vector_search('t', [0.5, x], 3)",
            "SELECT * FROM vector_search('t', [0.5, NULL], 3)",
            "SELECT * FROM vector_search('t', [0.5, +1], 3)",
            "SELECT * FROM vector_search('t', [[0.5]], 3)",
            "SELECT * FROM vector_search('t', [], 3)",
            "SELECT * FROM vector_search('t', [.5, 1], 3)",
            "SELECT * FROM vector_search('t', [1e999], 3)",
            "SELECT * FROM vector_search('t', [1234567890123456], 3)",
            "SELECT * FROM vector_search('t', [0.5 1], 3)",
            "SELECT * FROM \"vector_search\"('t', [0.5], 3)",
            "SELECT * FROM VECTOR_SEARCH('t', [0.5], 3)",
            "SELECT * FROM vector_search(name, [0.5], 3)",
            "SELECT * FROM vector_search('t', '[0.5]', 3)",
        ] {
            assert_eq!(fold(sql), sql, "{sql}");
        }
    }

    /// The `f32` values DataFusion's own planning gives an array literal.
    async fn datafusion_values(numbers: &[&str]) -> Vec<f32> {
        let sql = format!("SELECT [{}]", numbers.join(", "));
        let batches = SessionContext::new()
            .sql(&sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let list = batches[0].column(0).as_list::<i32>().value(0);
        let list = datafusion::arrow::compute::cast(&list, &DataType::Float64).unwrap();
        // make_array's Int64 list is cast to f32 directly by vector_search: same as via f64
        // for integers of at most 15 digits.
        list.as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|v| *v as f32)
            .collect()
    }

    #[tokio::test]
    async fn the_string_form_reads_the_same_f32_values_as_datafusion_plans() {
        let numbers = [
            "0.1",
            "-0.0",
            "1e-45",
            "7e-46",
            "3.4028235e38",
            "3.40282356e38",
            "16777217",
            "-123456789012345",
            "0.30000000000000004",
            "1.00000005960464477539062500001",
            "1.000000059604644775390625",
            "-2.5E-8",
            "0.99907196",
        ];
        let want = datafusion_values(&numbers).await;
        let sql = format!(
            "SELECT * FROM vector_search('t', [{}], 3)",
            numbers.join(", ")
        );
        let folded = fold(&sql);
        let text = folded
            .strip_prefix("SELECT * FROM vector_search('t', '")
            .and_then(|r| r.strip_suffix("', 3)"))
            .expect("folded");
        let got = crate::sql::vector_search::args::query_vector_text(text).unwrap();
        assert_eq!(got.len(), want.len());
        for ((g, w), n) in got.iter().zip(&want).zip(numbers) {
            assert_eq!(g.to_bits(), w.to_bits(), "{n}: {g:e} vs {w:e}");
        }
    }
}
