//! The approval card: one post per request, updated in place on every change.

use crate::client::{Action, Attachment, Field, Integration};
use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
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
    let ticket = match (ticket, ticket_url) {
        ("", _) => "—".to_owned(),
        (t, Some(tpl)) => format!("[{t}]({})", tpl.replace("{ticket}", t)),
        (t, None) => t.to_owned(),
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
            value: reason.to_owned(),
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
        text: s(req, "reason").to_owned(),
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
