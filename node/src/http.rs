//! The HTTP API of a node in any role (see `docs/api.md`): every handler asks the
//! node's [`Role`] what it is, and a secondary answers what only a master can do with
//! 503 `not_writable` and the master's address.

use crate::Config;
use crate::follower;
use crate::member::{self, Event, Node};
use crate::primary::replicator::{
    GetStatus, Holders, Readmit, RemoveMember, Replicator, Submit, SubmitError,
};
use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, dev::Server, web};
use common::api::{self, ApiError, doc};
use common::replication::{MasterStatus, Rejected, WriteOutcome, WriteRequest};
use common::storage::LogStore;
use common::web::{endpoint, error_response, read_body};
use serde_json::json;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use utoipa::OpenApi;

/// What the node is now, for the handlers.
#[derive(Clone)]
pub enum Role {
    /// The master: its replicator.
    Primary(Addr<Replicator>),
    /// A secondary: its replication core.
    Secondary(follower::Handle),
}

/// What the HTTP worker thread starts when it comes up, on its event loop: the member's
/// driver (and so the replicator, when elected) and the comm port's accept loop.
pub struct Engine {
    pub node: Arc<Node>,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    pub comm: std::net::TcpListener,
    pub stop: tokio_util::sync::CancellationToken,
    /// Told when the driver has stopped (the replicator retired, the follower gone).
    pub done: tokio::sync::oneshot::Sender<()>,
}

impl Engine {
    fn start(self) {
        match tokio::net::TcpListener::from_std(self.comm) {
            Ok(comm) => {
                actix_web::rt::spawn(crate::primary::session::accept_loop(
                    comm,
                    self.node.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the comm port"),
        }
        let done = self.done;
        actix_web::rt::spawn(async move {
            member::drive(self.node, self.events, self.stop).await;
            let _ = done.send(());
        });
    }
}

struct State {
    metrics: common::metrics::PrometheusHandle,
    node: Arc<Node>,
    store: Arc<dyn LogStore>,
    progress: common::stream::Progress,
    max_message_bytes: usize,
    started: Instant,
    durability: common::storage::Durability,
    write_metrics: common::metrics::WriteMetrics,
    admin_token: Option<common::config::AdminToken>,
}

/// Build the HTTP server on an already bound listener: one worker thread, which starts
/// a master's engine (replicator and comm port) on its event loop as it comes up.
pub fn server(
    cfg: &Config,
    listener: std::net::TcpListener,
    engine: Engine,
    metrics: common::metrics::PrometheusHandle,
) -> anyhow::Result<Server> {
    let (max_message_bytes, durability) = (cfg.max_message_bytes, cfg.durability);
    let admin_token = cfg.admin_token.clone();
    let started = Instant::now();
    let node = engine.node.clone();
    let store = node.store.clone();
    let progress = node.progress.clone();
    // The engine until the worker starts it (a restarted worker finds it running).
    let slot = Arc::new(std::sync::Mutex::new(Some(engine)));
    let tls = cfg.tls.as_ref().map(|t| t.http_server.clone());
    let server = common::web::serve(
        listener,
        Some(1),
        tls,
        move |cfg: &mut web::ServiceConfig| {
            if let Some(engine) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                engine.start();
            }
            let state = web::Data::new(State {
                metrics: metrics.clone(),
                node: node.clone(),
                store: store.clone(),
                progress: progress.clone(),
                max_message_bytes,
                started,
                durability,
                write_metrics: common::metrics::WriteMetrics::new(),
                admin_token: admin_token.clone(),
            });
            let stream = common::stream::Source {
                store: store.clone(),
                progress: progress.clone(),
            };
            cfg.app_data(state)
                .app_data(web::Data::new(stream))
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
                ))
                .service(endpoint(
                    "/messages/{id}/status",
                    "GET",
                    web::get().to(message_status),
                ))
                .service(endpoint(
                    "/members/{name}",
                    "DELETE",
                    web::delete().to(remove_member),
                ))
                .service(endpoint("/members", "POST", web::post().to(readmit_member)))
                .service(endpoint("/hello", "GET", web::get().to(hello)))
                .service(endpoint("/checksum", "GET", web::get().to(checksum)))
                .service(endpoint("/", "GET", web::get().to(chat_page)))
                .service(endpoint("/admin/crash", "POST", web::post().to(crash)))
                .service(
                    web::resource("/admin/faults")
                        .route(web::get().to(get_faults))
                        .route(web::put().to(put_faults))
                        .route(web::delete().to(delete_faults))
                        .default_service(web::to(|req: HttpRequest| async move {
                            common::web::error_response(&ApiError::method_not_allowed(
                                req.method().as_str(),
                                req.path(),
                                "GET, PUT or DELETE",
                            ))
                        })),
                )
                .service(endpoint("/stepDown", "POST", web::post().to(step_down)));
        },
    )?;
    Ok(server)
}

/// Append a message and wait for its write concern.
#[utoipa::path(post, path = "/newMessage", tag = "master",
    request_body = doc::NewMessage,
    responses(
        (status = 201, description = "Held by at least `writeConcern` members", body = doc::Receipt),
        (status = 400, description = "Malformed JSON or an invalid field", body = doc::Error),
        (status = 413, description = "Message over the size limit", body = doc::Error),
        (status = 503, description = "Not writable: a secondary (the master's address in `primary`), no quorum, or shutting down; nothing stored", body = doc::Error),
        (status = 504, description = "Timed out; the message is stored and keeps replicating", body = doc::Error),
    ))]
async fn new_message(
    http: HttpRequest,
    state: web::Data<State>,
    payload: web::Payload,
) -> HttpResponse {
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(_) => return not_primary(&state.node, "takes no writes"),
    };
    let started = Instant::now();
    let (response, write_concern) = write(&http, &state, replicator, payload).await;
    let outcome = match response.status().as_u16() {
        201 => "committed",
        504 => "timeout",
        503 => "not_writable",
        400 | 413 => "invalid",
        _ => "error",
    };
    state
        .write_metrics
        .record(outcome, write_concern, started.elapsed().as_secs_f64());
    response
}

/// Validate, submit and wait for one write; also the write concern it asked for.
async fn write(
    http: &HttpRequest,
    state: &State,
    replicator: &Addr<Replicator>,
    payload: web::Payload,
) -> (HttpResponse, Option<common::replication::WriteConcern>) {
    // JSON escapes can make a message up to 6 times its size on the wire.
    let limit = state.max_message_bytes.saturating_mul(6) + 64 * 1024;
    let body = match read_body(http, payload, limit).await {
        Ok(b) => b,
        Err(e) => return (error_response(&e), None),
    };
    let req = match api::parse_new_message(&body, state.max_message_bytes) {
        Ok(r) => r,
        Err(e) => return (error_response(&e), None),
    };
    let asked = req.write_concern;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let write = WriteRequest {
        message: req.message,
        write_concern: req.write_concern,
        timeout: req.timeout,
        request_id: req.request_id,
    };
    replicator.do_send(Submit { write, reply });
    let response = match answer.await {
        Ok(Ok(WriteOutcome::Committed(r))) => HttpResponse::Created().json(&r),
        Ok(Ok(WriteOutcome::TimedOut(r))) => {
            error_response(&ApiError::write_concern_timeout(&r, asked))
        }
        Ok(Err(e)) => refused(e),
        // The replicator is gone (the process is stopping) without answering.
        Err(_) => shutting_down(),
    };
    (response, Some(asked))
}

/// Whether this request may do an admin operation (None) or its refusal. With
/// `--admin-token-file` it must carry
/// `Authorization: Bearer <token>` (401 `unauthorized` otherwise, from any address);
/// without, it must come from a loopback address (403 `forbidden` otherwise), as Redis's
/// protected mode serves only loopback clients until a password is set.
fn admin_refusal(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    admin_check(req, state.admin_token.as_ref()).err()
}

/// The check itself: `Err` holds the refusal.
#[allow(clippy::result_large_err)] // built once per admin request, on the refusal path
fn admin_check(
    req: &HttpRequest,
    admin_token: Option<&common::config::AdminToken>,
) -> Result<(), HttpResponse> {
    match admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if given.is_some_and(|g| token.matches(g)) {
                return Ok(());
            }
            let why = match given {
                None => "this operation needs an `Authorization: Bearer <admin token>` header",
                Some(_) => "wrong admin token",
            };
            let mut resp = error_response(&ApiError::new(401, "unauthorized", why));
            resp.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
            Err(resp)
        }
        // A web page may send requests to loopback addresses from the user's browser;
        // browsers name the page's origin on such requests, so those are refused.
        None if req.headers().contains_key(actix_web::http::header::ORIGIN) => {
            Err(error_response(&ApiError::new(
                403,
                "forbidden",
                "admin operations are not served to web pages (this request has an Origin header); start the node with --admin-token-file to allow them with the token",
            )))
        }
        None => match req.peer_addr() {
            Some(a) if a.ip().is_loopback() => Ok(()),
            peer => Err(error_response(&ApiError::new(
                403,
                "forbidden",
                format!(
                    "admin operations are served to loopback clients only (this request came from {}); start the node with --admin-token-file to allow others with the token",
                    peer.map_or_else(|| "an unknown address".to_string(), |a| a.ip().to_string())
                ),
            ))),
        },
    }
}

/// 503 `not_writable` from a secondary asked to do what only the master does: the
/// master's HTTP address in `primary` (null while this node reaches no master).
fn not_primary(node: &Node, what: &str) -> HttpResponse {
    let primary = node.master_http();
    let error = match &primary {
        Some(p) => {
            format!("this node is a secondary and {what}; send this to the master at http://{p}")
        }
        None => format!(
            "this node is a secondary and {what}, and it does not reach a master now; try again shortly"
        ),
    };
    error_response(&ApiError::not_writable(error, primary))
}

/// The answer to a write the replicator did not accept (or stopped waiting for).
fn refused(e: SubmitError) -> HttpResponse {
    match e {
        // No master that takes writes is known: this one cannot, and no other is.
        SubmitError::ShuttingDown | SubmitError::StoppedWaiting => {
            error_response(&ApiError::not_writable(e.to_string(), None))
        }
        // Another member is (or is about to be) the master.
        SubmitError::SteppedDown | SubmitError::Rejected(Rejected::SteppingDown) => {
            error_response(&ApiError::not_writable(e.to_string(), None))
        }
        SubmitError::Rejected(e @ Rejected::NoQuorum { .. }) => {
            error_response(&ApiError::not_writable(e.to_string(), None))
        }
        SubmitError::Rejected(e @ Rejected::Overloaded { .. }) => {
            let mut resp = error_response(&ApiError::new(503, "overloaded", e.to_string()));
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            resp
        }
        SubmitError::Rejected(Rejected::Storage(e)) => {
            error_response(&ApiError::new(500, "storage_error", e.to_string()))
        }
    }
}

/// The log, ascending by id; streamed.
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
    let commit_id = match &state.node.settled_role().await {
        _ if !q.majority => u64::MAX,
        Role::Primary(r) => match master_status(r).await {
            Some((st, _)) => st.commit_id,
            None => return shutting_down(),
        },
        Role::Secondary(f) => f.commit_id(),
    };
    common::web::messages(q, state.store.clone(), commit_id).await
}

/// The master's replication state and how many syncs ran (None: it is shutting
/// down or stepped down).
async fn master_status(r: &Addr<Replicator>) -> Option<(MasterStatus, u64)> {
    r.send(GetStatus).await.ok().flatten()
}

/// Liveness, members and quorum.
#[utoipa::path(get, path = "/health", tag = "every node",
    responses((status = 200, description = "The node is up; on the master its members and quorum, on a secondary its link to the master", body = Object)))]
async fn health(state: web::Data<State>) -> HttpResponse {
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(f) => return secondary_health(&state, f),
    };
    let Some((st, syncs)) = master_status(replicator).await else {
        return shutting_down();
    };
    let members: Vec<_> = st
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "address": m.address,
                "status": m.health,
                "connected": m.connected,
                "phase": m.phase,
                "lastAckedId": m.last_acked_id,
                "lag": m.lag,
                "lastHeardMsAgo": m.last_heard_ms_ago,
                "inFlight": m.in_flight,
                "resends": m.resends,
                "sent": m.sent,
                "catchUpFrom": m.catch_up_from,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "role": "master",
        "name": st.name,
        "lastId": st.last_id,
        "logId": format!("{:#x}", st.log_id),
        "members": members,
        "memberCount": st.member_count,
        "reachable": st.reachable,
        "hasQuorum": st.has_quorum,
        "writable": st.has_quorum,
        "pendingWrites": st.pending_writes,
        "appendedId": st.appended_id,
        "writtenId": st.written_id,
        "term": st.term,
        "syncs": syncs,
        "uptimeMs": state.started.elapsed().as_millis() as u64,
        "removed": st.removed,
        "refused": st.refused,
        "warnings": warnings(&st),
    }))
}

fn shutting_down() -> HttpResponse {
    error_response(&ApiError::not_writable("the master is shutting down", None))
}

/// What an operator should know first, in words: peers this master refuses (a
/// secondary holding another log means this master was probably started on the wrong
/// data directory), and a missing quorum.
fn warnings(st: &common::replication::MasterStatus) -> Vec<String> {
    let mut out: Vec<String> = st
        .refused
        .iter()
        .map(|r| match r.code {
            common::protocol::ErrorCode::Removed => format!(
                "{} was removed from the set and is refused when it connects ({} times, last {} ms ago); re-admit it with POST /members {{\"name\": \"{}\"}}",
                r.name, r.times, r.last_refused_ms_ago, r.name
            ),
            _ => format!(
                "{} is refused ({:?}, {} times, last {} ms ago): {}",
                r.name, r.code, r.times, r.last_refused_ms_ago, r.reason
            ),
        })
        .collect();
    if !st.has_quorum {
        out.push(format!(
            "no quorum: this master reaches {} of its {} members and takes no writes",
            st.reachable, st.member_count
        ));
    }
    out
}

/// `GET /status`: the replica set as this master sees it, modelled on `rs.status()`.
/// The replica set as this node sees it (like `rs.status()`).
#[utoipa::path(get, path = "/status", tag = "every node",
    responses((status = 200, description = "Members, states, lag, commit id", body = Object)))]
async fn status(state: web::Data<State>) -> HttpResponse {
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(f) => return secondary_status(&state, f),
    };
    let Some((st, syncs)) = master_status(replicator).await else {
        return shutting_down();
    };
    let mut members = vec![json!({
        "name": st.name,
        "self": true,
        "role": "master",
        "state": if st.has_quorum { "PRIMARY" } else { "PRIMARY (read-only: no quorum)" },
        "health": "Healthy",
        "lastAckedId": st.last_id,
        "lagMessages": 0,
        "lagMs": 0,
        "uptimeMs": state.started.elapsed().as_millis() as u64,
    })];
    members.extend(st.members.iter().map(|m| {
        let state = match (m.health, m.phase) {
            (common::replication::Health::Unhealthy, _) => "(not reachable/healthy)",
            (_, "live") => "SECONDARY",
            _ => "STARTUP2",
        };
        json!({
            "name": m.name,
            "self": false,
            "role": "secondary",
            "address": m.address,
            "state": state,
            "health": m.health,
            "phase": m.phase,
            "lastAckedId": m.last_acked_id,
            "lagMessages": m.lag,
            "lagMs": m.lag_ms,
            "lastHeartbeatMsAgo": m.last_heard_ms_ago,
            "rttMs": m.rtt_ms,
            "uptimeMs": m.uptime_ms,
            "resends": m.resends,
        })
    }));
    HttpResponse::Ok().json(json!({
        "set": format!("chorus-{:016x}", st.log_id),
        "name": st.name,
        "role": "master",
        "lastId": st.last_id,
        "writtenId": st.written_id,
        "term": st.term,
        "commitId": st.commit_id,
        "hasQuorum": st.has_quorum,
        "writable": st.has_quorum,
        "reachable": st.reachable,
        "memberCount": st.member_count,
        "pendingWrites": st.pending_writes,
        "syncs": syncs,
        "members": members,
        "removed": st.removed,
        "refused": st.refused,
        "warnings": warnings(&st),
        "durability": state.durability.mode(),
        "syncIntervalMs": state.durability.sync_interval_ms(),
        "configVersion": state.store.membership().config_version,
        "configTerm": state.store.membership().config_term,
        "clusterKey": state.node.cfg.cluster_key.is_some(),
        "tls": state.node.cfg.tls.is_some(),
        "electionCandidateMetrics": candidate_metrics(&state.node),
        "lastRollback": last_rollback(&state.node),
    }))
}

/// Milliseconds since the Unix epoch of a moment `ago` before now.
fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The election this master won (MongoDB's `electionCandidateMetrics`), with its
/// wall-clock time (`lastElectionDate`, ms since the Unix epoch).
fn candidate_metrics(node: &Node) -> serde_json::Value {
    let Some(m) = node.election_metrics().filter(|m| m.won) else {
        return serde_json::Value::Null;
    };
    let mut v = json!(m);
    if let Some(started) = m.started {
        let date = SystemTime::now().checked_sub(started.elapsed());
        v["lastElectionDate"] = json!(date.map(epoch_ms));
    }
    v
}

/// The last rollback on this member since it started: how many entries, the file
/// they went to, the first id cut and when (ms since the Unix epoch).
fn last_rollback(node: &Node) -> serde_json::Value {
    node.last_rollback().map_or(serde_json::Value::Null, |r| {
        json!({
            "count": r.rolled_back.count,
            "file": r.rolled_back.file,
            "fromId": r.rolled_back.from_id,
            "time": epoch_ms(r.at),
        })
    })
}

/// `GET /messages/{id}/status`: which members hold message `id`.
/// Which members hold a message.
#[utoipa::path(get, path = "/messages/{id}/status", tag = "master",
    params(("id" = u64, Path, description = "Message id")),
    responses(
        (status = 200, description = "Holders of the message", body = Object),
        (status = 400, description = "Not a message id", body = doc::Error),
        (status = 404, description = "No such message yet, or asked of a secondary (only the master knows)", body = doc::Error),
    ))]
async fn message_status(path: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(f) => {
            let at = f.primary().map_or_else(
                || "the master".to_string(),
                |p| format!("the master at http://{p}"),
            );
            return error_response(&ApiError::new(
                404,
                "not_found",
                format!("only the master knows which members hold a message; ask {at}"),
            ));
        }
    };
    let Ok(id) = path.parse::<u64>() else {
        return error_response(&ApiError::bad_request(
            "invalid_id",
            format!("a message id is an integer >= 1, got {:?}", path.as_str()),
        ));
    };
    let (Ok(holders), Some((st, _))) = (
        replicator.send(Holders(id)).await,
        master_status(replicator).await,
    ) else {
        return shutting_down();
    };
    let Some(r) = holders else {
        return error_response(&ApiError::new(
            404,
            "not_found",
            format!("no message with id {id} (the log ends at {})", st.last_id),
        ));
    };
    let mut members = vec![json!({"name": st.name, "holds": true})];
    members.extend(
        st.members
            .iter()
            .map(|m| json!({"name": m.name, "holds": m.last_acked_id >= id})),
    );
    HttpResponse::Ok().json(json!({
        "id": id,
        "acks": r.acks,
        "ackedBy": r.acked_by,
        "majority": id <= st.commit_id,
        "members": members,
    }))
}

/// `DELETE /members/{name}`: remove a secondary; it stays out until re-admitted.
/// Remove a secondary from the set: refused when it reconnects, until re-admitted.
#[utoipa::path(delete, path = "/members/{name}", tag = "master",
    params(("name" = String, Path, description = "The secondary's --name")),
    responses(
        (status = 200, description = "Removed", body = Object),
        (status = 404, description = "No such member", body = doc::Error),
        doc::AdminRefusal,
        (status = 503, description = "Not the master (its address in `primary`), or a change of the members still in progress (`membership_change_in_progress`: try again shortly)", body = doc::Error),
    ))]
async fn remove_member(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(_) => return not_primary(&state.node, "does not change the membership"),
    };
    let name = path.into_inner();
    match replicator.send(RemoveMember(name.clone())).await {
        Ok(Ok(true)) => {
            let members = master_status(replicator)
                .await
                .map(|(st, _)| st.member_count)
                .unwrap_or_default();
            HttpResponse::Ok().json(json!({"removed": name, "memberCount": members}))
        }
        Ok(Ok(false)) => error_response(&ApiError::new(
            404,
            "not_found",
            format!("no member named {name:?}"),
        )),
        Ok(Err(e @ common::replication::MembershipError::InProgress)) => error_response(
            &ApiError::new(503, "membership_change_in_progress", e.to_string()),
        ),
        Ok(Err(common::replication::MembershipError::NotMaster)) => {
            not_primary(&state.node, "does not change the membership")
        }
        Ok(Err(e)) => error_response(&ApiError::new(500, "storage_error", e.to_string())),
        Err(_) => shutting_down(),
    }
}

/// `POST /members` `{"name": "s2"}`: let a removed secondary join again; it becomes a
/// member when it next connects (it keeps trying by itself).
/// Re-admit a removed secondary.
#[utoipa::path(post, path = "/members", tag = "master",
    request_body = doc::Member,
    responses(
        (status = 200, description = "Re-admitted, or was not removed (`readmitted` false)", body = Object),
        (status = 400, description = "Malformed body", body = doc::Error),
        doc::AdminRefusal,
        (status = 503, description = "Not the master (its address in `primary`)", body = doc::Error),
    ))]
async fn readmit_member(
    req: HttpRequest,
    state: web::Data<State>,
    payload: web::Payload,
) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(_) => return not_primary(&state.node, "does not change the membership"),
    };
    let name = match read_body(&req, payload, 64 * 1024)
        .await
        .and_then(|b| api::parse_member(&b))
    {
        Ok(name) => name,
        Err(e) => return error_response(&e),
    };
    match replicator.send(Readmit(name.clone())).await {
        Ok(Ok(readmitted)) => HttpResponse::Ok().json(json!({
            "name": name,
            "readmitted": readmitted,
        })),
        Ok(Err(common::replication::MembershipError::NotMaster)) => {
            not_primary(&state.node, "does not change the membership")
        }
        Ok(Err(e)) => error_response(&ApiError::new(500, "storage_error", e.to_string())),
        Err(_) => shutting_down(),
    }
}

/// `GET /metrics`: the gauges are refreshed from the replication state, then everything
/// is rendered.
/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "every node",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    let role = state.node.settled_role().await;
    let replicator = match &role {
        Role::Primary(r) => r,
        Role::Secondary(f) => return secondary_metrics(&state, f),
    };
    if let Some((st, _)) = master_status(replicator).await {
        metrics::gauge!("chorus_last_id").set(st.last_id as f64);
        metrics::gauge!("chorus_commit_id").set(st.commit_id as f64);
        metrics::gauge!("chorus_members").set(st.member_count as f64);
        metrics::gauge!("chorus_members_connected")
            .set(st.members.iter().filter(|m| m.connected).count() as f64);
        metrics::gauge!("chorus_writable").set(f64::from(u8::from(st.has_quorum)));
        metrics::gauge!("chorus_pending_writes").set(st.pending_writes as f64);
        metrics::gauge!("chorus_streams").set(state.progress.streams() as f64);
        for m in &st.members {
            let name = m.name.clone();
            metrics::gauge!("chorus_member_lag_messages", "member" => name.clone())
                .set(m.lag as f64);
            metrics::gauge!("chorus_member_lag_seconds", "member" => name.clone())
                .set(m.lag_ms.unwrap_or(0) as f64 / 1000.0);
            metrics::gauge!("chorus_member_connected", "member" => name.clone())
                .set(f64::from(u8::from(m.connected)));
            metrics::counter!("chorus_resends_total", "member" => name).absolute(m.resends);
        }
    }
    common::web::metrics_response(&state.metrics)
}

/// Liveness, and whether it is connected to the master.
fn secondary_health(state: &State, f: &follower::Handle) -> HttpResponse {
    let st = f.status(Instant::now());
    let primary = f.primary();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "role": "secondary",
        "name": st.name,
        "connected": st.connected,
        "phase": st.phase,
        "removed": st.removed,
        "master": state.node.master_comm(),
        "seed": f.master,
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
fn secondary_status(state: &State, f: &follower::Handle) -> HttpResponse {
    let st = f.status(Instant::now());
    let log_id = state.store.log_id();
    let primary = f.primary();
    let own_state = match (st.connected, st.phase) {
        _ if st.removed => "REMOVED",
        _ if st.rolling_back => "ROLLBACK",
        (false, _) => "(not connected to the master)",
        (true, "live") => "SECONDARY",
        _ => "STARTUP2",
    };
    let term = state.node.term();
    let membership = state.store.membership();
    // A secondary hears only from its master: the others' states are the master's to
    // tell (GET /status there), as MongoDB shows UNKNOWN for members it has not reached.
    let members: Vec<_> = membership
        .hosts
        .iter()
        .map(|h| {
            let (state, term) = if h.name == st.name {
                (own_state, Some(term))
            } else if st.connected && st.master.as_deref() == Some(h.name.as_str()) {
                ("PRIMARY", Some(term))
            } else {
                ("UNKNOWN", None)
            };
            json!({
                "name": h.name,
                "self": h.name == st.name,
                "state": state,
                "term": term,
                "address": h.http,
                "comm": h.comm,
                "priority": h.priority,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "set": (log_id != 0).then(|| format!("chorus-{log_id:016x}")),
        "name": st.name,
        "role": "secondary",
        "state": own_state,
        "term": term,
        "configVersion": membership.config_version,
        "configTerm": membership.config_term,
        "clusterKey": state.node.cfg.cluster_key.is_some(),
        "tls": state.node.cfg.tls.is_some(),
        "members": members,
        "lastRollback": last_rollback(&state.node),
        "rollingBack": st.rolling_back,
        "phase": st.phase,
        "removed": st.removed,
        "master": state.node.master_comm(),
        "seed": f.master,
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
fn secondary_metrics(state: &State, f: &follower::Handle) -> HttpResponse {
    let st = f.status(Instant::now());
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

/// `GET /hello`: what a client needs to find the master (MongoDB's `hello`).
#[utoipa::path(get, path = "/hello", tag = "every node",
    responses((status = 200, description = "This member's view of the set: who is master, the members' HTTP addresses, term, config version, last write and commit id", body = Object)))]
async fn hello(state: web::Data<State>) -> HttpResponse {
    let node = &state.node;
    let membership = node.store.membership();
    let (writable, commit_id, primary) = match node.settled_role().await {
        Role::Primary(r) => match master_status(&r).await {
            Some((st, _)) => (
                st.has_quorum,
                st.commit_id,
                Some(node.addresses.http.clone()),
            ),
            None => (false, 0, None),
        },
        Role::Secondary(f) => {
            let commit_id = f.commit_id();
            (false, commit_id, node.master_http())
        }
    };
    let is_primary = matches!(node.settled_role().await, Role::Primary(_));
    let mut hosts: Vec<String> = membership
        .hosts
        .iter()
        .map(|h| h.http.clone())
        .filter(|h| !h.is_empty())
        .collect();
    if !hosts.contains(&node.addresses.http) {
        hosts.insert(0, node.addresses.http.clone());
    }
    let log_id = node.store.log_id();
    let last_id = node.store.written_id();
    let (term, election_timeout) = {
        let core = node.core();
        let e = core.election();
        (e.term(), e.election_timeout())
    };
    HttpResponse::Ok().json(json!({
        "setName": (log_id != 0).then(|| format!("chorus-{log_id:016x}")),
        "name": node.cfg.name,
        "me": node.addresses.http,
        "isWritablePrimary": is_primary && writable,
        "secondary": !is_primary,
        "primary": primary,
        "hosts": hosts,
        "term": term,
        "configVersion": membership.config_version,
        "configTerm": membership.config_term,
        "lastWrite": {"id": last_id, "term": node.store.history().term_of(last_id)},
        "commitId": commit_id,
        "priority": node.cfg.priority,
        "electionTimeoutMs": election_timeout.as_millis() as u64,
    }))
}

/// `POST /stepDown`: the master stops being master.
#[utoipa::path(post, path = "/stepDown", tag = "master",
    request_body = doc::StepDown,
    responses(
        (status = 200, description = "Another member is master now", body = Object),
        (status = 400, description = "Malformed body", body = doc::Error),
        doc::AdminRefusal,
        (status = 503, description = "Not the master (its address in `primary`)", body = doc::Error),
        (status = 504, description = "No other member became master within `timeoutMs`; this one is a secondary", body = doc::Error),
    ))]
async fn step_down(
    http: HttpRequest,
    state: web::Data<State>,
    payload: web::Payload,
) -> HttpResponse {
    if let Some(refused) = admin_refusal(&http, &state) {
        return refused;
    }
    let req = match read_body(&http, payload, 64 * 1024)
        .await
        .and_then(|b| api::parse_step_down(&b))
    {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    if let Role::Secondary(_) = state.node.settled_role().await {
        return not_primary(&state.node, "has nothing to step down from");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.node.send(Event::StepDown(req.quiet, tx));
    match tokio::time::timeout(req.timeout, rx).await {
        Ok(Ok(Some(master))) => HttpResponse::Ok().json(json!({
            "steppedDown": true,
            "primaryName": master,
            "primary": state.node.master_http(),
            "term": state.node.term(),
            "quietSeconds": req.quiet.as_secs(),
        })),
        _ => error_response(&ApiError::new(
            504,
            "step_down_timeout",
            format!(
                "no other member became master within {} ms; this node stepped down and is a secondary",
                req.timeout.as_millis()
            ),
        )),
    }
}

/// The API of a node, generated from the handlers' annotations above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chorus node",
        description = "A member of a chorus replica set. The master takes writes, replicates them and answers once the write concern is met; every member serves reads."
    ),
    paths(
        new_message,
        messages,
        common::stream::message_stream,
        health,
        status,
        message_status,
        remove_member,
        readmit_member,
        hello,
        checksum,
        chat_page,
        get_faults,
        put_faults,
        delete_faults,
        crash,
        step_down,
        metrics_page,
        openapi_json
    ),
    components(schemas(
        doc::NewMessage,
        doc::Receipt,
        doc::Error,
        doc::Message,
        doc::Member,
        doc::StepDown
    ))
)]
pub struct ApiDoc;

/// The checksum of this node's entries 1..N (`docs/api.md`, "Checksums").
#[utoipa::path(get, path = "/checksum", tag = "every node",
    params(("upTo" = Option<u64>, Query, description = "Last id covered (default: the whole log; 0: the empty prefix)")),
    responses(
        (status = 200, description = "`{\"upTo\", \"checksum\"}`: equal on two nodes exactly when they hold the same entries 1..upTo", body = Object),
        (status = 400, description = "`upTo` is not a whole number", body = doc::Error),
        (status = 404, description = "This node does not hold entry `upTo` yet", body = doc::Error),
    ))]
async fn checksum(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let up_to = match api::parse_checksum_query(req.query_string()) {
        Ok(n) => n.unwrap_or_else(|| state.store.written_id()),
        Err(e) => return error_response(&e),
    };
    let store = state.store.clone();
    // At most a block of entries read from the disk: off the event loop.
    let sum = match web::block(move || store.checksum(up_to)).await {
        Ok(Ok(sum)) => sum,
        Ok(Err(e)) => {
            return error_response(&ApiError::new(
                500,
                "storage_error",
                format!("reading the log failed: {e}"),
            ));
        }
        Err(_) => return shutting_down(),
    };
    match sum {
        Some(sum) => HttpResponse::Ok().json(json!({
            "upTo": up_to,
            "checksum": common::storage::checksum::hex(&sum),
        })),
        None => error_response(&ApiError::new(
            404,
            "not_found",
            format!(
                "this node does not hold entry {up_to} yet (its log ends at {})",
                state.store.written_id()
            ),
        )),
    }
}

/// The fault rules in force on this node (`docs/faults.md`).
#[utoipa::path(get, path = "/admin/faults", tag = "admin",
    responses(
        (status = 200, description = "`{\"seed\", \"rules\": [{\"peer\", \"drop\", \"delayMs\", \"partition\"}]}`", body = Object),
        doc::AdminRefusal,
    ))]
async fn get_faults(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    HttpResponse::Ok().json(state.node.faults.get())
}

/// Replace this node's fault rules: drop, delay or cut its traffic with named peers,
/// both directions, until `DELETE /admin/faults`.
#[utoipa::path(put, path = "/admin/faults", tag = "admin",
    request_body = Object,
    responses(
        (status = 200, description = "The rules now in force", body = Object),
        (status = 400, description = "Malformed JSON or an invalid rule", body = doc::Error),
        doc::AdminRefusal,
    ))]
async fn put_faults(
    req: HttpRequest,
    state: web::Data<State>,
    payload: web::Payload,
) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    let body = match read_body(&req, payload, 64 * 1024).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
        return error_response(&ApiError::bad_request(
            "invalid_json",
            format!("malformed JSON: {e}"),
        ));
    }
    match crate::faults::FaultSet::parse(&body) {
        Ok(set) => {
            tracing::warn!(seed = set.seed, rules = ?set.rules, "fault rules set");
            state.node.faults.set(set);
            HttpResponse::Ok().json(state.node.faults.get())
        }
        Err(e) => error_response(&ApiError::bad_request("invalid_request", e)),
    }
}

/// Clear this node's fault rules.
#[utoipa::path(delete, path = "/admin/faults", tag = "admin",
    responses(
        (status = 200, description = "No rules any more: `{\"seed\": 0, \"rules\": []}`", body = Object),
        doc::AdminRefusal,
    ))]
async fn delete_faults(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    if state.node.faults.active() {
        tracing::warn!("fault rules cleared");
    }
    state.node.faults.set(crate::faults::FaultSet::default());
    HttpResponse::Ok().json(state.node.faults.get())
}

/// End this node at once, for fault tests: `{"mode": "kill"}` as a `kill -9` would,
/// `{"mode": "powerLoss"}` as a power cut would (the log also loses what it had not
/// made durable: `LogStore::power_loss`). No answer is sent: the connection closes, as
/// with Redis's `DEBUG SEGFAULT`.
#[utoipa::path(post, path = "/admin/crash", tag = "admin",
    request_body = Object,
    responses(
        (status = 400, description = "Malformed JSON, or no `mode` of `kill` or `powerLoss`", body = doc::Error),
        doc::AdminRefusal,
    ))]
async fn crash(req: HttpRequest, state: web::Data<State>, payload: web::Payload) -> HttpResponse {
    if let Some(refused) = admin_refusal(&req, &state) {
        return refused;
    }
    let body = match read_body(&req, payload, 1024).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(&ApiError::bad_request(
                "invalid_json",
                format!("malformed JSON: {e}"),
            ));
        }
    };
    match v["mode"].as_str() {
        Some("kill") => {
            tracing::warn!("crash requested (POST /admin/crash): ending now");
            std::process::abort()
        }
        Some("powerLoss") => {
            tracing::warn!("power loss requested (POST /admin/crash)");
            state.store.power_loss()
        }
        _ => error_response(&ApiError::bad_request(
            "invalid_request",
            "`mode` must be \"kill\" or \"powerLoss\"",
        )),
    }
}

/// The chat page (`node/src/chat.html`, embedded in the binary).
const CHAT_PAGE: &str = include_str!("chat.html");

/// The anonymous real-time chat: one page, no build step (docs/chat.md).
#[utoipa::path(get, path = "/", tag = "every node",
    responses((status = 200, description = "The chat page (HTML)", content_type = "text/html")))]
async fn chat_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(CHAT_PAGE)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "every node",
    responses((status = 200, description = "The OpenAPI document of this node's API", body = Object)))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn status(req: TestRequest, token: Option<&str>) -> u16 {
        let token = token.map(|t| common::config::AdminToken::new(t).unwrap());
        match admin_check(&req.to_http_request(), token.as_ref()) {
            Ok(()) => 200,
            Err(resp) => resp.status().as_u16(),
        }
    }

    #[test]
    fn admin_needs_loopback_without_a_token_and_the_token_with_one() {
        let from =
            |ip: &str| TestRequest::default().peer_addr(format!("{ip}:5000").parse().unwrap());
        // No token: loopback only (IPv4 and IPv6).
        assert_eq!(status(from("127.0.0.1"), None), 200);
        assert_eq!(
            status(
                TestRequest::default().peer_addr("[::1]:5000".parse().unwrap()),
                None
            ),
            200
        );
        assert_eq!(status(from("10.1.2.3"), None), 403);
        assert_eq!(status(TestRequest::default(), None), 403, "unknown peer");
        let page = from("127.0.0.1").insert_header(("origin", "http://evil.example"));
        assert_eq!(status(page, None), 403, "a web page on this machine");
        // A token: needed from everywhere, loopback included.
        let bearer = |ip: &str, v: &str| from(ip).insert_header(("authorization", v));
        assert_eq!(status(from("127.0.0.1"), Some("s3cret-token")), 401);
        assert_eq!(
            status(
                bearer("10.1.2.3", "Bearer s3cret-token"),
                Some("s3cret-token")
            ),
            200
        );
        assert_eq!(
            status(
                bearer("127.0.0.1", "Bearer s3cret-tokeN"),
                Some("s3cret-token")
            ),
            401
        );
        assert_eq!(
            status(
                bearer("127.0.0.1", "Bearer s3cret-token2"),
                Some("s3cret-token")
            ),
            401
        );
        assert_eq!(
            status(
                bearer("127.0.0.1", "Basic s3cret-token"),
                Some("s3cret-token")
            ),
            401
        );
        assert_eq!(
            status(bearer("127.0.0.1", "s3cret-token"), Some("s3cret-token")),
            401
        );
    }
}
