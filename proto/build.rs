//! Compiles `proto/chordal.proto` (and `proto/etcd_kv.proto`, for the
//! benchmark against etcd) with protox (pure Rust), so building Chordal
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["chordal.proto", "etcd_kv.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
