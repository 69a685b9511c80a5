//! `${VAR}` and `${VAR:-default}` in spec values, replaced from the environment.

/// Replaces the placeholders in `s`. `$${` writes a literal `${`. Returns `Ok(None)` when `s` has
/// no placeholder, `Err` with a message naming a missing variable or a malformed placeholder.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            // Messages never quote the text: the value may be a secret, or a typo in one.
            let at = s[..s.len() - after.len()].chars().count() + 1;
            let end = r.find('}').ok_or_else(|| {
                format!("unclosed `${{` at character {at} (write `$${{` for a literal `${{`)")
            })?;
            let expr = &r[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "the `${{...}}` at character {at} is not a valid variable reference: a name is letters, digits and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (set it, or write `${{{name}:-default}}`)"
                    ));
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// True when `s` is exactly one placeholder, so its value may become a number or boolean.
pub fn is_single_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("${") && t.ends_with('}') && t[2..].find('}') == Some(t.len() - 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example".into()),
            "N" => Some("5".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_errors_never_echo_the_value() {
        for raw in [
            "hunter2${oops",
            "${BAD-NAME:-hunter2}",
            "pre-hunter2-${ x }",
            "${:-hunter2}",
        ] {
            let e = interpolate(raw, &env).expect_err(raw);
            sluice_test_kit::assert_hidden(&e, &["hunter2", "BAD-NAME"]);
            assert!(e.contains("character"), "{e}");
        }
    }

    #[test]
    fn replaces_and_defaults() {
        assert_eq!(interpolate("no vars", &env), Ok(None));
        assert_eq!(
            interpolate("http://${HOST}:${PORT:-4567}/", &env),
            Ok(Some("http://example:4567/".into()))
        );
        assert_eq!(
            interpolate("$${HOST} $5", &env),
            Ok(Some("${HOST} $5".into()))
        );
        assert!(
            interpolate("${MISSING}", &env)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(
            interpolate("${HOST", &env)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            interpolate("${1X}", &env)
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(is_single_placeholder("${N}"));
        assert!(!is_single_placeholder("${N}${N}"));
    }
}
