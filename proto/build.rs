use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/outlier/v1/events.proto",
        "proto/outlier/v1/scored.proto",
        "proto/outlier/v1/services.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("outlier_v1_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
