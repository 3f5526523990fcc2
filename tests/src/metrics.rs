// SPDX-License-Identifier: Apache-2.0
//! Scraping and reading Prometheus text.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// GETs `path` from `127.0.0.1:port` and returns (status line, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    // One write, like a real client: a request line split over several writes
    // would reach the server in pieces.
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Ok((head.lines().next().unwrap_or("").to_owned(), body))
}

/// Decodes a chunked HTTP/1.1 body (`/metrics` is streamed in chunks).
fn dechunk(mut rest: &str) -> std::io::Result<String> {
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    let mut out = String::new();
    loop {
        let (size_line, after) = rest.split_once("\r\n").ok_or_else(|| bad("no chunk-size line"))?;
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            return Ok(out);
        }
        let data = after.get(..size).ok_or_else(|| bad("truncated chunk"))?;
        out.push_str(data);
        rest = after[size..].strip_prefix("\r\n").ok_or_else(|| bad("chunk without CRLF"))?;
    }
}

/// Scrapes `/metrics` (Prometheus text format).
pub fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics", None).expect("scrape /metrics");
    assert!(status.contains(" 200 "), "scrape failed: {status}");
    body
}

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    samples(text, name)
        .filter(|(ls, _)| labels.iter().all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|(_, v)| v as u64)
        .sum()
}

/// Every sample of `name`: (labels, value).
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(move |l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let (ls, v) = r.split_once("} ")?;
            (parse_labels(ls), v)
        } else {
            (Vec::new(), rest.strip_prefix(' ')?)
        };
        Some((labels, value.split_whitespace().next()?.parse().ok()?))
    })
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    // Label values in our metrics never contain `",` sequences; good enough for tests.
    s.split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim_start_matches(',').to_owned(), v.trim_end_matches('"').to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_samples() {
        let t = "# TYPE x_total counter\nx_total{pod=\"a\",port=\"80\"} 3\nx_total{pod=\"a\",port=\"81\"} 4\nx_total{pod=\"b\",port=\"80\"} 5\ny 1\n";
        assert_eq!(sum(t, "x_total", &[("pod", "a")]), 7);
        assert_eq!(sum(t, "x_total", &[("pod", "a"), ("port", "80")]), 3);
        assert_eq!(sum(t, "x_total", &[]), 12);
        assert_eq!(sum(t, "y", &[]), 1);
        assert_eq!(sum(t, "x_total", &[("pod", "c")]), 0);
    }
}
