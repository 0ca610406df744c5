//! The slash command tokens the bridge accepts: those in its configuration (`slash_tokens`)
//! and those in the slash tokens file (`slash_tokens_file`, by default
//! `<data_dir>/keys/slash-tokens`). `jit mattermost setup` writes the file; the bridge reads it
//! again when it changes (looked at every two seconds, and at once when a token is refused), so
//! a new or rotated token works without a restart, and a token taken out of the file stops
//! working within two seconds.
//!
//! Several tokens are accepted at once (one per team's command, or old and new while rotating
//! by hand), each compared in constant time. Tokens are secrets: they are never logged, and
//! `Debug` shows only how many there are.
//!
//! The file: tokens separated by newlines or commas (so a `JIT_MM_SLASH_TOKENS_FILE` written for
//! older versions still reads); `#` starts a comment. `setup` writes one line per command,
//! `<token> # team <team_id> /<trigger>`, and replaces only its own command's line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Shortest token accepted. Mattermost's are 26 characters; a short one is guessable, or a typo.
pub const MIN_TOKEN_LEN: usize = 16;

/// How often the bridge looks at the file.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

type Tokens = Arc<Vec<Zeroizing<String>>>;

/// What identifies a version of the file: modification time, size and inode (a rename onto it
/// changes the inode even within one clock tick).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn marker(path: &Path) -> Option<Marker> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Marker {
        modified: m.modified().ok(),
        len: m.len(),
        ino,
    })
}

/// Why the file could not be used (never containing a token).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Not readable.
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// A token shorter than [`MIN_TOKEN_LEN`] on this line.
    #[error(
        "{path} line {line}: a token shorter than {MIN_TOKEN_LEN} characters (Mattermost's are 26)"
    )]
    Short {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

/// The tokens in the file's text. Errors name the line, never the token.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Zeroizing<String>>, TokenFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let data = line.split_once('#').map_or(line, |(d, _)| d);
        for t in data.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t.len() < MIN_TOKEN_LEN {
                return Err(TokenFileError::Short {
                    path: path.display().to_string(),
                    line: i + 1,
                });
            }
            out.push(Zeroizing::new(t.to_owned()));
        }
    }
    Ok(out)
}

/// The label `setup` puts on its command's line.
pub fn label(team_id: &str, trigger: &str) -> String {
    format!("team {team_id} /{trigger}")
}

/// The file's new text with `token` as the one token of the command labelled `label`: the
/// command's old line goes, and so does `old` (the command's token before a rotation) wherever
/// else it is listed; every other line stays as it was.
pub fn with_command_token(text: &str, label: &str, old: Option<&str>, token: &str) -> String {
    let is_old = |t: &str| old.is_some_and(|o| bool::from(o.as_bytes().ct_eq(t.as_bytes())));
    let mut out = String::new();
    for line in text.lines() {
        let (data, comment) = match line.split_once('#') {
            Some((d, c)) => (d, Some(c)),
            None => (line, None),
        };
        if comment.is_some_and(|c| c.trim() == label) {
            continue;
        }
        let tokens: Vec<&str> = data
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.iter().any(|t| is_old(t)) {
            let kept: Vec<&str> = tokens.into_iter().filter(|t| !is_old(t)).collect();
            if kept.is_empty() && comment.is_none() {
                continue;
            }
            out.push_str(&kept.join(","));
            if let Some(c) = comment {
                out.push_str(" #");
                out.push_str(c);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str(&format!("{token} # {label}\n"));
    out
}

/// Writes the file atomically (a temporary file in the same directory, mode 0600, renamed
/// over it), so the bridge never reads half a file. The directory is created (0700) if needed;
/// the file belongs to the directory's owner when the caller may give it away (root).
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
    }
    let name = path.file_name().map_or_else(
        || "slash-tokens".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        // Run as root (`sudo jit mattermost setup`), the file goes to the directory's owner,
        // the service user, who must read it; otherwise (not allowed) it stays the caller's.
        #[cfg(unix)]
        if let Ok(d) = std::fs::metadata(&dir) {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&tmp, Some(d.uid()), Some(d.gid()));
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The tokens a running bridge accepts.
pub struct SlashTokens {
    fixed: Vec<Zeroizing<String>>,
    path: PathBuf,
    /// The file's tokens and the version of the file they came from (`None`: no file).
    file: Mutex<(Option<Marker>, Tokens)>,
}

impl std::fmt::Debug for SlashTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlashTokens")
            .field("configured", &format!("{} × ***", self.fixed.len()))
            .field("file", &self.path)
            .field("from_file", &format!("{} × ***", self.file_tokens().len()))
            .finish()
    }
}

impl SlashTokens {
    /// The configured tokens and those in `path`. A file that exists but cannot be used is an
    /// error (the bridge does not start on it); a missing file holds no tokens yet.
    pub fn open(fixed: &[String], path: PathBuf) -> Result<Self, TokenFileError> {
        let me = Self {
            fixed: fixed.iter().map(|t| Zeroizing::new(t.clone())).collect(),
            path,
            file: Mutex::new((None, Arc::default())),
        };
        me.load()?;
        Ok(me)
    }

    /// The file the tokens are read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens are accepted now.
    pub fn count(&self) -> usize {
        self.fixed.len() + self.file_tokens().len()
    }

    fn file_tokens(&self) -> Tokens {
        self.file.lock().map(|f| f.1.clone()).unwrap_or_default()
    }

    /// True when `given` is one of the tokens, compared in constant time with each. A refused
    /// token first makes the bridge look at the file again, so a token `setup` just wrote is
    /// accepted at once.
    pub fn accepts(&self, given: &str) -> bool {
        self.matches(given) || (self.reload_if_changed() && self.matches(given))
    }

    fn matches(&self, given: &str) -> bool {
        let file = self.file_tokens();
        self.fixed.iter().chain(file.iter()).fold(false, |ok, t| {
            ok | bool::from(t.as_bytes().ct_eq(given.as_bytes()))
        })
    }

    /// Reads the file again if it changed since it was last read; true when the tokens in use
    /// changed. A file that cannot be used keeps the tokens in use (and is reported once per
    /// version of the file); a removed file removes its tokens.
    pub fn reload_if_changed(&self) -> bool {
        let now = marker(&self.path);
        let seen = self.file.lock().map(|f| f.0.clone()).unwrap_or(None);
        if now == seen {
            return false;
        }
        match self.load() {
            Ok(n) => {
                tracing::info!(
                    file = %self.path.display(),
                    tokens = n,
                    "slash command tokens reloaded"
                );
                true
            }
            Err(e) => {
                if let Ok(mut f) = self.file.lock() {
                    f.0 = now;
                }
                tracing::warn!(error = %e, "slash command tokens file not used; the tokens in use stay");
                false
            }
        }
    }

    /// Reads the file; returns how many tokens it holds.
    fn load(&self) -> Result<usize, TokenFileError> {
        let before = marker(&self.path);
        let tokens = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&self.path, &Zeroizing::new(text))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(TokenFileError::Io {
                    path: self.path.display().to_string(),
                    error,
                });
            }
        };
        let n = tokens.len();
        if let Ok(mut f) = self.file.lock() {
            *f = (before, Arc::new(tokens));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccc";

    fn strings(v: Vec<Zeroizing<String>>) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_file_takes_lines_commas_and_comments_and_refuses_short_tokens() {
        let p = Path::new("f");
        let text = format!("# tokens\n{A} # team t1 /jit\n{B}, {C}\n\n");
        assert_eq!(strings(parse(p, &text).unwrap()), [A, B, C]);
        let e = parse(p, &format!("{A}\nshort-token\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f line 2: a token shorter than 16 characters (Mattermost's are 26)"
        );
        assert!(!e.to_string().contains("short-token"));
    }

    #[test]
    fn setup_replaces_its_own_line_and_the_old_token_only() {
        let l1 = label("t1", "jit");
        let first = with_command_token("", &l1, None, A);
        assert_eq!(first, format!("{A} # team t1 /jit\n"));
        // Another team's command and a hand-written line stay.
        let other = with_command_token(&format!("{first}{C}\n"), &label("t2", "jit"), None, B);
        assert_eq!(
            other,
            format!("{A} # team t1 /jit\n{C}\n{B} # team t2 /jit\n")
        );
        // Rotating t1: its line goes, and so does its old token where it was listed by hand.
        let rotated = with_command_token(&format!("{other}{A},{C}\n"), &l1, Some(A), B);
        assert_eq!(
            rotated,
            format!("{C}\n{B} # team t2 /jit\n{C}\n{B} # team t1 /jit\n")
        );
        // Re-running with the same token changes nothing.
        assert_eq!(with_command_token(&first, &l1, Some(A), A), first);
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_tokens_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/slash-tokens");
        let t = SlashTokens::open(&[C.to_owned()], path.clone()).unwrap();
        assert!(t.accepts(C) && !t.accepts(A));
        write_file(&path, &format!("{A}\n")).unwrap();
        assert!(t.accepts(A), "a refused token looks at the file first");
        write_file(&path, &format!("{B}\n")).unwrap();
        assert!(t.reload_if_changed());
        assert!(!t.accepts(A) && t.accepts(B) && t.accepts(C));
        assert!(!t.reload_if_changed(), "nothing changed");
        // A broken file keeps the tokens in use.
        write_file(&path, "short\n").unwrap();
        assert!(!t.reload_if_changed());
        assert!(t.accepts(B));
        // A file that is broken at start stops the start.
        assert!(SlashTokens::open(&[], path.clone()).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(t.reload_if_changed());
        assert!(!t.accepts(B) && t.accepts(C));
        let shown = format!("{t:?}");
        assert!(!shown.contains(C) && !shown.contains(B), "{shown}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            write_file(&path, &format!("{A}\n")).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
