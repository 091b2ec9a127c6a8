use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_audit::SERVICE,
        promptops_audit::config_from_env,
        promptops_audit::run,
    )
}
