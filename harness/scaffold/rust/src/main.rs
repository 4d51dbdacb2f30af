//! ${name}, Rust scaffold: GET /hello?name=N -> "GREETING N".
use axum::{extract::Query, http::StatusCode, routing::get, Router};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Hello {
    name: Option<String>,
}

fn main() {
    let workers = std::env::var("LANGBENCH_CPUS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(serve());
}

async fn serve() {
    let greeting = Arc::new(std::env::var("GREETING").unwrap_or_else(|_| "hello".into()));
    let app = Router::new().route(
        "/hello",
        get(move |Query(q): Query<Hello>| {
            let greeting = greeting.clone();
            async move {
                match q.name {
                    Some(n) if !n.is_empty() => (StatusCode::OK, format!("{greeting} {n}")),
                    _ => (StatusCode::BAD_REQUEST, "name is required".to_string()),
                }
            }
        }),
    );
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let addr = format!("{host}:{}", std::env::var("PORT").expect("PORT"));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        })
        .await
        .expect("serve");
}
