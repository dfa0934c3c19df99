//! OpenAI's Chat Completions format over the Messages path: a request is translated into a
//! Messages request (`request`) and then admitted, held, routed, forwarded, metered and settled
//! exactly as a `/v1/messages` request is; only the answer is translated back (`response` for
//! JSON, `stream` for SSE) and errors take OpenAI's shape (`error::Dialect`).

mod request;
mod response;
mod stream;

pub(super) use request::to_messages;
pub(super) use response::completion;
pub(super) use stream::ChunkStream;
