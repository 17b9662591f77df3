//! The wire contract of the suite, generated from the `.proto` files in `proto/`.
//!
//! Packages are versioned (`ums.device.v1`, `ums.admin.v1`, `ums.network.v1`); a breaking change
//! gets a new package version, served beside the old one until devices have moved.

pub mod version;

pub mod device {
    pub mod v1 {
        tonic::include_proto!("ums.device.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("ums.admin.v1");
    }
}

pub mod network {
    pub mod v1 {
        tonic::include_proto!("ums.network.v1");
    }
}

pub mod swp {
    pub mod v1 {
        tonic::include_proto!("ums.swp.v1");
    }
}

/// Encoded `FileDescriptorSet` of every package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ums_descriptor.bin"));

/// Metadata key carrying the device id on device calls.
pub const DEVICE_ID_HEADER: &str = "x-ums-device-id";
/// Metadata key carrying the hex-encoded device secret on device calls.
pub const DEVICE_SECRET_HEADER: &str = "x-ums-device-secret";
