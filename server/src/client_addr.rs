//! Puts the client's address ([`ClientAddr`]) on every request, from the connection's peer and
//! the trusted proxies' `X-Forwarded-For` (see `cloudrouter_core::net`): the console's throttles
//! and the gateway's per-key IP allow-lists read it.

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cloudrouter_core::net::{ClientAddr, TrustedProxies};
use std::net::SocketAddr;
use std::sync::Arc;

pub async fn layer(State(trusted): State<Arc<TrustedProxies>>, mut req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = trusted.client_addr(peer.ip(), req.headers());
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}
