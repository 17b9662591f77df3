//! The server's APIs, the top layer: the admin API (gRPC and JSON), the device API, the
//! network service of the internal port, and joining. Each handler returns
//! `Result<_, ApiError>`; [`crate::error`] turns that into a status in one place.

pub mod admin;
pub mod device;
pub mod join;
pub mod json;
pub mod network;
