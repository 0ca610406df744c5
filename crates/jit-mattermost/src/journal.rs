//! Which effects of a callback are done, kept across redeliveries and restarts: a callback's
//! card patch, thread line and DM each happen at most once per event id. The backend redelivers
//! an event until the bridge acknowledges it, so an event whose DM hit a rate limit comes back
//! after its card patch and thread line were made; those are skipped the second time.
//!
//! An append-only file (`<data_dir>/callback-effects.log`, one `event_id effect` line per done
//! effect, mode 0600), read at start and compacted to the newest [`KEEP`] entries when it grows
//! past twice that. Each bridge replica keeps its own (the backend delivers an event to one URL).

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Effects remembered (events arrive in order per request and are redelivered within hours,
/// so the newest entries are the ones that matter).
pub const KEEP: usize = 50_000;

/// One effect of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The card's patch.
    Card,
    /// The line in the card's thread (or in the channel).
    Line,
    /// The requester's direct message.
    Dm,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Line => "line",
            Self::Dm => "dm",
        }
    }
}

/// The journal.
#[derive(Debug)]
pub struct Journal {
    path: Option<PathBuf>,
    inner: Mutex<(HashSet<String>, VecDeque<String>, usize)>,
}

impl Journal {
    /// The journal in `data_dir` (created if missing); `None` keeps it in memory only (tests).
    pub fn open(data_dir: Option<&Path>) -> std::io::Result<Self> {
        let path = data_dir.map(|d| d.join("callback-effects.log"));
        let mut set = HashSet::new();
        let mut order = VecDeque::new();
        let mut lines = 0;
        if let Some(p) = &path {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if let Ok(text) = std::fs::read_to_string(p) {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    lines += 1;
                    if set.insert(line.to_owned()) {
                        order.push_back(line.to_owned());
                    }
                }
            }
            while order.len() > KEEP {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
            if lines > 2 * KEEP {
                let text: String = order.iter().map(|l| format!("{l}\n")).collect();
                let tmp = p.with_extension("log.tmp");
                write_private(&tmp, text.as_bytes(), true)?;
                std::fs::rename(&tmp, p)?;
                lines = order.len();
            }
        }
        Ok(Self {
            path,
            inner: Mutex::new((set, order, lines)),
        })
    }

    fn key(event_id: &str, effect: Effect) -> String {
        format!("{event_id} {}", effect.as_str())
    }

    /// Whether `effect` of `event_id` is done.
    pub fn is_done(&self, event_id: &str, effect: Effect) -> bool {
        let k = Self::key(event_id, effect);
        self.inner.lock().map(|g| g.0.contains(&k)).unwrap_or(false)
    }

    /// Records `effect` of `event_id` as done (written through before this returns).
    pub fn done(&self, event_id: &str, effect: Effect) -> std::io::Result<()> {
        let k = Self::key(event_id, effect);
        let mut g = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        if !g.0.insert(k.clone()) {
            return Ok(());
        }
        g.1.push_back(k.clone());
        while g.1.len() > KEEP {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
        g.2 += 1;
        if let Some(p) = &self.path {
            write_private(p, format!("{k}\n").as_bytes(), false)?;
        }
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8], truncate: bool) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_effects_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(Some(dir.path())).unwrap();
        assert!(!j.is_done("e1", Effect::Card));
        j.done("e1", Effect::Card).unwrap();
        j.done("e1", Effect::Line).unwrap();
        j.done("e1", Effect::Line).unwrap();
        drop(j);
        let j = Journal::open(Some(dir.path())).unwrap();
        assert!(j.is_done("e1", Effect::Card) && j.is_done("e1", Effect::Line));
        assert!(!j.is_done("e1", Effect::Dm) && !j.is_done("e2", Effect::Card));
        let text = std::fs::read_to_string(dir.path().join("callback-effects.log")).unwrap();
        assert_eq!(text.lines().count(), 2, "a repeat is not written twice");
    }
}
