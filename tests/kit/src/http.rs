//! A plain HTTP/1.1 client for `sluice run --http` on loopback (no client crate needed), and the
//! per-partition series of its `/metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A request on loopback with extra headers: (status, body), or None when nothing answers.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, mut body) = text.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_string()));
    }
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    Some((status, out))
}

/// A GET whose body is JSON.
pub fn get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (code, body) = http(port, "GET", path, &[])?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// A metric of `/metrics` summed over its label sets (`name` or `name{…}` lines), or None when
/// nothing answers.
pub fn metric_sum(port: u16, name: &str) -> Option<f64> {
    let Some((200, text)) = http(port, "GET", "/metrics", &[]) else {
        return None;
    };
    Some(
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// The `metric{pipeline="…",partition="…"}` lines of `/metrics`: partition → value.
pub fn series(port: u16, metric: &str, pipeline: &str) -> BTreeMap<String, f64> {
    let Some((200, text)) = http(port, "GET", "/metrics", &[]) else {
        return BTreeMap::new();
    };
    let prefix = format!("{metric}{{pipeline=\"{pipeline}\",partition=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (partition, value) = rest.split_once("\"} ")?;
            Some((partition.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
