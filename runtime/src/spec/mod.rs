//! Connector specs: types, the JSON Schema generated from them, loading and validation.
//!
//! Loading is pure and offline until the plugin check: read the YAML (`serde_yaml`) → replace
//! `${VAR}`s → check against the JSON Schema (all errors at once, each located by line, column
//! and key path) → deserialize into [`Spec`] → semantic checks → check each wasm plugin's kind and
//! config against the schema the plugin exports.

mod diagnostic;
mod env;
pub mod plugin;
pub mod reference;
mod secrets;
pub mod source_map;
mod types;
pub mod units;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_connectors::{SinkConfig, SourceConfig};

pub use types::*;
pub use validate::Diagnostic;

use crate::plugin::{PluginCheckError, PluginHost, PluginKind};
use source_map::SourceMap;
use validate::{Issue, SchemaCheck};

/// The JSON Schema of a spec, as `sluice schema` prints it.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_value(&schema).unwrap_or(Value::Bool(true))
}

/// A spec that passed validation. Its `Debug` shows the document with secrets redacted.
#[derive(Clone)]
pub struct LoadedSpec {
    /// The spec file as given.
    pub file: PathBuf,
    /// The spec file's folder: every relative path in the spec is relative to it.
    pub base_dir: PathBuf,
    /// The spec, its relative paths resolved against `base_dir` ([`Spec::resolve_paths`]).
    pub spec: Spec,
    /// The document after `${VAR}` replacement.
    pub doc: Value,
}

impl LoadedSpec {
    /// The resolved document with the values of secret keys replaced, for printing.
    pub fn redacted(&self) -> Value {
        redact(&self.doc, SchemaCheck::global())
    }
}

impl fmt::Debug for LoadedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `doc` holds `${VAR}` values in clear; `spec`'s own Debug hides its secrets.
        f.debug_struct("LoadedSpec")
            .field("file", &self.file)
            .field("base_dir", &self.base_dir)
            .field("spec", &self.spec)
            .field("doc", &self.redacted())
            .finish()
    }
}

fn redact(v: &Value, check: &SchemaCheck) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if check.is_secret_key(k) && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redact(v, check)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| redact(v, check)).collect()),
        other => other.clone(),
    }
}

/// Everything wrong with a spec.
#[derive(Debug, Clone)]
pub struct SpecErrors(pub Vec<Diagnostic>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Loads and fully validates the spec at `path`, plugins included.
pub fn load(path: &Path, host: Option<&PluginHost>) -> Result<LoadedSpec, SpecErrors> {
    load_with(path, host, false)
}

/// Like [`load`]; with `until_caught_up`, also checks that the source has a tip to stop at
/// (`sluice run --until-caught-up`, `sluice validate --until-caught-up`).
pub fn load_with(
    path: &Path,
    host: Option<&PluginHost>,
    until_caught_up: bool,
) -> Result<LoadedSpec, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors(vec![Diagnostic {
            file: file.clone(),
            pos: Default::default(),
            path: String::new(),
            message: format!("cannot read the spec: {e}"),
        }])
    })?;
    let env = |name: &str| std::env::var(name).ok();
    let (mut spec, doc, map) = parse(&file, &text, &env).map_err(SpecErrors)?;
    if until_caught_up && let Some(i) = spec.source.until_caught_up_issue() {
        let issue = Issue {
            pointer: format!("/source/{}", i.path),
            at_key: false,
            message: i.message,
        };
        return Err(SpecErrors(vec![issue.locate(&file, &map)]));
    }
    // One worker's tip is only the shards it holds: leased workers do not stop there.
    if until_caught_up
        && let OffsetsSpec::Dynamodb(d) = &spec.offsets
        && d.leases.is_some()
    {
        let issue = Issue {
            pointer: "/offsets/leases".into(),
            at_key: true,
            message: "`--until-caught-up` reads every shard in one process; workers sharing shards through leases cannot stop at the stream's tip: run one worker without `offsets.leases`".into(),
        };
        return Err(SpecErrors(vec![issue.locate(&file, &map)]));
    }
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    spec.resolve_paths(&base_dir);
    if let Some(host) = host {
        let issues = check_plugins(&spec, &base_dir, host);
        if !issues.is_empty() {
            return Err(SpecErrors(
                issues.into_iter().map(|i| i.locate(&file, &map)).collect(),
            ));
        }
    }
    Ok(LoadedSpec {
        file: path.to_path_buf(),
        base_dir,
        spec,
        doc,
    })
}

/// Parses and validates spec text (no plugin checks). `file` names the text in diagnostics.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Spec, Value, SourceMap), Vec<Diagnostic>> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| source_map::Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_else(|| unlocated_yaml_error_pos(text));
        vec![Diagnostic {
            file: file.to_string(),
            pos,
            path: String::new(),
            message: format!("YAML syntax error: {}", yaml_message(&e)),
        }]
    })?;
    let map = SourceMap::build(text);
    let locate = |issues: Vec<Issue>| -> Vec<Diagnostic> {
        let mut d: Vec<Diagnostic> = issues.into_iter().map(|i| i.locate(file, &map)).collect();
        d.sort_by_key(|d| (d.pos.line, d.pos.column));
        d
    };

    let mut issues = Vec::new();
    interpolate(&mut doc, String::new(), &map, env, &mut issues);
    if !issues.is_empty() {
        return Err(locate(issues));
    }
    let mut issues = leases_need_dynamodb(&doc);
    if issues.is_empty() {
        issues = SchemaCheck::global().check(&doc);
    }
    if !issues.is_empty() {
        return Err(locate(issues));
    }
    let mut spec: Spec = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let pointer = path_to_pointer(&e.path().to_string());
        let pointer = refine_pointer(&doc, pointer, &e.inner().to_string());
        locate(vec![Issue {
            pointer,
            at_key: false,
            message: e.inner().to_string(),
        }])
    })?;
    let mut diagnostics = locate(semantic_checks(&spec));
    diagnostics.extend(check_jq(&spec, file, text, &map));
    if !diagnostics.is_empty() {
        diagnostics.sort_by_key(|d| (d.pos.line, d.pos.column));
        return Err(diagnostics);
    }
    // Exactly-once: the transactional id defaults to one derived from the pipeline's name.
    if let SinkConfig::Kafka(sink) = &mut spec.sink
        && sink.exactly_once
        && sink.transactional_id.is_none()
    {
        sink.transactional_id = Some(format!("sluice-{}", spec.name));
    }
    // The Kafka sink refuses to route records into the offset store's topic at run time too.
    if let (SinkConfig::Kafka(sink), OffsetsSpec::Kafka(store)) = (&mut spec.sink, &spec.offsets) {
        sink.reserved_topics.push(store.topic.clone());
    }
    Ok((spec, doc, map))
}

/// Where to point a YAML error that serde_yaml does not locate (e.g. "more than one document"):
/// the first document marker after the start, or else the top of the file.
fn unlocated_yaml_error_pos(text: &str) -> source_map::Pos {
    let line = text
        .lines()
        .enumerate()
        .skip(1)
        .find(|(_, l)| l.starts_with("---") || l.starts_with("..."))
        .map_or(1, |(i, _)| i + 1);
    source_map::Pos { line, column: 1 }
}

/// serde_yaml's message without its own location suffix (we print ours).
fn yaml_message(e: &serde_yaml::Error) -> String {
    let m = e.to_string();
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

/// serde loses the path inside internally tagged enums (`source`, `sink`, `offsets`): an error
/// there names only the enum. When the message quotes a string value (`` `99999999999s` ``)
/// that occurs exactly once below `pointer`, point at that value instead.
fn refine_pointer(doc: &Value, pointer: String, message: &str) -> String {
    fn walk(v: &Value, at: &str, message: &str, found: &mut Vec<String>) {
        match v {
            Value::String(s) if message.contains(&format!("`{s}`")) => found.push(at.to_string()),
            Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    walk(item, &format!("{at}/{i}"), message, found);
                }
            }
            Value::Object(m) => {
                for (k, item) in m {
                    walk(
                        item,
                        &format!("{at}/{}", source_map::escape(k)),
                        message,
                        found,
                    );
                }
            }
            _ => {}
        }
    }
    let Some(node) = doc.pointer(&pointer) else {
        return pointer;
    };
    let mut found = Vec::new();
    walk(node, &pointer, message, &mut found);
    match found.as_slice() {
        [one] => one.clone(),
        _ => pointer,
    }
}

fn path_to_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut out = String::new();
    for seg in path.split('.') {
        let (name, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(seg[i + 1..].trim_end_matches(']'))),
            None => (seg, None),
        };
        if !name.is_empty() {
            out.push('/');
            out.push_str(&source_map::escape(name));
        }
        if let Some(i) = idx {
            out.push('/');
            out.push_str(i);
        }
    }
    out
}

/// Replaces `${VAR}` in every string value. A plain (unquoted) scalar that is exactly one
/// placeholder takes the YAML type of its replacement, so `count: ${N}` can be a number, but
/// only when the replacement is written the way that number or boolean prints (`25`, `1.5`,
/// `true`): `0x1F`, `1e3`, `007` or a 20-digit value stay the strings they are, so a credential
/// that looks like a number is never changed.
fn interpolate(
    v: &mut Value,
    pointer: String,
    map: &SourceMap,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) {
    match v {
        Value::String(s) => match env::interpolate(s, env) {
            Ok(None) => {}
            Ok(Some(new)) => {
                let plain = map.get(&pointer).is_some_and(|n| n.plain);
                *v = if plain && env::is_single_placeholder(s) {
                    match serde_yaml::from_str::<Value>(&new) {
                        Ok(scalar @ (Value::Number(_) | Value::Bool(_) | Value::Null))
                            if !new.trim().is_empty()
                                && serde_json::to_string(&scalar)
                                    .is_ok_and(|printed| printed == new.trim()) =>
                        {
                            scalar
                        }
                        _ => Value::String(new),
                    }
                } else {
                    Value::String(new)
                };
            }
            Err(message) => issues.push(Issue {
                pointer,
                at_key: false,
                message,
            }),
        },
        Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                interpolate(item, format!("{pointer}/{i}"), map, env, issues);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let p = format!("{pointer}/{}", source_map::escape(k));
                interpolate(item, p, map, env, issues);
            }
        }
        _ => {}
    }
}

/// Checks the schema cannot express.
/// `offsets.leases` under a store other than `dynamodb`: said plainly, before the schema's
/// generic "unknown property".
fn leases_need_dynamodb(doc: &Value) -> Vec<Issue> {
    let offsets = &doc["offsets"];
    match offsets.get("leases") {
        Some(_) if offsets["store"].as_str() != Some("dynamodb") => vec![Issue {
            pointer: "/offsets/leases".into(),
            at_key: true,
            message: format!(
                "shard leases live in the DynamoDB offsets table: they need `store: dynamodb` (this store is `{}`)",
                offsets["store"].as_str().unwrap_or("file")
            ),
        }],
        _ => Vec::new(),
    }
}

/// Leases share Kinesis and DynamoDB Streams shards; Kafka sources scale through their
/// consumer group, and the other sources have nothing to share.
fn lease_checks(spec: &Spec, issues: &mut Vec<Issue>) {
    let OffsetsSpec::Dynamodb(d) = &spec.offsets else {
        return;
    };
    let Some(l) = &d.leases else {
        return;
    };
    use sluice_connectors::kinesis::{ReaderKind, Registration};
    let refusal = match &spec.source {
        SourceConfig::Kinesis(k)
            if k.reader == ReaderKind::Efo && k.registration == Registration::Lazy =>
        {
            Some(
                "the workers share one EFO consumer, and `registration: lazy` deregisters it when any worker stops: use `registration: eager` (or `none` with a `consumer_arn`)"
                    .to_string(),
            )
        }
        SourceConfig::Kinesis(_) => None,
        SourceConfig::Kafka(_) => Some(
            "a Kafka source scales through its consumer group (run more workers with the same `group`): remove `offsets.leases`"
                .to_string(),
        ),
        SourceConfig::Dynamodb(d) if d.mode == sluice_connectors::dynamodb::SourceMode::Cdc => None,
        SourceConfig::Dynamodb(_) => Some(
            "shard leases share a table's stream: they need the dynamodb source's `mode: cdc` (a snapshot's scan segments are not leased)"
                .to_string(),
        ),
        other => Some(format!(
            "shard leases share the shards of a `kinesis` or `dynamodb` (cdc) source; a `{}` source has none: remove `offsets.leases`",
            other.kind()
        )),
    };
    if let Some(message) = refusal {
        issues.push(Issue {
            pointer: "/offsets/leases".into(),
            at_key: true,
            message,
        });
    }
    if l.duration.0 < std::time::Duration::from_millis(300) {
        issues.push(Issue {
            pointer: "/offsets/leases/duration".into(),
            at_key: false,
            message: format!(
                "must be at least 300ms (leases are renewed every third of it), found {}",
                l.duration
            ),
        });
    }
}

fn semantic_checks(spec: &Spec) -> Vec<Issue> {
    let mut issues = Vec::new();
    let issue = |pointer: &str, message: String| Issue {
        pointer: pointer.to_string(),
        at_key: false,
        message,
    };
    for i in spec.source.check() {
        issues.push(issue(&format!("/source/{}", i.path), i.message));
    }
    for i in spec.sink.check() {
        issues.push(issue(&format!("/sink/{}", i.path), i.message));
    }
    if spec.restart.max_backoff.0 < spec.restart.initial_backoff.0 {
        issues.push(issue(
            "/restart/max_backoff",
            format!(
                "max_backoff ({}) is shorter than initial_backoff ({}): waits only grow",
                spec.restart.max_backoff, spec.restart.initial_backoff
            ),
        ));
    }
    let decodes = spec.format.as_ref().is_some_and(|f| f.decode.is_some());
    for (i, t) in spec.transforms.iter().enumerate() {
        if matches!(t, TransformSpec::Jq(_)) && !decodes {
            issues.push(issue(
                &format!("/transforms/{i}/jq"),
                "a jq transform works on JSON records: add `format.decode` (json, csv or a wasm decoder)"
                    .into(),
            ));
        }
    }
    kafka_checks(spec, &mut issues);
    lease_checks(spec, &mut issues);
    exactly_once_checks(spec, &mut issues);
    for i in sluice_connectors::registry::check_pair(&spec.source, &spec.sink) {
        issues.push(issue(&format!("/{}", i.path), i.message));
    }
    // The commit interval is a timer period (`tokio::time::interval` panics on zero).
    if spec.offsets.commit_interval().is_zero() {
        issues.push(issue(
            "/offsets/commit_interval",
            "must be longer than 0s (offsets are committed this often)".into(),
        ));
    }
    if let Some(format) = &spec.format {
        let is_csv =
            |c: &Option<FormatChoice>| matches!(c, Some(FormatChoice::Builtin(BuiltinFormat::Csv)));
        for (key, choice) in [("decode", &format.decode), ("encode", &format.encode)] {
            if is_csv(choice) && format.csv.is_none() {
                issues.push(issue(
                    &format!("/format/{key}"),
                    "the csv format needs its columns: add `format.csv.columns: [...]`".into(),
                ));
            }
        }
        if let Some(csv) = &format.csv
            && csv.header
            && !matches!(spec.source, SourceConfig::File(_) | SourceConfig::Stdin(_))
        {
            issues.push(issue(
                "/format/csv/header",
                "`header: true` skips line 1 of each file: it needs a `file` or `stdin` source"
                    .into(),
            ));
        }
        if let Some(csv) = &format.csv
            && !(csv.delimiter.len() == 1 && csv.delimiter.is_ascii())
        {
            issues.push(issue(
                "/format/csv/delimiter",
                format!(
                    "the delimiter must be one ASCII character, found `{}`",
                    csv.delimiter
                ),
            ));
        }
    }
    issues
}

/// Compiles each `jq:` program; an error points at its place inside the program in the file
/// (when the program's text stands in the file as written, else at the program's start).
fn check_jq(spec: &Spec, file: &str, text: &str, map: &SourceMap) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        let TransformSpec::Jq(jq) = t else { continue };
        let pointer = format!("/transforms/{i}/jq");
        let Err(errors) = crate::pipeline::jq::compile(&jq.jq) else {
            continue;
        };
        let start = map.value_pos(&pointer);
        for e in errors {
            out.push(Diagnostic {
                file: file.to_string(),
                pos: pos_in_value(text, start, &jq.jq, e.offset).unwrap_or(start),
                path: validate::dotted(&pointer),
                message: format!("jq: {}", e.message),
            });
        }
    }
    out
}

/// Where byte `offset` of a string value that starts at `start` stands in `text`: the line of
/// the value holding that part of the string is found by its content (a quoted one-line value
/// sits on the value's line, a block scalar's lines follow it). `None` when the value's text is
/// not in the file as it is (escapes, folding).
fn pos_in_value(
    text: &str,
    start: source_map::Pos,
    value: &str,
    offset: usize,
) -> Option<source_map::Pos> {
    let before = value.get(..offset)?;
    let line_index = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let value_line = value[line_start..].split('\n').next().unwrap_or("");
    let column_in_line = offset - line_start;
    let lines: Vec<&str> = text.lines().collect();
    // The first file line at or after the value's own (plus the lines before this one) that
    // holds this line of the value.
    let from = start.line.checked_sub(1)? + line_index;
    let probe = if value_line.trim().is_empty() {
        return None;
    } else {
        value_line
    };
    for (n, l) in lines.iter().enumerate().skip(from).take(line_index + 2) {
        let found = if n + 1 == start.line {
            // On the value's own line the value starts at `start.column` (or one later, quoted).
            let skip = start.column.saturating_sub(1);
            l.get(skip..)
                .and_then(|rest| rest.find(probe).map(|i| i + skip))
        } else {
            l.find(probe)
        };
        if let Some(col) = found {
            return Some(source_map::Pos {
                line: n + 1,
                column: l[..col].chars().count() + value_line[..column_in_line].chars().count() + 1,
            });
        }
    }
    None
}

/// Kafka checks that span sections or need librdkafka's property list: every `properties` name
/// is one librdkafka knows (a typo would otherwise reach librdkafka, which rejects it at run
/// time, or silently do nothing), and the sink can never write into the offset store's topic.
fn kafka_checks(spec: &Spec, issues: &mut Vec<Issue>) {
    use sluice_connectors::kafka::{LIBRDKAFKA_PROPERTIES, is_librdkafka_property};
    let mut maps = Vec::new();
    if let SourceConfig::Kafka(c) = &spec.source {
        maps.push(("/source/properties", &c.properties));
    }
    if let SinkConfig::Kafka(c) = &spec.sink {
        maps.push(("/sink/properties", &c.properties));
    }
    if let OffsetsSpec::Kafka(c) = &spec.offsets {
        maps.push(("/offsets/properties", &c.properties));
    }
    for (at, props) in maps {
        for name in props.0.keys().filter(|n| !is_librdkafka_property(n)) {
            let mut message = format!("unknown librdkafka property `{name}`");
            if let Some(s) = validate::did_you_mean(name, LIBRDKAFKA_PROPERTIES.iter().copied()) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            message.push_str(" (librdkafka 2.12.1 properties: https://github.com/confluentinc/librdkafka/blob/v2.12.1/CONFIGURATION.md)");
            issues.push(Issue {
                pointer: format!("{at}/{}", source_map::escape(name)),
                at_key: true,
                message,
            });
        }
    }
    if let (SinkConfig::Kafka(sink), OffsetsSpec::Kafka(store)) = (&spec.sink, &spec.offsets) {
        if sink.topic == store.topic {
            issues.push(Issue {
                pointer: "/sink/topic".into(),
                at_key: false,
                message: format!(
                    "`{}` is the Kafka offset store's topic (`offsets.topic`); the sink may not write into it",
                    store.topic
                ),
            });
        }
        for (i, pattern) in sink.allowed_topics.iter().enumerate() {
            if sluice_connectors::kafka::glob_match(pattern, &store.topic) {
                issues.push(Issue {
                    pointer: format!("/sink/allowed_topics/{i}"),
                    at_key: false,
                    message: format!(
                        "`{pattern}` allows the Kafka offset store's topic `{}`; records can never be routed there",
                        store.topic
                    ),
                });
            }
        }
    }
}

/// `exactly_once` writes the offsets in the sink's Kafka transaction: only the Kafka offset
/// store on the sink's own cluster can join it.
fn exactly_once_checks(spec: &Spec, issues: &mut Vec<Issue>) {
    let SinkConfig::Kafka(sink) = &spec.sink else {
        return;
    };
    if !sink.exactly_once {
        return;
    }
    let mut issue = |pointer: &str, message: String| {
        issues.push(Issue {
            pointer: pointer.into(),
            at_key: false,
            message,
        })
    };
    match &spec.offsets {
        OffsetsSpec::Kafka(store) => {
            let set = |b: &[String]| b.iter().cloned().collect::<std::collections::BTreeSet<_>>();
            if set(&store.brokers) != set(&sink.brokers) {
                issue(
                    "/offsets/brokers",
                    format!(
                        "`sink.exactly_once` writes the offsets in the sink's Kafka transaction, which spans one cluster: the offset store's brokers must be the sink's ({})",
                        sink.brokers.join(", ")
                    ),
                );
            }
        }
        other => {
            let kind = match other {
                OffsetsSpec::Memory(_) => "memory",
                OffsetsSpec::File(_) => "file",
                OffsetsSpec::Dynamodb(_) => "dynamodb",
                OffsetsSpec::Kafka(_) => "kafka",
            };
            issue(
                "/sink/exactly_once",
                format!(
                    "`exactly_once` writes the pipeline's offsets in the same Kafka transaction as its records, so it needs the Kafka offset store on the sink's cluster (`offsets: {{store: kafka, brokers: [{}]}}`); the `{kind}` offset store cannot join a Kafka transaction (shard leases, which live in the dynamodb store, cannot be combined with it yet: see docs/delivery.md)",
                    sink.brokers.join(", ")
                ),
            );
        }
    }
}

/// Loads each wasm plugin the spec names, checks its kind, and checks its config against the
/// schema the plugin exports.
fn check_plugins(spec: &Spec, base_dir: &Path, host: &PluginHost) -> Vec<Issue> {
    let mut refs = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        if let TransformSpec::Wasm(t) = t {
            refs.push((format!("/transforms/{i}"), t, PluginKind::Transform));
        }
    }
    if let PartitionerSpec::Wasm(p) = &spec.partitioner {
        refs.push(("/partitioner".into(), p, PluginKind::Partitioner));
    }
    if let Some(f) = &spec.format {
        for (key, c) in [("decode", &f.decode), ("encode", &f.encode)] {
            if let Some(FormatChoice::Wasm(p)) = c {
                refs.push((format!("/format/{key}"), p, PluginKind::Format));
            }
        }
    }
    let mut issues = Vec::new();
    for (pointer, p, kind) in refs {
        let at = |sub: &str, message: String| Issue {
            pointer: format!("{pointer}{sub}"),
            at_key: false,
            message,
        };
        match host.check(p, base_dir, kind) {
            Ok(()) => {}
            Err(PluginCheckError::Config(errors)) => {
                for (ptr, message) in errors {
                    issues.push(at(
                        &format!("/config{ptr}"),
                        format!("plugin config: {message}"),
                    ));
                }
            }
            Err(e @ PluginCheckError::Init(_)) => issues.push(at("/config", e.to_string())),
            Err(e) => issues.push(at("/wasm", format!("{}: {e}", p.wasm.display()))),
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "COUNT").then(|| "25".to_string())
    }

    #[test]
    fn the_schema_compiles_and_accepts_a_minimal_spec() {
        let text = "version: 1\nname: t\nsource:\n  type: generator\n  count: ${COUNT}\nsink: {type: stdout}\n";
        let (spec, _, _) = parse("t.yaml", text, &env).expect("valid");
        match spec.source {
            sluice_connectors::SourceConfig::Generator(g) => assert_eq!(g.count, Some(25)),
            other => panic!("unexpected source {other:?}"),
        }
    }

    fn kafka_env(name: &str) -> Option<String> {
        match name {
            "HEX" => Some("0x1F".into()),
            "EXP" => Some("1e3".into()),
            "LONG" => Some("99999999999999999999".into()),
            "DIGITS" => Some("12345".into()),
            "N" => Some("5".into()),
            _ => None,
        }
    }

    fn kafka_sink(spec: &Spec) -> &sluice_connectors::kafka::KafkaSinkConfig {
        match &spec.sink {
            SinkConfig::Kafka(k) => k,
            other => panic!("unexpected sink {other:?}"),
        }
    }

    #[test]
    fn placeholders_that_only_look_like_numbers_keep_their_text() {
        let text = "version: 1\nname: t\nsource: {type: generator}\nsink:\n  type: kafka\n  brokers: [b:9092]\n  topic: t\n  linger: 5ms\n  batch_records: ${N}\n  properties:\n    sasl.password: ${HEX}\n    sasl.username: ${EXP}\n    ssl.key.password: ${LONG}\n    ssl.keystore.password: ${DIGITS}\n    linger.ms: ${N}\n";
        let (spec, _, _) = parse("t.yaml", text, &kafka_env).expect("valid");
        let k = kafka_sink(&spec);
        assert_eq!(k.batch_records, 5, "a plain number still becomes a number");
        let p = &k.properties.0;
        assert_eq!(p["sasl.password"], "0x1F");
        assert_eq!(p["sasl.username"], "1e3");
        assert_eq!(p["ssl.key.password"], "99999999999999999999");
        assert_eq!(p["ssl.keystore.password"], "12345");
        assert_eq!(p["linger.ms"], "5");
    }

    #[test]
    fn loaded_spec_debug_hides_secrets() {
        let text = "version: 1\nname: t\nsource: {type: generator}\nsink:\n  type: kafka\n  brokers: [b:9092]\n  topic: t\n  properties:\n    sasl.password: ${HEX}\n    sasl.oauthbearer.client.secret: hunter2\n";
        let (spec, doc, _) = parse("t.yaml", text, &kafka_env).expect("valid");
        let loaded = LoadedSpec {
            file: "t.yaml".into(),
            base_dir: ".".into(),
            spec,
            doc,
        };
        let shown = format!("{loaded:?}");
        sluice_test_kit::assert_hidden(&shown, &["0x1F", "hunter2"]);
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_kafka_sink_refuses_the_offset_store_topic_at_run_time_too() {
        let text = "version: 1\nname: t\nsource: {type: generator}\nsink:\n  type: kafka\n  brokers: [b:9092]\n  topic: t\n  topic_from: {header: dest}\noffsets:\n  store: kafka\n  brokers: [b:9092]\n  topic: offs\n";
        let (spec, _, _) = parse("t.yaml", text, &kafka_env).expect("valid");
        let k = kafka_sink(&spec);
        assert!(k.check_record_topic("offs").is_err());
        assert!(k.check_record_topic("other").is_ok());
    }

    #[test]
    fn quoted_placeholders_stay_strings() {
        let text =
            "version: 1\nname: \"${COUNT}\"\nsource: {type: generator}\nsink: {type: stdout}\n";
        let (spec, _, _) = parse("t.yaml", text, &env).expect("valid");
        assert_eq!(spec.name, "25");
    }

    /// A refused spec: its first error is at `path`, on `line` (and `column`), and says `says`.
    struct Refused {
        text: &'static str,
        path: &'static str,
        line: Option<usize>,
        column: Option<usize>,
        says: Option<&'static str>,
    }

    #[test]
    fn invalid_specs_are_refused_where_the_fault_is_written() {
        let cases = [
            // A restart max_backoff below the initial one.
            Refused {
                text: "version: 1\nname: t\nsource: {type: generator}\nsink: {type: stdout}\nrestart:\n  initial_backoff: 10s\n  max_backoff: 1s\n",
                path: "restart.max_backoff",
                line: Some(7),
                column: Some(16),
                says: Some("shorter than initial_backoff"),
            },
            // csv without columns.
            Refused {
                text: "version: 1\nname: t\nsource: {type: generator}\nformat: {decode: csv}\nsink: {type: stdout}\n",
                path: "format.decode",
                line: None,
                column: None,
                says: Some("csv.columns"),
            },
            // A zero commit interval.
            Refused {
                text: "version: 1\nname: t\nsource: {type: generator}\nsink: {type: stdout}\noffsets:\n  store: memory\n  commit_interval: 0s\n",
                path: "offsets.commit_interval",
                line: Some(7),
                column: Some(20),
                says: None,
            },
            // A huge duration.
            Refused {
                text: "version: 1\nname: t\nsource: {type: generator}\nsink: {type: stdout}\npipeline:\n  flush_interval: 99999999999999999999s\n",
                path: "pipeline.flush_interval",
                line: Some(6),
                column: None,
                says: Some("too long"),
            },
            // A huge duration inside a tagged section points at its value.
            Refused {
                text: "version: 1\nname: t\nsource:\n  type: kinesis\n  stream: s\n  shard_discovery_interval: 99999999999999999999s\nsink: {type: stdout}\noffsets:\n  store: memory\n  commit_interval: 5s\n",
                path: "source.shard_discovery_interval",
                line: Some(6),
                column: Some(29),
                says: None,
            },
        ];
        for case in cases {
            let errs = parse("t.yaml", case.text, &env).expect_err(case.path);
            let e = &errs[0];
            assert_eq!(e.path, case.path, "{e}");
            if let Some(line) = case.line {
                assert_eq!(e.pos.line, line, "{e}");
            }
            if let Some(column) = case.column {
                assert_eq!(e.pos.column, column, "{e}");
            }
            if let Some(says) = case.says {
                assert!(e.message.contains(says), "{e}");
            }
        }
    }

    /// `text` parsed as the spec `/etc/sluice/t.yaml`, its paths resolved.
    fn resolved_in_etc_sluice(text: &str) -> Spec {
        let (mut spec, _, _) = parse("t.yaml", text, &env).expect("valid");
        spec.resolve_paths(Path::new("/etc/sluice"));
        spec
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_folder() {
        let spec = resolved_in_etc_sluice(
            "version: 1\nname: t\nsource: {type: file, paths: [in/*.csv, /abs/x]}\nsink: {type: file, path: out/x.jsonl}\nerrors: {tolerance: all}\n",
        );
        let SourceConfig::File(src) = &spec.source else {
            panic!("{:?}", spec.source)
        };
        assert_eq!(src.root, Path::new("/etc/sluice"));
        let sluice_connectors::SinkConfig::File(sink) = &spec.sink else {
            panic!("{:?}", spec.sink)
        };
        assert_eq!(sink.path, Path::new("/etc/sluice/out/x.jsonl"));
        let OffsetsSpec::File(f) = &spec.offsets else {
            panic!("{:?}", spec.offsets)
        };
        assert_eq!(f.path, Path::new("/etc/sluice/.sluice/offsets"));
        let Some(DeadLetterSpec::File(d)) = &spec.errors.dead_letter else {
            panic!("{:?}", spec.errors)
        };
        assert_eq!(d.path, Path::new("/etc/sluice/.sluice/dead-letter/t.jsonl"));
    }

    #[test]
    fn credential_and_tls_files_resolve_against_the_spec_folder() {
        let spec = resolved_in_etc_sluice(
            "version: 1\nname: t\nsource:\n  type: kafka\n  brokers: [b:9092]\n  topics: [t]\n  group: g\n  properties:\n    ssl.certificate.location: certs/client.pem\n    ssl.ca.location: probe\n    ssl.key.location: /abs/key.pem\nsink:\n  type: kinesis\n  stream: s\n  aws:\n    credentials: {provider: web_identity, token_file: token, role_arn: arn:aws:iam::1:role/r}\n",
        );
        let SourceConfig::Kafka(k) = &spec.source else {
            panic!("{:?}", spec.source)
        };
        let props = &k.properties.0;
        assert_eq!(
            props["ssl.certificate.location"],
            "/etc/sluice/certs/client.pem"
        );
        assert_eq!(props["ssl.ca.location"], "probe");
        assert_eq!(props["ssl.key.location"], "/abs/key.pem");
        let sluice_connectors::SinkConfig::Kinesis(k) = &spec.sink else {
            panic!("{:?}", spec.sink)
        };
        let sluice_connectors::aws::CredentialsConfig::WebIdentity { token_file, .. } =
            &k.aws.credentials
        else {
            panic!("{:?}", k.aws.credentials)
        };
        assert_eq!(token_file, Path::new("/etc/sluice/token"));
    }

    mod prop {
        //! The loader on arbitrary YAML-ish text: a spec or located errors, never a panic.
        use proptest::prelude::*;

        use super::super::parse;

        const VALID: &str = "version: 1\nname: p\nsource:\n  type: file\n  paths: [in/*.jsonl]\n  batch_size: 10\nformat:\n  decode: csv\n  csv: {columns: [a, b], header: true}\ntransforms: []\nsink: {type: file, path: out.jsonl, envelope: true}\noffsets:\n  store: file\n  commit_interval: 5s\nerrors: {tolerance: all, dead_letter: {type: file, path: d.jsonl}}\npipeline: {flush_interval: 200ms, max_buffered: 100, channel_capacity: 4}\n";

        /// Pieces that stress the YAML parser, interpolation, the schema and the semantic checks.
        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(": ".to_string()),
                Just("\n".to_string()),
                Just("\n  ".to_string()),
                Just("- ".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just("\"".to_string()),
                Just("'".to_string()),
                Just("\t".to_string()),
                Just("&a ".to_string()),
                Just("*a".to_string()),
                Just("<<: *a".to_string()),
                Just("!!binary ".to_string()),
                Just("---\n".to_string()),
                Just("${".to_string()),
                Just("${V}".to_string()),
                Just("${BIG}".to_string()),
                Just("${X:-0s}".to_string()),
                Just("0s".to_string()),
                Just("99999999999999999999s".to_string()),
                Just("1e400".to_string()),
                Just("18446744073709551616".to_string()),
                Just("99999999999999999999GB".to_string()),
                Just("-1".to_string()),
                Just("null".to_string()),
                Just("~".to_string()),
                Just("commit_interval: ".to_string()),
                Just("type: kinesis".to_string()),
                Just("type: dynamodb".to_string()),
                Just("store: kafka".to_string()),
                "[a-z_]{1,12}",
                "[ -~]{0,8}",
                any::<char>().prop_map(String::from),
            ]
        }

        fn env(name: &str) -> Option<String> {
            match name {
                "V" => Some("0s".into()),
                "BIG" => Some("99999999999999999999".into()),
                _ => None,
            }
        }

        fn check(text: &str) {
            if let Err(diags) = parse("p.yaml", text, &env) {
                assert!(!diags.is_empty(), "an error without a diagnostic");
                for d in diags {
                    assert_eq!(d.file, "p.yaml");
                    assert!(d.pos.line >= 1 && d.pos.column >= 1, "unlocated: {d}");
                    assert!(!d.message.is_empty(), "no message: {d:?}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            #[test]
            fn mutated_specs_give_a_spec_or_located_errors(
                edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0usize..3, token()), 1..6),
            ) {
                let mut text = VALID.to_string();
                for (at, cut, tok) in edits {
                    let mut i = at.index(text.len() + 1);
                    while !text.is_char_boundary(i) {
                        i -= 1;
                    }
                    let mut end = (i + cut).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(i..end, &tok);
                }
                check(&text);
            }

            #[test]
            fn arbitrary_text_gives_located_errors(text in "[ -~\n\t]{0,200}") {
                check(&text);
            }

            #[test]
            fn generated_mappings_give_a_spec_or_located_errors(
                pairs in proptest::collection::vec((0usize..4, "[a-z_]{1,16}", token()), 0..12),
            ) {
                let mut text = "version: 1\nname: p\n".to_string();
                for (indent, key, value) in pairs {
                    text.push_str(&format!("{}{key}: {value}\n", "  ".repeat(indent)));
                }
                check(&text);
            }
        }
    }
}
