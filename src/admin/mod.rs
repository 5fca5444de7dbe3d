//! The admin listener (`admin.listen`, `127.0.0.1:9901` by default, `""` = off): its own port in
//! every role, never on the chart's Service. An operator reads the service's state and holds the
//! breaker open (a kill switch) or closed:
//!
//! - `GET /admin/state`: role; the breaker's state, why and when it last changed, the override
//!   held; admission's limits, in-flight count, backlog and shadow count; the retry budget left.
//! - `POST /admin/breaker?mode=force-open|force-closed|auto[&for=30m]`: holds or releases the
//!   breaker (`for`: 1 s to 24 h, then it lifts by itself). Answers the breaker's new state.
//! - `POST /admin/admission/limit?value=40|auto[&for=30m]`: pins the limit in force (3 to
//!   100000; the lower classes keep their shares), or hands it back. Answers admission's state.
//! - `POST /admin/shadow?component=admission|breaker&on=true|false[&for=30m]`: switches shadow mode
//!   at run time; back to the configured value by itself after `for`, or with the configured value.
//!
//! - `GET /`: the status page (embedded, with its script and style; read-only), and
//!   `GET /admin/status?since=T`: the state above with the per-second samples after unix time `T`
//!   (five minutes at most), which the page polls every second ([`status`]).
//!
//! Overrides are held in memory: a restart loses them, as Envoy's runtime admin values. Each is
//! logged with the caller's address and shown as `admin_override{component,kind}` = 1 while held.
//! With `admin.token` every request must carry `Authorization: Bearer <token>`, or Basic
//! credentials whose password is the token (what a browser sends after its login prompt; the
//! page's own requests then carry them too), compared in constant time, never logged. Every
//! answer carries a strict `Content-Security-Policy` and `X-Content-Type-Options: nosniff`. [`cli`] is `load-shed-api admin ...`, the same calls from the
//! binary itself (the distroless image has no curl).

pub mod cli;
mod status;

use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::admission::SetPin;
use crate::api::ApiState;
use crate::breaker::{Forced, SetOverride};
use crate::routes;
use crate::settings::AdminSettings;
use crate::wire::Query;

/// What the admin listener's workers share.
pub(crate) struct Admin {
    pub role: &'static str,
    /// The api's state (`None` in role `upstream`, which has no breaker or admission).
    pub api: Option<web::Data<ApiState>>,
    /// `[admin]`: the token every request must carry, if set.
    pub settings: AdminSettings,
    /// `admin_override{component,kind}` (a run-time shadow switch is one).
    pub gauge: prometheus::IntGaugeVec,
    /// The status page's per-second samples.
    pub history: std::sync::Arc<status::History>,
}

pub(crate) use status::{sample_every_second, History};

/// The headers every admin answer carries.
pub(crate) fn headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("Content-Security-Policy", status::CSP))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Cache-Control", "no-store"))
        .add(("Referrer-Policy", "no-referrer"))
}

/// The longest body an admin request may carry (none is read; a larger one is refused).
const MAX_BODY: u64 = 1024;

/// The longest an override may be held with `for`.
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    for (path, content_type, body) in status::PAGE {
        cfg.service(
            web::resource(path)
                .route(web::get().to(
                    move |req: HttpRequest, admin: web::Data<Admin>| async move {
                        page(&req, &admin, content_type, body)
                    },
                ))
                .default_service(web::to(routes::method_not_allowed)),
        );
    }
    cfg.service(
        web::resource("/admin/status")
            .route(web::get().to(status_json))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/admin/state")
            .route(web::get().to(state))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/admin/breaker")
            .route(web::post().to(breaker))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/admin/admission/limit")
            .route(web::post().to(limit))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/admin/shadow")
            .route(web::post().to(shadow))
            .default_service(web::to(routes::method_not_allowed)),
    );
}

fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// Whether `presented` equals `expected`, in time that does not depend on where they differ.
fn same(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, b) in expected.iter().enumerate() {
        diff |= b ^ presented.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The token a request presents: a bearer token, or the password of Basic credentials.
fn presented(req: &HttpRequest) -> Vec<u8> {
    let Some(value) = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()) else {
        return Vec::new();
    };
    if let Some(token) = value.strip_prefix(b"Bearer ") {
        return token.to_vec();
    }
    value
        .strip_prefix(b"Basic ")
        .and_then(base64_decode)
        .and_then(|pair| {
            let colon = pair.iter().position(|&b| b == b':')?;
            Some(pair[colon + 1..].to_vec())
        })
        .unwrap_or_default()
}

/// Standard base64 (padding optional); `None` for anything else.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let text = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    if text.len() > 4096 || text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The checks every admin request passes first: the token, if one is set, and no body. Returns
/// the answer to a request that fails them. `browser`: a page, whose refusal asks the browser
/// for credentials (Basic), rather than a JSON endpoint's (Bearer).
fn refusal(req: &HttpRequest, admin: &Admin) -> Option<HttpResponse> {
    refusal_for(req, admin, false)
}

fn refusal_for(req: &HttpRequest, admin: &Admin, browser: bool) -> Option<HttpResponse> {
    if let Some(token) = &admin.settings.token {
        if !same(&presented(req), token.as_bytes()) {
            let challenge = if browser {
                r#"Basic realm="load-shed-api admin", charset="UTF-8""#
            } else {
                "Bearer"
            };
            return Some(
                HttpResponse::Unauthorized()
                    .insert_header(("www-authenticate", challenge))
                    .json(json!({"error": "missing or wrong token (admin.token): Authorization: Bearer <token>, or Basic with the token as password"})),
            );
        }
    }
    let length = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if length > MAX_BODY || req.headers().contains_key("transfer-encoding") {
        return Some(error(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "admin requests carry no body",
        ));
    }
    None
}

/// The caller, for the log and the state.
fn caller(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// `GET /`, `/status.js`, `/status.css`: the status page, embedded.
fn page(
    req: &HttpRequest,
    admin: &Admin,
    content_type: &'static str,
    body: &'static str,
) -> HttpResponse {
    if let Some(refused) = refusal_for(req, admin, true) {
        return refused;
    }
    if !req.query_string().is_empty() {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "the page takes no parameters",
        );
    }
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, content_type))
        .body(body)
}

async fn state(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &admin) {
        return refused;
    }
    HttpResponse::Ok().json(state_json(&admin).await)
}

/// `GET /admin/status?since=T`: the state, the rules, and the samples after unix time `T`.
async fn status_json(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    if let Some(refused) = refusal_for(&req, &admin, true) {
        return refused;
    }
    let since = match status_params(req.query_string()) {
        Ok(since) => since,
        Err(why) => return error(actix_web::http::StatusCode::BAD_REQUEST, why),
    };
    HttpResponse::Ok().json(json!({
        "state": state_json(&admin).await,
        "rules": admin.api.as_ref().map(|api| api.rules().clone()),
        "history_seconds": status::HISTORY_SECONDS,
        "samples": admin.history.since(since),
    }))
}

/// `since`: unix seconds, a finite number at least 0 (absent: 0, every sample).
fn status_params(query: &str) -> Result<f64, String> {
    let q = Query::parse(query, &["since"]).map_err(|e| e.to_string())?;
    match q.get("since") {
        None => Ok(0.0),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| format!("since: must be unix seconds (a number >= 0), got {v:?}")),
    }
}

/// The service's state, as `GET /admin/state` answers it.
async fn state_json(admin: &Admin) -> serde_json::Value {
    let Some(api) = &admin.api else {
        return json!({"role": admin.role});
    };
    let breaker_shadow = api.breaker().shadow_switch().held();
    let breaker = match api.breaker().snapshot().await {
        Ok(view) => json!({
            "enforced": !api.breaker().shadowing(),
            "shadow_override": breaker_shadow,
            "view": view,
        }),
        Err(_) => json!({"error": "the breaker is stopping"}),
    };
    json!({
        "role": admin.role,
        "breaker": breaker,
        "admission": api.admission_view(),
        "admission_shadow_override": api.admission().shadow_switch().held(),
        "retry_budget_left": api.retry_budget_left(),
        "overrides_note": "held in memory: a restart loses them",
    })
}

/// What every operator call (`POST /admin/...`) passes first, in this order: the token and body
/// checks, its parameters (`parse`, a 400 naming what is wrong), and an api to act on (a 409 in
/// role upstream, which has no `lacks`). Returns the api and the parameters, or the answer.
fn operator_call<'a, T>(
    req: &HttpRequest,
    admin: &'a Admin,
    parse: fn(&str) -> Result<T, String>,
    lacks: &str,
) -> Result<(&'a ApiState, T), Box<HttpResponse>> {
    use actix_web::http::StatusCode;
    if let Some(refused) = refusal(req, admin) {
        return Err(Box::new(refused));
    }
    let parsed =
        parse(req.query_string()).map_err(|why| Box::new(error(StatusCode::BAD_REQUEST, why)))?;
    let Some(api) = &admin.api else {
        return Err(Box::new(error(
            StatusCode::CONFLICT,
            format!("this process has no {lacks} (role {})", admin.role),
        )));
    };
    Ok((api, parsed))
}

/// `POST /admin/breaker?mode=force-open|force-closed|auto[&for=30m]`.
async fn breaker(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (api, (mode, hold_for)) = match operator_call(&req, &admin, breaker_params, "breaker") {
        Ok(call) => call,
        Err(answer) => return *answer,
    };
    let request = SetOverride {
        forced: mode,
        hold_for,
        by: caller(&req),
    };
    if api.breaker().set_override(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the breaker is stopping");
    }
    match api.breaker().snapshot().await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the breaker is stopping"),
    }
}

/// `POST /admin/admission/limit?value=N|auto[&for=30m]`.
async fn limit(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (api, (value, hold_for)) = match operator_call(&req, &admin, limit_params, "admission") {
        Ok(call) => call,
        Err(answer) => return *answer,
    };
    let request = SetPin {
        limit: value,
        hold_for,
        by: caller(&req),
    };
    if api.admission().set_pin(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "admission is stopping");
    }
    HttpResponse::Ok().json(api.admission_view())
}

/// `POST /admin/shadow?component=admission|breaker&on=true|false[&for=30m]`.
async fn shadow(req: HttpRequest, admin: web::Data<Admin>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (api, (component, on, hold_for)) =
        match operator_call(&req, &admin, shadow_params, "admission or breaker") {
            Ok(call) => call,
            Err(answer) => return *answer,
        };
    let by = caller(&req);
    let switched = match component {
        "admission" => switch(
            &api.admission().shadow_switch(),
            "admission",
            on,
            hold_for,
            &by,
            &admin.gauge,
        ),
        _ => switch(
            &api.breaker().shadow_switch(),
            "breaker",
            on,
            hold_for,
            &by,
            &admin.gauge,
        ),
    };
    match switched {
        Ok(()) => HttpResponse::Ok().json(json!({
            "component": component,
            "shadow": on,
            "configured_shadow": match component {
                "admission" => api.admission().shadow_switch().configured(),
                _ => api.breaker().shadow_switch().configured(),
            },
        })),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot register the shadow series: {e}"),
        ),
    }
}

/// Turns one component's shadow mode on or off; a value other than the configured one is an
/// override (gauge, log, expiry back to the configured value).
fn switch<T: Send + Sync + 'static>(
    switch: &std::sync::Arc<crate::shadow::Switch<T>>,
    component: &'static str,
    on: bool,
    hold_for: Option<Duration>,
    by: &str,
    gauge: &prometheus::IntGaugeVec,
) -> Result<(), prometheus::Error> {
    let change = switch.turn(on)?;
    if on == switch.configured() {
        switch.hold(None);
        let _ = gauge.remove_label_values(&[component, "shadow"]);
        log::warn!("admin: {component} shadow mode back to its configured value ({on}) by {by}");
        return Ok(());
    }
    gauge.with_label_values(&[component, "shadow"]).set(1);
    let now = std::time::Instant::now();
    switch.hold(Some((by.to_string(), now, hold_for.map(|d| now + d))));
    log::warn!(
        "admin: {component} shadow mode {} {} by {by}",
        if on { "on" } else { "off" },
        hold_for.map_or("until switched back".to_string(), |d| format!("for {d:?}"))
    );
    if let Some(hold_for) = hold_for {
        let (switch, gauge) = (switch.clone(), gauge.clone());
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(hold_for).await;
            if switch.is_last(change) && switch.turn(switch.configured()).is_ok() {
                switch.hold(None);
                let _ = gauge.remove_label_values(&[component, "shadow"]);
                log::warn!("admin: {component} shadow mode back to its configured value (expired)");
            }
        });
    }
    Ok(())
}

/// `component` and `on` (required), `for` (optional), each once.
fn shadow_params(query: &str) -> Result<(&'static str, bool, Option<Duration>), String> {
    let q = Query::parse(query, &["component", "on", "for"]).map_err(|e| e.to_string())?;
    let component = match q.get("component") {
        Some("admission") => "admission",
        Some("breaker") => "breaker",
        Some(other) => {
            return Err(format!(
                "component must be admission or breaker, got {other:?}"
            ))
        }
        None => return Err("component is required: admission or breaker".into()),
    };
    let on = match q.get("on") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(format!("on must be true or false, got {other:?}")),
        None => return Err("on is required: true (shadow mode) or false (enforce)".into()),
    };
    let hold_for = q.get("for").map(parse_hold).transpose()?;
    Ok((component, on, hold_for))
}

/// The limit a pin may hold: at least 3 (so that low < normal < high), at most the configured range.
const PIN_RANGE: std::ops::RangeInclusive<u32> = 3..=100_000;

/// `value` (required: a limit or `auto`) and `for` (optional, not with `auto`), each once.
fn limit_params(query: &str) -> Result<(Option<u32>, Option<Duration>), String> {
    let q = Query::parse(query, &["value", "for"]).map_err(|e| e.to_string())?;
    let value = match q.get("value") {
        Some("auto") => None,
        Some(n) => Some(
            n.parse::<u32>()
                .ok()
                .filter(|n| PIN_RANGE.contains(n))
                .ok_or_else(|| {
                    format!("value must be auto or a limit from 3 to 100000, got {n:?}")
                })?,
        ),
        None => return Err("value is required: a limit from 3 to 100000, or auto".into()),
    };
    let hold_for = q.get("for").map(parse_hold).transpose()?;
    if value.is_none() && hold_for.is_some() {
        return Err("for goes with a limit, not auto".into());
    }
    Ok((value, hold_for))
}

/// `mode` (required) and `for` (optional, not with `auto`), each at most once, nothing else.
fn breaker_params(query: &str) -> Result<(Option<Forced>, Option<Duration>), String> {
    let q = Query::parse(query, &["mode", "for"]).map_err(|e| e.to_string())?;
    let mode = match q.get("mode") {
        Some("force-open") => Some(Forced::Open),
        Some("force-closed") => Some(Forced::Closed),
        Some("auto") => None,
        Some(other) => {
            return Err(format!(
                "mode must be force-open, force-closed or auto, got {other:?}"
            ))
        }
        None => return Err("mode is required: force-open, force-closed or auto".into()),
    };
    let hold_for = q.get("for").map(parse_hold).transpose()?;
    if mode.is_none() && hold_for.is_some() {
        return Err("for goes with force-open or force-closed, not auto".into());
    }
    Ok((mode, hold_for))
}

/// `30s`, `10m`, `2h`: 1 s to 24 h.
pub(crate) fn parse_hold(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("for must be a whole number of s, m or h between 1s and 24h, got {text:?}");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(bad)?;
    let hold = Duration::from_secs(seconds);
    if hold.is_zero() || hold > MAX_HOLD {
        return Err(bad());
    }
    Ok(hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_times_are_whole_seconds_minutes_or_hours_from_1s_to_24h() {
        assert_eq!(parse_hold("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_hold("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_hold("24h"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "s",
            "0s",
            "25h",
            "1441m",
            "10",
            "1.5h",
            "-1m",
            "10d",
            "99999999999999999999h",
        ] {
            assert!(parse_hold(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn breaker_parameters_are_checked_before_anything_changes() {
        assert_eq!(
            breaker_params("mode=force-open&for=5m"),
            Ok((Some(Forced::Open), Some(Duration::from_secs(300))))
        );
        assert_eq!(breaker_params("mode=auto"), Ok((None, None)));
        for bad in [
            "",
            "mode=open",
            "mode=auto&for=5m",
            "mode=force-open&mode=auto",
            "mode=force-open&for=1m&for=2m",
            "mode=force-open&who=me",
        ] {
            assert!(breaker_params(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limit_parameters_are_checked_before_anything_changes() {
        assert_eq!(limit_params("value=40"), Ok((Some(40), None)));
        assert_eq!(
            limit_params("value=10&for=30s"),
            Ok((Some(10), Some(Duration::from_secs(30))))
        );
        assert_eq!(limit_params("value=auto"), Ok((None, None)));
        for bad in [
            "",
            "value=2",
            "value=100001",
            "value=-1",
            "value=ten",
            "value=auto&for=1m",
            "value=5&value=6",
            "value=5&limit=6",
        ] {
            assert!(limit_params(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shadow_parameters_are_checked_before_anything_changes() {
        assert_eq!(
            shadow_params("component=admission&on=true&for=10m"),
            Ok(("admission", true, Some(Duration::from_secs(600))))
        );
        assert_eq!(
            shadow_params("component=breaker&on=false"),
            Ok(("breaker", false, None))
        );
        for bad in [
            "",
            "component=admission",
            "on=true",
            "component=retry&on=true",
            "component=admission&on=yes",
            "component=admission&on=true&on=false",
            "component=admission&on=true&for=0s",
            "component=admission&on=true&x=1",
        ] {
            assert!(shadow_params(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_credentials_decode_as_base64_and_anything_else_is_refused() {
        assert_eq!(
            base64_decode(b"YWRtaW46czNjcmV0").as_deref(),
            Some(&b"admin:s3cret"[..])
        );
        assert_eq!(base64_decode(b"YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode(b"YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode(b"").as_deref(), Some(&b""[..]));
        for bad in [&b"Y"[..], b"!!!!", b"YW I=", b"YQ===x"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdeg", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!same(b"", b"0123456789abcdef"));
    }
}
