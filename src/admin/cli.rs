//! `load-shed-api admin ...`: the admin listener's calls from the binary itself, so that
//! `kubectl exec deploy/<release>-load-shed-api -- /load-shed-api admin breaker force-open` works
//! in the distroless image (no shell, no curl). The address and token come from the configuration
//! (`admin.listen`, `admin.token`); `--addr HOST:PORT` overrides the address.
//!
//! Exit codes: 0 done (the answer's JSON on stdout); 1 the listener refused, was unreachable or
//! answered an error; 2 a usage mistake, or no admin listener configured.

use crate::settings::Settings;

pub const USAGE: &str = "usage: load-shed-api admin [--addr HOST:PORT] state
       load-shed-api admin [--addr HOST:PORT] breaker force-open|force-closed [--for 30s|10m|2h]
       load-shed-api admin [--addr HOST:PORT] breaker auto
       load-shed-api admin [--addr HOST:PORT] limit N [--for 30s|10m|2h]
       load-shed-api admin [--addr HOST:PORT] limit auto
       load-shed-api admin [--addr HOST:PORT] shadow admission|breaker on|off [--for 30s|10m|2h]";

/// Why the command failed, with its exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// Exit 2: a usage mistake, or no listener to talk to.
    Usage(String),
    /// Exit 1: refused, unreachable, or an error answer.
    Request(String),
}

/// What the arguments ask for: method and path.
fn request_for(args: &[&str]) -> Result<(&'static str, String), Failed> {
    let usage = |why: &str| Failed::Usage(format!("{why} (load-shed-api admin --help)"));
    match args {
        ["state"] => Ok(("GET", "/admin/state".into())),
        ["breaker", mode @ ("force-open" | "force-closed")] => {
            Ok(("POST", format!("/admin/breaker?mode={mode}")))
        }
        ["breaker", mode @ ("force-open" | "force-closed"), "--for", hold] => {
            super::parse_hold(hold).map_err(|e| usage(&e))?;
            Ok(("POST", format!("/admin/breaker?mode={mode}&for={hold}")))
        }
        ["breaker", "auto"] => Ok(("POST", "/admin/breaker?mode=auto".into())),
        ["limit", "auto"] => Ok(("POST", "/admin/admission/limit?value=auto".into())),
        ["shadow", component @ ("admission" | "breaker"), state @ ("on" | "off"), rest @ ..] => {
            let on = if *state == "on" { "true" } else { "false" };
            match rest {
                [] => Ok((
                    "POST",
                    format!("/admin/shadow?component={component}&on={on}"),
                )),
                ["--for", hold] => {
                    super::parse_hold(hold).map_err(|e| usage(&e))?;
                    Ok((
                        "POST",
                        format!("/admin/shadow?component={component}&on={on}&for={hold}"),
                    ))
                }
                _ => Err(usage("admin: shadow takes only --for")),
            }
        }
        ["limit", n] if n.parse::<u32>().is_ok() => {
            Ok(("POST", format!("/admin/admission/limit?value={n}")))
        }
        ["limit", n, "--for", hold] if n.parse::<u32>().is_ok() => {
            super::parse_hold(hold).map_err(|e| usage(&e))?;
            Ok((
                "POST",
                format!("/admin/admission/limit?value={n}&for={hold}"),
            ))
        }
        [] => Err(usage("admin: what to do?")),
        _ => Err(usage(&format!(
            "admin: unknown command {:?}",
            args.join(" ")
        ))),
    }
}

/// Runs `load-shed-api admin <args>`; returns the answer's body.
pub fn run(args: &[&str]) -> Result<String, Failed> {
    let (addr, rest) = match args {
        ["--addr", addr, rest @ ..] => (Some(*addr), rest),
        rest => (None, rest),
    };
    let (method, path) = request_for(rest)?;
    let settings = Settings::load().map_err(|e| Failed::Usage(e.to_string()))?;
    let target = match addr {
        Some(addr) => addr.to_string(),
        None => settings
            .admin
            .listen
            .map(|a| crate::startup::reachable(a).to_string())
            .ok_or_else(|| {
                Failed::Usage(
                    "admin: the admin listener is off (admin.listen = \"\"): pass --addr HOST:PORT"
                        .into(),
                )
            })?,
    };
    send(&target, method, &path, settings.admin.token.as_deref())
}

/// One request to the admin listener; the body of a 2xx answer.
fn send(authority: &str, method: &str, path: &str, token: Option<&str>) -> Result<String, Failed> {
    let (status, body) = crate::check::request(authority, method, path, token)
        .map_err(|e| Failed::Request(format!("admin: {e}")))?;
    if (200..300).contains(&status) {
        Ok(body.trim().to_string())
    } else {
        Err(Failed::Request(format!("admin: {status} {}", body.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_is_one_request_and_anything_else_a_usage_error() {
        assert_eq!(
            request_for(&["state"]),
            Ok(("GET", "/admin/state".to_string()))
        );
        assert_eq!(
            request_for(&["breaker", "force-open", "--for", "10m"]),
            Ok(("POST", "/admin/breaker?mode=force-open&for=10m".to_string()))
        );
        assert_eq!(
            request_for(&["breaker", "auto"]),
            Ok(("POST", "/admin/breaker?mode=auto".to_string()))
        );
        assert_eq!(
            request_for(&["limit", "40", "--for", "5m"]),
            Ok(("POST", "/admin/admission/limit?value=40&for=5m".to_string()))
        );
        assert_eq!(
            request_for(&["limit", "auto"]),
            Ok(("POST", "/admin/admission/limit?value=auto".to_string()))
        );
        assert_eq!(
            request_for(&["shadow", "admission", "on"]),
            Ok((
                "POST",
                "/admin/shadow?component=admission&on=true".to_string()
            ))
        );
        for bad in [
            &[][..],
            &["frobnicate"][..],
            &["breaker"][..],
            &["breaker", "open"][..],
            &["breaker", "auto", "--for", "1m"][..],
            &["breaker", "force-open", "--for", "forever"][..],
            &["limit"][..],
            &["limit", "forty"][..],
            &["limit", "auto", "--for", "1m"][..],
            &["shadow", "retry", "on"][..],
            &["shadow", "admission", "maybe"][..],
        ] {
            assert!(matches!(request_for(bad), Err(Failed::Usage(_))), "{bad:?}");
        }
    }
}
