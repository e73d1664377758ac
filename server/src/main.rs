#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    warren::cli::main()
}
