//! actix-web glue shared by both nodes: JSON errors, 404/405, the log read endpoint and
//! a size-limited body reader. The rules themselves live in [`crate::api`].

use crate::api::{self, ApiError};
use crate::storage::LogStore;
use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use futures::StreamExt;
use std::sync::Arc;

/// The response for an [`ApiError`].
pub fn error_response(e: &ApiError) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .json(e.body())
}

/// Default service: 404 with a JSON body.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(&ApiError::not_found(req.path()))
}

/// A handler answering 405 for the methods a resource does not take.
pub fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone + 'static {
    move |req: HttpRequest| {
        let e = ApiError::method_not_allowed(req.method().as_str(), req.path(), allowed);
        let mut resp = error_response(&e);
        resp.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allowed),
        );
        std::future::ready(resp)
    }
}

/// The most HTTP connections a node holds at once (per worker; nodes run one): room
/// for 10,000 idle change streams and their clients. Past it the server stops
/// accepting until one closes; the operating system's backlog queues the rest.
pub const MAX_HTTP_CONNECTIONS: usize = 25_000;

/// A client must send a request's head (line and headers) within this, or the
/// connection is closed with 408: a slowloris client holds a connection 5 s, not for
/// ever. Heads over actix-web's limits (96 headers, 128 KiB a head) are refused with 431.
pub const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Build and start the HTTP server on `listener`: the routes `configure` adds, JSON 404s
/// for everything else, 5 s to finish in-flight requests when stopped, and no signal
/// handling of its own (each node handles SIGINT/SIGTERM itself). `workers` threads
/// (None: one per core); `configure` runs once on each, on that thread. With `tls`,
/// HTTPS only.
pub fn serve<F>(
    listener: std::net::TcpListener,
    workers: Option<usize>,
    tls: Option<rustls::ServerConfig>,
    configure: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let mut server = actix_web::HttpServer::new(move || {
        // Any origin may read the API: the chat page served by one member talks to the
        // others (admin operations refuse requests from web pages: node/src/http.rs).
        actix_web::App::new()
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("access-control-allow-origin", "*")),
            )
            .configure(configure.clone())
            .default_service(web::to(not_found))
    });
    if let Some(n) = workers {
        server = server.workers(n);
    }
    server = server
        .max_connections(MAX_HTTP_CONNECTIONS)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .shutdown_timeout(5)
        .disable_signals();
    Ok(match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run())
}

/// A resource at `path` served by `route`, answering 405 (with `Allow: method`) to
/// every other method.
pub fn endpoint(path: &str, method: &'static str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed(method)))
}

/// How long a client may take to send a request body, once its head has arrived
/// (actix-web bounds the head itself: [`CLIENT_REQUEST_TIMEOUT`]).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read a request body of at most `limit` bytes: a larger one, or a `Content-Length`
/// that announces one, is a 413 at once (nothing waits for a gigabyte that is never
/// sent); a body that takes longer than [`BODY_TIMEOUT`] is a 408.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "message_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("invalid_body", format!("could not read the body: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })?
}

/// Entries read from the store per chunk of a `GET /messages` response.
const READ_CHUNK: usize = 1000;

/// `GET /messages` from `store`, streamed in chunks: the whole log is never held in
/// memory. The response ends at the written end of the log as it was when the request
/// arrived (at `commit_id`, durable on a majority, for `readConcern=majority`), so a log
/// growing meanwhile cannot make it endless.
pub async fn messages(
    q: api::MessagesQuery,
    store: Arc<dyn LogStore>,
    commit_id: u64,
) -> HttpResponse {
    let mut end = store.written_id();
    if q.majority {
        end = end.min(commit_id);
    }
    let from = q.from.max(1);
    let wanted = q.limit.map_or(u64::MAX, |l| l as u64);
    let total = end.saturating_sub(from - 1).min(wanted);
    let state = (from, total, true);
    let body = futures::stream::unfold(state, move |(next, left, first)| {
        let store = store.clone();
        async move {
            if left == 0 && !first {
                return None;
            }
            let n = left.min(READ_CHUNK as u64) as usize;
            let entries = if n == 0 {
                Vec::new()
            } else {
                match web::block(move || store.read(next, n)).await {
                    Ok(Ok(e)) => e,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reading the log for GET /messages failed");
                        return Some((
                            Err(actix_web::error::ErrorInternalServerError(e)),
                            (next, 0, false),
                        ));
                    }
                    Err(e) => {
                        return Some((
                            Err(actix_web::error::ErrorInternalServerError(e)),
                            (next, 0, false),
                        ));
                    }
                }
            };
            // The store returns fewer than asked only if its end moved back (a
            // secondary cutting what its master lost); stop rather than loop.
            let got = entries.len() as u64;
            let left = if got < n as u64 { 0 } else { left - got };
            let mut chunk = api::messages_json_chunk(&entries, first);
            if left == 0 {
                chunk.push(b']');
            }
            Some((
                Ok::<_, actix_web::Error>(bytes::Bytes::from(chunk)),
                (next + got, left, false),
            ))
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body)
}

/// `GET /metrics`: everything recorded, in Prometheus' text format.
pub fn metrics_response(handle: &crate::metrics::PrometheusHandle) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
