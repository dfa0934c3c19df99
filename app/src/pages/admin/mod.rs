pub mod catalogue;
pub mod upstreams;
pub mod users;
