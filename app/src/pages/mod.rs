
pub mod admin;
pub mod auth;
pub mod console;
pub mod landing;
pub mod not_found;
pub mod status;
