//! The approval card: one post per request, updated in place on every change.

use crate::client::{Action, Attachment, Field, Integration};
use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Makes text typed by a user inert on a card: Markdown is escaped (no fake links, images or
/// emphasis) and every `@` is followed by a zero-width space (no `@channel`/`@all` pings).
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\`*_[]()!#>|~<".contains(c) {
            out.push('\\');
        }
        out.push(c);
        if c == '@' {
            out.push('\u{200B}');
        }
    }
    out
}

/// A ticket becomes a link only when it looks like one (`ABC-123`), percent-safe by shape.
fn ticket_link(ticket: &str, template: Option<&str>) -> String {
    let looks_like_key = ticket.split_once('-').is_some_and(|(p, n)| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && p.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    match template {
        Some(tpl) if looks_like_key => format!("[{ticket}]({})", tpl.replace("{ticket}", ticket)),
        _ => inert(ticket),
    }
}

/// Colour per status.
fn color(status: &str) -> &'static str {
    match status {
        "PENDING" => "#f2c744",
        "APPROVED" | "GRANTED" => "#3db887",
        "DENIED" | "ERROR" => "#d24b4e",
        _ => "#8e8e8e",
    }
}

/// The card for a request as the backend returns it. `buttons` are the Approve / Deny actions
/// (only while it is pending).
pub fn card(req: &Value, ticket_url: Option<&str>, buttons: Vec<Action>) -> Attachment {
    let status = s(req, "status");
    let ticket = s(req, "jira");
    let ticket = if ticket.is_empty() {
        "—".to_owned()
    } else {
        ticket_link(ticket, ticket_url)
    };
    let approvals = req
        .get("approvals")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let required = req
        .get("required_approvals")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let mut fields = vec![
        Field {
            title: "Requester".into(),
            value: s(req, "requester_email").to_owned(),
            short: true,
        },
        Field {
            title: "Account".into(),
            value: s(req, "account_id").to_owned(),
            short: true,
        },
        Field {
            title: "Duration".into(),
            value: format!(
                "{} min",
                req.get("requested_duration_minutes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
            short: true,
        },
        Field {
            title: "Ticket".into(),
            value: ticket,
            short: true,
        },
        Field {
            title: "Approvals".into(),
            value: format!("{approvals} of {required}"),
            short: true,
        },
        Field {
            title: "Status".into(),
            value: status.to_owned(),
            short: true,
        },
    ];
    if let Some(ps) = req.get("permission_set_arn").and_then(Value::as_str) {
        fields.insert(
            2,
            Field {
                title: "Permission set".into(),
                value: ps.to_owned(),
                short: false,
            },
        );
    }
    if let Some(end) = req.get("end_time").and_then(Value::as_str) {
        fields.push(Field {
            title: if status == "GRANTED" { "Ends" } else { "Ended" }.into(),
            value: end.to_owned(),
            short: true,
        });
    }
    if let Some(reason) = req.get("close_reason").and_then(Value::as_str) {
        fields.push(Field {
            title: "Decision note".into(),
            value: inert(reason),
            short: false,
        });
    }
    let glass = if req.get("break_glass").and_then(Value::as_bool) == Some(true) {
        " (break-glass)"
    } else {
        ""
    };
    Attachment {
        fallback: format!(
            "Access request {} for {}: {status}",
            s(req, "request_id"),
            s(req, "account_id")
        ),
        color: color(status).into(),
        title: format!("Access request{glass}: {status}"),
        text: inert(s(req, "reason")),
        fields,
        footer: format!("request {}", s(req, "request_id")),
        actions: buttons,
        ..Attachment::default()
    }
}

/// An Approve or Deny button with its signed context.
pub fn button(id: &str, name: &str, style: &str, url: &str, context: Value) -> Action {
    Action {
        id: id.into(),
        name: name.into(),
        kind: "button".into(),
        style: style.into(),
        integration: Integration {
            url: url.into(),
            context,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_cannot_ping_link_or_format() {
        let t = inert("@channel urgent ![x](https://evil/p.png) **Approved by security**");
        assert!(!t.contains("@channel"), "{t}");
        assert!(t.contains("\\!\\[x\\]\\(https://evil/p.png\\)"), "{t}");
        assert!(t.contains("\\*\\*Approved"), "{t}");
        assert_eq!(
            ticket_link("OPS-42", Some("https://j/browse/{ticket}")),
            "[OPS-42](https://j/browse/OPS-42)"
        );
        let evil = ticket_link(
            "OPS-1](https://evil.example/sso) [x",
            Some("https://j/browse/{ticket}"),
        );
        assert!(!evil.contains("](https://evil"), "{evil}");
    }
}
