fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every .proto under proto/ is one package, cairn.v1; each concern may have its own file.
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // Chunk payloads are `bytes::Bytes`: a put to several replicas shares one
    // buffer, and a decoded payload is a view of the receive buffer, not a copy.
    tonic_prost_build::configure()
        .bytes(".cairn.v1.PutChunkRequest.data")
        .bytes(".cairn.v1.GetChunkReply.data")
        .compile_protos(&files, &[std::path::PathBuf::from("proto")])?;
    Ok(())
}
