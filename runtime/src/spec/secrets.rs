//! Which keys of the spec hold secrets, found in the schema: a secret's value is hidden in
//! validation errors and `validate --print`.

use std::collections::BTreeSet;

use serde_json::Value;

pub(super) fn collect_secret_keys(v: &Value, out: &mut BTreeSet<String>) {
    collect_secrets_in(v, v, out);
}

fn collect_secrets_in(root: &Value, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                for (k, p) in props {
                    if is_secret_schema(root, p, 0) {
                        out.insert(k.clone());
                    }
                }
            }
            m.values().for_each(|c| collect_secrets_in(root, c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_secrets_in(root, c, out)),
        _ => {}
    }
}

/// A schema is secret when it says `writeOnly: true`, refers to one that does, or is an
/// optional one (`anyOf: [secret, null]`).
fn is_secret_schema(root: &Value, s: &Value, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    if s.get("writeOnly") == Some(&Value::Bool(true)) {
        return true;
    }
    if let Some(target) = s
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
        && is_secret_schema(root, target, depth + 1)
    {
        return true;
    }
    ["anyOf", "oneOf"].iter().any(|k| {
        s.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|alts| alts.iter().any(|a| is_secret_schema(root, a, depth + 1)))
    })
}
