//! `GET /console/usage.csv`: the signed-in customer's usage log as CSV, with the same filter as
//! the page (`key`, `model`, `status`, `from`, `to`), streamed row by row from Postgres.

use app::api::usage::{log_filter, LogQuery};
use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use cloudrouter_core::{insights, keys};
use futures::StreamExt;
use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/console/usage.csv", get(export)).with_state(pool)
}

async fn export(State(pool): State<PgPool>, session: Session, parts: axum::http::request::Parts, Query(q): Query<LogQuery>) -> Response {
    let Some(user) = app::ssr::session_user(&session, &pool).await.ok().flatten() else {
        return (StatusCode::UNAUTHORIZED, "Please sign in.").into_response();
    };
    let user_id = user.id;
    // The zone the console shows this person's times in: the export's dates and times match it.
    let tz = leptos::prelude::Owner::new().with(|| {
        leptos::prelude::provide_context(parts);
        app::ssr::zone_for(&user)
    });
    let filter = match log_filter::build(&q, Some(user_id), tz) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, app::api::error_text(&e)).into_response(),
    };
    let names: std::collections::HashMap<Uuid, String> = match keys::list(&pool, user_id).await {
        Ok(list) => list.into_iter().map(|k| (k.id, k.name)).collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing keys for a CSV export failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    // The stream borrows the pool and the filter, so it runs in a task that owns them and feeds
    // the response through a bounded channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        if tx.send(Ok(insights::csv_header().to_string())).await.is_err() {
            return;
        }
        let mut rows = std::pin::pin!(insights::log_stream(&pool, &filter));
        while let Some(row) = rows.next().await {
            let line = match row {
                Ok(r) => {
                    let name = r.key_id.and_then(|id| names.get(&id)).map(String::as_str).unwrap_or("");
                    Ok(insights::csv_line(&r, name, tz))
                }
                Err(e) => {
                    tracing::error!(error = %e, "CSV export failed mid-way");
                    Err(std::io::Error::other("export failed"))
                }
            };
            let failed = line.is_err();
            if tx.send(line).await.is_err() || failed {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CONTENT_DISPOSITION, "attachment; filename=\"cloudrouter-usage.csv\"")],
        body,
    )
        .into_response()
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
