//! The secondary's HTTP API (see `docs/api.md`): reads only.

use crate::{Config, SharedCore};
use actix_web::{HttpRequest, HttpResponse, dev::Server, web};
use common::api::{self, ApiError, doc};
use common::storage::LogStore;
use common::web::{endpoint, error_response};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;

struct State {
    metrics: common::metrics::PrometheusHandle,
    core: SharedCore,
    store: Arc<dyn LogStore>,
    progress: common::stream::Progress,
    /// The master's comm address, as given by the flags.
    master: String,
    /// The host this node dials the master by: the master's HTTP host where the master
    /// listens on every address.
    master_host: String,
    started: Instant,
    durability: common::storage::Durability,
}

pub fn server(
    cfg: &Config,
    listener: std::net::TcpListener,
    core: SharedCore,
    store: Arc<dyn LogStore>,
    progress: common::stream::Progress,
    metrics: common::metrics::PrometheusHandle,
) -> anyhow::Result<Server> {
    let state = web::Data::new(State {
        metrics,
        core,
        store,
        progress,
        master: format!("{}:{}", cfg.master_ip, cfg.master_comm_port),
        master_host: cfg.master_ip.clone(),
        started: Instant::now(),
        durability: cfg.durability,
    });
    let stream = web::Data::new(common::stream::Source {
        store: state.store.clone(),
        progress: state.progress.clone(),
    });
    let server = common::web::serve(listener, None, move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone())
            .app_data(stream.clone())
            .service(endpoint("/newMessage", "POST", web::post().to(new_message)))
            .service(endpoint("/messages", "GET", web::get().to(messages)))
            .service(endpoint(
                "/messages/stream",
                "GET",
                web::get().to(common::stream::message_stream),
            ))
            .service(endpoint("/health", "GET", web::get().to(health)))
            .service(endpoint("/status", "GET", web::get().to(status)))
            .service(endpoint("/metrics", "GET", web::get().to(metrics_page)))
            .service(endpoint(
                "/openapi.json",
                "GET",
                web::get().to(openapi_json),
            ));
    })?;
    Ok(server)
}

/// Secondaries take no writes.
#[utoipa::path(post, path = "/newMessage", tag = "secondary",
    responses((status = 503, description = "Not writable: send writes to the master named in `primary`", body = doc::Error)))]
async fn new_message(state: web::Data<State>) -> HttpResponse {
    let primary = state
        .core
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .master_http(&state.master_host);
    let error = match &primary {
        Some(p) => format!(
            "this node is a secondary and takes no writes; send them to the master at http://{p}"
        ),
        None => "this node is a secondary and takes no writes, and it does not reach a master now; try again shortly".to_string(),
    };
    error_response(&ApiError::not_writable(error, primary))
}

/// This secondary's gap-free prefix of the master's log; streamed.
#[utoipa::path(get, path = "/messages", tag = "every node",
    params(
        ("from" = Option<u64>, Query, description = "First id wanted (default 1)"),
        ("limit" = Option<u64>, Query, description = "Most messages wanted (default all)"),
        ("readConcern" = Option<String>, Query, description = "`local` (default) or `majority`"),
    ),
    responses(
        (status = 200, description = "Messages", body = Vec<doc::Message>),
        (status = 400, description = "Invalid query", body = doc::Error),
    ))]
async fn messages(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let q = match api::parse_messages_query(req.query_string()) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    let commit_id = state
        .core
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .commit_id();
    common::web::messages(q, state.store.clone(), commit_id).await
}

/// Liveness, and whether it is connected to the master.
#[utoipa::path(get, path = "/health", tag = "every node",
    responses((status = 200, description = "The node is up; connection and last id", body = Object)))]
async fn health(state: web::Data<State>) -> HttpResponse {
    let st = {
        let core = state.core.lock().unwrap_or_else(|e| e.into_inner());
        core.status(Instant::now())
    };
    let primary = state
        .core
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .master_http(&state.master_host);
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "role": "secondary",
        "name": st.name,
        "connected": st.connected,
        "phase": st.phase,
        "removed": st.removed,
        "master": state.master,
        "primary": primary,
        "masterName": st.master,
        "lastId": st.last_id,
        "masterLastId": st.master_last_id,
        "lag": st.master_last_id.saturating_sub(st.last_id),
        "buffered": st.buffered,
        "duplicatesIgnored": st.duplicates,
        "lastHeardMsAgo": st.last_heard_ms_ago,
        "lastError": st.last_error,
        "uptimeMs": state.started.elapsed().as_millis() as u64,
    }))
}

/// `GET /status`: this secondary's replication state, with what it holds back and what
/// it waits for.
/// Replication state: prefix, held-back and missing ids.
#[utoipa::path(get, path = "/status", tag = "every node",
    responses((status = 200, description = "State, lag, held-back and missing ids", body = Object)))]
async fn status(state: web::Data<State>) -> HttpResponse {
    let st = {
        let core = state.core.lock().unwrap_or_else(|e| e.into_inner());
        core.status(Instant::now())
    };
    let log_id = state.store.log_id();
    let primary = state
        .core
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .master_http(&state.master_host);
    HttpResponse::Ok().json(json!({
        "set": (log_id != 0).then(|| format!("chorus-{log_id:016x}")),
        "name": st.name,
        "role": "secondary",
        "state": match (st.connected, st.phase) {
            _ if st.removed => "REMOVED",
            (false, _) => "(not connected to the master)",
            (true, "live") => "SECONDARY",
            _ => "STARTUP2",
        },
        "phase": st.phase,
        "removed": st.removed,
        "master": state.master,
        "primary": primary,
        "masterName": st.master,
        "lastId": st.last_id,
        "appendedId": st.appended_id,
        "masterLastId": st.master_last_id,
        "commitId": st.commit_id,
        "lagMessages": st.master_last_id.saturating_sub(st.last_id),
        "durability": state.durability.mode(),
        "syncIntervalMs": state.durability.sync_interval_ms(),
        "heldBack": st.held_back,
        "missing": st.missing,
        "duplicatesIgnored": st.duplicates,
        "truncated": st.truncated,
        "lastHeardMsAgo": st.last_heard_ms_ago,
        "lastError": st.last_error,
        "uptimeMs": state.started.elapsed().as_millis() as u64,
    }))
}

/// `GET /metrics`: the gauges are refreshed from the replication state, then everything
/// is rendered.
/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "every node",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    let st = {
        let core = state.core.lock().unwrap_or_else(|e| e.into_inner());
        core.status(Instant::now())
    };
    metrics::gauge!("chorus_last_id").set(st.last_id as f64);
    metrics::gauge!("chorus_master_last_id").set(st.master_last_id as f64);
    metrics::gauge!("chorus_commit_id").set(st.commit_id as f64);
    metrics::gauge!("chorus_lag_messages").set(st.master_last_id.saturating_sub(st.last_id) as f64);
    metrics::gauge!("chorus_connected").set(f64::from(u8::from(st.connected)));
    metrics::gauge!("chorus_streams").set(state.progress.streams() as f64);
    metrics::gauge!("chorus_held_back").set(st.buffered as f64);
    metrics::counter!("chorus_duplicates_ignored_total").absolute(st.duplicates);
    common::web::metrics_response(&state.metrics)
}

/// The secondary's API, generated from the handlers' annotations above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chorus secondary",
        description = "A secondary of a chorus replicated log: follows the master, serves reads."
    ),
    paths(
        new_message,
        messages,
        common::stream::message_stream,
        health,
        status,
        metrics_page,
        openapi_json
    ),
    components(schemas(doc::Error, doc::Message))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "every node",
    responses((status = 200, description = "The OpenAPI document of this node's API", body = Object)))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
