//! The secondary's HTTP API (see `docs/api.md`): reads only.

use crate::{Config, SharedCore};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::Server, web};
use common::api::{self, ApiError};
use common::storage::LogStore;
use common::web::{endpoint, error_response, not_found};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

struct State {
    metrics: common::metrics::PrometheusHandle,
    core: SharedCore,
    store: Arc<dyn LogStore>,
    master: String,
    started: Instant,
}

pub fn server(
    cfg: &Config,
    listener: std::net::TcpListener,
    core: SharedCore,
    store: Arc<dyn LogStore>,
    metrics: common::metrics::PrometheusHandle,
) -> anyhow::Result<Server> {
    let state = web::Data::new(State {
        metrics,
        core,
        store,
        master: format!("{}:{}", cfg.master_ip, cfg.master_comm_port),
        started: Instant::now(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(endpoint("/newMessage", "POST", web::post().to(new_message)))
            .service(endpoint("/messages", "GET", web::get().to(messages)))
            .service(endpoint("/health", "GET", web::get().to(health)))
            .service(endpoint("/status", "GET", web::get().to(status)))
            .service(endpoint("/metrics", "GET", web::get().to(metrics_page)))
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(5)
    .disable_signals() // lib.rs handles SIGINT/SIGTERM
    .listen(listener)?
    .run();
    Ok(server)
}

async fn new_message(state: web::Data<State>) -> HttpResponse {
    error_response(&ApiError::not_writable(format!(
        "this node is a secondary and takes no writes; send them to the master (comm address {})",
        state.master
    )))
}

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

async fn health(state: web::Data<State>) -> HttpResponse {
    let st = {
        let core = state.core.lock().unwrap_or_else(|e| e.into_inner());
        core.status(Instant::now())
    };
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "role": "secondary",
        "name": st.name,
        "connected": st.connected,
        "phase": st.phase,
        "master": state.master,
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
async fn status(state: web::Data<State>) -> HttpResponse {
    let st = {
        let core = state.core.lock().unwrap_or_else(|e| e.into_inner());
        core.status(Instant::now())
    };
    let log_id = state.store.log_id();
    HttpResponse::Ok().json(json!({
        "set": (log_id != 0).then(|| format!("chorus-{log_id:016x}")),
        "name": st.name,
        "role": "secondary",
        "state": match (st.connected, st.phase) {
            (false, _) => "(not connected to the master)",
            (true, "live") => "SECONDARY",
            _ => "STARTUP2",
        },
        "phase": st.phase,
        "master": state.master,
        "masterName": st.master,
        "lastId": st.last_id,
        "appendedId": st.appended_id,
        "masterLastId": st.master_last_id,
        "commitId": st.commit_id,
        "lagMessages": st.master_last_id.saturating_sub(st.last_id),
        "heldBack": st.held_back,
        "missing": st.missing,
        "duplicatesIgnored": st.duplicates,
        "lastHeardMsAgo": st.last_heard_ms_ago,
        "lastError": st.last_error,
        "uptimeMs": state.started.elapsed().as_millis() as u64,
    }))
}

/// `GET /metrics`: the gauges are refreshed from the replication state, then everything
/// is rendered.
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
    metrics::gauge!("chorus_held_back").set(st.buffered as f64);
    metrics::counter!("chorus_duplicates_ignored_total").absolute(st.duplicates);
    common::web::metrics_response(&state.metrics)
}
