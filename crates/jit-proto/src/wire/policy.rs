//! The one vocabulary of policy settings as people type them, in chat (`/jit policy`) and in
//! the CLI (`jit config policy`): `name=value` with the short names of [`POLICY_SETTINGS`];
//! each setting's API field name (`max_request_hours`) is accepted as an alias, and `_` and
//! `-` are interchangeable, so `max-hours`, `max_hours` and `max-request-hours` all work.

use super::PolicyBody;

/// Every setting: its name, its API field (the alias), what it takes.
pub const POLICY_SETTINGS: &[PolicySetting] = &[
    PolicySetting::number("required", "required_approvals"),
    PolicySetting::flag("self-approval", "allow_self_approval"),
    PolicySetting::number("max-hours", "max_request_hours"),
    PolicySetting::number("pending-timeout", "pending_timeout_minutes"),
    PolicySetting::flag("require-ticket", "require_ticket"),
    PolicySetting::flag("ticket-or-reason", "require_ticket_or_reason"),
    PolicySetting::flag("break-glass", "break_glass_enabled"),
    PolicySetting::number("break-glass-max", "break_glass_max_minutes"),
];

/// One policy setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySetting {
    /// The name people type (`max-hours`).
    pub name: &'static str,
    /// The API's field, accepted as an alias (`max_request_hours`).
    pub field: &'static str,
    /// A whole number (else on/off).
    pub numeric: bool,
}

impl PolicySetting {
    const fn number(name: &'static str, field: &'static str) -> Self {
        Self {
            name,
            field,
            numeric: true,
        }
    }

    const fn flag(name: &'static str, field: &'static str) -> Self {
        Self {
            name,
            field,
            numeric: false,
        }
    }

    /// The setting `name` names (the short name or the API field, any case, `_` or `-`).
    pub fn find(name: &str) -> Option<&'static Self> {
        let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        let n = norm(name);
        POLICY_SETTINGS
            .iter()
            .find(|s| s.name == n || norm(s.field) == n)
    }
}

/// Why a `name=value` policy change was refused; the message says what to type instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicySettingError(pub String);

impl PolicyBody {
    /// Applies one `name=value` change (see the module's vocabulary). Flags take
    /// `on`/`off` (or `true`/`false`, `yes`/`no`); the others a whole number.
    pub fn apply_setting(&mut self, change: &str) -> Result<(), PolicySettingError> {
        let (k, v) = change
            .split_once('=')
            .ok_or_else(|| PolicySettingError(format!("`{change}` should be name=value")))?;
        let setting = PolicySetting::find(k).ok_or_else(|| {
            let names: Vec<&str> = POLICY_SETTINGS.iter().map(|s| s.name).collect();
            PolicySettingError(format!(
                "unknown policy setting `{k}`; the settings are {}",
                names.join(", ")
            ))
        })?;
        let number = || {
            v.parse::<u32>().map(Some).map_err(|_| {
                PolicySettingError(format!("{} needs a whole number, not `{v}`", setting.name))
            })
        };
        let flag = || match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Ok(Some(true)),
            "off" | "false" | "no" => Ok(Some(false)),
            _ => Err(PolicySettingError(format!(
                "{}: `{v}` should be on or off",
                setting.name
            ))),
        };
        match setting.field {
            "required_approvals" => self.required_approvals = number()?,
            "allow_self_approval" => self.allow_self_approval = flag()?,
            "max_request_hours" => self.max_request_hours = number()?,
            "pending_timeout_minutes" => self.pending_timeout_minutes = number()?,
            "require_ticket" => self.require_ticket = flag()?,
            "require_ticket_or_reason" => self.require_ticket_or_reason = flag()?,
            "break_glass_enabled" => self.break_glass_enabled = flag()?,
            "break_glass_max_minutes" => self.break_glass_max_minutes = number()?,
            other => {
                return Err(PolicySettingError(format!(
                    "policy setting `{other}` is not handled"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_api_fields_mean_the_same() {
        let mut short = PolicyBody::default();
        let mut long = PolicyBody::default();
        for (a, b) in [
            ("max-hours=4", "max_request_hours=4"),
            ("self-approval=off", "allow_self_approval=false"),
            ("pending-timeout=480", "pending_timeout_minutes=480"),
            ("require-ticket=on", "require_ticket=true"),
            ("ticket-or-reason=yes", "require_ticket_or_reason=yes"),
            ("break-glass=on", "break_glass_enabled=on"),
            ("break-glass-max=60", "break_glass_max_minutes=60"),
            ("required=2", "required_approvals=2"),
        ] {
            short.apply_setting(a).unwrap();
            long.apply_setting(b).unwrap();
        }
        assert_eq!(short, long);
        assert_eq!(short.max_request_hours, Some(4));
        assert_eq!(short.allow_self_approval, Some(false));
        assert_eq!(short.break_glass_max_minutes, Some(60));
        // Either separator, any case.
        let mut b = PolicyBody::default();
        b.apply_setting("MAX_HOURS=2").unwrap();
        b.apply_setting("max-request-hours=3").unwrap();
        assert_eq!(b.max_request_hours, Some(3));
    }

    #[test]
    fn every_setting_is_handled_and_errors_say_what_to_type() {
        for s in POLICY_SETTINGS {
            let v = if s.numeric { "1" } else { "on" };
            PolicyBody::default()
                .apply_setting(&format!("{}={v}", s.name))
                .unwrap();
        }
        let mut b = PolicyBody::default();
        let e = b.apply_setting("colour=red").unwrap_err().0;
        assert!(
            e.contains("unknown policy setting") && e.contains("max-hours"),
            "{e}"
        );
        assert!(
            b.apply_setting("max-hours")
                .unwrap_err()
                .0
                .contains("name=value")
        );
        assert!(
            b.apply_setting("max_request_hours=soon")
                .unwrap_err()
                .0
                .contains("max-hours needs a whole number")
        );
        assert!(
            b.apply_setting("self-approval=maybe")
                .unwrap_err()
                .0
                .contains("on or off")
        );
    }
}
