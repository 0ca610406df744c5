//! The approval card: one post per request, updated in place on every change.

use crate::client::{Action, Attachment, Field, Integration};
use jit_proto::wire::{RequestStatus, RequestView};

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
pub fn card(req: &RequestView, ticket_url: Option<&str>, buttons: Vec<Action>) -> Attachment {
    let status = status_name(req.status);
    let ticket = match req.jira.as_deref() {
        None | Some("") => "—".to_owned(),
        Some(t) => ticket_link(t, ticket_url),
    };
    let mut fields = vec![
        Field {
            title: "Requester".into(),
            value: req.requester_email.clone(),
            short: true,
        },
        Field {
            title: "Account".into(),
            value: req.account_id.clone(),
            short: true,
        },
        Field {
            title: "Duration".into(),
            value: format!("{} min", req.requested_duration_minutes),
            short: true,
        },
        Field {
            title: "Ticket".into(),
            value: ticket,
            short: true,
        },
        Field {
            title: "Approvals".into(),
            value: format!("{} of {}", req.approvals.len(), req.required_approvals),
            short: true,
        },
        Field {
            title: "Status".into(),
            value: status.to_owned(),
            short: true,
        },
    ];
    if let Some(ps) = &req.permission_set_arn {
        fields.insert(
            2,
            Field {
                title: "Permission set".into(),
                value: ps.clone(),
                short: false,
            },
        );
    }
    // Before the grant, end_time is only a projection: the card shows the end once access is
    // in place.
    if let (Some(end), Some(_)) = (&req.end_time, &req.grant_time) {
        fields.push(Field {
            title: if status == "GRANTED" { "Ends" } else { "Ended" }.into(),
            value: end.clone(),
            short: true,
        });
    }
    if let Some(reason) = &req.close_reason {
        fields.push(Field {
            title: "Decision note".into(),
            value: inert(reason),
            short: false,
        });
    }
    let glass = if req.break_glass {
        " (break-glass)"
    } else {
        ""
    };
    Attachment {
        fallback: format!(
            "Access request {} for {}: {status}",
            req.request_id, req.account_id
        ),
        color: color(status).into(),
        title: format!("Access request{glass}: {status}"),
        text: inert(req.reason.as_deref().unwrap_or("")),
        fields,
        footer: format!("request {}", req.request_id),
        actions: buttons,
        ..Attachment::default()
    }
}

/// The status as the API spells it.
pub fn status_name(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Pending => "PENDING",
        RequestStatus::Approved => "APPROVED",
        RequestStatus::Denied => "DENIED",
        RequestStatus::Granted => "GRANTED",
        RequestStatus::Revoked => "REVOKED",
        RequestStatus::Expired => "EXPIRED",
        RequestStatus::Error => "ERROR",
        RequestStatus::Cancelled => "CANCELLED",
        RequestStatus::TimedOut => "TIMED_OUT",
    }
}

/// An Approve or Deny button with its signed context.
pub fn button(
    id: &str,
    name: &str,
    style: &str,
    url: &str,
    context: crate::replies::ActionContext,
) -> Action {
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
