pub mod billing;
pub mod invoices;
pub mod keys;
pub mod overview;
pub mod settings;
pub mod usage;
