//! chorus-ceiling: the HTTP-only ceiling for chorus-bench. An actix-web server set up
//! exactly as a chorus master's (same server builder, same body reading, same JSON
//! validation, same 201 receipt) that stores and replicates nothing: the fastest a chorus
//! master could answer `POST /newMessage` on this machine.
//!
//! ```sh
//! chorus-ceiling --http-port 8090
//! ```

/// The master's allocator, so that the ceiling stays the master's HTTP path alone.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use actix_web::{HttpRequest, HttpResponse, web};
use clap::Parser;
use common::api;
use common::replication::Receipt;
use common::web::{endpoint, error_response, read_body};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "HTTP-only ceiling: answers POST /newMessage like a master, storing nothing"
)]
struct Cli {
    /// Port to listen on (0 picks a free port; printed on start).
    #[arg(long, value_name = "P")]
    http_port: u16,
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn new_message(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let limit = api::DEFAULT_MAX_MESSAGE_BYTES * 6 + 64 * 1024;
    let body = match read_body(&req, payload, limit).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = api::parse_new_message(&body, api::DEFAULT_MAX_MESSAGE_BYTES) {
        return error_response(&e);
    }
    let receipt = Receipt {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        acks: 1,
        acked_by: vec!["ceiling".into()],
        term: 1,
    };
    HttpResponse::Created().json(&receipt)
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = common::config::parse_cli();
    let listener = std::net::TcpListener::bind((cli.host.as_str(), cli.http_port))?;
    println!(
        "chorus-ceiling listening on http://{}",
        listener.local_addr()?
    );
    actix_web::rt::System::new().block_on(async move {
        let server = common::web::serve(listener, None, None, |cfg| {
            cfg.service(endpoint("/newMessage", "POST", web::post().to(new_message)));
        })?;
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            common::shutdown::signal().await;
            handle.stop(true).await;
        });
        server.await
    })?;
    Ok(())
}
