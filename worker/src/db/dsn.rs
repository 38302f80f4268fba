//! The parts of a libpq connection string that tokio-postgres does not parse: `sslmode`
//! beyond `require`, and `sslrootcert`. They are taken out here, in the URL form and the
//! key=value form, and the rest goes to tokio-postgres as it came (see [`super::tls`]).

#[derive(Default)]
pub(super) struct TlsOptions {
    pub mode: Option<String>,
    pub root: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off the connection string; the rest is for
/// tokio-postgres, in the form it came in.
pub(super) fn take_tls_options(text: &str) -> Result<(String, TlsOptions), String> {
    let mut options = TlsOptions::default();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            options.mode = Some(value);
            false
        }
        "sslrootcert" => {
            options.root = Some(value);
            false
        }
        _ => true,
    };
    let rest = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        match text.split_once('?') {
            None => text.to_string(),
            Some((base, query)) => {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|v| v.into_owned())
                        .map_err(|_| "the connection string is not valid UTF-8".to_string())
                };
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if keep(&decode(key)?, decode(value)?) {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut rest = String::new();
        for (key, value, span) in key_values(text)? {
            if keep(&key, value) {
                rest.push_str(&text[span]);
                rest.push(' ');
            }
        }
        rest
    };
    Ok((rest, options))
}

/// The `key = value` pairs of a libpq key/value string (values optionally single-quoted, with
/// backslash escapes), each with the span of the text it came from.
fn key_values(text: &str) -> Result<Vec<(String, String, std::ops::Range<usize>)>, String> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i == bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_string();
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            // Let tokio-postgres word the error.
            return Ok(vec![(String::new(), String::new(), 0..text.len())]);
        }
        i = skip_space(i + 1);
        let mut value = Vec::new();
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            match bytes.get(i) {
                None if quoted => {
                    return Err("unterminated quoted value in the connection string".into())
                }
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(b) if !quoted && b.is_ascii_whitespace() => break,
                Some(b'\\') if i + 1 < bytes.len() => {
                    value.push(bytes[i + 1]);
                    i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value)
            .map_err(|_| "the connection string is not valid UTF-8".to_string())?;
        pairs.push((key, value, start..i));
    }
}
