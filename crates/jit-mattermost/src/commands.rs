//! The `/jit` command language. Parsing is pure; unknown input gets the usage text, never an
//! error trace.

/// A parsed `/jit` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open the request dialog.
    Request,
    /// Bind an account (and optionally a permission set) to this channel.
    Bind {
        account: String,
        permission_set: Option<String>,
    },
    /// Unbind an account.
    Unbind { account: String },
    /// Set approvers (usernames without `@`) and optionally N.
    Approvers {
        usernames: Vec<String>,
        required: Option<u32>,
    },
    /// Change policy fields (the `name=value` pairs as the API's body; the bridge adds the
    /// channel and the actor).
    Policy {
        changes: Box<jit_proto::wire::PolicyBody>,
    },
    /// End access early.
    Revoke { id: String, reason: Option<String> },
    /// Withdraw a pending request.
    Cancel { id: String },
    /// Lengthen a grant.
    Extend { id: String, minutes: u32 },
    /// Open and active requests of the channel (or mine).
    Status { mine: bool },
    /// Usage.
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
**/jit** — just-in-time access
* `/jit request` — ask for access (opens a form)
* `/jit status [mine]` — open requests and active grants in this channel
* `/jit revoke <id> [reason]` · `/jit cancel <id>` · `/jit extend <id> <minutes>`
* `/jit bind <account-id> [permission-set-arn]` · `/jit unbind <account-id>` (admins)
* `/jit approvers @alice @bob [--required 2]` (admins)
* `/jit policy max-hours=4 self-approval=off pending-timeout=480 require-ticket=on break-glass=off break-glass-max=60` (admins)
* `/jit help`";

/// Why a command could not be parsed: a short message shown with the usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// A request id as the backend issues them (a UUID); anything else never reaches a URL path.
pub fn request_id(v: &str) -> Result<String, ParseError> {
    let groups: Vec<&str> = v.split('-').collect();
    let whole = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, l)| g.len() == l && g.bytes().all(|b| b.is_ascii_hexdigit()));
    // Or a prefix of 8 or more characters, as `/jit status` shows them; the backend resolves
    // it (and refuses one that matches several requests).
    let prefix =
        (8..36).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if whole || prefix {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(ParseError(format!(
            "`{v}` is not a request id (or its first 8 characters)"
        )))
    }
}

fn number(name: &str, v: &str) -> Result<u32, ParseError> {
    v.parse()
        .map_err(|_| ParseError(format!("{name} needs a whole number, not `{v}`")))
}

/// Parses the text after `/jit`.
#[allow(clippy::indexing_slicing)] // every index is behind a `need(n)` length check
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (first, rest) = match words.split_first() {
        None => return Ok(Command::Help),
        Some((f, r)) => (f.to_ascii_lowercase(), r),
    };
    let need = |n: usize, what: &str| -> Result<(), ParseError> {
        if rest.len() < n {
            Err(ParseError(format!("usage: /jit {first} {what}")))
        } else {
            Ok(())
        }
    };
    match first.as_str() {
        "request" => Ok(Command::Request),
        "help" | "-h" | "--help" => Ok(Command::Help),
        "status" => match rest {
            [] => Ok(Command::Status { mine: false }),
            [w] if w.eq_ignore_ascii_case("mine") => Ok(Command::Status { mine: true }),
            _ => Err(ParseError("usage: /jit status [mine]".into())),
        },
        "bind" => {
            need(1, "<account-id> [permission-set-arn]")?;
            Ok(Command::Bind {
                account: rest[0].to_owned(),
                permission_set: rest.get(1).map(|s| (*s).to_owned()),
            })
        }
        "unbind" => {
            need(1, "<account-id>")?;
            Ok(Command::Unbind {
                account: rest[0].to_owned(),
            })
        }
        "approvers" => {
            let mut usernames = Vec::new();
            let mut required = None;
            let mut it = rest.iter();
            while let Some(w) = it.next() {
                if *w == "--required" || *w == "-n" {
                    let v = it
                        .next()
                        .ok_or_else(|| ParseError("--required needs a number".into()))?;
                    required = Some(number("--required", v)?);
                } else if let Some(v) = w.strip_prefix("--required=") {
                    required = Some(number("--required", v)?);
                } else {
                    // Mattermost keeps usernames in lowercase.
                    usernames.push(
                        w.trim_start_matches('@')
                            .trim_end_matches(',')
                            .to_ascii_lowercase(),
                    );
                }
            }
            if usernames.is_empty() {
                return Err(ParseError(
                    "usage: /jit approvers @alice @bob [--required N]".into(),
                ));
            }
            Ok(Command::Approvers {
                usernames,
                required,
            })
        }
        "policy" => {
            need(1, "name=value …")?;
            // The vocabulary shared with `jit config policy` (the API's field names are
            // aliases): jit_proto::wire::POLICY_SETTINGS.
            let mut changes = jit_proto::wire::PolicyBody::default();
            for w in rest {
                changes.apply_setting(w).map_err(|e| ParseError(e.0))?;
            }
            Ok(Command::Policy {
                changes: Box::new(changes),
            })
        }
        "revoke" => {
            need(1, "<id> [reason]")?;
            let reason = if rest.len() > 1 {
                Some(rest[1..].join(" "))
            } else {
                None
            };
            Ok(Command::Revoke {
                id: request_id(rest[0])?,
                reason,
            })
        }
        "cancel" => {
            need(1, "<id>")?;
            Ok(Command::Cancel {
                id: request_id(rest[0])?,
            })
        }
        "extend" => {
            need(2, "<id> <minutes>")?;
            Ok(Command::Extend {
                id: request_id(rest[0])?,
                minutes: number("minutes", rest[1])?,
            })
        }
        other => Err(ParseError(format!("unknown command `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("  REQUEST "), Ok(Command::Request));
        assert_eq!(parse("status mine"), Ok(Command::Status { mine: true }));
        assert_eq!(
            parse("bind 123456789012 arn:aws:sso:::permissionSet/ssoins-1/ps-2"),
            Ok(Command::Bind {
                account: "123456789012".into(),
                permission_set: Some("arn:aws:sso:::permissionSet/ssoins-1/ps-2".into())
            })
        );
        assert_eq!(
            parse("approvers @Alice, @bob --required 2"),
            Ok(Command::Approvers {
                usernames: vec!["alice".into(), "bob".into()],
                required: Some(2)
            })
        );
        assert_eq!(
            parse("policy max_request_hours=2 allow_self_approval=false"),
            parse("policy max-hours=2 self-approval=off"),
            "the API's field names are aliases"
        );
        assert_eq!(
            parse("policy max-hours=2 self-approval=off"),
            Ok(Command::Policy {
                changes: Box::new(jit_proto::wire::PolicyBody {
                    max_request_hours: Some(2),
                    allow_self_approval: Some(false),
                    ..Default::default()
                })
            })
        );
        let id = "93669EF5-87f7-4a82-b7c7-9a327e335a76";
        assert_eq!(
            parse(&format!("revoke {id} done for today")),
            Ok(Command::Revoke {
                id: id.to_ascii_lowercase(),
                reason: Some("done for today".into())
            })
        );
        assert_eq!(
            parse(&format!("extend {id} 30")),
            Ok(Command::Extend {
                id: id.to_ascii_lowercase(),
                minutes: 30
            })
        );
        assert_eq!(
            parse(&format!("cancel {id}")),
            Ok(Command::Cancel {
                id: id.to_ascii_lowercase()
            })
        );
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        assert!(
            parse("frobnicate")
                .unwrap_err()
                .0
                .contains("unknown command")
        );
        assert!(parse("bind").unwrap_err().0.contains("usage"));
        assert!(
            parse("extend 93669ef5-87f7-4a82-b7c7-9a327e335a76 soon")
                .unwrap_err()
                .0
                .contains("whole number")
        );
        assert!(
            parse("policy colour=red")
                .unwrap_err()
                .0
                .contains("unknown policy")
        );
        assert!(
            parse("policy self-approval=maybe")
                .unwrap_err()
                .0
                .contains("on or off")
        );
        assert!(parse("approvers --required 2").is_err());
        // Ids go into URL paths: only request ids get through.
        for bad in [
            "revoke ../../config/bind",
            "cancel 93669ef5-87f7-4a82-b7c7-9a327e335a76/../x",
            "extend 93669ef5-87f7-4a82-b7c7-9a327e335a7? 30",
            "status ' OR 1=1 --",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
