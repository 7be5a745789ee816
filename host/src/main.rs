//! `cdnet`: train, evaluate and export CDNet. See `cdnet --help`.
fn main() -> std::process::ExitCode {
    cdnet_host::cli::main()
}
