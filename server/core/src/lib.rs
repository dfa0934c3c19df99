pub mod accounts;
pub mod db;

