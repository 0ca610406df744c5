//! Reading a service's TOML configuration file without ever printing what it holds.
//!
//! The `toml` crate's error text quotes the offending line, and serde's type errors quote the
//! value (`invalid type: string "s3cret", expected …`). A config file holds bot tokens and
//! database passwords, so the error we show names the line, the column and the key, and says
//! what kind of value was wrong, never the value itself.

use serde::de::DeserializeOwned;

/// Parses `text` (the content of `path`, named in the error) as TOML into `T`.
pub fn parse<T: DeserializeOwned>(path: &std::path::Path, text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| describe(path, text, &e))
}

/// A packaged configuration file (`deploy/debian/*.toml`) lists every setting commented out at
/// its default as `# key = value`. This is that file with those lines uncommented (prose
/// comments stay), so its tests can parse it and hold each value to the built-in default.
pub fn uncomment_settings(text: &str) -> String {
    text.lines()
        .map(|l| commented_setting(l).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key = value` when `line` is `# key = value` with a lowercase key.
pub fn commented_setting(line: &str) -> Option<&str> {
    line.strip_prefix("# ").filter(|rest| {
        rest.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
    })
}

fn describe(path: &std::path::Path, text: &str, e: &toml::de::Error) -> String {
    let what = sanitise(e.message());
    let Some(span) = e.span() else {
        return format!("{}: {what}", path.display());
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.len() <= 64 && is_key_like(k));
    match key {
        Some(k) => format!(
            "{}: line {line}, column {column} (key `{k}`): {what}",
            path.display()
        ),
        None => format!("{}: line {line}, column {column}: {what}", path.display()),
    }
}

fn is_key_like(k: &str) -> bool {
    k.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"'))
}

/// Keeps the error's kind and drops any value it quotes.
fn sanitise(message: &str) -> String {
    let message = message.trim();
    for prefix in ["invalid type: ", "invalid value: ", "invalid length: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = match rest.split_once(", expected ") {
                Some((f, x)) => (f, Some(x)),
                None => (rest, None),
            };
            let kind = found.split_whitespace().next().unwrap_or("value");
            return match expected {
                Some(x) => format!("{prefix}{kind}, expected {}", drop_quoted(x)),
                None => format!("{prefix}{kind}"),
            };
        }
    }
    drop_quoted(message)
}

/// Replaces the content of every `"…"` and `'…'` with `…`. Backquoted names (field names and
/// the expected variants serde lists) stay: they come from our code, not from the file.
fn drop_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if c == '"' || c == '\'' => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out.lines().next().unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commented_settings_are_uncommented() {
        let text = "# The listener.\n# listen = \"127.0.0.1:8080\"\n# require_v2 = false\n\
                    # Database: sqlite://PATH = x\ndata_dir = \"/var/lib/jit\"";
        assert_eq!(
            uncomment_settings(text),
            "# The listener.\nlisten = \"127.0.0.1:8080\"\nrequire_v2 = false\n\
             # Database: sqlite://PATH = x\ndata_dir = \"/var/lib/jit\""
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        bot_token: Option<String>,
        port: Option<u16>,
        admins: Option<Vec<String>>,
    }

    fn err(text: &str) -> String {
        parse::<Cfg>(std::path::Path::new("/etc/jit/x.toml"), text).unwrap_err()
    }

    #[test]
    fn syntax_and_type_errors_never_print_the_value() {
        for (text, kind) in [
            ("bot_token = \"s3cret-tok\n", "line 1"),
            ("bot_token = s3cret-tok\n", "line 1"),
            ("\n\nbot_token = 's3cret-tok\n", "line 3"),
            (
                "port = \"s3cret-tok\"\n",
                "invalid type: string, expected u16",
            ),
            ("admins = \"s3cret-tok\"\n", "invalid type: string"),
            ("port = 99999999 # s3cret-tok\n", "port"),
            ("[x]\nbot_token = \"s3cret-tok\"\n", "unknown field"),
        ] {
            let e = err(text);
            assert!(!e.contains("s3cret"), "{text:?} → {e}");
            assert!(e.contains(kind), "{text:?} → {e}");
            assert!(e.starts_with("/etc/jit/x.toml: "), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let e = err("port = \"s3cret-tok\"\n");
        assert!(e.contains("(key `port`)"), "{e}");
        let e = err("bogus = 1\n");
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }
}
