pub mod billing;
pub mod catalogue;
pub mod incidents;
pub mod operations;
pub mod plans;
pub mod redeem;
pub mod upstreams;
pub mod users;
