pub mod accounts;
pub mod db;

pub mod admin_api;
pub mod billing;
pub mod catalogue;
pub mod crypto;
pub mod demo;
pub mod gateway;
pub mod insights;
pub mod keys;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod throttle;
pub mod upstreams;
pub mod usage;
pub mod util;
