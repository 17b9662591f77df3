//! Generates the Rust code of the wire contract from `proto/` with protox, so a fresh machine needs
//! no system `protoc`. The encoded descriptor set is written next to the code for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "ums/device/v1/device.proto",
    "ums/admin/v1/admin.proto",
    "ums/admin/v1/update_mode.proto",
    "ums/admin/v1/release.proto",
    "ums/network/v1/network.proto",
    "ums/swp/v1/swp.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let fds = protox::compile(FILES, [&root])?;
    std::fs::write(out.join("ums_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // The admin messages double as the JSON bodies of the HTTPS API.
        .type_attribute(
            ".ums.admin",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".ums.network",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
