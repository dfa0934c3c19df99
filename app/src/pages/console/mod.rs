pub mod overview;
pub mod settings;
