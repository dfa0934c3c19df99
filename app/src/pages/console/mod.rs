pub mod billing;
pub mod invoices;
pub mod keys;
pub mod overview;
pub mod pay;
pub mod plans;
pub mod settings;
pub mod usage;
