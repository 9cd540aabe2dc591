//! The delivery-log page: server-rendered HTML from minijinja templates, no JavaScript. A list
//! with filters and a chart per destination, a detail page with every attempt and a replay
//! button, and a login form when a token is set.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Deserialize;

use super::api::ListQuery;
use super::{AdminState, SESSION_COOKIE};
use crate::commands::log;
use crate::store::{Selection, Status, now_ms};

/// The compiled templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    pub fn new() -> Result<Pages, String> {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("list.html", include_str!("templates/list.html")),
            ("detail.html", include_str!("templates/detail.html")),
            ("login.html", include_str!("templates/login.html")),
        ] {
            env.add_template(name, source)
                .map_err(|e| format!("admin template {name}: {e}"))?;
        }
        Ok(Pages { env })
    }

    fn render(&self, name: &str, ctx: Value) -> HttpResponse {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                // The page shows the delivery log: nothing of it belongs in a shared cache, nor
                // in a frame of another site.
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header(("x-frame-options", "DENY"))
                .insert_header((
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
                ))
                .body(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "admin page failed to render");
                HttpResponse::InternalServerError().body("the page failed to render")
            }
        }
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn store_failed(e: &crate::store::StoreError) -> HttpResponse {
    tracing::error!(error = %e, "admin page: the store failed");
    HttpResponse::ServiceUnavailable().body(format!("the store failed: {e}"))
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    if !state.page_allowed(&req) {
        return see_other("/login");
    }
    let (filter, error) = match query.filter() {
        Ok(f) => (f, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let limit = 200;
    let filter = crate::store::Filter { limit, ..filter };
    let items = match log::list(state.store.as_ref(), &filter).await {
        Ok(items) => items,
        Err(e) => return store_failed(&e),
    };
    let now_hour = now_ms() / 3_600_000;
    let counts = match state.store.hourly(now_hour - super::chart::HOURS + 1).await {
        Ok(c) => c,
        Err(e) => return store_failed(&e),
    };
    // Every configured destination, then any other the log still names.
    let config = state.config();
    let mut destinations: Vec<String> =
        config.destinations.iter().map(|d| d.name.clone()).collect();
    for c in &counts {
        if !destinations.contains(&c.destination) {
            destinations.push(c.destination.clone());
        }
    }
    let charts = super::chart::charts(&destinations, &counts, now_hour);
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    state.pages.render(
        "list.html",
        context! {
            items => Value::from(Serde(&items)), charts => Value::from(Serde(&charts)),
            statuses, destinations, error, limit,
            query => context! {
                status => &query.status, destination => &query.destination,
                since => &query.since, participation => &query.participation,
            },
            logout => state.token().is_some(), csrf => state.csrf(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    replayed: Option<u64>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<i64>,
    query: web::Query<ShowQuery>,
) -> HttpResponse {
    if !state.page_allowed(&req) {
        return see_other("/login");
    }
    let id = id.into_inner();
    let detail = match log::show(&state.config(), state.store.as_ref(), id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return HttpResponse::NotFound()
                .content_type("text/html; charset=utf-8")
                .body(format!(
                    "<p>No delivery {id}. <a href=\"/\">Back to the log</a></p>"
                ));
        }
        Err(e) => return store_failed(&e),
    };
    let participation_link = detail.notification.as_ref().map(|n| {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("participation", &n.participation)
            .finish();
        format!("/?{query}")
    });
    state.pages.render(
        "detail.html",
        context! {
            d => Value::from(Serde(&detail)), participation_link, replayed => query.replayed,
            logout => state.token().is_some(), csrf => state.csrf(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn replay(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<i64>,
    form: web::Form<ReplayForm>,
) -> HttpResponse {
    if !state.page_allowed(&req) {
        return see_other("/login");
    }
    if !state.form_allowed(&req, &form.csrf) {
        return HttpResponse::Forbidden().body("this form did not come from the delivery-log page");
    }
    let id = id.into_inner();
    let force = form.force.as_deref() == Some("true");
    match state.store.replay(&Selection::Ids(vec![id]), force).await {
        Ok(r) => {
            state.worker.wake_all();
            tracing::info!(
                delivery_id = id,
                replayed = r.replayed,
                "replayed from the admin page"
            );
            see_other(&format!("/deliveries/{id}?replayed={}", r.replayed))
        }
        Err(e) => store_failed(&e),
    }
}

pub async fn login_form(state: web::Data<AdminState>) -> HttpResponse {
    if state.token().is_none() {
        return see_other("/");
    }
    state
        .pages
        .render("login.html", context! { logout => false })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AdminState>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    if !state.login_matches(&req, form.token.trim()) {
        let peer = req.peer_addr().map(|a| a.ip());
        let delay = peer.map_or(std::time::Duration::ZERO, |ip| {
            state.throttle.failed(ip, tokio::time::Instant::now())
        });
        tracing::warn!(
            peer = %peer.map(|ip| ip.to_string()).unwrap_or_default(),
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "admin login failed"
        );
        tokio::time::sleep(delay).await;
        let mut response = state.pages.render(
            "login.html",
            context! { error => "That is not the admin token.", logout => false },
        );
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return response;
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((
            header::SET_COOKIE,
            format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                state.session(super::now_s()),
                super::SESSION_TTL.as_secs()
            ),
        ))
        .finish()
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    req: HttpRequest,
    state: web::Data<AdminState>,
    form: web::Form<LogoutForm>,
) -> HttpResponse {
    if !state.form_allowed(&req, &form.csrf) {
        return HttpResponse::Forbidden().body("this form did not come from the delivery-log page");
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header((
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        ))
        .finish()
}
