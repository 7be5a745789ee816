// Empty: build-dependencies take part in feature resolution only for a crate with a build script.
fn main() {}
